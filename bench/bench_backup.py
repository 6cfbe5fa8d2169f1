"""Benchmark: incremental backups (format 3 vs format 1), and full uploads vs a naive TNDS copy.

    .venv/bin/python bench/bench_backup.py [--trees phone,1m,10m] [--chain 50]    incremental table
    .venv/bin/python bench/bench_backup.py --upload [--sizes 10k,100k,1m,10m] [--no-pcsc]
    .venv/bin/python bench/bench_backup.py --codecs

The default prints, for each tree and change (1% of the leaves at random, 1%
clustered in one subtree, 1% nodes added, 1% deleted), the bytes and APDUs of
a full backup and of the incremental after it, to a short-APDU T=0 card, in
format 3 (base + delta layers) beside format 1 (CDC chunks, the baseline);
beside them `zstd -19` of the whole TNDS and restic's repository growth for
the same file and change (local repository, no network); then a chain of
incrementals: bytes per backup under the default re-base policy and the
restore time of its newest backup vs a full one.
--upload prints the full-upload table:

For each generated tree (host.tree.generate): the archive's size, the APDUs and
bytes on the wire of a full upload to a short-APDU T=0 card (what SIMs speak)
and of an incremental upload after 1% of the leaves changed, the wall time
in-process and through pcscd + vpcd, and the time a real SIM link would take:

    t = APDUs x 5 ms  +  (bytes both ways) x 12 etu / rate

(5 ms per APDU: card processing and NVM writes plus the terminal's turnaround;
12 etu per byte: start, 8 data, parity, 2 guard times; rate 9600 bit/s = the
default ISO 7816-3 Fi/Di = 372/1 at 3.57 MHz, and 223 kbit/s after a PPS to
Fi/Di 512/32 at 3.57 MHz x ... i.e. the fastest common UICC speed.)

The naive baseline writes the uncompressed TNDS with 255-byte UPDATE
BINARY-style APDUs (5 header + 255 data, answered 90 00): counted, not sent.
--codecs prints the compression measurements of docs/ARCHIVE_FORMAT.md.
"""
from __future__ import annotations

import argparse
import gc
import json
import lzma
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import zstandard

from apdu_specs import constants as C
from host.backup import ops
from host.client import BackupCard
from host.backup.keys import generate_identity
from host.link import EmulatorTransport
from host.tree.canonical import canonical_bytes
from host.tree.generate import generate_tree, mutate_leaves
from host.tree.model import DMNode
from host.tree.tnds import read_tnds, write_tnds

PER_APDU_S = 0.005
ETU_PER_BYTE = 12
RATES = {"9600": 9600, "223k": 223_000}
PCSC_BUDGET_S = 60.0
SIZES = {"10k": 10_000, "100k": 100_000, "1m": 1_000_000, "10m": 10_000_000}


def sim_seconds(apdus: int, nbytes: int, rate: int) -> float:
    return apdus * PER_APDU_S + nbytes * ETU_PER_BYTE / rate


def naive(tnds_len: int) -> tuple[int, int]:
    n = math.ceil(tnds_len / 255)
    return n, tnds_len + 5 * n + 2 * n


def new_card(tmp: Path, ident, name: str):
    from cards import build_test_card

    from card.runtime import CardLimits
    return build_test_card(tmp / f"{name}.img", capacity=4 << 20, anchors=[ident.signer.public_point],
                           limits=CardLimits.short(t0=True))


def connect(transport) -> BackupCard:
    from cards import TEST_PIN
    return BackupCard.connect(transport, TEST_PIN)


def upload(card: BackupCard, tree, ident, host_dir: Path) -> dict:
    stats = card.link.stats
    stats.reset()
    t0 = time.perf_counter()
    archive, report = ops.backup_tree_to_card(card, tree, ident, pending_dir=host_dir)
    wall = time.perf_counter() - t0
    return {"archive": len(archive.to_bytes()) if not archive.missing_chunks() else -1,
            "apdus": stats.apdus, "bytes": stats.bytes_sent + stats.bytes_received, "wall": wall,
            "sent": report.chunks_sent, "total": report.chunks_total}


