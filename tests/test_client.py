"""host/client.py over the in-process emulator: typed errors with one-line
messages, link sizes from the FCI, batching, paging, redacted traces."""
from __future__ import annotations

import io
import os

import pytest
from cards import TEST_PIN, build_test_card, emulator_client, make_backup, upload

from apdu_specs.sw import describe
from card.runtime import CardLimits
from host.client import (
    BackupCard,
    CardFullError,
    CardProtocolError,
    NotFoundOnCardError,
    PinBlockedError,
    WrongPinError,
    card_error,
)
from host.errors import CardError, PinError, SimvaultError, UsageError
from host.link import ApduTracer, EmulatorTransport, Link


@pytest.mark.parametrize("sw,cls", [
    (0x63C2, WrongPinError), (0x63C0, PinBlockedError), (0x6983, PinBlockedError),
    (0x6A84, CardFullError), (0x6A88, NotFoundOnCardError), (0x6A80, CardProtocolError), (0x6F00, CardError),
])
def test_card_error_mapping(sw, cls):
    err = card_error("SOME COMMAND", sw)
    assert isinstance(err, cls) and isinstance(err, CardError) and isinstance(err, SimvaultError)
    assert err.sw == sw and "\n" not in str(err) and str(err).startswith("SOME COMMAND")
    if not isinstance(err, PinError):
        assert describe(sw).meaning in str(err)


def test_select_configures_the_link(tmp_path):
    card = build_test_card(tmp_path / "c.img", limits=CardLimits.short())
    link = Link(EmulatorTransport(card))
    link.connect()
    client = BackupCard(link)
    fci = client.select()
    assert (link.extended, link.max_command_data, link.max_response_data) == (False, 255, 256)
    assert fci.max_chunk_size == 16384 and fci.chaining
    card2 = build_test_card(tmp_path / "d.img")
    link2 = Link(EmulatorTransport(card2))
    link2.connect()
    BackupCard(link2).select()
    assert (link2.extended, link2.max_command_data, link2.max_response_data) == (True, 16448, 16384)


def test_trace_redacts_the_pin(tmp_path):
    card = build_test_card(tmp_path / "c.img")
    out = io.StringIO()
    link = Link(EmulatorTransport(card), tracer=ApduTracer(out))
    link.connect()
    client = BackupCard(link)
    client.select()
    client.verify_pin(TEST_PIN)
    with pytest.raises(WrongPinError) as err:
        client.change_pin("9876", "1111")
    assert err.value.tries_left == 2 and "2 tries left" in str(err.value)
    text = out.getvalue()
    assert "00 20 00 81" in text and "redacted 8 bytes" in text and "redacted 16 bytes" in text
    assert "31323334" not in text and "39383736" not in text


def test_batched_query_and_pieces_in_short_mode(tmp_path):
    card = build_test_card(tmp_path / "c.img", limits=CardLimits.short())
    client = emulator_client(card)
    chunks = [os.urandom(40) for _ in range(20)]
    backup = make_backup(1, chunks, host_section=os.urandom(600))
    client.begin_backup(backup.backup_id, 1, len(backup.manifest))
    before = client.link.stats.apdus
    assert client.query_chunks(list(backup.chunks)) == [False] * 20     # 7 ids per short command
    assert client.link.stats.apdus - before == 3
    for cid, data in backup.chunks.items():
        client.put_chunk(cid, data)
    client.put_manifest(backup.manifest)                               # 251-byte pieces
    entry = client.commit(backup.signature)
    assert client.read_manifest(backup.backup_id) == backup.manifest
    assert client.read_manifest(backup.backup_id, entry.manifest_length) == backup.manifest
    assert client.list_backups() == [entry]


def test_usage_errors_before_the_card(tmp_path):
    client = emulator_client(build_test_card(tmp_path / "c.img"), pin=False)
    with pytest.raises(UsageError):
        client.verify_pin("12")
    with pytest.raises(UsageError):
        client.unblock_pin("1234", "1234")
    with pytest.raises(UsageError):
        client.put_chunk(b"\0" * 32, bytes(16385))
    with pytest.raises(UsageError):
        client.erase_backups()                       # admin channel not open
    with pytest.raises(UsageError):
        client.open_admin(b"short")
    assert client.pin_tries_left() == 3
    client.verify_pin(TEST_PIN)
    assert client.pin_tries_left() is None


def test_whole_cycle_with_t0_and_no_auto_get_response(tmp_path):
    card = build_test_card(tmp_path / "c.img", limits=CardLimits(t0=True))
    link = Link(EmulatorTransport(card), t0_auto_get_response=False, t0_auto_reissue=False)
    link.connect()
    client = BackupCard(link)
    with pytest.raises(CardError) as err:                # the FCI waits behind 61xx
        client.select()
    assert err.value.sw >> 8 == 0x61
    link.t0_auto_get_response = link.t0_auto_reissue = True
    client.select()
    client.verify_pin(TEST_PIN)
    backup = make_backup(2, [os.urandom(5000)])
    upload(client, backup)
    cid = next(iter(backup.chunks))
    assert client.read_chunk(cid, 5000) == backup.chunks[cid]
