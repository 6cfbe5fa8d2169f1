"""BackupStore: credentials, sessions, dedup, delete, limits, persistence, cost."""
from __future__ import annotations

import hashlib
import os
import time

import pytest
from cards import seeded_chunk, store_state

from card.nvm import FaultInjector, PersistentMemory, PowerLoss
from card.store import (MAX_BACKUPS, AlreadyPersonalised, AnchorNotFound, BackupExists,
                        BackupNotFound, BackupStore, ChunkExists, ChunkNotFound, ChunkState,
                        InvalidArgument, LifeCycle, NoSession, NotFormatted, NotPersonalised,
                        PukBlocked, SequenceRollback, StoreFull)

PIN, PUK, KEY = b"1234", b"12345678", bytes(range(16))
SIG = bytes(range(64))


def blank(capacity: int = 1 << 20, **kw) -> BackupStore:
    return BackupStore.format(PersistentMemory.create(None, capacity), **kw)


def personalised(capacity: int = 1 << 20, **kw) -> BackupStore:
    store = blank(capacity, **kw)
    store.personalise(PIN, PUK, KEY)
    return store


def chunk(seed: str, size: int = 1000) -> tuple[bytes, bytes]:
    return seeded_chunk(seed, size)


def upload(store: BackupStore, bid: bytes, chunks: list[tuple[bytes, bytes]], seq: int,
           manifest: bytes | None = None) -> bytes:
    store.begin_session(bid)
    for cid, data in chunks:
        if not store.has_chunks([cid])[0]:
            store.put_chunk(cid, data)
    manifest = manifest if manifest is not None else b"manifest of " + bid
    for off in range(0, len(manifest), 200):
        store.put_manifest(off, manifest[off:off + 200])
    store.commit_session(SIG, [cid for cid, _ in chunks], seq, 1_700_000_000 + seq, 42)
    return manifest


state_of = store_state


def test_format_and_open():
    nvm = PersistentMemory.create(None, 1 << 20)
    with pytest.raises(NotFormatted):
        BackupStore(nvm)
    store = BackupStore.format(nvm)
    assert store.lifecycle == LifeCycle.BLANK
    assert BackupStore(nvm).stats() == store.stats()
    store.check()
    with pytest.raises(NotPersonalised):
        store.verify_pin(PIN)


def test_personalise_and_pin_counter():
    store = personalised()
    with pytest.raises(AlreadyPersonalised):
        store.personalise(PIN, PUK, KEY)
    assert store.verify_pin(b"9999") == (False, 2)
    assert store.verify_pin(b"99999") == (False, 1)
    assert store.verify_pin(PIN) == (True, 3)          # success restores the counter
    for left in (2, 1, 0):
        assert store.verify_pin(b"0000") == (False, left)
    assert store.verify_pin(PIN) == (False, 0)         # blocked: even the right PIN fails
    with pytest.raises(InvalidArgument):
        store.verify_pin(b"12a4")
    assert store.unblock_pin(b"00000000", b"4321") == (False, 9)
    assert store.unblock_pin(PUK, b"4321") == (True, 10)
    assert store.verify_pin(b"4321") == (True, 3)
    assert store.change_pin(b"1111", b"5555") == (False, 2)
    assert store.change_pin(b"4321", b"55556666") == (True, 3)
    assert store.verify_pin(b"55556666") == (True, 3)
    store.check()


def test_puk_blocks_after_ten():
    store = personalised()
    for left in range(9, -1, -1):
        assert store.unblock_pin(b"00000000", b"1111") == (False, left)
    with pytest.raises(PukBlocked):
        store.unblock_pin(PUK, b"1111")
    store.set_puk(b"87654321")                         # admin path resets it
    assert store.unblock_pin(b"87654321", b"2222") == (True, 10)


def test_secrets_are_not_stored_in_clear():
    store = personalised()
    image = store.nvm.image_bytes()
    assert PUK not in image and b"1234" * 2 not in image


def test_admin_key_and_anchors():
    store = personalised()
    assert store.admin_key() == (1, KEY)
    store.set_admin_key(b"K" * 16, 2)
    assert store.admin_key() == (2, b"K" * 16)
    keys = [(bytes([i]) * 8, b"\x04" + bytes([i]) * 64) for i in range(8)]
    for kid, pub in keys:
        store.add_anchor(kid, pub)
    with pytest.raises(StoreFull):
        store.add_anchor(b"Z" * 8, b"\x04" + bytes(64))
    store.add_anchor(keys[3][0], b"\x04" + b"\x99" * 64)     # replace in place
    assert store.get_anchor(keys[3][0]) == b"\x04" + b"\x99" * 64
    store.remove_anchor(keys[0][0])
    assert len(store.list_anchors()) == 7 and store.get_anchor(keys[0][0]) is None
    with pytest.raises(AnchorNotFound):
        store.remove_anchor(keys[0][0])
    with pytest.raises(InvalidArgument):
        store.add_anchor(b"short", b"\x04" + bytes(64))
    store.check()


