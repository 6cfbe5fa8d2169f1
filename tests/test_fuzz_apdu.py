"""Fuzzing the card with random and mutated APDUs (hypothesis): no exception
escapes, every status word is documented, and the committed backup on the card
never changes."""
from __future__ import annotations

import tempfile
from pathlib import Path

from cards import (
    SELECT_APDU,
    VERIFY_APDU,
    build_test_card,
    emulator_client,
    make_backup,
    snapshot,
    upload,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apdu_specs import commands as K
from apdu_specs.sw import is_documented
from card.runtime import CardLimits

_DIR = tempfile.TemporaryDirectory(prefix="simvault-fuzz-")


def _card(limits: CardLimits, name: str):
    card = build_test_card(Path(_DIR.name) / name, limits=limits, capacity=256 * 1024)
    client = emulator_client(card)
    backup = make_backup(5, [b"fuzz chunk one" * 50, b"fuzz chunk two" * 80])
    upload(client, backup)
    return card, backup


CARDS = {"extended": _card(CardLimits(), "ext.img"), "short-t0": _card(CardLimits.short(t0=True), "t0.img")}
BACKUP = CARDS["extended"][1]
CID = next(iter(BACKUP.chunks))


def _templates() -> list[bytes]:
    """Well-formed commands of every kind (none that may legitimately change the committed backup)."""
    read_manifest = K.READ_MANIFEST_DATA.encode({"backup_id": BACKUP.backup_id, "offset": 3})
    read_chunk = K.READ_CHUNK_DATA.encode({"chunk_id": CID, "offset": 10})
    begin = K.BEGIN_BACKUP_DATA.encode({"backup_id": b"\x42" * 16, "sequence": 9, "manifest_length": 300})
    return [
        SELECT_APDU + b"\x00", VERIFY_APDU, bytes.fromhex("0020008100"),
        bytes.fromhex("0024008110") + b"1234\xff\xff\xff\xff" + b"1234\xff\xff\xff\xff",
        bytes.fromhex("002C008110") + b"12345678" + b"1234\xff\xff\xff\xff",
        bytes.fromhex("8010000000"), bytes.fromhex("8040000000"), bytes.fromhex("8030000000"),
        bytes.fromhex("8032000014") + read_manifest + b"\x00", bytes.fromhex("8032010014") + read_manifest + b"\x00",
        bytes.fromhex("8034000024") + read_chunk + b"\x00",
        bytes.fromhex("802000001C") + begin + b"\x00",
        bytes.fromhex("8022000020") + CID + b"\x00",
        bytes.fromhex("8024000024") + b"\x42" * 32 + b"data",
        bytes.fromhex("8026000008") + bytes(4) + b"\xe1\x81\x8b\x80",
        bytes.fromhex("8028000040") + bytes(64) + b"\x00",
        bytes.fromhex("802A0000"), bytes.fromhex("8036000010") + b"\x13" * 16,
        bytes.fromhex("8050000008") + bytes(8) + b"\x00",
        bytes.fromhex("8482010010") + bytes(16), bytes.fromhex("84E2000055") + bytes(0x55),
        bytes.fromhex("84EE000008") + bytes(8), bytes.fromhex("00C0000000"),
        bytes.fromhex("1020008104") + b"1234",
    ]


TEMPLATES = _templates()


@st.composite
def mutated(draw) -> bytes:
    raw = bytearray(draw(st.sampled_from(TEMPLATES)))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "truncate", "extend", "lc", "cla", "ext"]))
        if kind == "flip" and raw:
            i = draw(st.integers(0, len(raw) - 1))
            raw[i] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            del raw[draw(st.integers(0, len(raw))):]
        elif kind == "extend":
            raw += draw(st.binary(min_size=1, max_size=8))
        elif kind == "lc" and len(raw) > 4:
            raw[4] = draw(st.integers(0, 255))
        elif kind == "cla" and raw:
            raw[0] = draw(st.sampled_from([0x00, 0x10, 0x80, 0x90, 0x84, 0x94, 0x01, 0xA0, 0xFF, 0x0C]))
        elif kind == "ext" and len(raw) > 5:
            raw[4:5] = b"\x00" + draw(st.integers(0, 0xFFFF)).to_bytes(2, "big")
    return bytes(raw)


APDUS = st.one_of(st.binary(max_size=300), mutated(), st.sampled_from(TEMPLATES))


def _run(card, apdus: list[bytes]) -> None:
    for apdu in apdus:
        out = card.runtime.transmit(apdu)          # the runtime itself: nothing may escape
        assert len(out) >= 2, f"no status word for {apdu.hex()}"
        sw = int.from_bytes(out[-2:], "big")
        assert is_documented(sw), f"undocumented SW {sw:04X} for {apdu.hex()}"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(CARDS)), st.lists(APDUS, min_size=1, max_size=12), st.booleans())
def test_fuzz_apdus_keep_backups(which, apdus, reset_first):
    card, backup = CARDS[which]
    before = snapshot(card)
    card.store.set_pin(b"1234")          # a fuzzed CHANGE REFERENCE DATA may have changed or blocked it
    if reset_first:
        card.reset()
    _run(card, [SELECT_APDU, VERIFY_APDU] + apdus)
    assert snapshot(card) == before
    assert list(before) == [backup.backup_id]


def test_fuzz_leaves_a_consistent_store():
    for card, backup in CARDS.values():
        card.store.check(deep=True)
        client = emulator_client(card, pin=False)
        client.select()
        status = client.status()
        assert status.backups == 1 and status.highest_sequence >= 5
