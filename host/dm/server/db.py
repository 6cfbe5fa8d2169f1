"""The DM server's database: devices, sessions, jobs, results, audit, backups.

One SQLAlchemy 2 schema and one code path for SQLite (default, embedded) and
PostgreSQL (``postgresql+psycopg://...``). Every method of :class:`Store` is a
short transaction; callers never hold a session. Secrets are stored in their
digest-ready form (B64(MD5(user:password)), see host.dm.dmauth), never as
passwords.

Job states: queued -> notified -> running -> succeeded | failed (with reason).
A job's ``correlator`` ties the agent's Generic Alert (Exec Correlator) to it.
"""
from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, create_engine, delete, event, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, IntegrityError as SAIntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from host.dm.server import migrate
from host.dm.server.blobs import BlobStore, blob_store, drop_refs
from host.dm.server.store_backups import BackupsMixin
from host.dm.server.tables import (  # noqa: F401 - importable from here as before
    FINAL_STATES,
    JOB_KINDS,
    JOB_TARGETS,
    OPEN_STATES,
    _BACKUP_COLUMNS,
    Audit,
    BackupRow,
    Base,
    Device,
    Job,
    Result,
    RetiredBackupRow,
    SessionRow,
    StoreError,
    _row_dict,
    backup_public,
    device_public,
    job_public,
)
from host.errors import UsageError
from host.fsutil import private_sqlite_file