def test_upload_commit_read_back():
    store = personalised()
    chunks = [chunk(f"c{i}", 300 + 700 * i) for i in range(4)]
    manifest = os.urandom(5000)
    upload(store, b"A" * 16, chunks, 7, manifest)
    store.check(deep=True)
    (info,) = store.list_backups()
    assert (info.sequence, info.manifest_length, info.chunk_count, info.signature) == (7, 5000, 4, SIG)
    assert store.read_manifest(b"A" * 16, 0, 10_000) == manifest
    assert store.read_manifest(b"A" * 16, 4990, 100) == manifest[4990:]
    for cid, data in chunks:
        assert store.read_chunk(cid) == data
        assert store.read_chunk(cid, 100, 50) == data[100:150]
        assert store.chunk_hash(cid) == hashlib.sha256(data).digest()
        assert store.chunk_info(cid).refcount == 1
    assert store.backup_chunk_ids(b"A" * 16) == [c for c, _ in chunks]
    assert store.high_water_mark == 7


def test_session_rules():
    store = personalised()
    cid, data = chunk("x")
    with pytest.raises(NoSession):
        store.put_chunk(cid, data)
    store.begin_session(b"S" * 16)
    store.put_chunk(cid, data)
    with pytest.raises(ChunkExists):
        store.put_chunk(cid, data)
    assert store.has_chunks([cid, b"\0" * 32]) == [True, False]
    assert store.list_backups() == []                  # uncommitted is invisible
    assert store.chunk_info(cid).state == ChunkState.PENDING
    store.put_manifest(0, b"abcdef")
    with pytest.raises(InvalidArgument):
        store.put_manifest(10, b"hole")
    store.put_manifest(3, b"XYZW")                     # overwrite + extend
    assert store.read_session_manifest(0, 100) == b"abcXYZW"
    with pytest.raises(ChunkNotFound):
        store.commit_session(SIG, [cid, b"\1" * 32], 1, 0, 0)
    info = store.begin_session(b"S" * 16)              # same id: resume
    assert info.resumed and info.manifest_length == 7 and info.pending_chunks == 1
    store.begin_session(b"T" * 16)                     # another id drops the old session
    assert store.has_chunks([cid]) == [False]
    assert store.session().manifest_length == 0
    store.put_chunk(cid, data)
    store.abort_session()
    assert store.session() is None and store.stats().chunks == 0 and store.stats().used == 0
    store.check()


def test_dedup_refcount_delete_and_hwm():
    store = personalised()
    shared = [chunk(f"s{i}") for i in range(3)]
    only_a, only_b = chunk("a"), chunk("b")
    upload(store, b"A" * 16, shared + [only_a], 1)
    used_a = store.stats().used
    upload(store, b"B" * 16, shared + [only_b, shared[0]], 2)   # duplicate id in the list
    assert store.stats().chunks == 5
    assert store.stats().used - used_a < 3 * store.block_size + 1000 + store.block_size * 4
    assert [store.chunk_info(c).refcount for c, _ in shared] == [2, 2, 2]
    store.check(deep=True)
    with pytest.raises(ChunkExists):                  # committed chunks are never re-sent
        store.begin_session(b"C" * 16)
        store.put_chunk(*shared[0])
    store.abort_session()
    store.delete_backup(b"A" * 16)
    assert store.has_chunks([only_a[0], only_b[0]]) == [False, True]
    assert [store.chunk_info(c).refcount for c, _ in shared] == [1, 1, 1]
    with pytest.raises(SequenceRollback):
        upload(store, b"C" * 16, [only_a], 2)
    store.abort_session()
    store.delete_backup(b"B" * 16)
    assert store.stats().used == 0 and store.stats().chunks == 0
    assert store.high_water_mark == 2                  # kept after deletes
    with pytest.raises(BackupNotFound):
        store.delete_backup(b"B" * 16)
    store.check()


def test_begin_with_existing_backup_id_refused():
    store = personalised()
    upload(store, b"A" * 16, [chunk("1")], 1)
    with pytest.raises(BackupExists):
        store.begin_session(b"A" * 16)


