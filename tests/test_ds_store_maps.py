"""DsStore.commit with the Map a client sends after refresh-from-server (issue 11, point 1):
SyncEvolution empties the folder and renumbers, so a LUID that named one item now names
another within the same Map. Once this was a delete and an insert of the same map row in one
flush (IntegrityError -> HTTP 400 -> the client's next message 404). Real SQLite database."""
from __future__ import annotations

from host.ds.store import DsStore, SyncCommit


def _commit(store: DsStore, n: int, **changes) -> int:
    return store.commit(SyncCommit(user="alice", datastore="backups", device_id="dev1",
                                   client_anchor=f"c{n}", server_anchor=f"s{n}", **changes))


def test_a_map_that_re_uses_luids_is_applied_in_one_commit(tmp_path) -> None:
    store = DsStore(f"sqlite:///{tmp_path / 'ds.db'}")
    store.add_user("alice", "secret-password")
    _commit(store, 1, upserts=[("1", "text/plain", "first"), ("2", "text/plain", "second"),
                               ("3", "text/plain", "third")])
    before = store.mapped_luids("alice", "backups", "dev1")
    guid = {store_item.data: store_item.guid for store_item in store.items("alice", "backups")}
    assert before == {"1": guid["first"], "2": guid["second"], "3": guid["third"]}
    # refresh-from-server: the client emptied its folder, took the three items as Adds and
    # numbered them afresh: every LUID now names a different item than before
    renumbered = [(guid["third"], "1"), (guid["first"], "2"), (guid["second"], "3")]
    _commit(store, 2, maps=renumbered)
    assert store.mapped_luids("alice", "backups", "dev1") == {"1": guid["third"], "2": guid["first"],
                                                               "3": guid["second"]}
    assert sorted(i.data for i in store.items("alice", "backups")) == ["first", "second", "third"]


def test_a_deleted_luid_re_used_by_the_map_keeps_the_new_item(tmp_path) -> None:
    store = DsStore(f"sqlite:///{tmp_path / 'ds.db'}")
    store.add_user("alice", "secret-password")
    _commit(store, 1, upserts=[("1", "text/plain", "old"), ("2", "text/plain", "kept")])
    guid = {i.data: i.guid for i in store.items("alice", "backups")}
    # the client deletes LUID 1 and, in the same session, maps LUID 1 to the other item
    _commit(store, 2, deletes=["1"], maps=[(guid["kept"], "1")])
    assert store.mapped_luids("alice", "backups", "dev1") == {"1": guid["kept"]}
    assert [i.data for i in store.items("alice", "backups")] == ["kept"]
