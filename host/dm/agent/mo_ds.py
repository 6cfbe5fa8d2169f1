"""Backup through Data Sync (use case 3): the Backup MO's BackupViaDS / RestoreViaDS.

Device agent side (register with :func:`register_agent_handlers`):

    Exec ./Vendor/simvault/BaR/Operations/BackupViaDS
         Data "url=<DS URL>;datastore=<name>;user=<u>;password=<p>[;auth=basic|md5][;device-id=<DevID>]
               [;mode=refresh|two-way][;scope=URI URI][;exclude-secrets=1]"
      -> 202; after the session the agent makes an archive of its live tree
         (host.backup.ops, under ARCHIVE_LOCK), runs a DS session (host.ds; mode
         two-way by default: Replace new then Delete older; refresh = Alert 203),
         records Backups/<id> (Location "ds") and LastResult, and reports a
         Generic Alert 1226: code, id, location=ds, size, items, bytes, ds-status, message.
    Exec .../RestoreViaDS, Data as above plus ";id=<hex>" (optional when the datastore holds one)
      -> 202; DS refresh-from-server, the archive is parsed and then fully
         verified (signature, hashes, sequence) before the live tree is touched,
         applied all-or-nothing; Generic Alert 1226 as above.
    On any failure: the tree and the previous backups stay as they were, and the
    alert carries the failure (code 500, ds-status = the DS status, message).

DM server side: :class:`DsBackupRecorder` (a host.dm.server.plugin ServerPlugin placed
before BackupPlugin) keeps a record of where each DS backup lives (table
``ds_backup_records``: device, backup id, DS url, datastore, user, size, items,
bytes, time) and returns None so BackupPlugin still records the result and the
job state. :func:`command_backup_via_ds` / :func:`command_restore_via_ds` queue
the jobs; the DS password goes to an encrypted DS account (host.dm.server.ds_accounts),
the job names the account, and the BackupPlugin puts the cleartext only into the
Exec it sends in the authenticated session.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from sqlalchemy import BigInteger, Float, Integer, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from host.dm.agent.bar import ARCHIVE_LOCK, _clean, _record_last, _result, apply_archive
from host.dm.agent.commands import (
    AlertReport,
    ExecOutcome,
    ExecRequest,
    register_exec_handler,
)
from host.dm.agent.tree import BAR
from host.dm.server.ds_accounts import default_account_name, ds_account, set_ds_account
from host.dm.session import format_kv, parse_kv
from host.ds.backup import backup_tree_via_ds, fetch_archive_via_ds
from host.ds.client import DsAccount
from host.ds.errors import DsError
from host.ds.state import AnchorStore
from host.errors import SimvaultError, SyncMLError, UsageError
from host.syncml import model as m
from host.syncml.status import StatusCode

if TYPE_CHECKING:
    from host.dm.agent.core import DMAgent
    from host.dm.server.db import Store
    from host.dm.server.engine import DMServer
    from host.dm.server.plugin import SessionContext

log = logging.getLogger(__name__)

OPS = f"{BAR}/Operations"
RESULT_TYPE = "urn:simvault:bar:result:1.0"
ANCHOR_SUFFIX = ".ds-state.json"
_MODE_NAMES = {200: "two-way", 201: "slow sync", 203: "refresh from client"}


# ================================================================== agent side
def _account(opts: dict[str, str], agent: DMAgent) -> DsAccount:
    url, user = opts.get("url", ""), opts.get("user", "")
    if not url.startswith(("http://", "https://")) or not user:
        raise UsageError("BackupViaDS needs url=http(s)://... and user=")
    auth = opts.get("auth", "basic")
    if auth not in ("basic", "md5"):
        raise UsageError(f"auth={auth[:10]}: use basic or md5")
    mode = opts.get("mode", "two-way")  # the safe default: docs/DS.md "Backup modes"
    if mode not in ("refresh", "two-way"):
        raise UsageError(f"mode={mode[:10]}: use refresh or two-way")
    return DsAccount(url=url, username=user, password=opts.get("password", ""),
                     datastore=opts.get("datastore", "backup") or "backup",
                     device_id=opts.get("device-id") or agent.device_id, auth=auth, backup_mode=mode)


def anchors_for(agent: DMAgent) -> AnchorStore:
    """The agent's DS anchors, beside its tree file."""
    tree_path = Path(agent.config.tree)
    return AnchorStore(tree_path.with_name(tree_path.name + ANCHOR_SUFFIX))