def run_inprocess(tmp: Path, ident, tree) -> tuple[dict, dict]:
    vcard = new_card(tmp, ident, f"c{id(tree)}")
    card = connect(EmulatorTransport(vcard))
    host_dir = tmp / f"host{id(tree)}"
    full = upload(card, tree, ident, host_dir)
    devid = "./DevInfo/DevId"
    leaves = sum(1 for _, n in tree.walk() if not n.interior)
    for seed in range(1, 20):   # 1% of the leaves (at least one), never the device id
        changed = tree.copy()
        if devid not in mutate_leaves(changed, max(0.01, 1.5 / leaves), seed=seed):
            break
    inc = upload(card, changed, ident, host_dir)
    vcard.close()
    return full, inc


def run_pcsc(tmp: Path, ident, tree) -> dict | None:
    from card.vpcd import VpcdBridge
    from host.link import PcscTransport, card_present
    reader, port = "Virtual PCD 00 01", 35964
    if card_present(reader):
        return None
    vcard = new_card(tmp, ident, f"p{id(tree)}")
    bridge = VpcdBridge(vcard, "127.0.0.1", port)
    bridge.run_in_thread()
    try:
        deadline = time.monotonic() + 10
        while not card_present(reader) and time.monotonic() < deadline:
            time.sleep(0.05)
        card = connect(PcscTransport(reader))
        result = upload(card, tree, ident, tmp / f"pc{id(tree)}")
        card.link.disconnect()
        return result
    finally:
        bridge.stop()
        vcard.close()
        deadline = time.monotonic() + 10
        while card_present(reader) and time.monotonic() < deadline:
            time.sleep(0.05)


def bench(sizes: list[str], pcsc: bool) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="simvault-bench-"))
    ident = generate_identity(tmp / "keys")
    print(f"SIM model: {PER_APDU_S * 1000:.0f} ms/APDU + {ETU_PER_BYTE} etu/byte; short APDUs, T=0 card")
    head = (f"{'tree':>5} {'TNDS':>9} {'archive':>8} {'APDUs':>6} {'wire B':>8} {'in-proc':>8} {'pcscd':>8} "
            f"{'SIM 9600':>9} {'SIM 223k':>9} | {'naive APDUs':>11} {'naive B':>9} {'9600':>8} {'223k':>7}")
    print(head)
    incs = []
    per_apdu_pcsc = None
    for name in sizes:
        tree = generate_tree(SIZES[name], 1)
        tnds = len(write_tnds(tree))
        full, inc = run_inprocess(tmp, ident, tree)
        pc = None
        pcsc_note = "-"
        if pcsc:
            estimate = full["apdus"] * per_apdu_pcsc if per_apdu_pcsc else 0.0
            if estimate > PCSC_BUDGET_S:
                pcsc_note = f"skip~{estimate:.0f}s"
            else:
                pc = run_pcsc(tmp, ident, tree)
                if pc is None:
                    pcsc_note = "busy"
                else:
                    per_apdu_pcsc = pc["wall"] / pc["apdus"]
                    pcsc_note = f"{pc['wall']:.2f}s"
        n_apdus, n_bytes = naive(tnds)
        print(f"{name:>5} {tnds:>9} {full['archive']:>8} {full['apdus']:>6} {full['bytes']:>8} "
              f"{full['wall']:>7.2f}s {pcsc_note:>8} "
              f"{sim_seconds(full['apdus'], full['bytes'], RATES['9600']):>8.1f}s "
              f"{sim_seconds(full['apdus'], full['bytes'], RATES['223k']):>8.1f}s | "
              f"{n_apdus:>11} {n_bytes:>9} {sim_seconds(n_apdus, n_bytes, RATES['9600']):>7.0f}s "
              f"{sim_seconds(n_apdus, n_bytes, RATES['223k']):>6.1f}s")
        incs.append((name, full, inc))
    print("\nincremental after 1% of the leaves changed (same card, QUERY CHUNKS then PUT only the new):")
    print(f"{'tree':>5} {'chunks sent':>12} {'APDUs':>6} {'wire B':>8} {'vs full':>8} {'SIM 9600':>9} {'SIM 223k':>9}")
    for name, full, inc in incs:
        print(f"{name:>5} {inc['sent']:>5}/{inc['total']:<6} {inc['apdus']:>6} {inc['bytes']:>8} "
              f"{100 * inc['bytes'] / full['bytes']:>7.1f}% "
              f"{sim_seconds(inc['apdus'], inc['bytes'], RATES['9600']):>8.1f}s "
              f"{sim_seconds(inc['apdus'], inc['bytes'], RATES['223k']):>8.1f}s")


