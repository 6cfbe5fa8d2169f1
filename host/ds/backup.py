"""DS backup and restore of a DM tree: the library the device agent's Exec handlers call.

    outcome = backup_tree_via_ds(tree, identity, account, anchors)      # archive made here, then DS 203
    report  = restore_tree_via_ds(live, identity, account, anchors, backup_id=None)  # DS 205, verify, apply

The archive is opaque here: host.backup.ops makes it and, on restore, verifies
signature, hashes and sequence before a single node of ``live`` changes.
Nothing half-received is restored: the DS client returns an archive only
after the session completed and the item decoded whole (size + SHA-256).
"""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

from host.ds.client import DsAccount, DsClient, DsResult
from host.ds.state import AnchorStore
from host.ds.transport import Transport
from host.errors import ArchiveError


@dataclass
class DsBackupOutcome:
    backup_id: str  # hex
    size: int  # archive bytes
    sha256: str  # hex SHA-256 of the archive bytes
    sequence: int
    ds: DsResult = field(repr=False)

    def result_fields(self) -> dict[str, str | int]:
        """The Generic Alert 1226 fields of BACKUP_MO.md for BackupViaDS."""
        return {"code": 200, "id": self.backup_id, "location": "ds", "size": self.size,
                "items": self.ds.items, "bytes": self.ds.bytes_sent + self.ds.bytes_received,
                "ds-status": self.ds.status}


def backup_tree_via_ds(tree, identity, account: DsAccount, anchors: AnchorStore | None = None, *,
                       scope=None, exclude_secrets: bool = False, device_id: str | None = None,
                       transport: Transport | None = None,
                       archive_lock: AbstractContextManager | None = None) -> DsBackupOutcome:
    """Make a signed, encrypted archive of ``tree`` and store it in the DS datastore.

    ``archive_lock`` is held while the archive is made (not during the DS session):
    host.archive shares one zstd compressor, which is not thread-safe; the DM agent
    passes host.dm.agent.bar.ARCHIVE_LOCK."""
    import hashlib

    from host.backup.ops import backup_tree
    with archive_lock if archive_lock is not None else nullcontext():
        archive = backup_tree(tree, identity, scope=scope, exclude_secrets=exclude_secrets, device_id=device_id)
        data = archive.to_bytes()
    result = DsClient(account, anchors, transport).backup(data, archive.backup_id.hex())
    return DsBackupOutcome(backup_id=archive.backup_id.hex(), size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                           sequence=archive.sequence, ds=result)


def fetch_archive_via_ds(account: DsAccount, anchors: AnchorStore | None = None, backup_id: str | None = None,
                         transport: Transport | None = None):
    """Refresh from server; returns (Archive, DsResult). The archive is parsed, not yet verified."""
    from host.archive import Archive
    result = DsClient(account, anchors, transport).restore(backup_id)
    assert result.archive is not None
    archive = Archive.from_bytes(result.archive)  # ArchiveError when it is not an archive
    if backup_id is not None and archive.backup_id.hex() != backup_id.lower():
        raise ArchiveError(f"DS item says backup {backup_id} but the archive inside is "
                           f"{archive.backup_id.hex()}: the datastore was altered, back up again")
    return archive, result


def restore_tree_via_ds(live, identity, account: DsAccount, anchors: AnchorStore | None = None, *,
                        backup_id: str | None = None, keep_secrets: bool = False, force_device: bool = False,
                        dry_run: bool = False, transport: Transport | None = None):
    """Fetch the archive over DS, verify it completely, then apply it to ``live`` (all or nothing).

    Returns (RestoreReport, DsResult)."""
    from host.backup.ops import restore_tree
    archive, result = fetch_archive_via_ds(account, anchors, backup_id, transport)
    report = restore_tree(live, archive, identity, keep_secrets=keep_secrets, force_device=force_device,
                          dry_run=dry_run)
    return report, result
