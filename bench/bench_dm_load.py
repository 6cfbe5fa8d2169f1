"""DM server load: N agents at once, each doing a full server-initiated backup to the server.

    .venv/bin/python bench/bench_dm_load.py                 # N = 10 50 200, SQLite and PostgreSQL
    .venv/bin/python bench/bench_dm_load.py --n 10 --db sqlite --timeout 60

Everything runs on loopback: the DM server (aiohttp, real database), N device
agents (each with its own tree, keys and notification listener). For each N
the jobs are queued together; the server notifies every device (Package 0),
each device backs up, reports (Generic Alert) and uploads its archive (large
object over several messages). Measured: wall time until every job finished,
DM sessions per second, job latency (queued -> stored) p50/p99, and that every
archive is stored and verifies against its device's key. PostgreSQL is a
throwaway cluster (host.dm.server.pgcluster); skipped with a note if not installed.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from host.dm.agent.core import AgentConfig, DMAgent  # noqa: E402
from host.dm.server.backup_plugin import verify_uploaded_archive  # noqa: E402
from host.dm.server.registry import register_device  # noqa: E402
from host.dm.server.webapp import ServerThread, build_server, create_job_checked  # noqa: E402
from host.backup.keys import generate_identity  # noqa: E402
from host.tree.tnds import read_tnds, write_tnds  # noqa: E402

TREE = ROOT / "tests" / "data" / "phone_tree.tnds.xml"
# (db, N) -> (wall s, sess/s, p50 s, p99 s) measured on this 2-core machine before the DM review
# pass (serial ticker over ORM rows, pool pre-ping, 8 PostgreSQL workers, a full-tree walk per save,
# the bench polling every finished job): printed beside each new run
BEFORE = {("sqlite", 10): (0.62, 32.3, 0.43, 0.53), ("sqlite", 50): (2.60, 38.5, 2.09, 2.49),
          ("sqlite", 200): (12.76, 31.3, 9.63, 12.06), ("postgres", 10): (0.87, 22.9, 0.51, 0.81),
          ("postgres", 50): (3.94, 25.4, 1.74, 3.80), ("postgres", 200): (18.22, 22.0, 7.59, 15.16)}
PASSWORD, SERVER_PASSWORD = "bench-device-pw", "bench-server-pw"


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def run_one(db_url: str, n: int, work: Path, timeout: float) -> dict:
    web = build_server(db_url, admin_token="bench", tick_interval=0.05, max_msg_size=16 * 1024)
    thread = ServerThread(web).start()
    store = web.server.store
    base_tree = TREE.read_bytes()
    agents: list[DMAgent] = []
    try:
        for i in range(n):
            d = work / f"dev{i}"
            d.mkdir(parents=True)
            device_id = f"IMEI:35{i:013d}"
            tree = read_tnds(base_tree)
            tree.replace("./DevInfo/DevId", device_id)
            (d / "tree.xml").write_bytes(write_tnds(tree))
            ident = generate_identity(d / "keys")
            register_device(store, "simvault-dms", device_id, PASSWORD, SERVER_PASSWORD,
                            public_key_pem=(d / "keys" / "device.sign.pub.pem").read_bytes())
            agents.append(DMAgent(AgentConfig(tree=d / "tree.xml", server_url=f"{thread.url}/dm", device_id=device_id,
                                              key_dir=d / "keys", password=PASSWORD, server_password=SERVER_PASSWORD,
                                              max_msg_size=4096, policy_poll=5.0, retry_interval=1.0),
                                  identity=ident))
        t_setup = time.monotonic()
        for a in agents:
            a.start()
        for a in agents:
            a.wait_idle(60)
        setup = time.monotonic() - t_setup
        sessions_before = len(store.sessions(limit=100_000))
        t0 = time.monotonic()
        jobs = [create_job_checked(web.server, a.device_id, "backup", "server", notify=False) for a in agents]
        deadline = time.monotonic() + timeout
        pending = {j["id"] for j in jobs}
        while pending and time.monotonic() < deadline:
            # a light poll (ids of open jobs, no ORM rows): the bench shares the GIL with the server
            pending &= {row.id for row in store.open_job_summaries()}
            time.sleep(0.05)
        wall = time.monotonic() - t0
        final = [store.job(j["id"]) for j in jobs]
        latencies = [f["finished_at"] - f["created_at"] for f in final if f and f["state"] == "succeeded"]
        sessions = len(store.sessions(limit=100_000)) - sessions_before
        verified = 0
        for a in agents:
            for b in store.backups(a.device_id):
                data = store.backup_archive(a.device_id, b["backup_id"])
                key = store.device(a.device_id).public_key
                verify_uploaded_archive(data, a.device_id, key)
                verified += 1
        return {"n": n, "wall": wall, "setup": setup, "ok": len(latencies), "failed": n - len(latencies), "sessions": sessions,
                "rate": sessions / wall if wall else 0.0, "p50": percentile(latencies, 50),
                "p99": percentile(latencies, 99), "verified": verified,
                "mean": statistics.fmean(latencies) if latencies else float("nan")}
    finally:
        with ThreadPoolExecutor(max_workers=32) as pool:  # each stop waits for its threads
            list(pool.map(lambda a: a.stop(), agents))
        thread.stop()
        store.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[10, 50, 200])
    ap.add_argument("--db", nargs="+", choices=("sqlite", "postgres"), default=["sqlite", "postgres"])
    ap.add_argument("--timeout", type=float, default=180.0, help="seconds allowed per run")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    rows = []
    for db in args.db:
        pg = None
        if db == "postgres":
            from host.dm.server.pgcluster import PostgresUnavailable, TempPostgres
            try:
                pg = TempPostgres().start()
            except PostgresUnavailable as exc:
                print(f"postgres skipped: {exc}")
                continue
        try:
            for n in args.n:
                work = Path(tempfile.mkdtemp(prefix="simvault-bench-dm-"))
                try:
                    if pg is not None:
                        pg.reset()
                    url = pg.url if pg is not None else f"sqlite:///{work}/dm.db"
                    row = run_one(url, n, work, args.timeout)
                    rows.append((db, row))
                    print(f"{db} N={n}: {row['ok']}/{n} ok in {row['wall']:.2f} s (setup {row['setup']:.1f} s)",
                          flush=True)
                finally:
                    shutil.rmtree(work, ignore_errors=True)
        finally:
            if pg is not None:
                pg.stop()
    print()
    print(f"{'db':9} {'agents':>6} {'ok':>5} {'failed':>6} {'verified':>8} {'wall s':>7} {'sessions':>8} "
          f"{'sess/s':>7} {'p50 s':>7} {'p99 s':>7}")
    for db, r in rows:
        print(f"{db:9} {r['n']:>6} {r['ok']:>5} {r['failed']:>6} {r['verified']:>8} {r['wall']:>7.2f} "
              f"{r['sessions']:>8} {r['rate']:>7.1f} {r['p50']:>7.2f} {r['p99']:>7.2f}")
    compared = [(db, r, BEFORE[(db, r["n"])]) for db, r in rows if (db, r["n"]) in BEFORE]
    if compared:
        print()
        print(f"{'db':9} {'agents':>6} {'wall s before -> now':>22} {'sess/s before -> now':>22} "
              f"{'p50 s before -> now':>21} {'p99 s before -> now':>21}")
        for db, r, (wall, rate, p50, p99) in compared:
            print(f"{db:9} {r['n']:>6} {wall:>10.2f} -> {r['wall']:>7.2f} {rate:>10.1f} -> {r['rate']:>7.1f} "
                  f"{p50:>9.2f} -> {r['p50']:>7.2f} {p99:>9.2f} -> {r['p99']:>7.2f}")
    return 0 if all(r["failed"] == 0 and r["verified"] == r["n"] for _, r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
