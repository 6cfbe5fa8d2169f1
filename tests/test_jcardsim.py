"""The Java Card applet in jCardSim (card/jcardsim.py + org.simvault.sim): install
parameters, the Java vpcd bridge's framing and reconnect against a fake vpcd, and
through the real pcscd: `simvault card serve --impl javacard`, scriptor, and malformed
APDUs that must all get an ISO status word (jCardSim answers 6F00 for an exception
the applet did not catch: counted, want 0).

These tests need Java and Maven (scripts/setup.sh installs them); the jar is built
on first use.
"""
from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys

import pytest
from cards import TEST_ADMIN_KEY, TEST_KEY_ID, TEST_PIN, TEST_POINT, TEST_PUK
from conftest import ROOT, VPCD_PORTS, _wait_presence, vpcd_slot_lock
from test_vpcd_bridge import FakeVpcdPeer

from apdu_specs import commands as K
from apdu_specs.fci import FCI
from card.jcardsim import INSTALL_DATA_MAX, JavaCard, JavaCardUnavailable, Personalisation
from host.link import PcscTransport

PERSO = Personalisation(pin=TEST_PIN, puk=TEST_PUK, admin_key=TEST_ADMIN_KEY, trust_anchors=(TEST_POINT,),
                        capacity=256 * 1024)
SELECT = bytes.fromhex("00A404000AF053494D5641554C540100")


def test_install_params_follow_the_readme_table() -> None:
    raw = PERSO.install_params()
    tlvs, i = [], 0
    while i < len(raw):
        tlvs.append((raw[i], raw[i + 2:i + 2 + raw[i + 1]]))
        i += 2 + raw[i + 1]
    assert i == len(raw)
    assert tlvs == [(0x01, b"1234\xff\xff\xff\xff"), (0x02, b"12345678"), (0x03, TEST_ADMIN_KEY * 3),
                    (0x05, TEST_POINT), (0x06, (256 * 1024).to_bytes(4, "big"))]
    keys = bytes(range(48))
    custom = Personalisation("87654321", "11112222", keys, (), 1 << 20, admin_key_version=0x30, max_manifest=16384)
    assert custom.install_params() == (bytes.fromhex("0108") + b"87654321" + bytes.fromhex("0208") + b"11112222"
                                       + bytes.fromhex("0330") + keys + bytes.fromhex("040130")
                                       + bytes.fromhex("060400100000") + bytes.fromhex("09024000"))


def test_personalisation_refuses_bad_values_and_hides_secrets() -> None:
    text = repr(PERSO)
    assert TEST_PIN not in text and TEST_PUK not in text and TEST_ADMIN_KEY.hex() not in text.lower()
    for bad in (dict(pin="12"), dict(puk="1234"), dict(admin_key=bytes(8)), dict(trust_anchors=(b"\x04" * 10,)),
                dict(capacity=1000), dict(trust_anchors=(TEST_POINT,) * 3)):
        with pytest.raises(Exception) as err:
            Personalisation(**{**dict(pin=TEST_PIN, puk=TEST_PUK, admin_key=TEST_ADMIN_KEY), **bad})
        assert "\n" not in str(err.value)
    assert len(Personalisation(TEST_PIN, TEST_PUK, TEST_ADMIN_KEY, (TEST_POINT,) * 2).install_params()) \
        <= INSTALL_DATA_MAX


def test_bad_install_params_are_one_line_and_the_card_never_starts() -> None:
    with FakeVpcdPeer_() as peer:
        card = JavaCard(PERSO, "127.0.0.1", peer.port)
        card.personalisation = _Raw(bytes.fromhex("0108313233"))         # a truncated TLV
        card.start()
        with pytest.raises(JavaCardUnavailable) as err:
            card.wait_connected(20)
        card.stop()
    assert "exit 2" in str(err.value) and "refused its install parameters" in str(err.value)
    assert TEST_PIN not in str(err.value)


