"""Link over the in-process transport: T=0 (61xx, 6Cxx), chaining, extended
length from the ATR, stats and the tracer's redaction."""
from __future__ import annotations

import io
import logging

import pytest

from host.errors import CardError, TransportError
from host.link import Apdu, ApduTracer, EmulatorTransport, Link, parse_apdu
from host.link.echo_card import PIN, EchoCard

PAYLOAD = bytes(range(256)) * 4 + b"tail"  # 1,028 bytes


def make_link(card: EchoCard, **kwargs) -> tuple[Link, io.StringIO]:
    trace = io.StringIO()
    link = Link(EmulatorTransport(card), tracer=ApduTracer(trace), **kwargs)
    link.connect()
    return link, trace


def test_extended_card_takes_one_extended_apdu() -> None:
    card = EchoCard(extended=True)
    link, _ = make_link(card)
    assert link.extended and link.max_command_data == 65535
    response = link.transmit(Apdu(0x80, 0x10, data=PAYLOAD, le=0))
    assert response.ok and response.data == PAYLOAD
    assert len(card.log) == 1 and parse_apdu(card.log[0]).is_extended
    assert link.stats.apdus == 1
    assert link.stats.bytes_sent == 4 + 3 + len(PAYLOAD) + 2
    assert link.stats.bytes_received == len(PAYLOAD) + 2


def test_short_card_gets_a_chain_and_get_response_loop() -> None:
    card = EchoCard(extended=False)
    link, trace = make_link(card)
    assert not link.extended
    response = link.transmit(Apdu(0x80, 0x10, data=PAYLOAD, le=0))
    assert response.ok and response.data == PAYLOAD
    sent = [parse_apdu(raw) for raw in card.log]
    chain = [a for a in sent if a.ins == 0x10]
    assert [a.cla for a in chain] == [0x90, 0x90, 0x90, 0x90, 0x80]  # 4 x 255 + 8
    assert [len(a.data) for a in chain] == [255, 255, 255, 255, 8]
    assert all(not a.is_extended for a in sent)
    assert chain[-1].le == 256 and all(a.le is None for a in chain[:-1])
    gets = [a for a in sent if a.ins == 0xC0]
    assert len(gets) == 4 and all(a.cla == 0x00 for a in gets)  # 256 + 4 x 256 -> 1028
    assert link.stats.apdus == len(sent) == 9
    assert trace.getvalue().count("\n") == 9


def test_chain_stops_at_the_first_error() -> None:
    class RefusesChains(EchoCard):
        def transmit(self, apdu: bytes) -> bytes:
            self.log.append(apdu)
            return b"\x68\x84" if apdu[0] & 0x10 else super().transmit(apdu)

    card = RefusesChains(extended=False)
    link, _ = make_link(card)
    response = link.transmit(Apdu(0x80, 0x10, data=bytes(600), le=0))
    assert response.sw == 0x6884 and len(card.log) == 1


def test_chaining_switched_off_refuses_long_data() -> None:
    link, _ = make_link(EchoCard(extended=False), chaining=False)
    with pytest.raises(TransportError):
        link.transmit(Apdu(0x80, 0x10, data=bytes(300)))


def test_t0_card_get_response_concatenates() -> None:
    card = EchoCard(extended=False, t0=True)
    link, _ = make_link(card)
    assert link.atr_info is not None and link.atr_info.protocols == (0,)
    response = link.transmit(Apdu(0x80, 0x10, data=bytes(range(200)), le=0))
    assert response.ok and response.data == bytes(range(200))
    ins = [raw[1] for raw in card.log]
    assert ins == [0x10, 0xC0]
    assert card.log[1] == bytes.fromhex("00C00000C8")  # GET RESPONSE Le = 0xC8 from 61C8


def test_t0_handling_can_be_switched_off() -> None:
    card = EchoCard(extended=False, t0=True)
    link, _ = make_link(card, t0_auto_get_response=False)
    response = link.transmit(Apdu(0x80, 0x10, data=b"abc", le=0))
    assert response.sw == 0x6103 and response.data == b""
    assert len(card.log) == 1


