"""The Store's server backups (a mixin of host.dm.server.db.Store): stored content-addressed,
an archive's head in its row and its chunks in ``blobs`` (host.dm.server.blobs), so backups
that share chunks store them once. Rows from before (``parts`` NULL) hold the whole archive."""
from __future__ import annotations

import hashlib
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as SAIntegrityError

from host.dm.server import blobs as blob_parts
from host.dm.server.tables import Audit, BackupRow, RetiredBackupRow, StoreError, _row_dict, backup_public


class BackupsMixin:
    def store_backup(self, device_id: str, backup_id: str, sequence: int, archive: bytes,
                     meta: dict[str, Any], job_id: int | None) -> dict[str, Any]:
        """Store a verified archive (never overwriting one with other content)."""
        now = time.time()
        digest = hashlib.sha256(archive).hexdigest()
        head, chunks = blob_parts.split(archive)
        try:
            with self.session() as s:
                existing = s.scalars(select(BackupRow).where(BackupRow.device_id == device_id,
                                                             BackupRow.backup_id == backup_id)).first()
                if existing is not None:
                    if existing.sha256 != digest:
                        raise StoreError(f"backup {backup_id} of {device_id} is already stored with "
                                         "other content; refusing to overwrite it")
                    return backup_public(existing)
                keys = blob_parts.add_refs(s, self.blobs, chunks)
                row = BackupRow(device_id=device_id, backup_id=backup_id, sequence=sequence, size=len(archive),
                                sha256=digest, archive=head, parts=keys, meta=meta, job_id=job_id,
                                created_at=now, verified_at=now)
                s.add(row)
                s.add(Audit(at=now, device_id=device_id, event="backup.stored",
                            detail=f"{backup_id} seq {sequence} {len(archive)} bytes"))
                s.flush()
                return backup_public(row)
        except SAIntegrityError:
            raise StoreError(f"backup {backup_id} of {device_id} was stored concurrently") from None

    def backups(self, device_id: str | None = None) -> list[dict[str, Any]]:
        with self.reading() as s:
            q = select(BackupRow).order_by(BackupRow.device_id, BackupRow.sequence)
            if device_id:
                q = q.where(BackupRow.device_id == device_id)
            return [backup_public(r) for r in s.scalars(q)]

    def retired_backups(self, device_id: str | None = None) -> list[dict[str, Any]]:
        """Backups kept from removed devices (no archive bytes)."""
        with self.reading() as s:
            q = select(RetiredBackupRow).order_by(RetiredBackupRow.device_id, RetiredBackupRow.sequence)
            if device_id:
                q = q.where(RetiredBackupRow.device_id == device_id)
            return [_row_dict(r, skip=("archive", "parts", "id")) for r in s.scalars(q)]

    def backup_archive(self, device_id: str, backup_id: str) -> bytes | None:
        found = self.backup_archive_and_hash(device_id, backup_id)
        return found[0] if found else None

    def backup_archive_and_hash(self, device_id: str, backup_id: str) -> tuple[bytes, str] | None:
        """The stored archive with the SHA-256 (hex) recorded when it arrived, in one read.
        StoreError when a chunk is missing or does not match its key."""
        with self.reading() as s:
            row = s.execute(select(BackupRow.archive, BackupRow.parts, BackupRow.sha256)
                            .where(BackupRow.device_id == device_id, BackupRow.backup_id == backup_id)).first()
            if row is None:
                return None
            if row.parts is None:
                return row.archive, row.sha256
            return blob_parts.join(row.archive, blob_parts.read_parts(s, self.blobs, row.parts)), row.sha256

    def backup_owner(self, backup_id: str) -> list[str]:
        with self.reading() as s:
            return list(s.scalars(select(BackupRow.device_id).where(BackupRow.backup_id == backup_id)))

    def delete_backup(self, device_id: str, backup_id: str) -> bool:
        with self.session() as s:
            row = s.scalars(select(BackupRow).where(BackupRow.device_id == device_id,
                                                    BackupRow.backup_id == backup_id)).first()
            if row is None:
                return False
            blob_parts.drop_refs(s, row.parts or [])
            s.delete(row)
            s.add(Audit(at=time.time(), device_id=device_id, event="backup.deleted", detail=backup_id))
            return True

    def collect_blobs(self, grace: float = blob_parts.GRACE_SECONDS) -> int:
        """Remove chunks no backup has listed for ``grace`` seconds (the ticker calls it)."""
        with self.session() as s:
            return blob_parts.collect(s, self.blobs, grace)
