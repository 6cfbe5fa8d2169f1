"""The DS server's database (SQLAlchemy 2): users, datastores, items, anchors,
maps, md5 nonces and a log of sessions. SQLite by default, PostgreSQL the same code.

A datastore belongs to one user; a user sees only their own. Anchors and maps
are per (datastore, device). A sync's changes, anchor and maps are committed
in one transaction at the end of the session: a client that vanishes
mid-session leaves the datastore exactly as it was.

Passwords: SyncML md5 authentication needs B64(MD5(user:password)) on the
server, so that is what is stored (it is password-equivalent for SyncML: keep
the database private). Basic credentials are checked against the same value.
"""
from __future__ import annotations

import hmac
import time
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    select,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import StaticPool

from host.ds.errors import DsError
from host.errors import UsageError
from host.fsutil import private_sqlite_file
from host.syncml.auth import auth_secret


class Base(DeclarativeBase):
    pass


class DsUser(Base):
    __tablename__ = "ds_users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    secret: Mapped[str] = mapped_column(String(64))  # B64(MD5(name:password))
    created: Mapped[float] = mapped_column(Float)


class DsDatastore(Base):
    __tablename__ = "ds_datastores"
    __table_args__ = (UniqueConstraint("user_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("ds_users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    next_guid: Mapped[int] = mapped_column(Integer, default=1)


class DsItem(Base):
    __tablename__ = "ds_items"
    __table_args__ = (UniqueConstraint("datastore_id", "guid"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    datastore_id: Mapped[int] = mapped_column(ForeignKey("ds_datastores.id", ondelete="CASCADE"), index=True)
    guid: Mapped[str] = mapped_column(String(64))
    content_type: Mapped[str] = mapped_column(String(128))
    data: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(BigInteger)
    updated: Mapped[float] = mapped_column(Float)


class DsAnchor(Base):
    __tablename__ = "ds_anchors"
    __table_args__ = (UniqueConstraint("datastore_id", "device_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    datastore_id: Mapped[int] = mapped_column(ForeignKey("ds_datastores.id", ondelete="CASCADE"))
    device_id: Mapped[str] = mapped_column(String(255))
    client_anchor: Mapped[str] = mapped_column(String(64))
    server_anchor: Mapped[str] = mapped_column(String(64))


class DsMapping(Base):
    __tablename__ = "ds_maps"
    __table_args__ = (UniqueConstraint("datastore_id", "device_id", "luid"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    datastore_id: Mapped[int] = mapped_column(ForeignKey("ds_datastores.id", ondelete="CASCADE"))
    device_id: Mapped[str] = mapped_column(String(255))
    luid: Mapped[str] = mapped_column(String(255))
    guid: Mapped[str] = mapped_column(String(64))


class DsNonce(Base):
    __tablename__ = "ds_nonces"
    __table_args__ = (UniqueConstraint("user_name", "device_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_name: Mapped[str] = mapped_column(String(128))
    device_id: Mapped[str] = mapped_column(String(255))
    nonce: Mapped[str] = mapped_column(String(64))  # base64, as sent in NextNonce


class DsSessionLog(Base):
    __tablename__ = "ds_sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    device_id: Mapped[str] = mapped_column(String(255))
    datastore: Mapped[str | None] = mapped_column(String(128), nullable=True)
    mode: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[int] = mapped_column(Integer)
    items_in: Mapped[int] = mapped_column(Integer, default=0)
    items_out: Mapped[int] = mapped_column(Integer, default=0)
    bytes_in: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_out: Mapped[int] = mapped_column(BigInteger, default=0)
    started: Mapped[float] = mapped_column(Float)
    finished: Mapped[float] = mapped_column(Float)
    message: Mapped[str] = mapped_column(String(255), default="")


def password_secret(name: str, password: str) -> str:
    """B64(MD5(name:password)), the SyncML md5 shared secret."""
    return auth_secret(name, password).decode("ascii")


@dataclass
class StoredItem:
    guid: str
    content_type: str
    data: str


@dataclass
class SyncCommit:
    """Everything one session changes, applied at once by :meth:`DsStore.commit`."""

    user: str
    datastore: str
    device_id: str
    client_anchor: str
    server_anchor: str
    refresh_from_client: bool = False  # drop every item first
    upserts: list[tuple[str, str, str]] | None = None  # (client LUID, content type, data)
    deletes: list[str] | None = None  # client LUIDs
    maps: list[tuple[str, str]] | None = None  # (server GUID, client LUID)


class DsStore:
    """Repository over one database URL (``sqlite:///path`` or ``postgresql+psycopg://...``)."""

    def __init__(self, url: str) -> None:
        try:
            kwargs: dict[str, object] = {}
            if url.startswith("sqlite"):
                kwargs["connect_args"] = {"check_same_thread": False}  # the server uses worker threads
                if url in ("sqlite://", "sqlite:///:memory:"):
                    kwargs["poolclass"] = StaticPool  # one connection, or every thread sees an empty database
            self.engine = create_engine(url, **kwargs)  # type: ignore[arg-type]
            if self.engine.dialect.name == "sqlite":
                private_sqlite_file(self.engine.url.database, "DS database", DsError)
            Base.metadata.create_all(self.engine)
        except (SQLAlchemyError, ValueError, ImportError) as exc:
            raise DsError(f"DS database {url.split('@')[-1]!r} unusable ({type(exc).__name__}): "
                          "check --db and that the server runs") from None
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    def _s(self) -> Session:
        return self._sessions()

    # ---------------------------------------------------------------- users
    def add_user(self, name: str, password: str, replace: bool = False) -> None:
        if not name or len(name) > 128 or ":" in name:
            raise UsageError(f"DS user name {name[:40]!r} must be 1-128 characters without ':'")
        if not password:
            raise UsageError("DS user password must not be empty")
        with self._s() as s, s.begin():
            user = s.scalar(select(DsUser).where(DsUser.name == name))
            if user is not None and not replace:
                raise UsageError(f"DS user {name!r} exists: use --replace to change the password")
            if user is None:
                s.add(DsUser(name=name, secret=password_secret(name, password), created=time.time()))
            else:
                user.secret = password_secret(name, password)

    def remove_user(self, name: str) -> bool:
        with self._s() as s, s.begin():
            user = s.scalar(select(DsUser).where(DsUser.name == name))
            if user is None:
                return False
            ids = list(s.scalars(select(DsDatastore.id).where(DsDatastore.user_id == user.id)))
            for model in (DsItem, DsAnchor, DsMapping):
                s.execute(delete(model).where(model.datastore_id.in_(ids)))  # type: ignore[attr-defined]
            s.execute(delete(DsDatastore).where(DsDatastore.user_id == user.id))
            s.delete(user)
            return True

    def users(self) -> list[str]:
        with self._s() as s:
            return list(s.scalars(select(DsUser.name).order_by(DsUser.name)))

    def user_secret(self, name: str) -> str | None:
        with self._s() as s:
            return s.scalar(select(DsUser.secret).where(DsUser.name == name))

    def check_basic(self, name: str, password: str) -> bool:
        secret = self.user_secret(name)
        want = password_secret(name, password)
        return secret is not None and hmac.compare_digest(secret.encode(), want.encode())

    # ---------------------------------------------------------------- nonces
    def nonce(self, user: str, device_id: str) -> str | None:
        with self._s() as s:
            return s.scalar(select(DsNonce.nonce).where(DsNonce.user_name == user, DsNonce.device_id == device_id))

    def set_nonce(self, user: str, device_id: str, nonce: str) -> None:
        with self._s() as s, s.begin():
            row = s.scalar(select(DsNonce).where(DsNonce.user_name == user, DsNonce.device_id == device_id))
            if row is None:
                s.add(DsNonce(user_name=user, device_id=device_id, nonce=nonce))
            else:
                row.nonce = nonce

    # ---------------------------------------------------------------- datastores
    def _datastore(self, s: Session, user: str, name: str, create: bool) -> DsDatastore | None:
        uid = s.scalar(select(DsUser.id).where(DsUser.name == user))
        if uid is None:
            return None
        ds = s.scalar(select(DsDatastore).where(DsDatastore.user_id == uid, DsDatastore.name == name))
        if ds is None and create:
            ds = DsDatastore(user_id=uid, name=name, next_guid=1)
            s.add(ds)
            s.flush()
        return ds

    def datastores(self, user: str) -> list[str]:
        with self._s() as s:
            return list(s.scalars(select(DsDatastore.name).join(DsUser, DsUser.id == DsDatastore.user_id)
                                  .where(DsUser.name == user).order_by(DsDatastore.name)))

    def has_datastore(self, user: str, name: str) -> bool:
        with self._s() as s:
            return self._datastore(s, user, name, create=False) is not None

    def anchor(self, user: str, name: str, device_id: str) -> tuple[str, str] | None:
        """(client anchor, server anchor) of the last completed session, or None."""
        with self._s() as s:
            ds = self._datastore(s, user, name, create=False)
            if ds is None:
                return None
            row = s.scalar(select(DsAnchor).where(DsAnchor.datastore_id == ds.id, DsAnchor.device_id == device_id))
            return None if row is None else (row.client_anchor, row.server_anchor)

    def items(self, user: str, name: str) -> list[StoredItem]:
        with self._s() as s:
            ds = self._datastore(s, user, name, create=False)
            if ds is None:
                return []
            rows = s.scalars(select(DsItem).where(DsItem.datastore_id == ds.id).order_by(DsItem.id))
            return [StoredItem(r.guid, r.content_type, r.data) for r in rows]

    def mapped_luids(self, user: str, name: str, device_id: str) -> dict[str, str]:
        """client LUID -> server GUID for this device."""
        with self._s() as s:
            ds = self._datastore(s, user, name, create=False)
            if ds is None:
                return {}
            rows = s.scalars(select(DsMapping).where(DsMapping.datastore_id == ds.id, DsMapping.device_id == device_id))
            return {r.luid: r.guid for r in rows}

    def commit(self, c: SyncCommit) -> int:
        """Apply a session's changes atomically; returns the number of items stored."""
        try:
            with self._s() as s, s.begin():
                ds = self._datastore(s, c.user, c.datastore, create=True)
                if ds is None:
                    raise DsError(f"DS user {c.user!r} vanished during the session", 401)
                maps = {r.luid: r for r in s.scalars(select(DsMapping).where(
                    DsMapping.datastore_id == ds.id, DsMapping.device_id == c.device_id))}
                if c.refresh_from_client:
                    s.execute(delete(DsItem).where(DsItem.datastore_id == ds.id))
                    s.execute(delete(DsMapping).where(DsMapping.datastore_id == ds.id))
                    maps = {}
                    s.flush()
                stored = 0
                upserted: set[str] = set()  # GUIDs written this session: a Delete never removes them
                for luid, ctype, data in c.upserts or []:
                    row = None
                    if luid in maps:
                        row = s.scalar(select(DsItem).where(DsItem.datastore_id == ds.id,
                                                            DsItem.guid == maps[luid].guid))
                    if row is None:
                        guid = str(ds.next_guid)
                        ds.next_guid += 1
                        s.add(DsItem(datastore_id=ds.id, guid=guid, content_type=ctype, data=data,
                                     size=len(data.encode()), updated=time.time()))
                        if luid in maps:
                            maps[luid].guid = guid
                        else:
                            maps[luid] = DsMapping(datastore_id=ds.id, device_id=c.device_id, luid=luid, guid=guid)
                            s.add(maps[luid])
                    else:
                        row.content_type, row.data, row.size, row.updated = ctype, data, len(data.encode()), time.time()
                    upserted.add(maps[luid].guid)
                    stored += 1
                freed: dict[str, DsMapping] = {}
                for luid in c.deletes or []:
                    if luid in maps:
                        if maps[luid].guid not in upserted:  # two LUIDs for one item: the Replace wins
                            s.execute(delete(DsItem).where(DsItem.datastore_id == ds.id,
                                                           DsItem.guid == maps[luid].guid))
                        freed[luid] = maps.pop(luid)
                for guid, luid in c.maps or []:
                    for other in [k for k, r in maps.items() if r.guid == guid and k != luid]:
                        freed[other] = maps.pop(other)  # one LUID per item and device: the Map's is the current one
                    if luid in freed:  # LUID re-used in the same flush: update the row, no delete+insert
                        maps[luid] = freed.pop(luid)
                    if luid in maps:
                        maps[luid].guid = guid
                    else:
                        maps[luid] = DsMapping(datastore_id=ds.id, device_id=c.device_id, luid=luid, guid=guid)
                        s.add(maps[luid])
                for gone in freed.values():
                    s.delete(gone)
                row = s.scalar(select(DsAnchor).where(DsAnchor.datastore_id == ds.id,
                                                      DsAnchor.device_id == c.device_id))
                if row is None:
                    s.add(DsAnchor(datastore_id=ds.id, device_id=c.device_id, client_anchor=c.client_anchor,
                                   server_anchor=c.server_anchor))
                else:
                    row.client_anchor, row.server_anchor = c.client_anchor, c.server_anchor
                return stored
        except IntegrityError as exc:
            raise DsError(f"DS database refused the session's changes ({exc.orig.__class__.__name__}): retry", 510) from None

    # ---------------------------------------------------------------- log
    def log_session(self, **fields: object) -> None:
        with self._s() as s, s.begin():
            s.add(DsSessionLog(**fields))

    def sessions(self, limit: int = 50) -> list[DsSessionLog]:
        with self._s() as s:
            return list(s.scalars(select(DsSessionLog).order_by(DsSessionLog.id.desc()).limit(limit)))