class _Raw:
    """Install parameters as given, to test the launcher's refusal."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def install_params(self) -> bytes:
        return self.raw


class FakeVpcdPeer_(FakeVpcdPeer):
    def __enter__(self) -> FakeVpcdPeer_:
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.close()


def test_java_bridge_framing_and_reconnect() -> None:
    """Frames split in 1-byte segments, the ATR control frame, APDUs, a dropped
    connection (a power loss: the PIN is forgotten) and the reconnect."""
    with FakeVpcdPeer_() as peer, JavaCard(PERSO, "127.0.0.1", peer.port) as card_proc:
        conn = peer.accept()
        peer.send_dribbled(conn, b"\x01")                    # power on: no answer
        peer.send_dribbled(conn, b"\x04")
        assert peer.read_frame(conn) == bytes.fromhex("3B8E800180738021C05873696D7661756C74C8")
        peer.send_dribbled(conn, SELECT)
        answer = peer.read_frame(conn)
        assert answer[-2:] == b"\x90\x00" and FCI.decode(answer[:-2]).extended_length
        conn.sendall(b"\x00\x0d" + bytes.fromhex("0020008108") + TEST_PIN.encode() + b"\xff" * 4)
        assert peer.read_frame(conn) == b"\x90\x00"
        conn.close()                                          # vpcd went away
        conn2 = peer.accept()
        conn2.sendall(b"\x00\x01\x01" + len(SELECT).to_bytes(2, "big") + SELECT)
        assert peer.read_frame(conn2)[-2:] == b"\x90\x00"
        conn2.sendall(b"\x00\x05" + bytes.fromhex("8010000000"))
        status = peer.read_frame(conn2)
        assert not K.GET_STATUS_RESPONSE.decode(status[:-2])["pin_verified"]   # power loss forgot it
        counters = card_proc.counters()
        conn2.close()
    assert counters["apdus"] == 4 and counters["sw6f00"] == 0
    assert counters["bytes_in"] == 2 * len(SELECT) + 13 + 5


@pytest.mark.pcsc
def test_card_serve_impl_javacard(pcscd, tmp_path, capsys) -> None:
    """`simvault card serve --impl javacard` on slot 1: pcscd sees the card, `card status`
    reads it, scriptor sends SELECT + GET STATUS, SIGTERM stops it (exit 0, reader empty)."""
    from host.cli.card import main
    (tmp_path / "admin.key").write_text(TEST_ADMIN_KEY.hex() + "\n")
    pem = tmp_path / "anchor.pem"
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), TEST_POINT)
    pem.write_bytes(key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    env = dict(os.environ, SIMVAULT_PIN=TEST_PIN, SIMVAULT_PUK=TEST_PUK)
    with vpcd_slot_lock(1) as reader:
        assert _wait_presence(reader, False, 10), f"{reader} is busy"
        proc = subprocess.Popen([sys.executable, "-m", "host.cli.card", "card", "serve", "--impl", "javacard",
                                 "--vpcd", f"127.0.0.1:{VPCD_PORTS[1]}", "--capacity", str(256 * 1024),
                                 "--admin-key-file", str(tmp_path / "admin.key"), "--trust", str(pem)],
                                cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
        try:
            assert _wait_presence(reader, True, 60), "pcscd did not see the Java card"
            assert main(["card", "status", "--reader", reader, "--json"]) == 0
            out = capsys.readouterr().out
            assert '"pin_tries": 3' in out and '"anchors": 1' in out and '"extended_length": true' in out
            if shutil.which("scriptor") is None:
                pytest.fail("scriptor (pcsc-tools) is not installed: run scripts/setup.sh")
            result = subprocess.run(["scriptor", "-r", reader], input="00 A4 04 00 0A F0 53 49 4D 56 41 55 4C 54 "
                                    "01 00\n80 10 00 00 00\n80 40 00 00 00\n", capture_output=True, text=True,
                                    timeout=30)
            answers = re.findall(r"^< ([0-9A-F \n]+?) :", result.stdout, re.MULTILINE)
            assert len(answers) == 3, result.stdout + result.stderr
            raw = [bytes.fromhex(a.replace(" ", "").replace("\n", "")) for a in answers]
            assert all(r[-2:] == b"\x90\x00" for r in raw), result.stdout
            assert FCI.decode(raw[0][:-2]).max_chunk_size == 16384
            assert K.GET_STATUS_RESPONSE.decode(raw[1][:-2])["pin_tries"] == 3
            assert K.LIST_ANCHORS_RESPONSE.decode(raw[2][:-2])["key_ids"] == [TEST_KEY_ID]
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
        err = proc.stderr.read() if proc.stderr else ""
        assert code == 0, err
        assert "RAM only" in err and "stopped" in err and TEST_PIN not in err
        assert f"card in reader '{reader}'" in err
        assert _wait_presence(reader, False, 10)


def _malformed_apdus(rng: random.Random, n: int) -> list[bytes]:
    """Every class/instruction the applet knows and some it does not, with wrong P1-P2, lengths
    that disagree with the data, truncated extended forms, random data."""
    ins = [0xA4, 0xC0, 0x20, 0x24, 0x2C, 0x10, 0x20, 0x22, 0x24, 0x26, 0x28, 0x2A, 0x30, 0x32, 0x34, 0x36, 0x40,
           0x50, 0x82, 0xE2, 0xE4, 0xEE, 0x70, 0xFE, 0x00]
    out = []
    for _ in range(n):
        cla = rng.choice([0x00, 0x80, 0x84, 0x90, 0x94, 0x10, 0x01, 0x81, 0xA0, 0xFF])
        head = bytes((cla, rng.choice(ins), rng.choice([0, 0, 1, 2, 0x81, 0xFF]), rng.choice([0, 0, 1, 0x81, 0xFF])))
        form = rng.randrange(7)
        data = rng.randbytes(rng.choice([0, 1, 7, 8, 16, 28, 32, 40, 64, 100, 255, 300]))
        if form == 0:
            out.append(head)
        elif form == 1:
            out.append(head + bytes((rng.randrange(256),)))
        elif form == 2 and data and len(data) < 256:
            out.append(head + bytes((len(data),)) + data + rng.choice([b"", b"\x00"]))
        elif form == 3 and data:
            out.append(head + b"\x00" + len(data).to_bytes(2, "big") + data + rng.choice([b"", b"\x00\x00"]))
        elif form == 4:
            out.append(head + bytes((rng.randrange(1, 256),)) + data)         # Lc disagrees with the data
        elif form == 5:
            out.append(head + b"\x00" + rng.randbytes(rng.randrange(1, 3)))   # truncated extended length
        else:
            out.append(head + rng.randbytes(rng.randrange(1, 40)))
    return out


@pytest.mark.pcsc
def test_malformed_apdus_get_a_status_word_never_6f00(pcscd) -> None:
    """400 fuzzed APDUs (before and after SELECT and VERIFY) through pcscd to the Java card:
    each answer ends with an ISO status word, and none is 6F00 (an uncaught exception)."""
    rng = random.Random(9)
    with vpcd_slot_lock(1) as reader, JavaCard(PERSO, "127.0.0.1", VPCD_PORTS[1]) as card:
        assert _wait_presence(reader, True, 20)
        with PcscTransport(reader) as transport:
            answers = []
            for round_ in range(4):
                if round_ >= 1:
                    transport.transmit_raw(SELECT)
                if round_ >= 2:
                    assert transport.transmit_raw(bytes.fromhex("0020008108") + TEST_PIN.encode()
                                                  + b"\xff" * 4)[-2:] == b"\x90\x00"
                for apdu in _malformed_apdus(rng, 100):
                    out = transport.transmit_raw(apdu)
                    assert len(out) >= 2, apdu.hex()
                    answers.append((apdu, int.from_bytes(out[-2:], "big")))
        counters = card.counters()
    assert counters["sw6f00"] == 0, [a.hex() for a, sw in answers if sw == 0x6F00][:10]
    assert {sw >> 12 for _, sw in answers} <= {0x6, 0x9}


# ---- the bridge alone: javacard/src/test/.../sim/BridgeTestApplet.java, not the backup applet ----

BRIDGE_APPLET = "org.simvault.sim.BridgeTestApplet"
BRIDGE_SOURCE = ROOT / "javacard" / "src" / "test" / "java" / "org" / "simvault" / "sim" / "BridgeTestApplet.java"


@pytest.fixture(scope="module")
def bridge_classes(tmp_path_factory) -> str:
    """BridgeTestApplet compiled with javac against the launcher's jar (its class directory)."""
    from card.jcardsim import ensure_built
    out = tmp_path_factory.mktemp("bridge-classes")
    result = subprocess.run(["javac", "-nowarn", "-cp", ensure_built(), "-d", str(out), str(BRIDGE_SOURCE)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return str(out)


def _bridge_card(peer_port: int, classes: str, params: bytes = b"\x01\x02\x03") -> JavaCard:
    return JavaCard(_Raw(params), "127.0.0.1", peer_port, applet_class=BRIDGE_APPLET,  # type: ignore[arg-type]
                    extra_classpath=(classes,))


def _tx(peer, conn, apdu: bytes) -> bytes:
    conn.sendall(len(apdu).to_bytes(2, "big") + apdu)
    return peer.read_frame(conn)


def test_bridge_counts_uncaught_exceptions_and_fixes_card_os_answers(bridge_classes) -> None:
    """The 6F00 counter behind every `--card javacard` test can fail: an applet exception is
    counted; what jCardSim's card OS answers unlike a GP card is answered like one and not
    counted (bad framing 6700, SELECT of an absent AID 6A82, a 261-byte short case 4)."""
    select = bytes.fromhex("00A404000AF053494D5641554C5401")
    with FakeVpcdPeer_() as peer, _bridge_card(peer.port, bridge_classes) as card:
        conn = peer.accept()
        assert _tx(peer, conn, bytes.fromhex("00A4040005A000000000")) == b"\x6a\x82"
        assert _tx(peer, conn, select) == b"\x90\x00"
        assert _tx(peer, conn, bytes.fromhex("0003000000")) == b"\x01\x02\x03\x90\x00"   # install params
        assert _tx(peer, conn, bytes.fromhex("0002000000")) == b"\x6f\x00"               # NullPointerException
        for bad in ("000100", "0001000010AA", "0001000000000000", "000100000001", "0001000002AA"):
            assert _tx(peer, conn, bytes.fromhex(bad)) == b"\x67\x00", bad
        data = random.Random(1).randbytes(255)
        assert _tx(peer, conn, bytes.fromhex("00010000FF") + data + b"\x00") == data + b"\x90\x00"
        big = random.Random(2).randbytes(4000)
        assert _tx(peer, conn, bytes.fromhex("0001000000") + len(big).to_bytes(2, "big") + big + b"\x00\x00") \
            == big + b"\x90\x00"
        assert _tx(peer, conn, bytes.fromhex("0004000000")) == bytes.fromhex("000100019000")
        conn.close()                                              # power loss: transient cleared
        conn2 = peer.accept()
        assert _tx(peer, conn2, select) == b"\x90\x00"
        assert _tx(peer, conn2, bytes.fromhex("0004000000")) == bytes.fromhex("000100029000")
        counters = card.counters()
        conn2.close()
    assert counters["sw6f00"] == 1 and counters["apdus"] == 14


def test_bridge_applet_refusing_its_install_is_one_line(bridge_classes) -> None:
    with FakeVpcdPeer_() as peer:
        card = _bridge_card(peer.port, bridge_classes, b"\xee\x01")
        card.start()
        with pytest.raises(JavaCardUnavailable) as err:
            card.wait_connected(20)
        card.stop()
    assert "exit 2" in str(err.value) and "refused its install parameters" in str(err.value)