def test_6cxx_reissues_with_the_exact_le() -> None:
    card = EchoCard()
    link, trace = make_link(card)
    response = link.transmit(Apdu(0x80, 0x14, 0x00, 0x21, le=0))
    assert response.ok and response.data == bytes(range(0x21))
    assert card.log[1] == bytes.fromhex("8014002121")
    assert "6C21" in trace.getvalue()
    link_off, _ = make_link(EchoCard(), t0_auto_reissue=False)
    assert link_off.transmit(Apdu(0x80, 0x14, 0x00, 0x21, le=0)).sw == 0x6C21


def test_le_above_short_limit_uses_61xx_when_not_extended() -> None:
    card = EchoCard(extended=False)
    link, _ = make_link(card)
    response = link.transmit(Apdu(0x80, 0x12, 0x03, 0x00, le=768))  # GENERATE 768 bytes
    assert response.ok and len(response.data) == 768
    assert card.log[0] == bytes.fromhex("8012030000")  # Le lowered to 00 (256)


def test_fci_limits_override_the_atr() -> None:
    card = EchoCard(extended=True)
    link, _ = make_link(card)
    link.set_extended(True, max_command_data=1000, max_response_data=1000)
    response = link.transmit(Apdu(0x80, 0x10, data=bytes(2500), le=0))
    assert response.ok and len(response.data) == 2500
    assert [len(parse_apdu(r).data) for r in card.log if r[1] == 0x10] == [1000, 1000, 500]


def test_transmit_ok_raises_card_error_with_the_sw() -> None:
    link, _ = make_link(EchoCard())
    with pytest.raises(CardError) as err:
        link.transmit_ok(Apdu(0x80, 0x7E))
    assert err.value.sw == 0x6D00 and "6D00" in str(err.value)


def test_reset_rereads_the_atr() -> None:
    card = EchoCard()
    link, _ = make_link(card)
    link.set_extended(False)
    info = link.reset()
    assert card.resets == 1 and info is not None and link.extended


def test_tracer_redacts_the_pin_and_secret_responses(caplog: pytest.LogCaptureFixture) -> None:
    card = EchoCard()
    trace = io.StringIO()
    logger = logging.getLogger("test.apdu")
    link = Link(EmulatorTransport(card), tracer=ApduTracer(trace, logger=logger))
    link.connect()
    secret_plain = b"backup plaintext 0123456789"
    with caplog.at_level(logging.DEBUG, logger="test.apdu"):
        assert link.transmit(Apdu(0x00, 0x20, 0x00, 0x81, PIN, secret=True)).ok
        assert link.transmit(Apdu(0x00, 0x20, 0x00, 0x81, b"9999", secret=True)).sw == 0x63C2
        echoed = link.transmit(Apdu(0x80, 0x10, data=secret_plain, le=0, secret=True, secret_response=True))
    assert echoed.data == secret_plain
    out = trace.getvalue() + caplog.text
    for needle in (PIN.hex(), PIN.hex().upper(), "1234", "9999", secret_plain.hex().upper(), "plaintext"):
        assert needle not in out
    assert "<redacted 4 bytes>" in out and f"<redacted {len(secret_plain)} bytes>" in out
    assert "63C2 verification failed, 2 tries left" in out


def test_tracer_line_shape_and_injected_sw_namer() -> None:
    trace = io.StringIO()
    link = Link(EmulatorTransport(EchoCard()), tracer=ApduTracer(trace, sw_namer=lambda sw: f"name-{sw:04X}"))
    link.connect()
    link.transmit(Apdu(0x80, 0x10, data=b"\x01\x02\x03", le=3))
    line = trace.getvalue().strip()
    assert line.startswith(">> emu 80 10 00 00 Lc=3 Le=3 010203 | << 9000 name-9000 [3] 010203 | ")
    assert line.endswith(" ms")
    long = ApduTracer(io.StringIO(), max_bytes=4).format(Apdu(0x80, 0x10, data=bytes(10)), link.transmit(
        Apdu(0x80, 0x10, data=bytes(10), le=0)), 0.001)
    assert "00000000...(+6)" in long


def test_emulator_transport_needs_connect() -> None:
    transport = EmulatorTransport(EchoCard())
    with pytest.raises(TransportError):
        transport.transmit_raw(b"\x00\xa4\x04\x00")
