"""Readable output of the `simvault dm` admin commands (tables, one job as text; --json skips it),
and what the server's or an agent's HTTP refusals mean to the user."""
from __future__ import annotations

import json
import time
from typing import Any

from host.errors import DeniedError, SimvaultError, UsageError


def _when(ts: Any) -> str:
    if not isinstance(ts, (int, float)) or not ts:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _fmt_size(n: Any) -> str:
    if not isinstance(n, int):
        return "-"
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1024 * 1024):.1f} MiB"


def table(headers: list[str], rows: list[list[Any]], empty: str) -> str:
    if not rows:
        return empty
    cells = [[str(c) if c is not None and c != "" else "-" for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()  # noqa: E731
    return "\n".join([line(headers), *(line(r) for r in cells)])


def devices_text(rows: list[dict[str, Any]]) -> str:
    return table(["DEVICE", "AUTH", "ENC KEY", "NOTIFY URL", "LAST SEEN"],
                 [[d.get("id"), d.get("auth_type"), d.get("enc_key_id") or "-", d.get("notify_url"),
                   _when(d.get("last_seen"))] for d in rows],
                 "no devices (add one with 'simvault dm device-add')")


def backups_text(rows: list[dict[str, Any]]) -> str:
    def where(b: dict[str, Any]) -> str:
        return f"{b.get('username')}@{b.get('url')}#{b.get('datastore')}" if b.get("location") == "ds" else ""
    return table(["DEVICE", "LOCATION", "BACKUP ID", "SIZE", "CREATED", "JOB", "DS"],
                 [[b.get("device_id"), b.get("location"), b.get("backup_id"), _fmt_size(b.get("size")),
                   _when(b.get("created_at")), b.get("job_id"), where(b)] for b in rows],
                 "no backups known")


def jobs_text(rows: list[dict[str, Any]]) -> str:
    return table(["ID", "DEVICE", "KIND", "TARGET", "STATE", "BACKUP ID", "UPDATED", "REASON"],
                 [[j.get("id"), j.get("device_id"), j.get("kind"), j.get("target"), j.get("state"),
                   j.get("backup_id"), _when(j.get("updated_at")), (j.get("reason") or "")[:60]] for j in rows],
                 "no jobs")


def job_text(job: dict[str, Any]) -> str:
    lines = [f"job {job.get('id')}: {job.get('kind')} {job.get('target')} for {job.get('device_id')} "
             f"-> {job.get('state')}"]
    for label, key in (("backup id", "backup_id"), ("scope", "scope"), ("origin", "origin"),
                       ("reason", "reason")):
        if job.get(key):
            lines.append(f"  {label}: {job[key]}")
    lines.append(f"  created {_when(job.get('created_at'))}, updated {_when(job.get('updated_at'))}")
    for r in job.get("results") or []:
        data = r.get("data") or {}
        shown = ", ".join(f"{k}={v}" for k, v in sorted(data.items()) if k not in ("code", "diff"))
        lines.append(f"  result {r.get('code')}: {shown}")
        if data.get("diff"):  # an agentless restore's diff preview (host.tree.ops.render_diff)
            lines += ["    " + line for line in str(data["diff"]).splitlines()]
    return "\n".join(lines)


def ds_accounts_text(rows: list[dict[str, Any]]) -> str:
    return table(["NAME", "URL", "USER", "DATASTORE", "AUTH", "UPDATED"],
                 [[a.get("name"), a.get("url"), a.get("username"), a.get("datastore"), a.get("auth"),
                   _when(a.get("updated"))] for a in rows],
                 "no DS accounts (add one with 'simvault dm ds-account add')")


def agent_text(doc: dict[str, Any]) -> str:
    """A running agent's answer to `dm agent status|backup-now|restore|sync`."""
    if "queued" in doc:
        return f"agent: {doc['queued']} queued ('simvault dm agent status' shows its sessions)"
    lines = [f"agent for {doc.get('device')}: {doc.get('pending_reports', 0)} report(s) waiting for the server"]
    for r in doc.get("sessions") or []:
        lines.append(f"  session {_when(r.get('at'))}  {'ok' if r.get('ok') else 'failed'}  "
                     f"{r.get('messages', 0)} message(s)" + (f"  {r['reason']}" if r.get("reason") else ""))
    if not doc.get("sessions"):
        lines.append("  no session yet")
    for refused in doc.get("refused_requests") or []:
        lines.append(f"  refused by the server: {refused}")
    return "\n".join(lines)


def refusal(who: str, status: int, body: bytes, token_env: str | None = None) -> SimvaultError:
    """An HTTP error answer of the admin API (token_env given) or of an agent's control listener, as
    the CLI's kind of error (host.cli.exitcodes) with what to do."""
    try:
        message = json.loads(body).get("error", "")
    except (ValueError, AttributeError):
        message = ""
    said = f"{who} answered {status}" + (f": {message}" if message else "")
    if status in (401, 403) and token_env:
        return DeniedError(f"{said}: check --admin-token / ${token_env} (the server's --admin-token)")
    if status == 404 and token_env:
        return UsageError(f"{said}: 'simvault dm devices', 'dm backups' and 'dm jobs' show what the server knows")
    if 400 <= status < 500:
        return UsageError(said if token_env else f"{said}: 'simvault dm agent --help' lists the actions")
    return SimvaultError(f"{said}: its log says more")
