"""Every backup the DM server knows of, wherever it lives (`simvault dm backups`).

server  archives stored in the database (table ``backups``), plus those kept from a removed
        device (``retired_backups``, location ``server (removed device)``)
card    from the results of succeeded card backups (Generic Alert ``location=card;id=..;size=..``),
        minus those a succeeded card delete removed since
ds      from ``ds_backup_records`` (host.dm.server.ds_jobs.DsBackupRecorder)

The card and DS rows are what the devices reported: the DM server does not hold those archives.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import select

from host.dm.server.db import Job, Result, Store

LOCATIONS = ("server", "card", "ds")


def card_backups(store: Store, device_id: str | None = None) -> list[dict[str, Any]]:
    """Card backups reported by succeeded backup jobs, newest first, without the deleted ones."""
    with store.reading() as s:
        q = (select(Result, Job.kind, Job.target).join(Job, Result.job_id == Job.id)
             .where(Job.state == "succeeded", Job.target == "card", Job.kind.in_(("backup", "delete")))
             .order_by(Result.id))
        if device_id:
            q = q.where(Result.device_id == device_id)
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for res, kind, _target in s.execute(q):
            data = res.data or {}
            bid = str(data.get("id", "")).lower()
            if not bid or str(data.get("code", res.code)) != "200":
                continue
            key = (res.device_id, bid)
            if kind == "delete":
                found.pop(key, None)
                continue
            size = str(data.get("size", ""))
            found[key] = {"location": "card", "device_id": res.device_id, "backup_id": bid,
                          "size": int(size) if size.isdigit() else None, "created_at": res.received_at,
                          "job_id": res.job_id}
    return sorted(found.values(), key=lambda b: b["created_at"], reverse=True)


def all_backups(store: Store, device_id: str | None = None) -> list[dict[str, Any]]:
    """Server, card and DS backups, each with a ``location``; server rows keep every field of
    /api/backups. Ordered by device, then newest first."""
    rows: list[dict[str, Any]] = [{"location": "server", **b} for b in store.backups(device_id)]
    rows += [{"location": "server (removed device)", **b} for b in store.retired_backups(device_id)]
    rows += card_backups(store, device_id)
    try:
        from host.dm.server.ds_jobs import ds_backups
    except ImportError:  # the DS part is optional
        ds_rows: list[dict[str, Any]] = []
    else:
        ds_rows = [{"location": "ds", "device_id": r["device_id"], "backup_id": r["backup_id"], "size": r["size"],
                    "created_at": r["created"], "job_id": r["job_id"], "url": r["url"],
                    "datastore": r["datastore"], "username": r["username"]} for r in ds_backups(store, device_id)]
    rows += ds_rows
    return sorted(rows, key=lambda b: (b["device_id"], -(b.get("created_at") or 0)))
