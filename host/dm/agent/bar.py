"""The Backup MO on the device: Exec handlers for Operations/Backup, Restore, Delete
(registered by host.dm.agent.handlers; the card is reached through host.dm.agent.card).

Every operation answers the Exec with 202 and runs after the session (in the
agent's worker); its outcome goes back as a Generic Alert 1226 with the
Exec's Correlator (docs/BACKUP_MO.md). Archives come from host.backup.ops:
backup_tree (signed with the device identity), backup_tree_to_card /
archive_from_card, restore_tree (verifies everything, then applies
all-or-nothing on a copy that is swapped in, and the file is saved atomically).
"""
from __future__ import annotations

import logging
import threading
import time

from host.archive import Archive
from host.backup.ops import archive_from_card, backup_tree, backup_tree_to_card, restore_tree
from host.dm.agent.api import Agent, AlertReport, ExecOutcome, ExecRequest
from host.dm.agent.card import CardAccess  # noqa: F401 - its old home (plugin API: host.dm.agent_bar.CardAccess)
from host.dm.agent.tree import BAR, PRESERVED_ON_RESTORE
from host.dm.session import format_kv, parse_kv
from host.errors import CardError, SimvaultError, SyncMLError, UsageError
from host.syncml.status import StatusCode
from host.tree.model import DMTree

log = logging.getLogger(__name__)

# host.archive.codec shares one ZstdCompressor, which python-zstandard says is not thread-safe:
# several agents in one process (the benchmark) segfaulted. Serialise archive making until it is fixed.
ARCHIVE_LOCK = threading.Lock()


def _opts(req: ExecRequest) -> dict[str, str]:
    try:
        return parse_kv(req.data)
    except SyncMLError as exc:
        raise UsageError(str(exc)) from None


def _result(code: int, **kv: object) -> AlertReport:
    return AlertReport(code=code, data=format_kv({"code": code, **kv}))


def _record_last(agent: Agent, operation: str, code: int, message: str, backup_id: str = "") -> None:
    t = agent.tree
    t.set_leaf(f"{BAR}/LastResult/Operation", operation)
    t.set_leaf(f"{BAR}/LastResult/Code", str(code), "int")
    t.set_leaf(f"{BAR}/LastResult/Message", message[:500])
    t.set_leaf(f"{BAR}/LastResult/BackupID", backup_id)
    t.set_leaf(f"{BAR}/LastResult/Time", str(int(time.time())), "int")


# ------------------------------------------------------------------ backup
def run_backup(agent: Agent, destination: str, scope: list[str] | None, exclude_secrets: bool) -> AlertReport:
    """Make an archive of the tree (minus the Backup MO) and put it where asked."""
    if destination not in ("server", "card"):
        return _result(StatusCode.BAD_REQUEST, message=f"unknown destination {destination}")
    try:
        snapshot = agent.tree.snapshot_for_backup()
        if destination == "card":
            if agent.card is None:
                return _result(StatusCode.OPTIONAL_FEATURE_NOT_SUPPORTED, message="this agent has no card")
            # the card's own rules: sequence above its highest, chunks within its FCI limit,
            # incremental on its newest backup of this device, an interrupted upload resumed
            with agent.card.open() as card, ARCHIVE_LOCK:
                archive, _report = backup_tree_to_card(card, snapshot, agent.identity, scope=scope,
                                                       exclude_secrets=exclude_secrets,
                                                       pending_dir=agent.config.key_dir / "pending")
        else:
            with ARCHIVE_LOCK:
                archive = backup_tree(snapshot, agent.identity, scope=scope, exclude_secrets=exclude_secrets,
                                      device_id=agent.device_id)
        data = archive.to_bytes()
        bid = archive.backup_id.hex()
        node = f"{BAR}/Backups/{bid}"
        with agent.tree.lock:
            agent.tree.set_leaf(f"{node}/ID", bid)
            agent.tree.set_leaf(f"{node}/Time", str(archive.manifest.created), "int")
            agent.tree.set_leaf(f"{node}/Size", str(len(data)), "int")
            agent.tree.set_leaf(f"{node}/Hash", _manifest_hash(archive))
            agent.tree.set_leaf(f"{node}/Location", destination)
            agent.tree.set_leaf(f"{node}/Sequence", str(archive.sequence), "int")
            agent.tree.set_leaf(f"{node}/Status", "ok")
            if destination == "server":
                agent.tree.set_leaf(f"{node}/Archive", data, "bin", "application/vnd.simvault.archive")
            _record_last(agent, "Backup", 200, f"backup to {destination}", bid)
        agent.tree.save()
        return _result(200, id=bid, location=destination, size=len(data), message=f"backup to {destination}")
    except SimvaultError as exc:
        log.warning("backup failed: %s", exc)
        _record_last(agent, "Backup", 500, str(exc))
        return _result(StatusCode.COMMAND_FAILED, location=destination, message=_clean(str(exc)))


def _manifest_hash(archive: Archive) -> str:
    import hashlib
    return hashlib.sha256(archive.manifest_bytes).hexdigest()


def _clean(text: str) -> str:
    return text.replace(";", ",").replace("=", ":")[:300]


