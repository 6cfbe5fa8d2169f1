"""The console's fleet and device pages against a database full of stored archives.

    .venv/bin/python bench/bench_console.py                  # 50 and 200 devices, 4 backups each, 500 KB
    .venv/bin/python bench/bench_console.py --devices 20 --backups 2 --size 100000 --db sqlite

Measured: the time to build the fleet page (/console/: the data of every device and its newest
backups, then the template) and one device's page, median of --repeat runs. The baseline column
is the same page with Store.backups as it was before the console (it loaded every archive's bytes
to list them), rerun in the same run on the same database. Archives are random bytes of --size:
the pages never open them. PostgreSQL is a throwaway cluster (host.dm.server.pgcluster).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402

from host.dm.server.console import fleet  # noqa: E402
from host.dm.server.console.views import HERE  # noqa: E402
from host.dm.server.db import BackupRow, Store, backup_public  # noqa: E402
from host.dm.server.registry import register_device  # noqa: E402


def eager_backups(self: Store, device_id: str | None = None) -> list[dict[str, Any]]:
    """Store.backups before the console: the archive column came along with every row."""
    with self.reading() as s:
        q = select(BackupRow).order_by(BackupRow.device_id, BackupRow.sequence)
        if device_id:
            q = q.where(BackupRow.device_id == device_id)
        return [backup_public(r) for r in s.scalars(q)]


def fill(store: Store, devices: int, backups: int, size: int) -> str:
    for i in range(devices):
        dev = f"IMEI:{i:015d}"
        register_device(store, "simvault-dms", dev, "device-password", "server-password")
        for k in range(backups):
            store.store_backup(dev, os.urandom(16).hex(), 1000 + k, os.urandom(size),
                               {"sequence": 1000 + k, "scope": ["."], "secrets": "included", "format": 3}, None)
    return f"IMEI:{devices // 2:015d}"


def median_ms(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm (page cache, template compilation)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def pages(store: Store, device_id: str) -> tuple[Callable[[], Any], Callable[[], Any]]:
    from jinja2 import Environment, FileSystemLoader
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True)
    ctx = {"csrf": "x", "logged_in": True}

    def fleet_page() -> str:
        return env.get_template("fleet.html").render(devices=fleet.fleet(store), key_ids=[], **ctx)

    def device_page() -> str:
        return env.get_template("device.html").render(d=fleet.device(store, device_id), ds_accounts=[], **ctx)
    return fleet_page, device_page


def run(db_url: str, devices: int, backups: int, size: int, repeat: int) -> list[str]:
    store = Store(db_url)
    try:
        device_id = fill(store, devices, backups, size)
        fleet_page, device_page = pages(store, device_id)
        now = (median_ms(fleet_page, repeat), median_ms(device_page, repeat))
        current = Store.backups
        Store.backups = eager_backups  # type: ignore[method-assign]
        try:
            before = (median_ms(fleet_page, repeat), median_ms(device_page, repeat))
        finally:
            Store.backups = current  # type: ignore[method-assign]
        total_mb = devices * backups * size / 1e6
        return [store.dialect, str(devices), str(devices * backups), f"{total_mb:.0f}",
                f"{before[0]:.1f} -> {now[0]:.1f}", f"{before[1]:.1f} -> {now[1]:.1f}"]
    finally:
        store.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, nargs="+", default=[50, 200])
    ap.add_argument("--backups", type=int, default=4, help="server backups per device")
    ap.add_argument("--size", type=int, default=500_000, help="bytes per archive")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    args = ap.parse_args()
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-console-"))
    try:
        for n in args.devices:
            if args.db in ("sqlite", "both"):
                rows.append(run(f"sqlite:///{tmp}/dm-{n}.db", n, args.backups, args.size, args.repeat))
            if args.db in ("postgres", "both"):
                from host.dm.server.pgcluster import TempPostgres
                try:
                    with TempPostgres() as pg:
                        rows.append(run(pg.url, n, args.backups, args.size, args.repeat))
                except Exception as exc:  # noqa: BLE001 - a bench without PostgreSQL still prints SQLite
                    print(f"postgres skipped: {exc}", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    head = ["db", "devices", "backups", "archives MB", "fleet page ms before -> now", "device page ms before -> now"]
    print("| " + " | ".join(head) + " |")
    print("| " + " | ".join("---" if i == 0 else "---:" for i in range(len(head))) + " |")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