def normalise_url(url: str) -> str:
    """sqlite:///x, postgresql://... -> a SQLAlchemy URL with the installed drivers."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


@dataclass
class NewDevice:
    device_id: str
    secret: str
    server_secret: str
    auth_type: str = "md5"
    public_key: bytes | None = None
    notify_url: str | None = None
    username: str | None = None
    enc_key: bytes | None = None


class Store(BackupsMixin):
    """All database access of the DM server (thread-safe: one short transaction per call)."""

    def __init__(self, url: str, *, echo: bool = False, blobs: str | BlobStore | None = None) -> None:
        self.url = normalise_url(url)
        # where backup chunks live: 'db' (default) or 'dir:PATH' (host.dm.server.blobs)
        self.blobs: BlobStore = blob_store(blobs) if blobs is None or isinstance(blobs, str) else blobs
        try:
            kwargs: dict[str, Any] = {"echo": echo, "future": True}
            if self.url.startswith("sqlite"):
                kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            else:
                # no pre-ping: it doubled the round trips of every transaction; a connection the server
                # dropped fails one request (the device retries) and is replaced (pool_recycle too)
                kwargs.update(pool_size=10, max_overflow=20, pool_recycle=300)
            self.engine: Engine = create_engine(self.url, **kwargs)
        except (ArgumentError, ImportError) as exc:
            raise UsageError(f"database URL {url!r} is not usable ({exc}); "
                             "use sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DB") from None
        if self.engine.dialect.name == "sqlite":
            private_sqlite_file(self.engine.url.database, "DM database", StoreError)
        if self.url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_lock = threading.Lock() if self.url.startswith("sqlite") else None
        try:
            migrate.upgrade(self.engine)  # versioned (Alembic), once, whatever the number of instances
        except OperationalError as exc:
            raise StoreError(f"cannot open database {self.safe_url}: {exc.orig}; check the URL and "
                             "that the server is running") from None

    @property
    def safe_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def session(self, write: bool = True) -> "_Tx":
        return _Tx(self, write)

    def reading(self) -> "_Tx":
        """A read-only transaction: on SQLite (WAL) it does not wait for the writer lock."""
        return _Tx(self, False)

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------ devices
    def add_device(self, new: NewDevice, initial_nonce: bytes, client_nonce: bytes) -> dict[str, Any]:
        import base64
        now = time.time()
        row = Device(id=new.device_id, username=new.username or new.device_id, secret=new.secret,
                     server_secret=new.server_secret, auth_type=new.auth_type,
                     server_nonce=base64.b64encode(initial_nonce).decode(),
                     client_nonce=base64.b64encode(client_nonce).decode(),
                     public_key=new.public_key, enc_key=new.enc_key, notify_url=new.notify_url, devinfo={},
                     created_at=now)
        with self.session() as s:
            if s.get(Device, new.device_id) is not None:
                raise StoreError(f"device {new.device_id} is already registered; remove it first")
            if s.scalars(select(Device.id).where(Device.username == row.username)).first() is not None:
                raise StoreError(f"user name {row.username[:128]} belongs to another device; give --user another")
            s.add(row)
            s.add(Audit(at=now, device_id=new.device_id, event="device.registered", detail=new.auth_type))
            s.flush()
            retired = list(s.scalars(select(RetiredBackupRow).where(RetiredBackupRow.device_id == new.device_id)))
            for old in retired:  # kept when the device was removed: its own backups again
                s.add(BackupRow(**{c: getattr(old, c) for c in _BACKUP_COLUMNS}))
                s.delete(old)
            if retired:
                s.add(Audit(at=now, device_id=new.device_id, event="backup.reattached",
                            detail=f"{len(retired)} backups kept when the device was removed"))
        return device_public(row)

    def remove_device(self, device_id: str, *, purge: bool = False) -> dict[str, Any]:
        """Delete a device with its sessions and jobs. Its server-stored backups are kept
        (retired_backups, back when it is registered again) unless ``purge``."""
        now = time.time()
        with self.session() as s:
            if s.get(Device, device_id) is None:
                raise StoreError(f"device {device_id} is not registered; 'simvault dm devices' lists them")
            rows = list(s.scalars(select(BackupRow).where(BackupRow.device_id == device_id)))
            if purge:
                for old in s.scalars(select(RetiredBackupRow).where(RetiredBackupRow.device_id == device_id)):
                    drop_refs(s, old.parts or [])
                    s.delete(old)
                for b in rows:
                    drop_refs(s, b.parts or [])
            else:
                for b in rows:
                    s.add(RetiredBackupRow(**{c: getattr(b, c) for c in _BACKUP_COLUMNS}))
            for b in rows:  # explicitly: the cascade is the database's, not the session's
                s.delete(b)
            s.flush()
            s.execute(delete(Job).where(Job.device_id == device_id))
            s.execute(delete(SessionRow).where(SessionRow.device_id == device_id))
            s.execute(delete(Device).where(Device.id == device_id))
            what = f"purged {len(rows)} backups" if purge else f"kept {len(rows)} backups"
            s.add(Audit(at=now, device_id=device_id, event="device.removed", detail=what))
        return {"device": device_id, "purged": purge, "backups": len(rows)}

    def device(self, device_id: str) -> Device | None:
        with self.reading() as s:
            return s.get(Device, device_id)

    def devices(self) -> list[dict[str, Any]]:
        with self.session() as s:
            return [device_public(d) for d in s.scalars(select(Device).order_by(Device.id))]

    def update_device(self, device_id: str, **fields: Any) -> None:
        with self.session() as s:
            s.execute(update(Device).where(Device.id == device_id).values(**fields))

    def rotate_nonce(self, device_id: str, column: str, expected_b64: str | None, new_b64: str,
                     **also: Any) -> bool:
        """Compare-and-set a nonce column: False when another message used it first (a replay).
        ``also``: more columns to set in the same statement when the swap succeeds (last_seen)."""
        col = getattr(Device, column)
        with self.session() as s:
            stmt = update(Device).where(Device.id == device_id)
            if expected_b64 is not None:
                stmt = stmt.where(col == expected_b64)
            res = s.execute(stmt.values({column: new_b64, **also}))
            return res.rowcount == 1

    # ------------------------------------------------------------ sessions
    def open_session(self, device_id: str, session_id: str, initiator: str) -> int:
        with self.session() as s:
            row = SessionRow(device_id=device_id, session_id=session_id, initiator=initiator,
                             started_at=time.time())
            s.add(row)
            s.flush()
            return row.id

    def close_session(self, row_id: int, state: str, messages: int, reason: str | None = None) -> None:
        with self.session() as s:
            s.execute(update(SessionRow).where(SessionRow.id == row_id).values(
                state=state, messages=messages, reason=reason, ended_at=time.time()))

    def sessions(self, device_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        with self.session() as s:
            q = select(SessionRow).order_by(SessionRow.id.desc()).limit(limit)
            if device_id:
                q = q.where(SessionRow.device_id == device_id)
            return [_row_dict(r) for r in s.scalars(q)]

    # ------------------------------------------------------------ jobs
    def create_job(self, device_id: str, kind: str, target: str, *, scope: str | None = None,
                   backup_id: str | None = None, params: dict | None = None, origin: str = "admin",
                   state: str = "queued") -> dict[str, Any]:
        if kind not in JOB_KINDS:
            raise UsageError(f"job kind {kind!r} is unknown; use one of {', '.join(JOB_KINDS)}")
        if target not in JOB_TARGETS:
            raise UsageError(f"job target {target!r} is unknown; use one of {', '.join(JOB_TARGETS)}")
        now = time.time()
        with self.session() as s:
            if s.get(Device, device_id) is None:
                raise StoreError(f"device {device_id} is not registered; add it with 'simvault dm device-add'")
            row = Job(device_id=device_id, kind=kind, target=target, scope=scope, backup_id=backup_id,
                      params=params or {}, origin=origin, state=state,
                      correlator=secrets.token_hex(12), created_at=now, updated_at=now,
                      started_at=now if state == "running" else None)
            s.add(row)
            s.flush()
            s.add(Audit(at=now, device_id=device_id, event="job.created",
                        detail=f"{row.id} {kind} {target} by {origin}"))
            return job_public(row)

    def job(self, job_id: int) -> dict[str, Any] | None:
        with self.reading() as s:
            row = s.get(Job, job_id)
            return job_public(row) if row else None

    def job_by_correlator(self, device_id: str, correlator: str) -> dict[str, Any] | None:
        with self.reading() as s:
            row = s.scalars(select(Job).where(Job.correlator == correlator,
                                              Job.device_id == device_id)).first()
            return job_public(row) if row else None

    def job_for_backup(self, device_id: str, backup_id: str, origin_prefix: str = "device:") -> dict[str, Any] | None:
        """The job (of that origin) that recorded this backup id: a resent report finds it again."""
        with self.reading() as s:
            row = s.scalars(select(Job).where(Job.device_id == device_id, Job.backup_id == backup_id,
                                              Job.origin.startswith(origin_prefix))
                            .order_by(Job.id.desc())).first()
            return job_public(row) if row else None

    def jobs(self, device_id: str | None = None, states: tuple[str, ...] | None = None,
             limit: int = 200) -> list[dict[str, Any]]:
        with self.reading() as s:
            q = select(Job).order_by(Job.id.desc()).limit(limit)
            if device_id:
                q = q.where(Job.device_id == device_id)
            if states:
                q = q.where(Job.state.in_(states))
            return [job_public(r) for r in s.scalars(q)]

    def open_job_summaries(self) -> list[Any]:
        """(id, device_id, state, kind, target, backup_id, updated_at) of every open job, oldest first:
        the ticker's one query (plain rows, no ORM objects)."""
        cols = (Job.id, Job.device_id, Job.state, Job.kind, Job.target, Job.backup_id, Job.updated_at)
        with self.reading() as s:
            return list(s.execute(select(*cols).where(Job.state.in_(OPEN_STATES)).order_by(Job.id)))

    def set_job_state(self, job_id: int, state: str, reason: str | None = None, *,
                      only_from: tuple[str, ...] = OPEN_STATES, backup_id: str | None = None) -> bool:
        """Move a job on (and record its backup id); refuses to leave a final state (False when
        nothing changed). One UPDATE ... RETURNING and the audit row, in one transaction."""
        now = time.time()
        values: dict[str, Any] = {"state": state, "updated_at": now}
        if backup_id is not None:
            values["backup_id"] = backup_id
        if reason is not None:
            values["reason"] = reason[:2000]
        if state == "running":
            values["started_at"] = now
        if state in FINAL_STATES:
            values["finished_at"] = now
        if state == "notified":
            values["attempts"] = Job.attempts + 1
        with self.session() as s:
            device_id = s.execute(update(Job).where(Job.id == job_id, Job.state.in_(only_from))
                                  .values(**values).returning(Job.device_id)).scalar()
            if device_id is not None:
                s.add(Audit(at=now, device_id=device_id, event=f"job.{state}",
                            detail=f"{job_id} {reason or ''}".strip()))
            return device_id is not None

    def set_job_backup_id(self, job_id: int, backup_id: str) -> None:
        with self.session() as s:
            s.execute(update(Job).where(Job.id == job_id).values(backup_id=backup_id, updated_at=time.time()))

    def expire_jobs(self, running_timeout: float, notified_timeout: float) -> list[int]:
        """Fail jobs stuck in running/notified past their timeout; returns their ids."""
        now = time.time()
        failed: list[int] = []
        stale = or_(and_(Job.state == "running", Job.updated_at < now - running_timeout),
                    and_(Job.state == "notified", Job.updated_at < now - notified_timeout))
        with self.reading() as s:  # the common case (nothing stale) takes no writer lock
            if s.scalars(select(Job.id).where(stale).limit(1)).first() is None:
                return failed
        with self.session() as s:
            rows = s.scalars(select(Job).where(stale)).all()
            for row in rows:
                limit = running_timeout if row.state == "running" else notified_timeout
                if now - row.updated_at > limit:
                    row.state, row.finished_at, row.updated_at = "failed", now, now
                    row.reason = (f"no result from the device within {int(limit)} s "
                                  f"(was {'running' if limit == running_timeout else 'notified'})")
                    s.add(Audit(at=now, device_id=row.device_id, event="job.failed",
                                detail=f"{row.id} {row.reason}"))
                    failed.append(row.id)
        return failed

    # ------------------------------------------------------------ results, audit
    def add_result(self, device_id: str, job_id: int | None, code: int, data: dict[str, Any]) -> None:
        with self.session() as s:
            s.add(Result(job_id=job_id, device_id=device_id, code=code, data=data, received_at=time.time()))

    def results(self, job_id: int) -> list[dict[str, Any]]:
        with self.reading() as s:
            return [_row_dict(r) for r in s.scalars(select(Result).where(Result.job_id == job_id))]

    def audit(self, event_name: str, device_id: str | None = None, detail: str = "") -> None:
        with self.session() as s:
            s.add(Audit(at=time.time(), device_id=device_id, event=event_name, detail=detail[:2000]))

    def audit_log(self, device_id: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        with self.session() as s:
            q = select(Audit).order_by(Audit.id.desc()).limit(limit)
            if device_id:
                q = q.where(Audit.device_id == device_id)
            return [_row_dict(r) for r in s.scalars(q)]


class _Tx:
    """A Session in a transaction; SQLite writers are serialised in-process."""

    def __init__(self, store: Store, write: bool = True) -> None:
        self.store = store
        self.session: Session | None = None
        self.lock = store._write_lock if write else None

    def __enter__(self) -> Session:
        if self.lock is not None:
            self.lock.acquire()
        self.session = self.store._sessions()
        self.session.begin()
        return self.session

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self.session is not None
        try:
            if exc_type is None:
                self.session.commit()
            else:
                self.session.rollback()
        finally:
            self.session.close()
            if self.lock is not None:
                self.lock.release()


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()