def codecs(sizes: list[str]) -> None:
    from host.archive.cdc import ChunkerParams, gear_table, split
    gear = gear_table(b"bench" * 8)
    zc3, zc19 = zstandard.ZstdCompressor(level=3), zstandard.ZstdCompressor(level=19)
    table = {"deflate-9": lambda d: zlib.compress(d, 9), "zstd-3": zc3.compress, "zstd-19": zc19.compress,
             "lzma-6": lambda d: lzma.compress(d, preset=6)}
    print("size of the compressed canonical tree, % of the TNDS; speed over the canonical bytes")
    print(f"{'tree':>5} {'TNDS':>9} {'canon':>8} {'codec':>10} {'whole':>8} {'%':>6} {'MB/s':>6} "
          f"{'chunked':>8} {'%':>6} {'MB/s':>6} {'+dict':>8} {'%':>6}")
    for name in sizes:
        tree = generate_tree(SIZES[name], 1)
        tnds, canon = len(write_tnds(tree)), canonical_bytes(tree)
        chunks = split(canon, ChunkerParams(), gear)
        for cname, comp in table.items():
            t0 = time.perf_counter()
            whole = len(comp(canon))
            tw = time.perf_counter() - t0
            t0 = time.perf_counter()
            per = sum(len(comp(c)) for c in chunks)
            tp = time.perf_counter() - t0
            dict_col = ("", "")
            if cname == "zstd-19":
                from host.archive.codec import ChunkCodec, train_dictionary
                zd = train_dictionary(chunks)
                if zd:
                    cc = ChunkCodec("zstd", zd)
                    total = sum(len(cc.compress(c)) - 1 for c in chunks) + len(zc19.compress(zd))
                    dict_col = (str(total), f"{100 * total / tnds:.2f}")
            print(f"{name:>5} {tnds:>9} {len(canon):>8} {cname:>10} {whole:>8} {100 * whole / tnds:>6.2f} "
                  f"{len(canon) / tw / 1e6:>6.1f} {per:>8} {100 * per / tnds:>6.2f} {len(canon) / tp / 1e6:>6.1f} "
                  f"{dict_col[0]:>8} {dict_col[1]:>6}")


# ---- incremental backups: format 3 vs format 1, zstd -19, restic -------------------------

DEVID = "./DevInfo/DevId"


def _leaves(tree) -> list[tuple[str, DMNode]]:
    return [(u, n) for u, n in tree.walk() if not n.interior and n.format != "null" and u != DEVID]


def change(tree, kind: str, seed: int) -> None:
    """1% of the leaves (at least one): random values, a clustered run, added or deleted nodes."""
    rng = random.Random(seed)
    leaves = _leaves(tree)
    k = max(1, round(0.01 * len(leaves)))
    if kind == "random":
        devid = tree.get(DEVID).value
        mutate_leaves(tree, k / (len(leaves) + 1), seed)
        tree.replace(DEVID, devid)
    elif kind == "cluster":      # k consecutive leaves in pre-order: one subtree (an MO or two)
        start = rng.randrange(max(1, len(leaves) - k))
        for _, node in leaves[start:start + k]:
            node.value = (node.value + b"!") if isinstance(node.value, bytes) else f"{node.value or ''}-{seed}"
    elif kind == "add":
        interiors = [n for _, n in tree.walk() if n.interior]
        for i in range(k):
            parent = rng.choice(interiors)
            parent.children[f"Added{seed}x{i}"] = DMNode(f"Added{seed}x{i}", value=f"{rng.random():.6f}",
                                                          format="chr", type="text/plain")
    elif kind == "delete":
        for uri, _ in rng.sample(leaves, k):
            if tree.exists(uri):
                tree.delete(uri)
    else:
        raise ValueError(kind)


def _upload(card, tree, ident, host_dir: Path, fmt: int) -> tuple[int, int, int]:
    """(sent bytes: new chunks + manifest + signature, APDUs, wire bytes) of one backup."""
    stats = card.link.stats
    stats.reset()
    archive, report = ops.backup_tree_to_card(card, tree, ident, pending_dir=host_dir, archive_format=fmt)
    return report.bytes_sent + C.SIGNATURE_LENGTH, stats.apdus, stats.bytes_sent + stats.bytes_received


def _zstd19(path: Path) -> int:
    return len(subprocess.run(["zstd", "-19", "-q", "-c", str(path)], check=True, capture_output=True).stdout)