def _failure(operation: str, agent: DMAgent, exc: SimvaultError, **kv: object) -> AlertReport:
    ds_status = exc.status if isinstance(exc, DsError) else 500
    log.warning("%s failed: %s", operation, exc)
    with agent.tree.lock:
        _record_last(agent, operation, StatusCode.COMMAND_FAILED, str(exc))
    try:
        agent.tree.save()
    except SimvaultError:
        pass
    return _result(StatusCode.COMMAND_FAILED, location="ds", **{"ds-status": ds_status}, **kv,
                   message=_clean(str(exc)))


def run_backup_via_ds(agent: DMAgent, account: DsAccount, scope: list[str] | None,
                      exclude_secrets: bool) -> AlertReport:
    """Archive the live tree (minus the Backup MO) and store it in the DS datastore."""
    try:
        snapshot = agent.tree.snapshot_for_backup()
        outcome = backup_tree_via_ds(snapshot, agent.identity, account, anchors_for(agent), scope=scope,
                                     exclude_secrets=exclude_secrets, device_id=agent.device_id,
                                     archive_lock=ARCHIVE_LOCK)  # zstd compressor not thread-safe
        bid = outcome.backup_id
        node = f"{BAR}/Backups/{bid}"
        with agent.tree.lock:
            agent.tree.set_leaf(f"{node}/ID", bid)
            agent.tree.set_leaf(f"{node}/Time", str(int(time.time())), "int")
            agent.tree.set_leaf(f"{node}/Size", str(outcome.size), "int")
            agent.tree.set_leaf(f"{node}/Hash", outcome.sha256)
            agent.tree.set_leaf(f"{node}/Location", "ds")
            agent.tree.set_leaf(f"{node}/Sequence", str(outcome.sequence), "int")
            agent.tree.set_leaf(f"{node}/Status", "ok")
            _record_last(agent, "BackupViaDS", 200, f"backup to DS datastore {account.datastore}", bid)
        agent.tree.save()
        ds = outcome.ds
        return _result(200, id=bid, location="ds", size=outcome.size, items=ds.items,
                       bytes=ds.bytes_sent + ds.bytes_received, **{"ds-status": ds.status},
                       message=_clean(f"backup via DS ({_MODE_NAMES.get(ds.mode, ds.mode)})"))
    except SimvaultError as exc:
        return _failure("BackupViaDS", agent, exc)


def run_restore_via_ds(agent: DMAgent, account: DsAccount, backup_id: str | None, keep_secrets: bool,
                       force_device: bool) -> AlertReport:
    """Fetch over DS, verify completely, then apply all-or-nothing and save atomically."""
    try:
        archive, ds = fetch_archive_via_ds(account, anchors_for(agent), backup_id)
        apply_archive(agent, archive, keep_secrets=keep_secrets, force_device=force_device)
        bid = archive.backup_id.hex()
        with agent.tree.lock:
            _record_last(agent, "RestoreViaDS", 200, f"restored from DS datastore {account.datastore}", bid)
        agent.tree.save()
        return _result(200, id=bid, location="ds", size=len(archive.to_bytes()), items=ds.items,
                       bytes=ds.bytes_sent + ds.bytes_received, **{"ds-status": ds.status},
                       message="restored via DS")
    except (SimvaultError, ValueError) as exc:
        err = exc if isinstance(exc, SimvaultError) else SimvaultError(str(exc))
        return _failure("RestoreViaDS", agent, err, id=backup_id or "")


def _accept_via_ds(req: ExecRequest,
                   plan: Callable[[DMAgent, dict[str, str], DsAccount], Callable[[], AlertReport]]) -> ExecOutcome:
    """400 when the Exec's key=value options or the DS account they name are bad; else 202
    and the work ``plan`` makes from them (planned now, run after the session)."""
    try:
        opts = parse_kv(req.data)
    except SyncMLError:
        return ExecOutcome(StatusCode.BAD_REQUEST)
    try:
        account = _account(opts, req.agent)
    except UsageError:
        return ExecOutcome(StatusCode.BAD_REQUEST)
    return ExecOutcome(StatusCode.ACCEPTED_FOR_PROCESSING, plan(req.agent, opts, account))


def _plan_backup(agent: DMAgent, opts: dict[str, str], account: DsAccount) -> Callable[[], AlertReport]:
    scope_text = opts.get("scope") or agent.tree.value(f"{BAR}/Config/Scope", ".") or "."
    scope = scope_text.split() if scope_text.strip() not in ("", ".") else None
    excl = opts.get("exclude-secrets", agent.tree.value(f"{BAR}/Config/ExcludeSecrets", "false") or "false")
    exclude = excl.lower() in ("1", "true", "yes")
    return lambda: run_backup_via_ds(agent, account, scope, exclude)


