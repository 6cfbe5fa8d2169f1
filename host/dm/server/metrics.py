"""GET /metrics: the DM server's state in the Prometheus text exposition format (0.0.4).

Counts come from the database, so every instance over one database reports the same
fleet-wide figures (sum nothing across instances but ``simvault_dm_sessions_open``,
which is this process's own). One read-only transaction, a handful of aggregate
queries: cheap enough for a 15 s scrape interval with 10^6 devices on indexed columns.
No device id, user name or secret ever appears in a label.
"""
from __future__ import annotations

from typing import Iterable

from sqlalchemy import func, select

from host.dm.server.tables import Audit, BackupRow, Device, Job, SessionRow

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
AUTH_FAILURE_EVENTS = ("auth.failed", "auth.unknown_device", "auth.refused")


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _family(name: str, kind: str, help_text: str, samples: Iterable[tuple[dict[str, object], float]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        lines.append(f"{name}{{{text}}} {value:g}" if text else f"{name} {value:g}")
    return lines


def render(store, open_sessions: int) -> str:  # type: ignore[no-untyped-def]
    """The whole exposition; ``store`` is a host.dm.server.db.Store."""
    with store.reading() as s:
        devices = s.scalar(select(func.count()).select_from(Device)) or 0
        sessions = s.execute(select(SessionRow.state, func.count()).group_by(SessionRow.state)).all()
        jobs = s.execute(select(Job.kind, Job.state, func.count()).group_by(Job.kind, Job.state)).all()
        backups, backup_bytes = s.execute(select(func.count(), func.coalesce(func.sum(BackupRow.size), 0))).one()
        auth_failures = s.scalar(select(func.count()).select_from(Audit)
                                 .where(Audit.event.in_(AUTH_FAILURE_EVENTS))) or 0
    out: list[str] = []
    out += _family("simvault_dm_devices", "gauge", "Registered devices.", [({}, devices)])
    out += _family("simvault_dm_sessions_open", "gauge", "DM sessions open in this server process.",
                   [({}, open_sessions)])
    out += _family("simvault_dm_sessions", "gauge", "DM sessions recorded, by state (open, ended, failed).",
                   [({"state": state}, n) for state, n in sorted(sessions)])
    out += _family("simvault_dm_jobs", "gauge", "Jobs by kind and state.",
                   [({"kind": kind, "state": state}, n) for kind, state, n in sorted(jobs)])
    out += _family("simvault_dm_backups_stored", "gauge", "Backups stored on the server.", [({}, backups)])
    out += _family("simvault_dm_backup_bytes", "gauge", "Bytes of the backups stored on the server.",
                   [({}, backup_bytes)])
    out += _family("simvault_dm_auth_failures_total", "counter",
                   "Messages refused for their credentials or an unknown device (audit log).",
                   [({}, auth_failures)])
    return "\n".join(out) + "\n"
