"""What the console's pages show, read from the store: the fleet, one device, a job, the audit log.

Plain dicts of display-ready values (the templates only lay them out and escape them). Every
function here runs in the web server's worker pool (database reads).
"""
from __future__ import annotations

import time
from typing import Any

from host.dm.server.backup_index import LOCATIONS, all_backups
from host.dm.server.db import FINAL_STATES, Store

# what "verified" means at each destination: the server checks only what it holds
VERIFIED = {
    "server": "verified by the server on arrival (signature by the device's key, every chunk hash)",
    "card": "checked by the card at commit (signature); reported by the device",
    "ds": "reported by the device; the archive is on the DS server, the DM server has not checked it",
}


def age(seconds_ago: float | None) -> str:
    """A short human age: '42 s', '5 min', '3 h', '12 d'."""
    if seconds_ago is None:
        return "never"
    s = max(0, int(seconds_ago))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s // size} {unit}"
    return f"{s} s"


def when(stamp: float | None, now: float | None = None) -> dict[str, Any]:
    """A timestamp as the pages show it: UTC time and age."""
    if stamp is None:
        return {"utc": "", "age": "never"}
    now = time.time() if now is None else now
    return {"utc": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(stamp)), "age": age(now - stamp)}


def _backup_view(b: dict[str, Any], now: float) -> dict[str, Any]:
    loc = "server" if b["location"].startswith("server") else b["location"]
    meta = b.get("meta") or {}
    verified = VERIFIED[loc] if loc != "server" or b.get("verified_at") else "not verified"
    return {"location": b["location"], "kind": loc, "backup_id": b["backup_id"], "size": b.get("size"),
            "sequence": b.get("sequence", meta.get("sequence")), "created": when(b.get("created_at"), now),
            "verified": verified, "verified_ok": loc != "server" or bool(b.get("verified_at")),
            "job_id": b.get("job_id"), "scope": " ".join(meta.get("scope") or []),
            "secrets": meta.get("secrets", ""), "format": meta.get("format"),
            "restorable": b["location"] in LOCATIONS, "ds_url": b.get("url") or "", "ds_user": b.get("username") or ""}


def fleet(store: Store) -> list[dict[str, Any]]:
    """Every device with its newest backup per destination (server, card, DS) and its open jobs."""
    now = time.time()
    newest: dict[tuple[str, str], dict[str, Any]] = {}
    for b in all_backups(store):          # per device, newest first
        if b["location"] in LOCATIONS:
            newest.setdefault((b["device_id"], b["location"]), _backup_view(b, now))
    open_jobs: dict[str, int] = {}
    for j in store.jobs(states=("queued", "notified", "running"), limit=1000):
        open_jobs[j["device_id"]] = open_jobs.get(j["device_id"], 0) + 1
    return [{"id": d["id"], "auth": d["auth_type"], "last_seen": when(d.get("last_seen"), now),
             "signing_key": d["has_public_key"], "open_jobs": open_jobs.get(d["id"], 0),
             "last": {loc: newest.get((d["id"], loc)) for loc in LOCATIONS}}
            for d in store.devices()]


def device(store: Store, device_id: str) -> dict[str, Any] | None:
    """One device: its row, every backup it has anywhere (newest first), its jobs."""
    row = store.device(device_id)
    if row is None:
        return None
    now = time.time()
    backups = [_backup_view(b, now) for b in all_backups(store, device_id)]
    return {"id": row.id, "auth": row.auth_type, "last_seen": when(row.last_seen, now),
            "signing_key": row.public_key is not None, "default_target": row.default_target,
            "notify_url": row.notify_url or "(reported by the agent)",
            "backups": backups,
            "server_backups": sorted((b for b in backups if b["location"] == "server"),
                                     key=lambda b: b["sequence"] or 0),   # oldest first: the diff form
            "jobs": [job_view(j, now) for j in store.jobs(device_id, limit=50)]}


def job_view(job: dict[str, Any], now: float | None = None, *, renotify_after: float = 30.0,
             notified_timeout: float = 300.0, running_timeout: float = 900.0) -> dict[str, Any]:
    """A job with a sentence that says what it waits for: a job is never in a state the page does
    not explain."""
    now = time.time() if now is None else now
    state = job["state"]
    waiting = {
        "queued": f"waiting to reach the device: the server could not notify it yet and tries again "
                  f"every {renotify_after:.0f} s",
        "notified": f"the device was notified; waiting for it to connect (the job fails after "
                    f"{notified_timeout:.0f} s without it)",
        "running": f"the device is working on it (the job fails after {running_timeout:.0f} s without "
                   "a result)",
        "succeeded": "done",
        "failed": "failed: see the reason",
    }.get(state, state)
    return {"id": job["id"], "device_id": job["device_id"], "kind": job["kind"], "target": job["target"],
            "backup_id": job.get("backup_id") or "", "scope": job.get("scope") or "", "state": state,
            "final": state in FINAL_STATES, "ok": state == "succeeded", "reason": job.get("reason") or "",
            "explain": waiting, "origin": job.get("origin", ""), "attempts": job.get("attempts", 0),
            "created": when(job.get("created_at"), now), "updated": when(job.get("updated_at"), now),
            "finished": when(job.get("finished_at"), now) if job.get("finished_at") else None}


def job(store: Store, job_id: int, **timeouts: float) -> dict[str, Any] | None:
    row = store.job(job_id)
    if row is None:
        return None
    view = job_view(row, **timeouts)
    view["results"] = [{"code": r["code"], "received": when(r["received_at"]),
                        "data": "; ".join(f"{k}={v}" for k, v in sorted((r.get("data") or {}).items()))}
                       for r in store.results(job_id)]
    return view


def audit(store: Store, device_id: str | None = None, limit: int = 300) -> list[dict[str, Any]]:
    now = time.time()
    return [{"at": when(a["at"], now), "device_id": a.get("device_id") or "", "event": a["event"],
             "detail": a.get("detail") or ""} for a in store.audit_log(device_id, limit=limit)]
