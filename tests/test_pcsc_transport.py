"""Through the real stack: pyscard -> pcscd -> vpcd -> VpcdBridge -> EchoCard."""
from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import vpcd_slot_lock
from host.errors import ReaderNotFound, TransportError
from host.link import Apdu, Link, PcscTransport, parse_apdu, select_reader
from host.link.echo_card import EchoCard

pytestmark = pytest.mark.pcsc

READER0, READER1 = "Virtual PCD 00 00", "Virtual PCD 00 01"


def test_short_and_extended_apdus(vpcd_card) -> None:
    card = EchoCard(extended=True)
    reader = vpcd_card(card)
    with PcscTransport(reader) as transport:
        link = Link(transport)
        link.connect()
        assert transport.atr == card.atr and transport.protocol == "T=1"
        assert link.extended
        assert link.transmit(Apdu(0x00, 0xA4, 0x04, 0x00, b"\xA0\x00\x00\x00\x01")).sw == 0x9000
        short = link.transmit(Apdu(0x80, 0x10, data=b"hello", le=0))
        assert short.ok and short.data == b"hello"
        big = bytes(range(256)) * 253 + bytes(232)  # 65,000 bytes
        assert len(big) == 65000
        response = link.transmit(Apdu(0x80, 0x10, data=big, le=65000))
        assert response.ok and response.data == big
        wire = parse_apdu(card.log[-1])
        assert wire.is_extended and len(wire.data) == 65000  # one APDU, not a chain
        generated = link.transmit(Apdu(0x80, 0x12, 0xFD, 0xE8, le=0))  # 65,000 bytes from the card
        assert len(generated.data) == 65000 and generated.data[:3] == b"\x00\x01\x02"


def test_short_only_card_chains_through_pcscd(vpcd_card) -> None:
    card = EchoCard(extended=False)
    reader = vpcd_card(card)
    with PcscTransport(reader) as transport:
        link = Link(transport)
        link.connect()
        assert not link.extended
        payload = bytes(range(256)) * 8
        response = link.transmit(Apdu(0x80, 0x10, data=payload, le=0))
        assert response.ok and response.data == payload
        assert max(len(raw) for raw in card.log) <= 4 + 1 + 255 + 1


def test_t0_card_through_pcscd(vpcd_card) -> None:
    card = EchoCard(extended=False, t0=True)
    with PcscTransport(vpcd_card(card)) as transport:
        link = Link(transport)
        link.connect()
        assert transport.protocol == "T=0"
        response = link.transmit(Apdu(0x80, 0x10, data=b"T=0 works", le=0))
        assert response.data == b"T=0 works" and response.ok


def test_reset(vpcd_card) -> None:
    card = EchoCard()
    with PcscTransport(vpcd_card(card)) as transport:
        link = Link(transport)
        link.connect()
        link.set_extended(False)
        resets_before = card.resets
        info = link.reset()
        assert card.resets > resets_before
        assert info is not None and info.raw == card.atr and link.extended
        assert link.transmit(Apdu(0x80, 0x10, data=b"after", le=0)).data == b"after"


def test_card_removed_gives_transport_error(vpcd_card) -> None:
    reader = vpcd_card(EchoCard())
    transport = PcscTransport(reader)
    link = Link(transport)
    link.connect()
    vpcd_card.remove(reader)
    with pytest.raises(TransportError) as err:
        link.transmit(Apdu(0x80, 0x10, data=b"x", le=0))
    message = str(err.value)
    assert "\n" not in message and READER0 in message and "retry" in message
    assert not transport.connected
    with pytest.raises(TransportError) as err2:
        PcscTransport(reader).connect()
    assert "no card" in str(err2.value) or "insert" in str(err2.value)


def test_exclusive_connection_refuses_a_second_client(vpcd_card) -> None:
    reader = vpcd_card(EchoCard())
    with PcscTransport(reader):
        with pytest.raises(TransportError) as err:
            PcscTransport(reader).connect()
        assert "another program" in str(err.value)
    with PcscTransport(reader, exclusive=False) as a, PcscTransport(reader, exclusive=False) as b:
        assert a.transmit_raw(bytes.fromhex("8010000001AA00")) == b"\xAA\x90\x00"
        assert b.transmit_raw(bytes.fromhex("8010000001BB00")) == b"\xBB\x90\x00"


