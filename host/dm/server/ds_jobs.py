"""Backup through Data Sync (use case 3), DM server side: where DS backups live, and the DS jobs.

:class:`DsBackupRecorder` (a host.dm.server.plugin ServerPlugin placed before
BackupPlugin) keeps a record of where each DS backup lives (table
``ds_backup_records``: device, backup id, DS url, datastore, user, size, items,
bytes, time) and returns None so BackupPlugin still records the result and the
job state. :func:`command_backup_via_ds` / :func:`command_restore_via_ds` queue
the jobs; the DS password goes to an encrypted DS account (host.dm.server.ds_accounts),
the job names the account, and the BackupPlugin's Exec carries the password sealed
to the device's encryption key (host.backup.sealed). The device side (the Exec handlers
BackupViaDS / RestoreViaDS) is host.dm.agent.mo_ds.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import BigInteger, Float, Integer, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from host.dm.server.ds_accounts import check_credentials_path, default_account_name, ds_account, set_ds_account
from host.dm.session import format_kv, parse_kv
from host.errors import SyncMLError, UsageError
from host.syncml import model as m

if TYPE_CHECKING:
    from host.dm.server.db import Store
    from host.dm.server.engine import DMServer
    from host.dm.server.plugin import SessionContext

log = logging.getLogger(__name__)

RESULT_TYPE = "urn:simvault:bar:result:1.0"


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


def check_ds_job_device(server: "DMServer", device_id: str) -> None:
    """UsageError now, not a failed job later, when the DS password could reach the device only
    in cleartext (no registered encryption key, plain http)."""
    device = server.store.device(device_id)
    if device is not None:
        check_credentials_path(device.enc_key, server.tls, device_id)


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
            "auth": auth}  # always named: agents older than the md5 default assume basic


def command_backup_via_ds(where: "Store | DMServer", device_id: str, url: str, user: str, password: str | None, *,
                          datastore: str = "backup", auth: str = "md5", mode: str = "two-way",
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
    if server is not None:
        check_ds_job_device(server, device_id)
    name = _job_account(store, account, url, user, datastore, auth, password)
    data = format_kv({**_job_kv(url, datastore, user, name, auth), "mode": mode})
    return _submitted(server, store.create_job(device_id, "backup_via_ds", "ds", params={"data": data}))


def command_restore_via_ds(where: "Store | DMServer", device_id: str, password: str | None = None, backup_id: str | None = None, *,
                           url: str | None = None, user: str | None = None, datastore: str | None = None,
                           auth: str = "md5", account: str | None = None) -> dict[str, Any]:
    """Queue a RestoreViaDS job; where the backup lives comes from the DS record unless given.

    ``password`` None uses the stored DS account (the one the backup job created)."""
    store, server = _store_and_server(where)
    if server is not None:
        check_ds_job_device(server, device_id)
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
