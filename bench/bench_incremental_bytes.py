"""Where the bytes of an incremental backup go (format 3), and the floor they cannot go below.

    .venv/bin/python bench/bench_incremental_bytes.py [--trees phone,1m]

For each tree and change (as bench_backup.py: 1% random, clustered, added, deleted),
a full backup and the incremental after it are made in memory, and the bytes the
incremental sends (new chunks + manifest + signature) are split into:

    card fields   the manifest's fixed TLVs the card needs (E1, version, backup id,
                  sequence, created, device id, signer key id, total size, the 87/88 headers)
    table         68 bytes per chunk-table entry (id | SHA-256 | size): every chunk the
                  backup needs, the base pieces and each layer, not only the new ones
    host          the host section (tag 88): magic, flags, chain id, tree MAC, sizes,
                  previous id, generation, sent, scope, segment list
    signature     ECDSA P-256 raw r||s
    AEAD          per new chunk: GCM tag (16) [+ nonce (12), host section v3 only]
    payload       per new chunk: kind byte + the compressed delta

then two floors: "card floor" = what this card interface needs at the least for this
change (signature + card fields + one table entry per chunk the backup lists + a host
section of chain id, MAC and sizes + tag + payload); "any floor" = signature + tag +
payload: what a signed, encrypted backup of this delta costs with no manifest at all.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from apdu_specs import constants as C  # noqa: E402
from host.archive.crypto import TAG_LENGTH  # noqa: E402
from host.backup import ops  # noqa: E402
from host.backup.keys import generate_identity  # noqa: E402

TABLE_ENTRY = 68


def _tlv_len(n: int) -> int:
    """Bytes of a BER-TLV header (1-byte tag) for a value of n bytes."""
    return 2 if n < 0x80 else 3 if n < 0x100 else 4 if n < 0x10000 else 5


def split(inc, prev) -> dict[str, int]:
    m = inc.manifest
    old = {c.chunk_id for c in prev.manifest.chunks}
    new = [c for c in m.chunks if c.chunk_id not in old]
    table = TABLE_ENTRY * len(m.chunks)
    host = len(m.host_section)
    fields = len(inc.manifest_bytes) - table - host
    aead = (TAG_LENGTH + (12 if inc.host.version == 3 else 0)) * len(new)
    payload = sum(c.size for c in new) - aead
    return {"total": len(inc.manifest_bytes) + C.SIGNATURE_LENGTH + sum(c.size for c in new),
            "fields": fields, "table": table, "entries": len(m.chunks), "host": host,
            "sig": C.SIGNATURE_LENGTH, "aead": aead, "payload": payload, "new": len(new),
            "delta": inc.host.segments[-1].plain_size if len(inc.host.segments) > 1 else 0}


def breakdown(trees: list[str]) -> None:
    from bench_backup import change, tree_named
    ident = generate_identity(Path(tempfile.mkdtemp(prefix="simvault-bytes-")) / "keys")
    print("bytes of one incremental (new chunks + manifest + signature), host section v4:")
    print(f"{'tree':>5} {'change':>7} | {'full':>7} {'inc':>5} {'%':>5} | {'card fields':>11} {'table':>9} "
          f"{'host':>4} {'sig':>3} {'AEAD':>4} {'payload':>7} ({'delta':>5} plain) | "
          f"{'card floor':>10} {'%':>5} | {'any floor':>9} {'%':>5}")
    for name in trees:
        base = tree_named(name)
        for kind in ("random", "cluster", "add", "delete"):
            tree = base.copy()
            full = ops.backup_tree(tree, ident)
            change(tree, kind, seed=7)
            inc = ops.backup_tree(tree, ident, previous=full)
            fbytes = len(full.manifest_bytes) + C.SIGNATURE_LENGTH + full.manifest.total_size
            s = split(inc, full)
            # the least a host section can carry: chain id (16), tree MAC (16), plain size, segment list
            host_floor = 16 + 16 + 3 + 1 + 3 * len(inc.host.segments)
            card_floor = s["sig"] + s["fields"] + s["table"] + host_floor + s["aead"] + s["payload"]
            any_floor = s["sig"] + TAG_LENGTH + s["payload"]
            print(f"{name:>5} {kind:>7} | {fbytes:>7} {s['total']:>5} {100 * s['total'] / fbytes:>5.1f} | "
                  f"{s['fields']:>11} {s['entries']:>2}x68={s['table']:<4} {s['host']:>4} {s['sig']:>3} "
                  f"{s['aead']:>4} {s['payload']:>7} ({s['delta']:>5} plain) | {card_floor:>10} "
                  f"{100 * card_floor / fbytes:>5.1f} | {any_floor:>9} {100 * any_floor / fbytes:>5.1f}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trees", default="phone,1m")
    breakdown([t for t in p.parse_args().trees.split(",") if t])
    return 0


if __name__ == "__main__":
    sys.exit(main())