@pytest.mark.parametrize("spec", [0, "0", READER0, "PCD 00 00", "*PCD*00 00", "virtual pcd 00 00"])
def test_reader_selection(vpcd_card, spec) -> None:
    vpcd_card(EchoCard())
    with PcscTransport(spec) as transport:
        assert transport.name == READER0
        assert transport.transmit_raw(bytes.fromhex("801000000161")) == b"\x90\x00"


@pytest.mark.parametrize("spec", ["Virtual PCD", "*PCD*", None])
def test_ambiguous_reader_lists_the_matches(pcscd, spec) -> None:
    with pytest.raises(ReaderNotFound) as err:
        PcscTransport(spec).connect()
    assert READER0 in str(err.value) and READER1 in str(err.value)


def test_unknown_reader_lists_all(pcscd) -> None:
    with pytest.raises(ReaderNotFound) as err:
        PcscTransport("no such reader").connect()
    assert READER0 in str(err.value) and READER1 in str(err.value)
    with pytest.raises(ReaderNotFound):
        PcscTransport(7).connect()


def test_select_reader_rules() -> None:
    names = ["ACS ACR39U 00 00", "Virtual PCD 00 00", "Virtual PCD 00 01"]
    assert select_reader(2, names) == "Virtual PCD 00 01"
    assert select_reader("acr39", names) == "ACS ACR39U 00 00"
    assert select_reader("Virtual PCD 0? 01", names) == "Virtual PCD 00 01"
    with pytest.raises(ReaderNotFound):
        select_reader("-1", names)
    with pytest.raises(ReaderNotFound):
        select_reader(None, [])


@pytest.mark.parametrize("tool", ["scriptor", "opensc-tool"])
def test_independent_client_sees_the_card(vpcd_card, tmp_path, tool) -> None:
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is not installed: run scripts/setup.sh (pcsc-tools, opensc)")
    reader = vpcd_card(EchoCard())
    apdu = "80 10 00 00 03 61 62 63 00"
    if tool == "scriptor":
        script = tmp_path / "apdus.txt"
        script.write_text(apdu + "\n")
        cmd = ["scriptor", "-r", reader, str(script)]
    else:
        cmd = ["opensc-tool", "-r", "0", "-s", apdu]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stderr
    if tool == "scriptor":
        assert "< 61 62 63 90 00" in result.stdout
    else:
        assert "SW1=0x90, SW2=0x00" in result.stdout and "61 62 63" in result.stdout


@pytest.mark.hardware
def test_physical_reader_answers(pcscd) -> None:
    """A real reader with a card: connect, parse its ATR, SELECT the MF."""
    from host.link import list_readers, parse_atr

    physical = [r for r in list_readers() if not r.startswith("Virtual PCD")]
    assert physical, "no physical reader connected"
    with PcscTransport(physical[0]) as transport:
        assert parse_atr(transport.atr).historical is not None
        link = Link(transport)
        link.apply_atr(transport.atr)
        assert link.transmit(Apdu(0x00, 0xA4, 0x00, 0x0C, b"\x3F\x00")).sw1 in (0x90, 0x61, 0x6A, 0x69, 0x6D, 0x6E)


def test_pcscd_restart_gives_transport_error_and_the_bridge_comes_back(vpcd_card) -> None:
    """Stops the shared system pcscd for about a second (run test suites serially)."""
    from host.link import card_present

    script = Path(__file__).resolve().parent.parent / "scripts" / "pcscd.sh"
    with vpcd_slot_lock(1):  # slot 0 is locked by vpcd_card: no other session is mid-test
        _restart_round_trip(vpcd_card, script, card_present)


def _restart_round_trip(vpcd_card, script: Path, card_present) -> None:
    reader = vpcd_card(EchoCard())
    transport = PcscTransport(reader)
    transport.connect()
    try:
        subprocess.run([str(script), "stop"], check=True, capture_output=True, timeout=30)
        with pytest.raises(TransportError) as err:
            Link(transport).transmit(Apdu(0x80, 0x10, data=b"x", le=0))
        assert "pcscd" in str(err.value) and "\n" not in str(err.value)
        with pytest.raises(TransportError):
            PcscTransport(reader).connect()
    finally:
        subprocess.run([str(script), "start"], check=True, capture_output=True, timeout=60)
    deadline = time.monotonic() + 10
    while not card_present(reader):  # the bridge reconnects by itself
        assert time.monotonic() < deadline, "bridge did not come back after the pcscd restart"
        time.sleep(0.05)
    with PcscTransport(reader) as again:
        assert again.transmit_raw(bytes.fromhex("8010000002616202")) == b"ab\x90\x00"
