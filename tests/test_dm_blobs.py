"""Server backups stored content-addressed (host/dm/server/blobs.py): an incremental backup stores
only its new chunks, every archive reads back byte for byte and verifies, deleting one backup keeps
the chunks another lists, unreferenced chunks are collected, a missing or altered chunk is refused;
in the database (SQLite, PostgreSQL) and in a directory; and a backup through the DM server."""
from __future__ import annotations

import hashlib
import threading

import pytest
from sqlalchemy import func, insert, select

from host.archive import Archive
from host.backup.keys import generate_identity
from host.backup.ops import backup_tree
from host.dm.server.backup_plugin import verify_uploaded_archive
from host.dm.server.db import Store, StoreError
from host.dm.server.registry import register_device
from host.dm.server.tables import BackupRow, BlobRow
from host.tree.generate import generate_tree
from test_dm_fixtures import PIN, DMWorld, db_url, pg_cluster  # noqa: F401 - fixtures

pytestmark = pytest.mark.timeout(120)
DEVICE = "IMEI:350000000000001"


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """A full backup and an incremental one on it (same base chunks), signed by one device."""
    ident = generate_identity(tmp_path_factory.mktemp("keys"))
    tree = generate_tree(60_000, seed=3)
    first = backup_tree(tree, ident, device_id=DEVICE)
    tree.replace(next(uri for uri, n in tree.walk() if n.value not in (None, "")), "changed")
    second = backup_tree(tree, ident, device_id=DEVICE, previous=first)
    return ident, first.to_bytes(), second.to_bytes()


@pytest.fixture(params=["db", "dir"])
def store(request, db_url, tmp_path):  # noqa: F811
    s = Store(db_url, blobs="db" if request.param == "db" else f"dir:{tmp_path}/blobs")
    register_device(s, "simvault-dms", DEVICE, "device-pw-1", "server-pw-1")
    yield s
    s.close()


def _store(store: Store, data: bytes, job_id: int | None = None) -> dict:
    archive = Archive.from_bytes(data)
    return store.store_backup(DEVICE, archive.backup_id.hex(), archive.sequence, data, archive.summary(), job_id)


def _keys(data: bytes) -> set[str]:
    archive = Archive.from_bytes(data)
    return {hashlib.sha256(archive.chunks[ref.chunk_id]).hexdigest() for ref in archive.manifest.chunks}


def _blob_bytes(store: Store) -> tuple[int, int]:
    with store.reading() as s:
        return s.execute(select(func.count(), func.coalesce(func.sum(BlobRow.size), 0))).one()


def test_an_incremental_stores_only_its_new_chunks(store, chain) -> None:
    ident, first, second = chain
    _store(store, first)
    _, after_first = _blob_bytes(store)
    _store(store, second)
    _, after_second = _blob_bytes(store)
    new = after_second - after_first
    assert 0 < new < len(second) // 4, (len(first), len(second), new)  # the base is not stored again
    for data in (first, second):
        archive = Archive.from_bytes(data)
        back = store.backup_archive(DEVICE, archive.backup_id.hex())
        assert back == data
        verify_uploaded_archive(back, DEVICE, ident.signer.public_point)
    if store.blobs.kind == "directory":
        files = [p for p in store.blobs.root.rglob("*") if p.is_file()]
        assert files and all(p.stat().st_mode & 0o777 == 0o600 for p in files)
        assert store.blobs.root.stat().st_mode & 0o777 == 0o700


def test_deleting_one_backup_keeps_what_the_other_lists(store, chain) -> None:
    _, first, second = chain
    a, b = _store(store, first), _store(store, second)
    assert store.delete_backup(DEVICE, a["backup_id"])
    assert store.collect_blobs(grace=3600) == 0  # dead, but within the grace period
    assert store.collect_blobs(grace=0) == len(_keys(first) - _keys(second))
    assert store.backup_archive(DEVICE, b["backup_id"]) == second
    assert store.delete_backup(DEVICE, b["backup_id"])
    assert store.collect_blobs(grace=0) > 0
    assert _blob_bytes(store) == (0, 0)
    if store.blobs.kind == "directory":
        assert not [p for p in store.blobs.root.rglob("*") if p.is_file()]


def test_a_chunk_that_went_missing_or_was_altered_is_refused(store, chain) -> None:
    _, first, _ = chain
    row = _store(store, first)
    with store.session() as s:
        key = s.scalars(select(BackupRow.parts).where(BackupRow.backup_id == row["backup_id"])).one()[0]
    if store.blobs.kind == "directory":
        path = store.blobs._path(key)
        path.write_bytes(b"x" + path.read_bytes()[1:])
    else:
        with store.session() as s:
            s.execute(BlobRow.__table__.update().where(BlobRow.key == key).values(data=b"altered"))
    with pytest.raises(StoreError, match=f"chunk {key[:16]} is missing or damaged"):
        store.backup_archive(DEVICE, row["backup_id"])


def test_a_backup_stored_before_content_addressing_still_reads(store, chain) -> None:
    _, first, _ = chain
    archive = Archive.from_bytes(first)
    with store.session() as s:  # the row as release 0.1 wrote it: the whole archive, no parts
        s.execute(insert(BackupRow).values(device_id=DEVICE, backup_id=archive.backup_id.hex(), sequence=1,
                                           size=len(first), sha256="0" * 64, archive=first, parts=None, meta={},
                                           job_id=None, created_at=0.0, verified_at=0.0))
    assert store.backup_archive(DEVICE, archive.backup_id.hex()) == first


def test_concurrent_backups_sharing_chunks_count_them_right(store, chain) -> None:
    _, first, second = chain
    errors: list[BaseException] = []

    def put(data: bytes) -> None:
        try:
            _store(store, data)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=put, args=(d,)) for d in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    for data in (first, second):
        assert store.backup_archive(DEVICE, Archive.from_bytes(data).backup_id.hex()) == data
    with store.reading() as s:
        total_refs = s.scalar(select(func.sum(BlobRow.refs)))
    assert total_refs == len(Archive.from_bytes(first).manifest.chunks) + len(Archive.from_bytes(second).manifest.chunks)


def test_backup_and_restore_through_the_dm_server_with_a_blob_directory(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SIMVAULT_PIN", PIN)
    world = DMWorld(tmp_path, f"sqlite:///{tmp_path}/dm.db", server_options={"blob_store": f"dir:{tmp_path}/blobs"})
    try:
        dev = world.add_device("phone")
        job = world.wait_job(world.job(dev, "backup", "server")["id"])
        assert job["state"] == "succeeded", job["reason"]
        [stored] = world.web.server.store.backups(dev.device_id)
        assert [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()]
        done = world.wait_job(world.job(dev, "restore", "server", backup_id=stored["backup_id"])["id"])
        assert done["state"] == "succeeded", done["reason"]
    finally:
        world.close()