def _restic(repo: Path, path: Path) -> tuple[int, int]:
    """(bytes the restic repository grew by, new data blobs) when backing up path (local repo).

    The growth is what this backup adds: new data packs (compressed), the tree pack, the index
    file and the snapshot. restic's own `data_added` (0.14) counts uncompressed blob bytes, so
    the directory growth is the comparable figure. restic cuts files into 512 KiB-8 MiB
    content-defined chunks: a TNDS under 512 KiB is one blob, so any change stores it again
    (new blobs = all blobs); that, not the measurement, is why its incrementals read ~100%.
    """
    env = {**os.environ, "RESTIC_PASSWORD": "bench-only", "RESTIC_REPOSITORY": str(repo),
           "RESTIC_CACHE_DIR": str(repo.parent / "restic-cache")}
    if not repo.exists():
        subprocess.run(["restic", "init", "--repository-version", "2"], env=env, check=True, capture_output=True)
    before = _du(repo)
    out = subprocess.run(["restic", "backup", "--json", str(path)], env=env, check=True, capture_output=True,
                         cwd=path.parent, text=True).stdout
    summary = [json.loads(line) for line in out.splitlines() if '"summary"' in line][-1]
    return _du(repo) - before, int(summary["data_blobs"])


def _du(d: Path) -> int:
    return sum(f.stat().st_size for f in d.rglob("*") if f.is_file())


def tree_named(name: str):
    if name == "phone":
        return read_tnds((ROOT / "tests" / "data" / "phone_tree.tnds.xml").read_bytes())
    return generate_tree(SIZES[name], 1)


def incremental(trees: list[str], tools: bool) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="simvault-inc-"))
    ident = generate_identity(tmp / "keys")
    have = {t: shutil.which(t) is not None for t in ("zstd", "restic")} if tools else {}
    print("bytes sent = new chunks + manifest + signature; wire = APDU bytes both ways (short APDUs, T=0)")
    print(f"{'tree':>5} {'change':>7} | {'v3 full':>8} {'v3 inc':>7} {'%':>5} {'APDUs':>9} {'wire %':>6} | "
          f"{'v1 full':>8} {'v1 inc':>7} {'%':>5} {'APDUs':>9} | {'zstd-19':>8} | {'restic full':>11} {'inc':>7} {'%':>5} {'blobs':>5}")
    for name in trees:
        base = tree_named(name)
        for kind in ("random", "cluster", "add", "delete"):
            row = {}
            for fmt in (3, 1):
                vcard = new_card(tmp, ident, f"{name}-{kind}-{fmt}")
                card = connect(EmulatorTransport(vcard))
                host = tmp / f"h-{name}-{kind}-{fmt}"
                tree = base.copy()
                full = _upload(card, tree, ident, host, fmt)
                change(tree, kind, seed=7)
                inc = _upload(card, tree, ident, host, fmt)
                row[fmt] = (full, inc)
                vcard.close()
            zs = rs = ri = "-"
            if have.get("zstd") or have.get("restic"):
                f = tmp / f"{name}-{kind}" / "tree.xml"
                f.parent.mkdir(exist_ok=True)
                f.write_bytes(write_tnds(base))
                zs = str(_zstd19(f)) if have.get("zstd") else "-"
                if have.get("restic"):
                    repo = f.parent / "repo"
                    rfull, fblobs = _restic(repo, f)
                    t2 = base.copy()
                    change(t2, kind, seed=7)
                    f.write_bytes(write_tnds(t2))
                    rinc, iblobs = _restic(repo, f)
                    rs, ri = str(rfull), f"{rinc} {100 * rinc / rfull:>5.1f} {iblobs}/{fblobs}"
            (f3, i3), (f1, i1) = row[3], row[1]
            print(f"{name:>5} {kind:>7} | {f3[0]:>8} {i3[0]:>7} {100 * i3[0] / f3[0]:>5.1f} "
                  f"{i3[1]:>4}/{f3[1]:<4} {100 * i3[2] / f3[2]:>6.1f} | {f1[0]:>8} {i1[0]:>7} "
                  f"{100 * i1[0] / f1[0]:>5.1f} {i1[1]:>4}/{f1[1]:<4} | {zs:>8} | {rs:>11} {ri:>19}")


