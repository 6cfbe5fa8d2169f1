"""The vpcd bridge: framing, control frames, reconnect, shutdown, no secrets in logs."""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import vpcd_slot_lock

from card.vpcd import VpcdBridge
from host.link import Apdu, Link, PcscTransport, card_present
from host.link.echo_card import EchoCard

ROOT = Path(__file__).resolve().parent.parent


class RecordingCard(EchoCard):
    """EchoCard that records the vpcd control calls it gets."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def power_on(self) -> bytes:
        self.calls.append("on")
        return super().power_on()

    def power_off(self) -> None:
        self.calls.append("off")
        super().power_off()

    def reset(self) -> bytes:
        self.calls.append("reset")
        return super().reset()


@pytest.mark.pcsc
def test_control_frames_from_real_vpcd(vpcd_card) -> None:
    card = RecordingCard()
    reader = vpcd_card(card)
    bridge = vpcd_card.bridge(reader)
    sock = bridge._sock
    assert sock is not None and sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    with PcscTransport(reader) as transport:
        assert transport.atr == card.atr
        assert "on" in card.calls and card.powered
        transport.reset()
        assert "reset" in card.calls or card.calls.count("on") >= 2
    assert bridge.apdus == 0  # connect/reset exchange control frames only


@pytest.mark.pcsc
def test_card_exception_answers_6f00_and_logs_no_data(vpcd_card, caplog) -> None:
    class Broken(EchoCard):
        def transmit(self, apdu: bytes) -> bytes:
            raise RuntimeError("bug in the card")

    reader = vpcd_card(Broken())
    with caplog.at_level(logging.DEBUG), PcscTransport(reader) as transport:
        response = Link(transport).transmit(Apdu(0x00, 0x20, 0x00, 0x81, b"\x31\x32\x33\x34\x35\x36", secret=True))
    assert response.sw == 0x6F00
    assert "00200081" in caplog.text
    assert "313233343536" not in caplog.text and "123456" not in caplog.text


class FakeVpcdPeer:
    """A TCP server speaking vpcd's framing, to test what real vpcd never does
    on loopback: frames split in 1-byte segments, and a dropped connection."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(2)
        self.server.settimeout(10)
        self.port = self.server.getsockname()[1]

    def accept(self) -> socket.socket:
        conn, _ = self.server.accept()
        conn.settimeout(10)
        return conn

    @staticmethod
    def send_dribbled(conn: socket.socket, payload: bytes) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for b in len(payload).to_bytes(2, "big") + payload:
            conn.sendall(bytes((b,)))
            time.sleep(0.0005)

    @staticmethod
    def read_frame(conn: socket.socket) -> bytes:
        def exact(n: int) -> bytes:
            buf = b""
            while len(buf) < n:
                chunk = conn.recv(n - len(buf))
                assert chunk, "bridge closed"
                buf += chunk
            return buf

        return exact(int.from_bytes(exact(2), "big"))


def test_split_frames_and_reconnect() -> None:
    peer = FakeVpcdPeer()
    card = RecordingCard()
    bridge = VpcdBridge(card, "127.0.0.1", peer.port)
    bridge.run_in_thread()
    try:
        conn = peer.accept()
        peer.send_dribbled(conn, b"\x01")  # power on: no answer
        peer.send_dribbled(conn, b"\x04")  # get ATR
        assert peer.read_frame(conn) == card.atr
        apdu = Apdu(0x80, 0x10, data=bytes(range(200)), le=0).to_bytes()
        peer.send_dribbled(conn, apdu)
        assert peer.read_frame(conn) == bytes(range(200)) + b"\x90\x00"
        conn.close()  # vpcd went away: the bridge must come back
        conn2 = peer.accept()
        assert "off" in card.calls  # a dropped link is a power loss
        conn2.sendall(b"\x00\x01\x04")
        assert peer.read_frame(conn2) == card.atr
        conn2.sendall(b"\x00\x07" + bytes.fromhex("80100000026869"))
        assert peer.read_frame(conn2) == b"\x90\x00"  # case 3: no Le, no data back
        conn2.close()
    finally:
        bridge.stop()
        peer.server.close()
    assert not bridge.connected


def test_backoff_until_vpcd_appears_then_stop() -> None:
    with socket.socket() as probe:  # a free port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    bridge = VpcdBridge(EchoCard(), "127.0.0.1", port)
    thread = bridge.run_in_thread()
    time.sleep(0.3)
    assert not bridge.connected and thread.is_alive()
    started = time.monotonic()
    bridge.stop()
    assert not thread.is_alive() and time.monotonic() - started < 3


@pytest.mark.pcsc
def test_cli_serves_a_reader_and_stops_on_sigterm(pcscd) -> None:
    with vpcd_slot_lock(0) as reader:
        _cli_round_trip(reader)


def _cli_round_trip(reader: str) -> None:
    deadline = time.monotonic() + 10
    while card_present(reader):
        assert time.monotonic() < deadline, f"{reader} busy"
        time.sleep(0.05)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "card.vpcd", "--port", "35963", "--card", "host.link.echo_card:EchoCard"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    try:
        deadline = time.monotonic() + 10
        while not card_present(reader):
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "the CLI bridge did not show a card"
            time.sleep(0.05)
        with PcscTransport(reader) as transport:
            assert transport.transmit_raw(bytes.fromhex("8010000002616202")) == b"ab\x90\x00"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 10
    while card_present(reader):
        assert time.monotonic() < deadline, "card still present after SIGTERM"
        time.sleep(0.05)


class MuteOnceCard(RecordingCard):
    """Answers nothing to its first APDU (power lost mid-APDU), then echoes."""

    def transmit(self, apdu: bytes) -> bytes:
        if "mute" not in self.calls:
            self.calls.append("mute")
            return b""
        return super().transmit(apdu)


def test_mute_card_is_removed_and_reinserted() -> None:
    """An empty answer is never sent as an empty vpcd frame (pcscd would wait
    for ever): the bridge drops the link (card removed, powered off) and
    reconnects (card inserted again)."""
    peer = FakeVpcdPeer()
    card = MuteOnceCard()
    bridge = VpcdBridge(card, "127.0.0.1", peer.port)
    bridge.run_in_thread()
    try:
        conn = peer.accept()
        conn.sendall(b"\x00\x01\x01" + b"\x00\x07" + bytes.fromhex("80100000026869"))
        assert conn.recv(16) == b""                      # dropped, no frame
        conn2 = peer.accept()
        assert card.calls[:3] == ["on", "mute", "off"]
        conn2.sendall(b"\x00\x01\x01" + b"\x00\x08" + bytes.fromhex("8010000002686900"))
        assert peer.read_frame(conn2) == b"hi\x90\x00"
        conn2.close()
    finally:
        bridge.stop()
        peer.server.close()