def exec_backup(req: ExecRequest) -> ExecOutcome:
    agent = req.agent
    try:
        opts = _opts(req)
    except UsageError:
        return ExecOutcome(StatusCode.BAD_REQUEST)
    destination = opts.get("destination") or agent.tree.value(f"{BAR}/Config/Destination", "server") or "server"
    scope_text = opts.get("scope") or agent.tree.value(f"{BAR}/Config/Scope", ".") or "."
    scope = scope_text.split() if scope_text.strip() not in ("", ".") else None
    excl = opts.get("exclude-secrets", agent.tree.value(f"{BAR}/Config/ExcludeSecrets", "false") or "false")
    exclude = excl.lower() in ("1", "true", "yes")
    if destination not in ("server", "card"):
        return ExecOutcome(StatusCode.BAD_REQUEST)
    if destination == "card" and agent.card is None:
        return ExecOutcome(StatusCode.OPTIONAL_FEATURE_NOT_SUPPORTED)
    return ExecOutcome(StatusCode.ACCEPTED_FOR_PROCESSING, lambda: run_backup(agent, destination, scope, exclude))


# ------------------------------------------------------------------ restore
def run_restore(agent: Agent, backup_id: str, source: str, keep_secrets: bool,
                force_device: bool) -> AlertReport:
    """Fetch the archive, verify everything, apply all-or-nothing, save atomically."""
    try:
        if source == "staging":
            node = agent.tree.tree.find(f"{BAR}/Staging/Archive")
            if node is None or not isinstance(node.value, bytes) or not node.value:
                raise UsageError("no archive in Staging/Archive: the server must Replace it first")
            archive = Archive.from_bytes(node.value)
        elif source == "card":
            if agent.card is None:
                raise UsageError("this agent has no card")
            with agent.card.open() as card:
                archive = archive_from_card(card, bytes.fromhex(backup_id))
        else:
            raise UsageError(f"restore source {source!r}: use staging (server) or card")
        if backup_id and archive.backup_id.hex() != backup_id:
            raise UsageError(f"the archive is backup {archive.backup_id.hex()}, not {backup_id}")
        apply_archive(agent, archive, keep_secrets=keep_secrets, force_device=force_device)
        bid = archive.backup_id.hex()
        with agent.tree.lock:
            if agent.tree.tree.find(f"{BAR}/Staging/Archive") is not None:
                agent.tree.tree.delete(f"{BAR}/Staging/Archive")
            _record_last(agent, "Restore", 200, f"restored from {source}", bid)
        agent.tree.save()
        return _result(200, id=bid, location=source, message=f"restored from {source}")
    except (SimvaultError, ValueError) as exc:
        log.warning("restore failed: %s", exc)
        _record_last(agent, "Restore", 500, str(exc))
        return _result(StatusCode.COMMAND_FAILED, id=backup_id, location=source, message=_clean(str(exc)))


def apply_archive(agent: Agent, archive: Archive, *, keep_secrets: bool, force_device: bool) -> None:
    """restore_tree on a copy of the live tree; the Backup MO and our own DM account
    (credentials, nonces) are carried over from the live tree; then one swap."""
    holder = agent.tree
    with holder.lock:
        live = holder.tree
        work = live.copy()
        restore_tree(work, archive, agent.identity, keep_secrets=keep_secrets, force_device=force_device,
                     device_id=agent.device_id)
        for uri in PRESERVED_ON_RESTORE:
            _carry_over(live, work, uri)
        work.validate()
        live.replace_contents(work)
        holder.generation += 1


def _carry_over(live: DMTree, work: DMTree, uri: str) -> None:
    node = live.find(uri)
    if work.find(uri) is not None:
        work.delete(uri)
    if node is not None:
        work.add_subtree(uri, node.copy(), create_parents=True)


def exec_restore(req: ExecRequest) -> ExecOutcome:
    try:
        opts = _opts(req)
    except UsageError:
        return ExecOutcome(StatusCode.BAD_REQUEST)
    source = opts.get("source", "staging")
    if source == "server":
        source = "staging"
    backup_id = opts.get("id", "").lower()
    if source not in ("staging", "card") or (source == "card" and not backup_id):
        return ExecOutcome(StatusCode.BAD_REQUEST)
    keep = opts.get("keep-secrets", "0") in ("1", "true")
    force = opts.get("force-device", "0") in ("1", "true")
    agent = req.agent
    return ExecOutcome(StatusCode.ACCEPTED_FOR_PROCESSING,
                       lambda: run_restore(agent, backup_id, source, keep, force))


# ------------------------------------------------------------------ delete
def run_delete(agent: Agent, backup_id: str, location: str) -> AlertReport:
    try:
        if location == "card":
            if agent.card is None:
                raise UsageError("this agent has no card")
            with agent.card.open() as card:
                card.delete_backup(bytes.fromhex(backup_id))
        node = f"{BAR}/Backups/{backup_id}"
        with agent.tree.lock:
            if agent.tree.tree.find(node) is not None:
                agent.tree.set_leaf(f"{node}/Status", "deleted")
                if agent.tree.tree.find(f"{node}/Archive") is not None:
                    agent.tree.tree.delete(f"{node}/Archive")
            _record_last(agent, "Delete", 200, f"deleted at {location}", backup_id)
        agent.tree.save()
        return _result(200, id=backup_id, location=location, message=f"deleted at {location}")
    except (SimvaultError, CardError, ValueError) as exc:
        return _result(StatusCode.COMMAND_FAILED, id=backup_id, location=location, message=_clean(str(exc)))


def exec_delete(req: ExecRequest) -> ExecOutcome:
    try:
        opts = _opts(req)
    except UsageError:
        return ExecOutcome(StatusCode.BAD_REQUEST)
    backup_id, location = opts.get("id", "").lower(), opts.get("location", "card")
    if not backup_id or location not in ("card", "server"):
        return ExecOutcome(StatusCode.BAD_REQUEST)
    agent = req.agent
    return ExecOutcome(StatusCode.ACCEPTED_FOR_PROCESSING, lambda: run_delete(agent, backup_id, location))


# ------------------------------------------------------------------ firmware update (FUMO)