def test_store_full_leaves_state_unchanged():
    store = personalised(capacity=200_000)
    upload(store, b"A" * 16, [chunk("keep", 5000)], 1)
    store.begin_session(b"B" * 16)
    store.put_chunk(*chunk("pending", 3000))
    before = state_of(store)
    writes = store.nvm.write_count
    big = [chunk(f"big{i}", 60_000) for i in range(4)]
    with pytest.raises(StoreFull):
        for c in big:
            store.put_chunk(*c)
    after_partial = state_of(store)                    # earlier puts of this loop stay
    assert after_partial[0] == before[0]
    for c in big:
        if store.has_chunks([c[0]])[0]:
            continue
        with pytest.raises(StoreFull):
            store.put_chunk(*c)
        assert state_of(store) == after_partial
    assert store.nvm.write_count >= writes
    store.check()


def test_directory_full():
    store = personalised()
    for i in range(MAX_BACKUPS):
        upload(store, bytes([i]) * 16, [chunk(f"d{i}", 10)], i + 1)
    store.begin_session(b"\xff" * 16)
    before = state_of(store)
    with pytest.raises(StoreFull):
        store.commit_session(SIG, [], 100, 0, 0)
    assert state_of(store) == before
    store.check()


def tiny_journal_store() -> BackupStore:
    store = BackupStore.format(PersistentMemory.create(None, 1 << 20, journal_capacity=4096))
    store.personalise(PIN, PUK, KEY)
    return store


def test_session_stays_within_the_journal_budget_so_abort_always_fits():
    store = tiny_journal_store()
    store.begin_session(b"J" * 16)
    put = 0
    with pytest.raises(StoreFull, match="journal"):
        for i in range(300):
            store.put_chunk(*chunk(f"j{i}", 10))
            put += 1
    assert 20 < put < 60
    before = state_of(store)
    with pytest.raises(StoreFull):
        store.put_chunk(*chunk("one more", 10))
    assert state_of(store) == before
    store.begin_session(b"K" * 16)                     # drops them all in one transaction
    assert store.stats().chunks == 0
    store.check()


def test_commit_refuses_a_backup_too_big_to_delete_later():
    store = tiny_journal_store()
    for i in range(4):                                 # 4 backups x 25 chunks = 100 chunks
        upload(store, bytes([i]) * 16, [chunk(f"b{i}-{j}", 10) for j in range(25)], i + 1)
    store.begin_session(b"X" * 16)
    all_ids = [chunk(f"b{i}-{j}", 10)[0] for i in range(4) for j in range(25)]
    before = state_of(store)
    with pytest.raises(StoreFull, match="deleted"):
        store.commit_session(SIG, all_ids, 9, 0, 0)
    assert state_of(store) == before
    store.commit_session(SIG, all_ids[:40], 9, 0, 0)   # small enough to delete later
    for i in range(4):
        store.delete_backup(bytes([i]) * 16)
    store.delete_backup(b"X" * 16)                     # frees 40 chunks in one transaction
    assert store.stats().used == 0
    store.check()


def test_journal_overflow_past_the_budget_is_store_full_and_atomic():
    store = tiny_journal_store()
    store.session_journal_budget = 1 << 20             # bypass the guard: the NVM still refuses
    chunks = [chunk(f"j{i}", 10) for i in range(120)]
    store.begin_session(b"J" * 16)
    for c in chunks:
        store.put_chunk(*c)
    before = state_of(store)
    with pytest.raises(StoreFull, match="journal"):
        store.abort_session()
    assert state_of(store) == before
    store.check()


def test_erase_backups_and_factory_reset():
    store = personalised()
    store.add_anchor(b"K" * 8, b"\x04" + bytes(64))
    upload(store, b"A" * 16, [chunk("1"), chunk("2")], 5)
    store.begin_session(b"B" * 16)
    store.put_chunk(*chunk("3"))
    store.erase_backups()
    assert store.list_backups() == [] and store.session() is None
    assert store.stats().used == 0 and store.high_water_mark == 5
    assert store.verify_pin(PIN) == (True, 3) and store.list_anchors()
    store.check()
    upload(store, b"A" * 16, [chunk("1")], 6)
    store.factory_reset()
    assert store.lifecycle == LifeCycle.BLANK and store.list_anchors() == []
    assert store.high_water_mark == 6 and store.list_backups() == []
    assert store.admin_key() == (0, bytes(16))
    store.check()
    store.personalise(b"0000", PUK, KEY)
    assert store.verify_pin(b"0000") == (True, 3)


