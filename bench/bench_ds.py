"""DS backup and restore: time and bytes on the wire, simvault's DS server vs SyncEvolution.

    .venv/bin/python bench/bench_ds.py [--sizes 100000 1000000] [--repeat 3] [--no-syncevolution]
                                       [--max-msg-size 65536] [--time-limit 600]

For each generated DM tree (host.tree.generate.generate_tree) the archive is
made once (host.backup.ops.backup_tree, timed separately), then backed up
(refresh from client) and restored (refresh from server, then parsed and fully
verified) against each peer; the median of --repeat runs is printed. Both
peers run on 127.0.0.1 in the same run: simvault's server in-process (SQLite
file), SyncEvolution through scripts/syncevolution.sh (its own HOME, port 18092).
Bounded: a watchdog ends the run after --time-limit seconds.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from host.archive import verify_archive
from host.backup.ops import backup_tree
from host.ds.client import DsAccount, DsClient
from host.ds.server import run_server_in_thread
from host.ds.state import AnchorStore
from host.ds.store import DsStore
from host.backup.keys import generate_identity
from host.tree.generate import generate_tree
from host.tree.tnds import write_tnds

SE_ENV = {"SYNCEVO_DIR": f"/tmp/simvault-syncevolution-bench-{os.getuid()}", "SYNCEVO_PORT": "18092",
          "SYNCEVO_USER": "bench", "SYNCEVO_PASSWORD": "bench-pw", "SYNCEVO_DEVICES": "bench-dev",
          "SYNCEVO_MAXMSG": "65536"}


def syncevolution(*args: str) -> str:
    out = subprocess.run([str(ROOT / "scripts" / "syncevolution.sh"), *args], env={**os.environ, **SE_ENV},
                         capture_output=True, text=True, timeout=600, check=False)
    if out.returncode != 0:
        raise SystemExit(f"scripts/syncevolution.sh {' '.join(args)}: {out.stderr.strip()[-300:]}")
    return out.stdout.strip()


def run_peer(name: str, account: DsAccount, archive_bytes: bytes, backup_id: str, identity, repeat: int) -> dict:
    anchors = AnchorStore(None)
    client = DsClient(account, anchors)
    b_times, r_times, backup, restore = [], [], None, None
    for _ in range(repeat):
        t = time.perf_counter()
        backup = client.backup(archive_bytes, backup_id)
        b_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        restore = client.restore(backup_id)
        from host.archive import Archive
        verify_archive(Archive.from_bytes(restore.archive or b""), identity.trust, identity.decryptor)
        r_times.append(time.perf_counter() - t)
        assert restore.archive == archive_bytes
    assert backup is not None and restore is not None
    return {"peer": name, "backup_s": statistics.median(b_times), "backup_wire": backup.bytes_sent + backup.bytes_received,
            "backup_msgs": backup.messages, "restore_s": statistics.median(r_times),
            "restore_wire": restore.bytes_sent + restore.bytes_received, "restore_msgs": restore.messages}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--max-msg-size", type=int, default=65536, help="MaxMsgSize of the client and both servers")
    ap.add_argument("--no-syncevolution", action="store_true")
    ap.add_argument("--modes", nargs="+", default=["two-way", "refresh"], choices=["two-way", "refresh"],
                    help="backup modes to measure (two-way is the default of DsAccount)")
    ap.add_argument("--time-limit", type=int, default=600)
    args = ap.parse_args()
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(SystemExit("bench_ds: time limit reached")))
    signal.alarm(args.time_limit)

    work = Path(tempfile.mkdtemp(prefix="bench-ds-"))
    identity = generate_identity(work / "keys")
    store = DsStore(f"sqlite:///{work / 'ds.db'}")
    store.add_user("bench", "bench-pw")
    se_url = None
    SE_ENV["SYNCEVO_MAXMSG"] = str(args.max_msg_size)  # both peers then announce the same MaxMsgSize
    if not args.no_syncevolution:
        syncevolution("reset")
        se_url = syncevolution("start")
    rows = []
    try:
        with run_server_in_thread(store, max_msg_size=args.max_msg_size) as srv:
            for size in args.sizes:
                tree = generate_tree(size, seed=7)
                t = time.perf_counter()
                archive = backup_tree(tree, identity)
                make_s = time.perf_counter() - t
                data, bid = archive.to_bytes(), archive.backup_id.hex()
                peers = [("simvault", srv.url, "bench-dev")]
                if se_url:
                    peers.append(("SyncEvolution", se_url, "bench-dev"))
                for name, url, dev in peers:
                    for mode in args.modes:
                        acc = DsAccount(url=url, username="bench", password="bench-pw", device_id=dev,
                                        max_msg_size=args.max_msg_size, backup_mode=mode)
                        row = run_peer(name, acc, data, bid, identity, args.repeat)
                        row.update(tree=len(write_tnds(tree)), archive=len(data), make_s=make_s, mode=mode)
                        rows.append(row)
    finally:
        if se_url:
            syncevolution("stop")
        store.close()
    head = (f"{'tree B':>9} {'archive B':>9} {'make s':>7} {'peer':<14} {'mode':<8} {'backup s':>8} {'wire B':>9} {'msgs':>4} "
            f"{'restore s':>9} {'wire B':>9} {'msgs':>4}")
    print(f"DS backup/restore, median of {args.repeat}, client MaxMsgSize {args.max_msg_size}, "
          f"SyncEvolution MaxMsgSize {SE_ENV['SYNCEVO_MAXMSG']}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['tree']:>9} {r['archive']:>9} {r['make_s']:>7.3f} {r['peer']:<14} {r['mode']:<8} {r['backup_s']:>8.3f} "
              f"{r['backup_wire']:>9} {r['backup_msgs']:>4} {r['restore_s']:>9.3f} {r['restore_wire']:>9} "
              f"{r['restore_msgs']:>4}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
