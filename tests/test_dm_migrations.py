"""The DM database's versioned migrations (Alembic): the migrated schema is the tables' schema,
several instances starting at once migrate once, and databases of releases before migrations
are stamped and upgraded with their rows kept. SQLite and a throwaway PostgreSQL."""
from __future__ import annotations

import threading

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from host.dm.server import migrate
from host.dm.server.db import Store, normalise_url
from host.dm.server.tables import Base
from host.fsutil import private_sqlite_file
from test_dm_fixtures import db_url, pg_cluster  # noqa: F401 - fixtures

pytestmark = pytest.mark.timeout(120)


def test_the_migrated_schema_is_the_tables_schema(db_url) -> None:  # noqa: F811
    """A column added to tables.py without its revision fails here: write one with
    `python -m host.dm.server.migrate revision "what" NNNN`."""
    store = Store(db_url)
    try:
        with store.engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
            assert diffs == [], diffs
            assert migrate.current(conn) == migrate.head()
    finally:
        store.close()


def test_instances_starting_at_once_migrate_once(db_url) -> None:  # noqa: F811
    errors: list[BaseException] = []
    stores: list[Store] = []

    def start() -> None:
        try:
            stores.append(Store(db_url))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert errors == [] and len(stores) == 4, errors
        with stores[0].engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [migrate.head()]
    finally:
        for s in stores:
            s.close()


def old_release_database(url: str, revision: str) -> None:
    """The database a release before migrations made: the schema of ``revision``, no alembic_version,
    one registered device (rows as that release wrote them)."""
    engine = create_engine(normalise_url(url))
    with engine.begin() as conn:
        command.upgrade(migrate._config(conn), revision)
        conn.execute(text("DROP TABLE alembic_version"))
        conn.execute(text("INSERT INTO devices (id, username, secret, server_secret, auth_type, server_nonce, "
                          "client_nonce, allow_device_backup, default_target, devinfo, created_at) VALUES "
                          "('IMEI:1', 'IMEI:1', 's', 'ss', 'md5', 'AA==', 'AA==', true, 'server', '{}', 0)"))
    engine.dispose()


@pytest.mark.parametrize("revision", ["0001", "0002"])
def test_a_database_from_before_migrations_is_stamped_and_upgraded(db_url, revision) -> None:  # noqa: F811
    if db_url.startswith("sqlite"):
        private_sqlite_file(db_url.split(":///", 1)[1])
    old_release_database(db_url, revision)
    engine = create_engine(normalise_url(db_url))
    with engine.connect() as conn:
        assert migrate._legacy_revision(conn) == revision
    engine.dispose()

    store = Store(db_url)
    try:
        assert "enc_key" in {c["name"] for c in inspect(store.engine).get_columns("devices")}
        assert [d["id"] for d in store.devices()] == ["IMEI:1"]
        with store.engine.connect() as conn:
            assert migrate.current(conn) == migrate.head()
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    finally:
        store.close()


def test_autogenerate_finds_a_new_column(tmp_path) -> None:
    """The check above can fail: a column the revisions do not create is reported."""
    engine = create_engine(f"sqlite:///{tmp_path}/x.db")
    migrate.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE devices DROP COLUMN last_seen"))
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert any(d[0] == "add_column" and d[3].name == "last_seen" for d in diffs), diffs