def test_reopen_file_sees_same_state(tmp_path):
    path = tmp_path / "card.nvm"
    nvm = PersistentMemory.create(path, 1 << 20)
    store = BackupStore.format(nvm)
    store.personalise(PIN, PUK, KEY)
    store.add_anchor(b"K" * 8, b"\x04" + bytes(64))
    upload(store, b"A" * 16, [chunk("1"), chunk("2", 5000)], 3)
    store.begin_session(b"B" * 16)                     # an open session survives too
    store.put_chunk(*chunk("3"))
    store.put_manifest(0, b"partial")
    store.verify_pin(b"0000")
    before = state_of(store)
    nvm.close()
    again = BackupStore(PersistentMemory.open(path))
    assert state_of(again) == before
    again.check(deep=True)
    assert again.begin_session(b"B" * 16).resumed


def test_chunk_and_commit_cost_and_big_image_open(tmp_path):
    nvm = PersistentMemory.create(tmp_path / "card.nvm", 1 << 20)
    store = BackupStore.format(nvm)
    store.personalise(PIN, PUK, KEY)
    upload(store, b"A" * 16, [chunk(f"p{i}") for i in range(20)], 1)
    store.begin_session(b"B" * 16)
    cid, data = chunk("four-k", 4096)
    w, b = nvm.write_count, nvm.bytes_written
    store.put_chunk(cid, data)
    put_writes, put_bytes = nvm.write_count - w, nvm.bytes_written - b
    assert put_bytes <= 4096 + 512 and put_writes <= 4096 // store.block_size + 6
    store.put_manifest(0, b"m" * 300)
    w, b = nvm.write_count, nvm.bytes_written
    store.commit_session(SIG, [cid, chunk("p1")[0]], 2, 0, 0)
    assert nvm.bytes_written - b < 1200 and nvm.write_count - w < 20
    nvm.close()

    big = tmp_path / "big.nvm"
    store = BackupStore.format(PersistentMemory.create(big, 64 << 20))
    store.nvm.close()
    t0 = time.perf_counter()
    store = BackupStore(PersistentMemory.open(big))
    assert time.perf_counter() - t0 < 1.0
    store.personalise(PIN, PUK, KEY)
    store.begin_session(b"A" * 16)
    b = store.nvm.bytes_written
    store.put_chunk(cid, data)
    assert store.nvm.bytes_written - b <= 4096 + 512   # independent of image size
    store.nvm.close()


def test_caches_follow_a_power_up_done_on_the_nvm():
    store = personalised()
    store.begin_session(b"A" * 16)
    store.put_chunk(*chunk("1"))
    store.nvm.fault = FaultInjector(cut_after=3)
    with pytest.raises(PowerLoss):
        store.put_chunk(*chunk("2"))
    with pytest.raises(PowerLoss):
        store.stats()
    store.nvm.power_up()                       # e.g. a card reset from the runtime
    assert store.stats().chunks == 1 and store.has_chunks([chunk("2")[0]]) == [False]
    store.check()


def test_bytearray_arguments():
    store = personalised()
    store.begin_session(bytearray(b"A" * 16))
    cid, data = chunk("1")
    store.put_chunk(bytearray(cid), bytearray(data))
    assert store.has_chunks([bytearray(cid)]) == [True]
    store.commit_session(bytearray(SIG), [bytearray(cid)], 1, 0, 0)
    assert store.read_chunk(cid) == data
    store.check()


def test_reads_at_every_offset_across_fragmented_blocks():
    store = personalised(block_size=64)
    store.begin_session(b"F" * 16)
    small = [chunk(f"frag{i}", 70) for i in range(6)]
    for c in small:
        store.put_chunk(*c)
    # commit every other chunk: the others are freed, leaving 2-block holes
    store.commit_session(SIG, [c for c, _ in small[::2]], 1, 0, 0)
    store.begin_session(b"G" * 16)
    store.alloc._cursor = 0                   # next-fit from the start: fill the holes
    cid, data = chunk("fragmented", 1000)
    store.put_chunk(cid, data)
    blocks = store.alloc.chain(store._chunks[cid][2])
    assert any(b2 != b1 + 1 for b1, b2 in zip(blocks, blocks[1:]))   # really fragmented
    for off in range(0, 1000, 37):
        for n in (1, 63, 64, 65, 300, 2000):
            assert store.read_chunk(cid, off, n) == data[off:off + n]
    store.check(deep=True)
