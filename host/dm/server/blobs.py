"""Server backups stored content-addressed: an archive is its head (magic, manifest, signature)
in its ``backups`` row plus its chunks, each stored once by SHA-256 in ``blobs`` and shared by
every backup that lists it. A device's next backup that re-sends chunks the server already
holds (the base of a layered chain, unchanged CDC chunks) stores only the new ones.

Where the chunk bytes live is pluggable (:class:`BlobStore`): in the database (``blobs.data``,
the default: one transaction covers rows and bytes, on SQLite and PostgreSQL alike) or in a
directory (``dir:PATH``: files 0600 under a 0700 directory, named by their SHA-256).

Reference counts, not deletes, make it safe with several writers: a chunk whose last backup
goes keeps its row with ``refs`` 0 and ``dead_since``; a backup arriving meanwhile takes it
back under the row's lock (and writes the bytes again if an earlier collection removed them);
:func:`collect` removes chunks dead for longer than a grace period, locking each row
(SKIP LOCKED on PostgreSQL) before it removes the bytes, so it never races a writer.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import struct
import time
from pathlib import Path
from typing import Protocol

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from host.archive.archive import MAGIC, Archive
from host.dm.server.tables import BlobRow, StoreError
from host.fsutil import atomic_write

GRACE_SECONDS = 3600.0  # a dead chunk is kept this long: a backup in flight may still list it


class BlobStore(Protocol):
    kind: str
    inline: bool  # True: the bytes live in blobs.data (same transaction as the rows)

    def ensure(self, key: str, data: bytes) -> None:
        """Keep ``data`` under ``key`` unless it is there (called under the blob row's lock)."""

    def read(self, key: str) -> bytes | None:
        """The bytes of ``key``; None when they are gone."""

    def remove(self, key: str) -> None: ...


class DatabaseBlobs:
    kind, inline = "database", True

    def ensure(self, key: str, data: bytes) -> None:
        pass  # written with the row

    def read(self, key: str) -> bytes | None:
        return None  # never asked: the row carries them

    def remove(self, key: str) -> None:
        pass  # the row goes, and its bytes with it


class DirectoryBlobs:
    """Chunks as files ROOT/ab/abcdef... (the SHA-256 in hex), 0600 in 0700 directories."""

    kind, inline = "directory", False

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.root.stat().st_mode & 0o077:
            raise StoreError(f"blob directory {self.root} is open to others: run `chmod 700 {self.root}`")

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / key

    def ensure(self, key: str, data: bytes) -> None:
        path = self._path(key)
        if not path.exists():
            path.parent.mkdir(mode=0o700, exist_ok=True)
            atomic_write(path, data, 0o600)

    def read(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def remove(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


def blob_store(spec: str | None) -> BlobStore:
    """'db' (default) or 'dir:PATH' (the dm server's --blob-store)."""
    if not spec or spec in ("db", "database"):
        return DatabaseBlobs()
    if spec.startswith("dir:") and len(spec) > 4:
        return DirectoryBlobs(spec[4:])
    raise StoreError(f"blob store {spec!r}: give --blob-store db or --blob-store dir:PATH")


# ------------------------------------------------------------ archives <-> head + chunks
def split(archive: bytes) -> tuple[bytes, list[bytes]]:
    """(head, chunk bytes in chunk-table order) of a well-formed archive."""
    parsed = Archive.from_bytes(archive)
    head = MAGIC + struct.pack(">I", len(parsed.manifest_bytes)) + parsed.manifest_bytes + parsed.signature
    return head, [parsed.chunks[ref.chunk_id] for ref in parsed.manifest.chunks]


def join(head: bytes, parts: list[bytes]) -> bytes:
    return b"".join([head, *(struct.pack(">I", len(p)) + p for p in parts)])


# ------------------------------------------------------------ reference counting (in a Store transaction)
def add_refs(s: Session, store: BlobStore, chunks: list[bytes]) -> list[str]:
    """Reference every chunk (stored when new or collected); returns their keys in order."""
    keys = [hashlib.sha256(c).hexdigest() for c in chunks]
    counts: dict[str, int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    insert = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
    done: set[str] = set()
    for key, chunk in zip(keys, chunks):
        if key in done:
            continue
        done.add(key)
        stmt = insert(BlobRow).values(key=key, size=len(chunk), refs=counts[key], dead_since=None,
                                      data=chunk if store.inline else None)
        s.execute(stmt.on_conflict_do_update(index_elements=[BlobRow.key],
                                             set_={"refs": BlobRow.refs + counts[key], "dead_since": None}))
        store.ensure(key, chunk)  # the row is locked now: a collection cannot remove the bytes under us
    return keys


def drop_refs(s: Session, keys: list[str]) -> None:
    counts: dict[str, int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    now = time.time()
    for key, n in counts.items():
        s.execute(update(BlobRow).where(BlobRow.key == key).values(refs=BlobRow.refs - n))
        s.execute(update(BlobRow).where(BlobRow.key == key, BlobRow.refs <= 0).values(refs=0, dead_since=now))


def read_parts(s: Session, store: BlobStore, keys: list[str]) -> list[bytes]:
    """The chunk bytes of ``keys``, each checked against its key (SHA-256, constant time)."""
    want = set(keys)
    rows = {r.key: r for r in s.execute(select(BlobRow.key, BlobRow.data).where(BlobRow.key.in_(want)))}
    out: list[bytes] = []
    for key in keys:
        row = rows.get(key)
        data = None if row is None else row.data if store.inline else store.read(key)
        if data is None or not hmac.compare_digest(hashlib.sha256(data).hexdigest(), key):
            raise StoreError(f"stored chunk {key[:16]} is missing or damaged in the {store.kind} blob store")
        out.append(data)
    return out


def collect(s: Session, store: BlobStore, grace: float = GRACE_SECONDS, limit: int = 500) -> int:
    """Remove chunks dead for longer than ``grace``; returns how many went."""
    q = (select(BlobRow.key).where(BlobRow.refs == 0, BlobRow.dead_since < time.time() - grace)
         .limit(limit).with_for_update(skip_locked=True))
    keys = list(s.scalars(q))
    for key in keys:
        store.remove(key)
    if keys:
        s.execute(delete(BlobRow).where(BlobRow.key.in_(keys), BlobRow.refs == 0))
    return len(keys)