def chain(name: str, n: int) -> None:
    from host.archive import RebasePolicy, verify_archive
    tmp = Path(tempfile.mkdtemp(prefix="simvault-chain-"))
    ident = generate_identity(tmp / "keys")
    tree = tree_named(name)
    for label, policy in (("default policy", ops.DEFAULT_POLICY),
                          ("no re-base", RebasePolicy(max_layers=n + 1, amortize=False, max_layer_fraction=9.0))):
        t = tree.copy()
        full = ops.backup_tree(t, ident, policy=policy)
        archives, sent = [full], []
        for i in range(n):
            change(t, "random", seed=1000 + i)
            a = ops.backup_tree(t, ident, previous=archives[-1], policy=policy)
            old = {c.chunk_id for c in archives[-1].manifest.chunks}
            sent.append(sum(c.size for c in a.manifest.chunks if c.chunk_id not in old) + len(a.manifest_bytes) + 64)
            archives.append(a)
        newest = archives[-1]
        rebases = sum(1 for a in archives[1:] if a.host.previous is None)
        fbytes = len(full.to_bytes())
        timings = {k: math.inf for k in ("full", "newest", "full restore", "newest restore")}
        lives = {"full": verify_archive(full, ident.trust, ident.decryptor).tree,
                 "newest": verify_archive(newest, ident.trust, ident.decryptor).tree}
        for _ in range(5):      # best of 5, full and newest interleaved: the machine is shared
            for which, a in (("full", full), ("newest", newest)):
                gc.collect()
                t0 = time.perf_counter()
                verify_archive(a, ident.trust, ident.decryptor)
                timings[which] = min(timings[which], time.perf_counter() - t0)
                live = lives[which].copy()
                gc.collect()
                t0 = time.perf_counter()
                ops.restore_tree(live, a, ident, dry_run=True)
                timings[which + " restore"] = min(timings[which + " restore"], time.perf_counter() - t0)
        print(f"{name:>5} {label:>14} | full {fbytes:>7} B | {n} incrementals: mean {sum(sent) / n:>7.0f} B "
              f"({100 * sum(sent) / n / fbytes:4.1f}%), max {max(sent):>7} B ({100 * max(sent) / fbytes:5.1f}%), "
              f"re-bases {rebases} | newest: {len(newest.host.segments) - 1:>2} layers, "
              f"{len(newest.to_bytes()):>7} B to read | verify {timings['newest']:.2f}s vs full "
              f"{timings['full']:.2f}s = {timings['newest'] / timings['full']:.2f}x; restore_tree "
              f"{timings['newest restore']:.2f}s vs {timings['full restore']:.2f}s = "
              f"{timings['newest restore'] / timings['full restore']:.2f}x")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trees", default="phone,1m,10m", help="incremental table: phone,10k,100k,1m,10m")
    p.add_argument("--chain", type=int, default=50, help="incrementals in the restore-time chain (0: none)")
    p.add_argument("--chain-tree", default="10m")
    p.add_argument("--no-tools", action="store_true", help="skip the zstd and restic columns")
    p.add_argument("--upload", action="store_true", help="print the full-upload table instead")
    p.add_argument("--sizes", default="10k,100k,1m,10m")
    p.add_argument("--no-pcsc", action="store_true", help="skip the pcscd column (--upload)")
    p.add_argument("--codecs", action="store_true", help="print the codec measurements instead")
    p.add_argument("--quick", action="store_true",
                   help="~1 min: --trees phone,1m --chain 50 --chain-tree 1m")
    args = p.parse_args()
    if args.quick:
        args.trees, args.chain, args.chain_tree = "phone,1m", 50, "1m"
    sizes = [s for s in args.sizes.split(",") if s]
    unknown = [s for s in sizes + [t for t in args.trees.split(",") if t != "phone"] if s not in SIZES]
    if unknown:
        p.error(f"unknown sizes {unknown}; use {','.join(SIZES)}")
    if args.codecs:
        codecs(sizes)
    elif args.upload:
        bench(sizes, not args.no_pcsc)
    else:
        incremental([t for t in args.trees.split(",") if t], not args.no_tools)
        small = [t for t in args.trees.split(",") if t in ("phone", "10k", "100k", "1m")]
        if small:
            from bench_incremental_bytes import breakdown
            print()
            breakdown(small)
        if args.chain:
            print(f"\nchain of {args.chain} incrementals (1% random leaves each), made in memory:")
            for name in args.chain_tree.split(","):
                chain(name, args.chain)
    return 0


if __name__ == "__main__":
    sys.exit(main())
