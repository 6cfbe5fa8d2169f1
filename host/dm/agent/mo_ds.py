"""Backup through Data Sync (use case 3): the Backup MO's BackupViaDS / RestoreViaDS.

Device agent side (registered by host.dm.agent.handlers):

    Exec ./Vendor/simvault/BaR/Operations/BackupViaDS
         Data "url=<DS URL>;datastore=<name>;user=<u>;sealed=<b64>[;auth=md5|basic (md5 when absent)][;device-id=<DevID>]
               [;mode=refresh|two-way][;scope=URI URI][;exclude-secrets=1]"
      sealed = the DS password sealed to this device's encryption key (host.backup.sealed);
      password=<p> instead only over an https DM session (403 over plain http, and 403 when
      sealed does not open: another device's, another job's or altered)
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

The DM server side (the record of DS backups, the DS jobs) is host.dm.server.ds_jobs.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

from host.backup.sealed import open_sealed
from host.dm.agent.api import Agent, AlertReport, ExecOutcome, ExecRequest
from host.dm.agent.bar import ARCHIVE_LOCK, _clean, _record_last, _result, apply_archive
from host.dm.agent.tree import BAR
from host.dm.session import parse_kv
from host.ds.backup import backup_tree_via_ds, fetch_archive_via_ds
from host.ds.client import DsAccount
from host.ds.errors import DsError
from host.ds.state import AnchorStore
from host.errors import IntegrityError, SimvaultError, SyncMLError, UsageError
from host.syncml.status import StatusCode

log = logging.getLogger(__name__)

OPS = f"{BAR}/Operations"
RESULT_TYPE = "urn:simvault:bar:result:1.0"
ANCHOR_SUFFIX = ".ds-state.json"
_MODE_NAMES = {200: "two-way", 201: "slow sync", 203: "refresh from client"}


class CleartextRefused(UsageError):
    """A DS password in cleartext over a DM session that is not TLS."""


def _password(opts: dict[str, str], agent: Agent, correlator: str) -> str:
    """The DS password: ``sealed=`` opened with the device's encryption key (bound to this device,
    job and DS account); a cleartext ``password=`` only when the DM session runs over https."""
    if "sealed" in opts:
        return open_sealed(agent.identity.decryptor, opts["sealed"], device_id=agent.device_id,
                           correlator=correlator, url=opts.get("url", ""), user=opts.get("user", ""))
    if "password" in opts and not agent.config.server_url.startswith("https://"):
        raise CleartextRefused("the DS password came in cleartext over plain http: register this device's "
                               "encryption key with the DM server (dm device-key) or use https")
    return opts.get("password", "")


def _account(opts: dict[str, str], agent: Agent, correlator: str) -> DsAccount:
    url, user = opts.get("url", ""), opts.get("user", "")
    if not url.startswith(("http://", "https://")) or not user:
        raise UsageError("BackupViaDS needs url=http(s)://... and user=")
    auth = opts.get("auth", "md5")
    if auth not in ("basic", "md5"):
        raise UsageError(f"auth={auth[:10]}: use basic or md5")
    mode = opts.get("mode", "two-way")  # the safe default: docs/DS.md "Backup modes"
    if mode not in ("refresh", "two-way"):
        raise UsageError(f"mode={mode[:10]}: use refresh or two-way")
    return DsAccount(url=url, username=user, password=_password(opts, agent, correlator),
                     datastore=opts.get("datastore", "backup") or "backup",
                     device_id=opts.get("device-id") or agent.device_id, auth=auth, backup_mode=mode,
                     ca_file=agent.config.ca_file)  # one trust file for the DM and the DS servers


def anchors_for(agent: Agent) -> AnchorStore:
    """The agent's DS anchors, beside its tree file."""
    tree_path = Path(agent.config.tree)
    return AnchorStore(tree_path.with_name(tree_path.name + ANCHOR_SUFFIX))


def _failure(operation: str, agent: Agent, exc: SimvaultError, **kv: object) -> AlertReport:
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


def run_backup_via_ds(agent: Agent, account: DsAccount, scope: list[str] | None,
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


def run_restore_via_ds(agent: Agent, account: DsAccount, backup_id: str | None, keep_secrets: bool,
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
                   plan: Callable[[Agent, dict[str, str], DsAccount], Callable[[], AlertReport]]) -> ExecOutcome:
    """400 when the Exec's key=value options or the DS account they name are bad; else 202
    and the work ``plan`` makes from them (planned now, run after the session)."""
    try:
        opts = parse_kv(req.data)
    except SyncMLError:
        return ExecOutcome(StatusCode.BAD_REQUEST)
    try:
        account = _account(opts, req.agent, req.correlator or "")
    except (CleartextRefused, IntegrityError) as exc:  # no secret in the message: safe to log
        log.warning("%s refused: %s", req.uri, exc)
        return ExecOutcome(StatusCode.FORBIDDEN)
    except UsageError:
        return ExecOutcome(StatusCode.BAD_REQUEST)
    return ExecOutcome(StatusCode.ACCEPTED_FOR_PROCESSING, plan(req.agent, opts, account))


def _plan_backup(agent: Agent, opts: dict[str, str], account: DsAccount) -> Callable[[], AlertReport]:
    scope_text = opts.get("scope") or agent.tree.value(f"{BAR}/Config/Scope", ".") or "."
    scope = scope_text.split() if scope_text.strip() not in ("", ".") else None
    excl = opts.get("exclude-secrets", agent.tree.value(f"{BAR}/Config/ExcludeSecrets", "false") or "false")
    exclude = excl.lower() in ("1", "true", "yes")
    return lambda: run_backup_via_ds(agent, account, scope, exclude)


def _plan_restore(agent: Agent, opts: dict[str, str], account: DsAccount) -> Callable[[], AlertReport]:
    backup_id = opts.get("id", "").lower() or None
    keep = opts.get("keep-secrets", "0") in ("1", "true")
    force = opts.get("force-device", "0") in ("1", "true")
    return lambda: run_restore_via_ds(agent, account, backup_id, keep, force)


def exec_backup_via_ds(req: ExecRequest) -> ExecOutcome:
    return _accept_via_ds(req, _plan_backup)


def exec_restore_via_ds(req: ExecRequest) -> ExecOutcome:
    return _accept_via_ds(req, _plan_restore)
