"""PersistentMemory: image format, transactions, journal recovery, fault injection."""
from __future__ import annotations

import os
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from card.nvm import (HEADER_SIZE, FaultInjector, ImageBusy, ImageFormatError, JournalFull, NvmError,
                      NvmRangeError, PersistentMemory, PowerLoss, TransactionError)


@pytest.fixture
def nvm() -> PersistentMemory:
    return PersistentMemory.create(None, 64 * 1024, journal_capacity=8192)


def test_create_open_roundtrip(tmp_path):
    path = tmp_path / "card.nvm"
    with PersistentMemory.create(path, 100_000) as nvm:
        nvm.write(10, b"hello")
        assert nvm.read(8, 9) == b"\0\0hello\0\0"
    with open(path, "rb") as f:
        assert f.read(5) == b"SVNVM"
    with PersistentMemory.open(path) as again:
        assert again.capacity == 100_000
        assert again.read(10, 5) == b"hello"


def test_create_refuses_existing_file(tmp_path):
    path = tmp_path / "card.nvm"
    PersistentMemory.create(path, 4096).close()
    with pytest.raises(FileExistsError):
        PersistentMemory.create(path, 4096)


def test_open_rejects_foreign_or_damaged_image(tmp_path):
    bad = tmp_path / "bad.nvm"
    bad.write_bytes(b"NOTANIMAGE" + bytes(10000))
    with pytest.raises(ImageFormatError, match="not a simvault NVM image"):
        PersistentMemory.open(bad)
    with pytest.raises(ImageFormatError, match="does not exist"):
        PersistentMemory.open(tmp_path / "missing.nvm")
    good = tmp_path / "good.nvm"
    PersistentMemory.create(good, 4096).close()
    raw = bytearray(good.read_bytes())
    raw[5] = 99                                     # version byte
    good.write_bytes(bytes(raw))
    with pytest.raises(ImageFormatError, match="version 99"):
        PersistentMemory.open(good)
    raw[5] = 1
    raw[16] ^= 1                                    # capacity, covered by the header tag
    good.write_bytes(bytes(raw))
    with pytest.raises(ImageFormatError, match="damaged"):
        PersistentMemory.open(good)


def test_range_checks(nvm):
    with pytest.raises(NvmRangeError):
        nvm.write(nvm.capacity - 2, b"abc")
    with pytest.raises(NvmRangeError):
        nvm.read(-1, 2)
    nvm.write(nvm.capacity - 3, b"abc")
    assert nvm.read(nvm.capacity - 3, 3) == b"abc"


def test_write_counter_and_bytes(nvm):
    w, b = nvm.write_count, nvm.bytes_written
    nvm.write(0, b"x" * 100)
    nvm.write_nonatomic(200, b"y" * 10)
    assert (nvm.write_count - w, nvm.bytes_written - b) == (2, 110)
    with nvm.transaction():
        nvm.write(0, b"z" * 100)        # journal record + data
        nvm.write(10, b"q" * 10)        # range already journaled: data only
    assert nvm.write_count - w == 2 + 2 + 1 + 1   # + commit header


def test_transaction_commit_and_abort(nvm):
    nvm.write(0, b"old-old-")
    with nvm.transaction():
        nvm.write(0, b"new")
        assert nvm.read(0, 8) == b"new-old-"        # reads see the transaction
    assert nvm.read(0, 8) == b"new-old-"
    nvm.begin()
    nvm.write(0, b"XYZ")
    nvm.write(4, b"1234")
    nvm.write(1, b"!!")                               # overlapping second write
    nvm.abort()
    assert nvm.read(0, 8) == b"new-old-"
    with pytest.raises(RuntimeError):
        with nvm.transaction():
            nvm.write(0, b"gone")
            raise RuntimeError("applet error")
    assert nvm.read(0, 8) == b"new-old-"
    assert not nvm.in_transaction


def test_transaction_misuse(nvm):
    with pytest.raises(TransactionError):
        nvm.commit()
    with pytest.raises(TransactionError):
        nvm.abort()
    nvm.begin()
    with pytest.raises(TransactionError):
        nvm.begin()
    nvm.abort()