def _plan_restore(agent: DMAgent, opts: dict[str, str], account: DsAccount) -> Callable[[], AlertReport]:
    backup_id = opts.get("id", "").lower() or None
    keep = opts.get("keep-secrets", "0") in ("1", "true")
    force = opts.get("force-device", "0") in ("1", "true")
    return lambda: run_restore_via_ds(agent, account, backup_id, keep, force)


def exec_backup_via_ds(req: ExecRequest) -> ExecOutcome:
    return _accept_via_ds(req, _plan_backup)


def exec_restore_via_ds(req: ExecRequest) -> ExecOutcome:
    return _accept_via_ds(req, _plan_restore)


def register_agent_handlers() -> None:
    """Route Exec on Operations/BackupViaDS and RestoreViaDS to this module."""
    register_exec_handler("BaR/Operations/BackupViaDS", exec_backup_via_ds)
    register_exec_handler("BaR/Operations/RestoreViaDS", exec_restore_via_ds)


# ================================================================== server side
class _Base(DeclarativeBase):
    pass


class DsBackupRecord(_Base):
    """Where a device's DS backup lives (no password: the operator supplies it per job)."""

    __tablename__ = "ds_backup_records"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[str] = mapped_column(String(128), index=True)
    backup_id: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(String(512))
    datastore: Mapped[str] = mapped_column(String(128))
    username: Mapped[str] = mapped_column(String(128))
    size: Mapped[int] = mapped_column(BigInteger)
    items: Mapped[int] = mapped_column(Integer)
    wire_bytes: Mapped[int] = mapped_column(BigInteger)
    ds_status: Mapped[int] = mapped_column(Integer)
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created: Mapped[float] = mapped_column(Float)


def _tables(store: Store) -> None:
    _Base.metadata.create_all(store.engine, checkfirst=True)


def ds_backups(store: Store, device_id: str | None = None) -> list[dict[str, Any]]:
    """The DS backups the DM server knows of, newest first."""
    _tables(store)
    with Session(store.engine) as s:
        q = select(DsBackupRecord).order_by(DsBackupRecord.id.desc())
        if device_id is not None:
            q = q.where(DsBackupRecord.device_id == device_id)
        return [{c: getattr(r, c) for c in ("device_id", "backup_id", "url", "datastore", "username", "size",
                                            "items", "wire_bytes", "ds_status", "job_id", "created")}
                for r in s.scalars(q)]


def _int(text: str | None) -> int:
    return int(text) if text and text.isdigit() else 0


class DsBackupRecorder:
    """ServerPlugin: records successful BackupViaDS results; never answers alerts itself."""

    name = "simvault-ds"

    def on_session(self, ctx: SessionContext) -> None:
        return None

    def on_status(self, ctx: SessionContext, tag: object, status: m.Status) -> None:
        return None

    def on_results(self, ctx: SessionContext, tag: object, results: m.Results, item: m.Item) -> None:
        return None

    def on_generic_alert(self, ctx: SessionContext, alert: m.Alert, item: m.Item) -> int | None:
        source = item.source.loc_uri if item.source else ""
        if (item.meta is None or item.meta.type != RESULT_TYPE or not source.endswith("Operations/BackupViaDS")
                or not isinstance(item.data, str)):
            return None
        try:
            data = parse_kv(item.data)
        except SyncMLError:
            return None
        backup_id = data.get("id", "")
        if data.get("code") != "200" or not backup_id or not all(c in "0123456789abcdef" for c in backup_id):
            return None
        job = ctx.store.job_by_correlator(ctx.device_id, alert.correlator or "")
        params: dict[str, str] = {}
        if job is not None:
            try:
                params = parse_kv(str((job.get("params") or {}).get("data", "")))
            except SyncMLError:
                params = {}
        _tables(ctx.store)
        with Session(ctx.store.engine) as s, s.begin():
            exists = s.scalar(select(DsBackupRecord).where(DsBackupRecord.device_id == ctx.device_id,
                                                           DsBackupRecord.backup_id == backup_id))
            if exists is None:
                s.add(DsBackupRecord(device_id=ctx.device_id, backup_id=backup_id, url=params.get("url", "")[:512],
                                     datastore=params.get("datastore", "backup")[:128],
                                     username=params.get("user", "")[:128], size=_int(data.get("size")),
                                     items=_int(data.get("items")), wire_bytes=_int(data.get("bytes")),
                                     ds_status=_int(data.get("ds-status")), job_id=job["id"] if job else None,
                                     created=time.time()))
        ctx.store.audit("ds.backup.recorded", ctx.device_id, f"{backup_id} at {params.get('url', '?')[:200]}")
        return None  # BackupPlugin records the result and finishes the job


def _store_and_server(where: "Store | DMServer") -> tuple[Store, "DMServer | None"]:
    from host.dm.server.engine import DMServer
    return (where.store, where) if isinstance(where, DMServer) else (where, None)


