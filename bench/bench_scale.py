"""Benchmark: seconds per MB and peak memory of backup, verify and restore, 1 to 100 MB trees.

    .venv/bin/python bench/bench_scale.py [--sizes 1,10,50,100] [--kinds gen,vendor] [--no-card] [--repeat 2]
    .venv/bin/python bench/bench_scale.py --profile [--profile-size 10] [--kinds gen]

For each kind of tree and size, every operation runs in a fresh interpreter
under /usr/bin/time -v (peak RSS: "Maximum resident set size", the
interpreter and its imports included), timed inside from reading the file to
the result, through the library the CLI calls; the fastest of --repeat runs
counts (others share the machine):

    ET parse      xml.etree.ElementTree.fromstring of the same bytes: the baseline
    read          host.backup.ops.read_tree_file (the TNDS reader)
    backup file   read_tree_file + backup_tree + write_archive_file
    backup card   the same to the in-process card emulator (no pcscd), capacity
                  sized to the archive (a real SIM holds ~1 MB: trees this large
                  go to files, the DM server or DS); chunk size from its FCI
    verify        read_archive_file + verify_archive (signature, chunks, tree MAC, decode)
    restore       restore_tree_file --create (verify, apply, write the TNDS file)

Kinds: "gen" is host.tree.generate.generate_tree (the benches' trees, ~40x
smaller as an archive), "vendor" a generated phone tree plus a flat vendor
subtree of random-string leaves (~5x). Each cell is wall seconds per MB of
TNDS, CPU seconds per MB (the process's own: what the load of others does not
inflate) and peak RSS in MB; the budget column is 3 x TNDS + 60 MB. The last lines give, per
operation, the spread of s/MB across sizes (max/min: linear within 20% is
<= 1.20). --profile prints the top 10 cumulative functions of backup (file),
verify and restore of one tree, in-process.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import random
import re
import shutil
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

MB = 1_000_000
OPS = ("parse", "read", "backup_file", "backup_card", "verify", "restore")
TITLES = {"parse": "ET parse", "read": "read", "backup_file": "backup file", "backup_card": "backup card",
          "verify": "verify", "restore": "restore"}
BIG_LIMITS = dict(max_bytes=1 << 30, max_nodes=10_000_000)


# ---- trees ---------------------------------------------------------------------------------


def make_tree(kind: str, size: int, seed: int = 1):  # type: ignore[no-untyped-def]
    from host.tree.generate import generate_tree
    from host.tree.model import DMNode
    if kind == "gen":
        return generate_tree(size, seed=seed)
    tree = generate_tree(min(size // 5, 400_000), seed=seed)
    rng = random.Random(seed)
    alpha = string.ascii_letters + string.digits + "+/=-_."
    vendor = DMNode("VendorData", interior=True, format="node", acl="Get=*&Replace=*")
    tree.root.children[vendor.name] = vendor
    from host.tree.tnds import write_tnds
    room = size - len(write_tnds(tree))
    while room > 0:
        name = "".join(rng.choices(alpha[:62], k=rng.randint(6, 14)))
        if name in vendor.children:
            continue
        value = "".join(rng.choices(alpha, k=rng.randint(24, 120)))
        vendor.children[name] = DMNode(name, value=value, format="chr", type="text/plain")
        room -= 178 + len(name) + len(value)       # the leaf as write_tnds indents it
    return tree


# ---- one operation, in a fresh interpreter ------------------------------------------------


def _limits():  # type: ignore[no-untyped-def]
    from host.tree.tnds import TreeLimits
    return TreeLimits(**BIG_LIMITS)


def run_op(op: str, tree_file: Path, work: Path) -> dict:
    """The operation, timed; what it made (archive bytes) for the next ones."""
    import xml.etree.ElementTree as ET

    from host.archive import verify_archive
    from host.backup import ops
    from host.backup.keys import load_identity
    ident = load_identity(work / "keys", "device")
    archive_file = work / "tree.svarch"
    t0, c0 = time.perf_counter(), time.process_time()
    out: dict = {}
    if op == "parse":
        ET.fromstring(tree_file.read_bytes())
    elif op == "read":
        ops.read_tree_file(tree_file, _limits())
    elif op == "backup_file":
        tree = ops.read_tree_file(tree_file, _limits())
        archive = ops.backup_tree(tree, ident)
        ops.write_archive_file(archive_file, archive, directory=False)
        out["archive"] = archive_file.stat().st_size
    elif op == "backup_card":
        from cards import TEST_PIN
        from host.client import BackupCard
        from host.link import EmulatorTransport
        from card.emulator import VirtualCard
        card = BackupCard.connect(EmulatorTransport(VirtualCard.open(work / "card.img")), TEST_PIN)
        t0, c0 = time.perf_counter(), time.process_time()
        tree = ops.read_tree_file(tree_file, _limits())
        _, report = ops.backup_tree_to_card(card, tree, ident, incremental=False)
        out["card_bytes"] = report.bytes_sent
    elif op == "verify":
        archive = ops.read_archive_file(archive_file)
        verified = verify_archive(archive, ident.trust, ident.decryptor)
        out["nodes"] = verified.tree.node_count()
    elif op == "restore":
        target = work / "restored.tnds.xml"
        target.unlink(missing_ok=True)
        ops.restore_tree_file(target, ops.read_archive_file(archive_file), ident, create=True)
        out["same"] = target.read_bytes() == tree_file.read_bytes()
    out["seconds"], out["cpu"] = time.perf_counter() - t0, time.process_time() - c0
    return out


def measured(op: str, tree_file: Path, work: Path, repeat: int, before=None) -> dict:  # type: ignore[no-untyped-def]
    """The fastest of repeat runs (the machine is shared), with the highest peak RSS seen;
    before() runs ahead of each (a fresh card for each card backup)."""
    best: dict = {}
    cmd = ["/usr/bin/time", "-v", sys.executable, __file__, "--worker", op, str(tree_file), str(work)]
    for _ in range(repeat):
        if before is not None:
            before()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            err = re.split(r"Command exited with|\tCommand being timed", proc.stderr)[0]
            return {"error": err.strip().splitlines()[-1:] or ["?"]}
        rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
        doc = json.loads(proc.stdout.strip().splitlines()[-1])
        doc["rss_mb"] = max(int(rss.group(1)) / 1024 if rss else 0.0, best.get("rss_mb", 0.0))
        if not best or doc["seconds"] < best["seconds"]:
            best = doc
        best["rss_mb"] = doc["rss_mb"]
    return best


def personalise_card(work: Path, capacity: int) -> None:
    from cards import TEST_ADMIN_KEY, TEST_PIN, TEST_PUK

    from card import emulator
    from host.backup.keys import load_identity
    ident = load_identity(work / "keys", "device")
    emulator.personalise(work / "card.img", capacity, TEST_PIN, TEST_PUK, TEST_ADMIN_KEY,
                         [ident.signer.public_point], force=True)


# ---- the table ----------------------------------------------------------------------------


def table(kinds: list[str], sizes: list[float], card: bool, repeat: int) -> None:
    from host.backup.keys import generate_identity
    from host.tree.tnds import write_tnds
    print(f"{'kind':6} {'MB':>5} {'ratio':>6} | " + " | ".join(f"{TITLES[o]:>18}" for o in OPS)
          + f" | {'budget MB':>9}")
    print(f"{'':6} {'':>5} {'':>6} | " + " | ".join(f"{'s/MB':>5} {'cpu':>5} {'RSS':>6}" for _ in OPS) + " |")
    for kind in kinds:
        per_mb: dict[str, list[float]] = {o: [] for o in OPS}
        for size in sizes:
            work = Path(tempfile.mkdtemp(prefix="bench_scale."))
            try:
                generate_identity(work / "keys", "device")
                tree_file = work / "tree.tnds.xml"
                tree_file.write_bytes(write_tnds(make_tree(kind, int(size * MB))))
                mbytes = tree_file.stat().st_size / MB
                cells, ratio = [], float("nan")
                for op in OPS:
                    before = None
                    if op == "backup_card":
                        if not card or ratio != ratio:
                            cells.append(f"{'-':>5} {'-':>5} {'-':>6}")
                            continue
                        capacity = int(archive_bytes * 1.25) + (2 << 20)
                        before = lambda: personalise_card(work, capacity)  # noqa: E731
                    r = measured(op, tree_file, work, repeat, before)
                    if "error" in r:
                        cells.append(f"{'ERR':>18}")
                        print(f"# {kind} {size} MB {op}: {r['error'][0]}", file=sys.stderr)
                        continue
                    if op == "backup_file":
                        archive_bytes = r["archive"]
                        ratio = mbytes * MB / archive_bytes
                    if op == "restore" and not r.get("same"):
                        print(f"# {kind} {size} MB: the restored file differs from the original", file=sys.stderr)
                    per_mb[op].append(r["seconds"] / mbytes)
                    cells.append(f"{r['seconds'] / mbytes:5.3f} {r['cpu'] / mbytes:5.3f} {r['rss_mb']:6.0f}")
                print(f"{kind:6} {mbytes:5.1f} {ratio:6.1f} | " + " | ".join(cells)
                      + f" | {3 * mbytes + 60:9.0f}", flush=True)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        spread = "  ".join(f"{TITLES[o]} {max(v) / min(v):.2f}" for o, v in per_mb.items() if len(v) > 1)
        print(f"{kind:6} s/MB max/min across sizes: {spread}")


def profile(kind: str, size: float) -> None:
    from host.backup.keys import generate_identity
    from host.tree.tnds import write_tnds
    work = Path(tempfile.mkdtemp(prefix="bench_scale."))
    try:
        generate_identity(work / "keys", "device")
        tree_file = work / "tree.tnds.xml"
        tree_file.write_bytes(write_tnds(make_tree(kind, int(size * MB))))
        for op in ("parse", "backup_file", "verify", "restore"):
            prof = cProfile.Profile()
            prof.enable()
            r = run_op(op, tree_file, work)
            prof.disable()
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(10)
            lines = [line for line in buf.getvalue().splitlines() if line.strip()]
            start = next(i for i, line in enumerate(lines) if "ncalls" in line)
            print(f"== {TITLES[op]}: {kind} {tree_file.stat().st_size / MB:.1f} MB, {r['seconds']:.2f} s "
                  "under the profiler (top 10 cumulative)")
            print("\n".join(lines[start:start + 11]))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,10,50,100", help="tree sizes in MB (default 1,10,50,100)")
    ap.add_argument("--kinds", default="gen,vendor", help="gen, vendor or both (default)")
    ap.add_argument("--no-card", action="store_true", help="leave out the card column")
    ap.add_argument("--repeat", type=int, default=2, help="runs per cell, the fastest counts (default 2)")
    ap.add_argument("--profile", action="store_true", help="profile one tree per kind instead")
    ap.add_argument("--profile-size", type=float, default=10, help="its size in MB (default 10)")
    ap.add_argument("--worker", nargs=3, metavar=("OP", "TREE", "WORK"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        op, tree_file, work = args.worker
        print(json.dumps(run_op(op, Path(tree_file), Path(work))))
        return 0
    kinds = args.kinds.split(",")
    if args.profile:
        for kind in kinds:
            profile(kind, args.profile_size)
        return 0
    table(kinds, [float(s) for s in args.sizes.split(",")], not args.no_card, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