def test_nonatomic_write_survives_abort(nvm):
    nvm.begin()
    nvm.write(0, b"A")
    nvm.write_nonatomic(1, b"B")
    nvm.abort()
    assert nvm.read(0, 2) == b"\0B"


def test_journal_full_leaves_transaction_abortable(nvm):
    nvm.write(0, b"keep")
    nvm.begin()
    nvm.write(0, b"lost")
    with pytest.raises(JournalFull) as info:
        nvm.write(100, bytes(9000))
    assert info.value.sw == 0x6A84
    assert nvm.read(100, 4) == b"\0\0\0\0"              # the refused write did not happen
    nvm.abort()
    assert nvm.read(0, 4) == b"keep"
    with nvm.transaction():                             # the journal is usable again
        nvm.write(0, bytes(8000))


def _three_write_txn(nvm: PersistentMemory) -> None:
    with nvm.transaction():
        nvm.write(0, b"N" * 100)
        nvm.write(1000, b"M" * 300)
        nvm.write(50, b"O" * 100)


@pytest.mark.parametrize("tear", [True, False])
def test_power_cut_at_every_write_is_all_or_nothing(tear):
    base = PersistentMemory.create(None, 4096, journal_capacity=4096)
    base.write(0, b"a" * 2000)
    image = base.image_bytes()
    probe = PersistentMemory.from_image(image)
    before = probe.write_count
    _three_write_txn(probe)
    total = probe.write_count - before
    assert probe.read(0, 2000) != b"a" * 2000
    assert total == 7                                   # 3 records + 3 data + commit
    for cut in range(1, total + 1):
        nvm = PersistentMemory.from_image(image)
        nvm.fault = FaultInjector(cut_after=cut, tear=tear)
        with pytest.raises(PowerLoss):
            _three_write_txn(nvm)
        with pytest.raises(PowerLoss):                  # dead until power_up
            nvm.read(0, 1)
        nvm.power_up()
        got = nvm.read(0, 2000)
        # the last write is the commit header: cut or torn, it never commits
        assert got == b"a" * 2000, f"uncommitted data visible after cut at write {cut}"
        # the same state survives a restart (new object on the image)
        assert PersistentMemory.from_image(nvm.image_bytes()).read(0, 2000) == got


def test_torn_commit_header_rolls_back():
    nvm = PersistentMemory.create(None, 4096, journal_capacity=4096)
    probe = PersistentMemory.from_image(nvm.image_bytes())
    n0 = probe.write_count
    _three_write_txn(probe)
    commit_index = probe.write_count - n0
    nvm.fault = FaultInjector(cut_after=commit_index, tear=True)
    with pytest.raises(PowerLoss):
        _three_write_txn(nvm)
    nvm.power_up()
    assert nvm.read(0, 2000) == bytes(2000)


def test_power_cut_during_recovery_then_recover_again():
    nvm = PersistentMemory.create(None, 4096, journal_capacity=4096)
    nvm.write(0, b"a" * 1400)
    image = nvm.image_bytes()
    for cut_in_recovery in range(1, 5):
        card = PersistentMemory.from_image(image)
        card.fault = FaultInjector(cut_after=6)         # after all data, before commit
        with pytest.raises(PowerLoss):
            _three_write_txn(card)
        card.fault = FaultInjector(cut_after=cut_in_recovery, tear=True)
        with pytest.raises(PowerLoss):
            card.power_up()                              # rollback is torn too
        card.fault = None
        card.power_up()
        assert card.read(0, 1400) == b"a" * 1400


def test_reopen_file_recovers_uncommitted_transaction(tmp_path):
    path = tmp_path / "card.nvm"
    nvm = PersistentMemory.create(path, 8192)
    nvm.write(0, b"committed")
    nvm.fault = FaultInjector(cut_after=4)
    with pytest.raises(PowerLoss):
        with nvm.transaction():
            nvm.write(0, b"half-done")
            nvm.write(100, b"more")
    nvm.close()                                          # the process "dies"
    with PersistentMemory.open(path) as again:
        assert again.read(0, 9) == b"committed"
        assert again.read(100, 4) == bytes(4)


