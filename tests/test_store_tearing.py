"""Power cut at EVERY NVM write of each store mutation, torn (10%, 50%, 97%
of the write reaching the image) and clean.

After each cut: power_up(), check(deep=True), and the API-visible state must
be exactly the state before the call or exactly the state after it; a restart
(a new PersistentMemory on the same image) must show the same state.
"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable

import pytest
from cards import seeded_chunk, store_state

from card.nvm import FaultInjector, PersistentMemory, PowerLoss
from card.store import BackupStore

PIN, PUK, KEY, SIG = b"1234", b"12345678", bytes(16), bytes(range(64))
ROOT = Path(__file__).resolve().parents[1]


def chunk(seed: str, size: int = 700) -> tuple[bytes, bytes]:
    return seeded_chunk(seed, size)


def state_of(store: BackupStore) -> tuple:
    return store_state(store, credentials=True)


SHARED = [chunk(f"shared{i}") for i in range(3)]
OLD_ONLY = chunk("old-only", 1500)
NEW_ONLY = [chunk("new1", 2000), chunk("new2", 10)]


def base_image(with_session: bool = True) -> bytes:
    """A card with backup A (seq 1) and an open session for B whose chunks
    are uploaded (B shares 3 chunks with A)."""
    store = BackupStore.format(PersistentMemory.create(None, 256 * 1024, journal_capacity=16384))
    store.personalise(PIN, PUK, KEY)
    store.begin_session(b"A" * 16)
    for c in SHARED + [OLD_ONLY]:
        store.put_chunk(*c)
    store.put_manifest(0, b"manifest A " * 40)
    store.commit_session(SIG, [c for c, _ in SHARED + [OLD_ONLY]], 1, 1000, 5000)
    if with_session:
        store.begin_session(b"B" * 16)
        store.put_chunk(*NEW_ONLY[0])
        store.put_chunk(*chunk("pending-unused"))      # commit must free this one
        store.put_manifest(0, b"manifest B " * 30)
    store.check(deep=True)
    return store.nvm.image_bytes()


def tear_everywhere(image: bytes, op: Callable[[BackupStore], object],
                    extra: Callable[[BackupStore, tuple, tuple, tuple], None] | None = None,
                    also_ok: Callable[[tuple, tuple], bool] = lambda got, before: False) -> int:
    """Run op with a power cut at each write index, torn and not.  Returns
    the number of NVM writes op makes."""
    probe = BackupStore(PersistentMemory.from_image(image))
    before = state_of(probe)
    w0 = probe.nvm.write_count
    op(probe)
    total = probe.nvm.write_count - w0
    after = state_of(probe)
    assert before != after and total > 0
    outcomes = set()
    for tear, fraction in ((False, 0.0), (True, 0.1), (True, 0.5), (True, 0.97)):
        for cut in range(1, total + 1):
            nvm = PersistentMemory.from_image(image)
            store = BackupStore(nvm)
            nvm.fault = FaultInjector(cut_after=cut, tear=tear, tear_fraction=fraction)
            with pytest.raises(PowerLoss):
                op(store)
            with pytest.raises(PowerLoss):                # no stale caches while off
                store.list_backups()
            store.power_up()
            store.check(deep=True)
            got = state_of(store)
            assert got in (before, after) or also_ok(got, before), \
                f"cut at write {cut}/{total} (tear={tear}) left a mixed state"
            outcomes.add(got == after)
            if extra:
                extra(store, before, after, got)
            restarted = BackupStore(PersistentMemory.from_image(nvm.image_bytes()))
            restarted.check()
            assert state_of(restarted) == got
    assert False in outcomes               # cuts before the commit point roll back
    return total


def test_commit_session_sharing_chunks():
    image = base_image()
    ids = [c for c, _ in SHARED] + [NEW_ONLY[0][0]]

    def op(store: BackupStore) -> None:
        store.commit_session(SIG, ids, 2, 2000, 6000)

    def extra(store, before, after, got):
        a = store.get_backup(b"A" * 16)                   # A intact either way
        assert state_of(store)[0][0] == before[0][0] and a.sequence == 1

    total = tear_everywhere(image, op, extra)
    assert total < 40


def test_delete_backup():
    image = base_image()
    store = BackupStore(PersistentMemory.from_image(image))
    store.commit_session(SIG, [c for c, _ in SHARED] + [NEW_ONLY[0][0]], 2, 2000, 6000)
    image2 = store.nvm.image_bytes()
    tear_everywhere(image2, lambda s: s.delete_backup(b"A" * 16))
    tear_everywhere(image2, lambda s: s.delete_backup(b"B" * 16))


def test_put_chunk():
    tear_everywhere(base_image(), lambda s: s.put_chunk(*NEW_ONLY[1]))
    tear_everywhere(base_image(), lambda s: s.put_chunk(*chunk("four-k", 4096)))


def test_put_manifest_append_and_begin_other_session_and_abort():
    image = base_image()
    tear_everywhere(image, lambda s: s.put_manifest(330, b"more manifest bytes" * 30))
    tear_everywhere(image, lambda s: s.begin_session(b"C" * 16))
    tear_everywhere(image, lambda s: s.abort_session())


def test_erase_backups_and_factory_reset():
    image = base_image()
    tear_everywhere(image, lambda s: s.erase_backups())
    tear_everywhere(image, lambda s: s.factory_reset())


def test_admin_and_pin_changes():
    image = base_image(with_session=False)
    tear_everywhere(image, lambda s: s.add_anchor(b"K" * 8, b"\x04" + bytes(64)))
    tear_everywhere(image, lambda s: s.set_admin_key(b"N" * 16, 2))

    def decremented_only(got: tuple, before: tuple) -> bool:
        # cut between VERIFY's decrement and its restore: one try spent, old PIN kept
        return got[:5] == before[:5] and got[6:] == before[6:] and got[5] == before[5] - 1

    tear_everywhere(image, lambda s: s.change_pin(PIN, b"9876"), also_ok=decremented_only)
    tear_everywhere(image, lambda s: s.unblock_pin(PUK, b"9876"),
                    also_ok=lambda got, before: got[6] == before[6] - 1 and got[-1] == before[-1])


@pytest.mark.parametrize("right", [False, True])
@pytest.mark.parametrize("tear", [False, True])
def test_verify_pin_never_gains_a_try(right, tear):
    store = BackupStore(PersistentMemory.from_image(base_image(with_session=False)))
    assert store.verify_pin(b"0000") == (False, 2)       # start below the maximum
    image = store.nvm.image_bytes()
    candidate = PIN if right else b"0000"
    probe = BackupStore(PersistentMemory.from_image(image))
    w0 = probe.nvm.write_count
    assert probe.verify_pin(candidate) == ((True, 3) if right else (False, 1))
    total = probe.nvm.write_count - w0
    assert total == (2 if right else 1)
    for cut in range(1, total + 1):
        nvm = PersistentMemory.from_image(image)
        card = BackupStore(nvm)
        nvm.fault = FaultInjector(cut_after=cut, tear=tear)
        with pytest.raises(PowerLoss):                    # no answer before the decrement
            card.verify_pin(candidate)
        card.power_up()
        card.check()
        assert card.pin_tries_left() <= 2, "a torn VERIFY gained a try"
        if cut == 2:
            assert card.pin_tries_left() == 1             # decrement persisted first


@pytest.mark.parametrize("tear", [False, True])
def test_unblock_never_gains_a_puk_try(tear):
    image = base_image(with_session=False)
    probe = BackupStore(PersistentMemory.from_image(image))
    w0 = probe.nvm.write_count
    probe.unblock_pin(b"00000000", b"1111")
    total = probe.nvm.write_count - w0
    for cut in range(1, total + 1):
        nvm = PersistentMemory.from_image(image)
        card = BackupStore(nvm)
        nvm.fault = FaultInjector(cut_after=cut, tear=tear)
        with pytest.raises(PowerLoss):
            card.unblock_pin(b"00000000", b"1111")
        card.power_up()
        assert card.puk_tries_left() <= 10


def test_power_cut_during_recovery():
    image = base_image()
    ids = [c for c, _ in SHARED] + [NEW_ONLY[0][0]]
    before = state_of(BackupStore(PersistentMemory.from_image(image)))
    for cut in (8, 12, 16):
        nvm = PersistentMemory.from_image(image)
        store = BackupStore(nvm)
        nvm.fault = FaultInjector(cut_after=cut, tear=True)
        with pytest.raises(PowerLoss):
            store.commit_session(SIG, ids, 2, 2000, 6000)
        for rcut in range(1, 6):
            nvm.fault = FaultInjector(cut_after=rcut, tear=True)
            try:
                store.power_up()
            except PowerLoss:
                continue
            break
        nvm.fault = None
        store.power_up()
        store.check(deep=True)
        assert state_of(store) == before


CHILD = textwrap.dedent("""
    import hashlib, sys
    from card.nvm import PersistentMemory
    from card.store import BackupStore, ChunkExists
    def chunk(seed, size):
        data = hashlib.shake_256(seed.encode()).digest(size)
        return hashlib.sha256(data).digest(), data
    store = BackupStore(PersistentMemory.open(sys.argv[1]))
    seq = store.high_water_mark
    print("ready", flush=True)
    while True:
        seq += 1
        bid = seq.to_bytes(16, "big")
        store.begin_session(bid)
        ids = []
        for i in range(6):
            cid, data = chunk(f"{seq % 3}-{i}" if i < 3 else f"{seq}-{i}", 3000 + 500 * i)
            ids.append(cid)
            if not store.has_chunks([cid])[0]:
                store.put_chunk(cid, data)
        m = hashlib.shake_256(bid).digest(2000)
        for off in range(0, len(m), 255):
            store.put_manifest(off, m[off:off + 255])
        store.commit_session(bytes(64), ids, seq, seq, 0)
        backups = store.list_backups()
        if len(backups) > 3:
            store.delete_backup(backups[0].backup_id)
""")


def test_kill_9_mid_way_leaves_a_clean_image(tmp_path):
    path = tmp_path / "card.nvm"
    store = BackupStore.format(PersistentMemory.create(path, 1 << 20))
    store.personalise(PIN, PUK, KEY)
    store.nvm.close()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for delay in (0.15, 0.3, 0.45):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert child.stdout is not None and child.stdout.readline() == b"ready\n", child.stderr
        time.sleep(delay)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        assert child.returncode == -signal.SIGKILL, child.stderr.read() if child.stderr else ""
        with PersistentMemory.open(path) as nvm:
            store = BackupStore(nvm)
            store.check(deep=True)
            backups = store.list_backups()
            assert backups and store.high_water_mark >= backups[-1].sequence
            for b in backups:
                assert store.read_manifest(b.backup_id, 0, 4096) == hashlib.shake_256(b.backup_id).digest(2000)
                for i, cid in enumerate(store.backup_chunk_ids(b.backup_id)):
                    seed = f"{b.sequence % 3}-{i}" if i < 3 else f"{b.sequence}-{i}"
                    assert store.read_chunk(cid) == chunk(seed, 3000 + 500 * i)[1]