def _submitted(server: "DMServer | None", job: dict[str, Any]) -> dict[str, Any]:
    """Given the server, the job takes create_job_checked's path: the device is notified now."""
    return server.submit_job(job) if server is not None else job


def _job_account(store: Store, account: str | None, url: str, user: str, datastore: str, auth: str,
                 password: str | None) -> str:
    """The name of the DS account a job uses: ``password`` given stores it (encrypted at rest);
    None needs it stored already."""
    name = account or default_account_name(url, user, datastore)
    if password is not None:
        set_ds_account(store, name, url, user, password, datastore=datastore, auth=auth)
    elif ds_account(store, name) is None:
        raise UsageError(f"no DS account {name[:80]!r}: give the password once")
    return name


def _job_kv(url: str, datastore: str, user: str, account: str, auth: str) -> dict[str, str | None]:
    """Where a DS job's device reaches its datastore (the Exec data; no password)."""
    return {"url": url, "datastore": datastore, "user": user, "account": account,
            "auth": auth if auth != "basic" else None}


def command_backup_via_ds(where: "Store | DMServer", device_id: str, url: str, user: str, password: str | None, *,
                          datastore: str = "backup", auth: str = "basic", mode: str = "two-way",
                          account: str | None = None) -> dict[str, Any]:
    """Queue a BackupViaDS job for the device; given the DMServer (not only its Store), the
    device is notified at once like create_job_checked does (else the ticker notifies it).

    The password goes to the DS account ``account`` (default ``user@url#datastore``),
    encrypted at rest (host.dm.server.ds_accounts); the job keeps only the account's name.
    ``password`` None reuses the stored account. mode "two-way" (default) keeps the
    previous archive until the new one is complete on every peer; "refresh" is Alert 203."""
    store, server = _store_and_server(where)
    if mode not in ("refresh", "two-way"):
        raise UsageError(f"mode {mode[:10]!r}: use two-way or refresh")
    name = _job_account(store, account, url, user, datastore, auth, password)
    data = format_kv({**_job_kv(url, datastore, user, name, auth), "mode": mode})
    return _submitted(server, store.create_job(device_id, "backup_via_ds", "ds", params={"data": data}))


def command_restore_via_ds(where: "Store | DMServer", device_id: str, password: str | None = None, backup_id: str | None = None, *,
                           url: str | None = None, user: str | None = None, datastore: str | None = None,
                           auth: str = "basic", account: str | None = None) -> dict[str, Any]:
    """Queue a RestoreViaDS job; where the backup lives comes from the DS record unless given.

    ``password`` None uses the stored DS account (the one the backup job created)."""
    store, server = _store_and_server(where)
    records = [r for r in ds_backups(store, device_id) if backup_id is None or r["backup_id"] == backup_id]
    if not records and url is None:
        raise UsageError(f"no DS backup {backup_id or ''} recorded for {device_id}: give url= and user=")
    rec = records[0] if records else {}
    url, user = url or rec["url"], user or rec["username"]
    datastore = datastore or rec.get("datastore", "backup")
    name = _job_account(store, account, url, user, datastore, auth, password)
    data = format_kv({**_job_kv(url, datastore, user, name, auth), "id": backup_id or rec.get("backup_id")})
    return _submitted(server, store.create_job(device_id, "restore_via_ds", "ds",
                                               backup_id=backup_id or rec.get("backup_id"), params={"data": data}))


def ds_job_params(store: Store, kind: str, device_id: str, account: str, backup_id: str | None = None,
                  mode: str = "two-way") -> tuple[dict[str, str], str | None]:
    """The params ({"data": ...}) and backup id of a backup_via_ds / restore_via_ds job that names
    a stored DS account (the admin API's and CLI's path: the password never travels with the job).

    A restore without ``backup_id`` takes the device's newest DS backup record."""
    acct = ds_account(store, account)
    if acct is None:
        raise UsageError(f"no DS account {account[:80]!r} on the DM server: add it with "
                         "'simvault dm ds-account add NAME --url URL --user USER'")
    if mode not in ("refresh", "two-way"):
        raise UsageError(f"mode {mode[:10]!r}: use two-way or refresh")
    kv = _job_kv(acct["url"], acct["datastore"], acct["username"], account, acct["auth"])
    if kind == "backup_via_ds":
        kv["mode"] = mode
        return {"data": format_kv(kv)}, None
    if backup_id is None:
        records = ds_backups(store, device_id)
        if not records:
            raise UsageError(f"no DS backup recorded for {device_id}: give --id")
        backup_id = records[0]["backup_id"]
    kv["id"] = backup_id
    return {"data": format_kv(kv)}, backup_id