def test_fault_injector_counts_without_cutting(nvm):
    nvm.fault = FaultInjector()
    _three_write_txn(nvm)
    assert nvm.fault.writes == 7 and not nvm.fault.fired


def test_bad_capacity():
    with pytest.raises(NvmError):
        PersistentMemory.create(None, 0)
    with pytest.raises(NvmError):
        PersistentMemory.create(None, 4096, journal_capacity=100)


def test_large_image_is_sparse_fast_and_writes_in_place(tmp_path):
    path = tmp_path / "big.nvm"
    t0 = time.perf_counter()
    nvm = PersistentMemory.create(path, 64 * 1024 * 1024)
    nvm.close()
    t1 = time.perf_counter()
    nvm = PersistentMemory.open(path)
    t2 = time.perf_counter()
    assert t1 - t0 < 1.0 and t2 - t1 < 0.2
    size = os.path.getsize(path)
    mtime_pages = os.stat(path).st_blocks
    b0 = nvm.bytes_written
    nvm.write(50 * 1024 * 1024, os.urandom(4096))
    assert nvm.bytes_written - b0 == 4096
    assert os.path.getsize(path) == size                 # no growth, no rewrite
    assert os.stat(path).st_blocks - mtime_pages <= 16   # only the touched pages
    nvm.close()
    assert HEADER_SIZE == 4096


writes = st.lists(st.tuples(st.integers(0, 1900), st.binary(min_size=1, max_size=100)),
                  min_size=1, max_size=30)


@settings(max_examples=150, deadline=None)
@given(writes, st.integers(1, 70), st.sampled_from([0.0, 0.3, 0.5, 0.97]))
def test_random_transaction_is_all_or_nothing(ws, cut, fraction):
    """Overlapping writes (exercising the journaled-range bookkeeping), then
    abort, or a power cut anywhere with any tear fraction: nothing survives."""
    nvm = PersistentMemory.create(None, 2048, journal_capacity=8192)
    nvm.write(0, bytes(range(256)) * 8)
    image = nvm.image_bytes()
    old = nvm.read(0, 2048)
    nvm.begin()
    model = bytearray(old)
    for off, data in ws:
        nvm.write(off, data)
        model[off:off + len(data)] = data
        assert nvm.read(0, 2048) == bytes(model)       # reads see the transaction
    nvm.abort()
    assert nvm.read(0, 2048) == old
    card = PersistentMemory.from_image(image)
    card.fault = FaultInjector(cut_after=cut, tear=True, tear_fraction=fraction)
    try:
        with card.transaction():
            for off, data in ws:
                card.write(off, data)
    except PowerLoss:
        card.power_up()
        assert card.read(0, 2048) == old
    else:
        assert card.read(0, 2048) == bytes(model)      # the cut came after the commit


def test_journaled_ranges_merge():
    nvm = PersistentMemory.create(None, 4096)
    nvm.begin()
    w = nvm.write_count
    nvm.write(100, bytes(10))      # [100,110) logged
    nvm.write(120, bytes(10))      # [120,130) logged
    nvm.write(110, bytes(10))      # [110,120) logged: now one [100,130)
    assert nvm.write_count - w == 6
    nvm.write(100, bytes(30))      # covered: data only
    assert nvm.write_count - w == 7
    nvm.write(95, bytes(10))       # partly covered: logged again
    assert nvm.write_count - w == 9
    nvm.abort()


def test_truncated_image_refused_and_exclusive_open(tmp_path):
    path = tmp_path / "card.nvm"
    PersistentMemory.create(path, 100_000).close()
    first = PersistentMemory.open(path, exclusive=True)
    with pytest.raises(ImageBusy):
        PersistentMemory.open(path, exclusive=True)
    first.close()
    PersistentMemory.open(path, exclusive=True).close()   # lock gone with the fd
    with open(path, "r+b") as f:
        f.truncate(50_000)
    with pytest.raises(ImageFormatError, match="truncated"):
        PersistentMemory.open(path)
