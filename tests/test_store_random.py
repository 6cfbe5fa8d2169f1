"""Random operation sequences with random power cuts; check() after each step.

For each step the same operation also runs, without a fault, on a copy of the
image taken before it: the faulted card must end in the state before or the
state after; a refused operation (StoreError) must change nothing; committed
backups always read back the bytes that were uploaded.
"""
from __future__ import annotations

import hashlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from card.nvm import FaultInjector, PersistentMemory, PowerLoss
from card.store import BackupStore, StoreError

PIN = b"2468"


def chunk(i: int) -> tuple[bytes, bytes]:
    data = hashlib.shake_256(b"chunk%d" % i).digest(37 + 1900 * i)
    return hashlib.sha256(data).digest(), data


def manifest(bid: bytes) -> bytes:
    return hashlib.shake_256(bid).digest(300 + bid[0] * 97)


def bid_of(i: int) -> bytes:
    return bytes([i + 1]) * 16


def visible(store: BackupStore) -> tuple:
    s = store.session()
    return (tuple(store.list_backups()), store.high_water_mark, store.stats(), s,
            store.pin_tries_left(),
            tuple(store.has_chunks([chunk(i)[0] for i in range(8)])))


def run(store: BackupStore, op: tuple) -> None:
    kind, arg = op
    if kind == "begin":
        store.begin_session(bid_of(arg))
    elif kind == "put":
        store.put_chunk(*chunk(arg))
    elif kind == "manifest":
        s = store.session()
        if s is not None:
            m = manifest(s.backup_id)
            store.put_manifest(min(arg, s.manifest_length), m[min(arg, s.manifest_length):][:180])
    elif kind == "commit":
        ids = [chunk(i)[0] for i in sorted(arg)]
        ids = [c for c, have in zip(ids, store.has_chunks(ids)) if have]   # mostly succeed
        store.commit_session(bytes(64), ids, store.high_water_mark + 1, 0, 0)
    elif kind == "abort":
        store.abort_session()
    elif kind == "delete":
        store.delete_backup(bid_of(arg))
    elif kind == "pin":
        store.verify_pin(PIN if arg else b"0000")
    elif kind == "erase":
        store.erase_backups()


begin = st.tuples(st.just("begin"), st.integers(0, 5))
put = st.tuples(st.just("put"), st.integers(0, 7))
manifest_piece = st.tuples(st.just("manifest"), st.integers(0, 2000))
commit = st.tuples(st.just("commit"), st.sets(st.integers(0, 7), max_size=5))
ops = st.one_of(
    begin, begin, put, put, put, put, manifest_piece, manifest_piece, commit, commit,
    st.tuples(st.just("abort"), st.just(0)),
    st.tuples(st.just("delete"), st.integers(0, 5)),
    st.tuples(st.just("pin"), st.booleans()),
    st.tuples(st.just("erase"), st.just(0)),
)
faults = st.one_of(st.none(), st.tuples(st.integers(1, 40), st.booleans()))


def fresh() -> bytes:
    store = BackupStore.format(PersistentMemory.create(None, 24 * 1024, journal_capacity=8192),
                               max_chunks=16)
    store.personalise(PIN, b"12345678", bytes(16))
    return store.nvm.image_bytes()


BASE = fresh()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(ops, faults), min_size=10, max_size=40))
def test_random_operations_with_power_cuts(steps):
    store = BackupStore(PersistentMemory.from_image(BASE))
    for op, fault in steps:
        if op[0] in ("put", "manifest", "commit") and store.session() is None:
            free = [i for i in range(6) if bid_of(i) not in {b.backup_id for b in store.list_backups()}]
            if free:                                   # most steps need a session: open one
                store.begin_session(bid_of(free[0]))
        image = store.nvm.image_bytes()
        before = visible(store)
        clean = BackupStore(PersistentMemory.from_image(image))
        try:
            run(clean, op)
            refused = False
        except StoreError:
            refused = True
        after = visible(clean)
        if fault is not None:
            store.nvm.fault = FaultInjector(cut_after=fault[0], tear=fault[1])
        try:
            run(store, op)
        except StoreError:
            assert refused
        except PowerLoss:
            store.power_up()
        store.nvm.fault = None
        store.check(deep=True)
        got = visible(store)
        if refused:
            assert got == before
        elif got != after:
            assert store.nvm.fault is None and got != after
            pin_decrement_only = op[0] == "pin" and got[:4] == before[:4] and got[5:] == before[5:] \
                and got[4] == before[4] - 1
            assert got == before or pin_decrement_only, (op, fault)
        for b in store.list_backups():
            assert store.read_manifest(b.backup_id, 0, 1 << 16) == manifest(b.backup_id)[:b.manifest_length]
            for cid in store.backup_chunk_ids(b.backup_id):
                data = store.read_chunk(cid)
                assert hashlib.sha256(data).digest() == cid
