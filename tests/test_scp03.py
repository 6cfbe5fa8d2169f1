"""apdu_specs/scp.py against the published vectors of apdu_specs/vectors/scp03.json
(the same file javacard/.../Scp03Test.java replays on the Java card side):
RFC 4493 AES-CMAC, and a real card's SCP03 trace (osmocom pySim's unit tests) at
security levels 03, 11 and 33, checked from both sides: the host wraps the plain
APDUs to the published bytes and unwraps the published responses; the card side
unwraps the published commands to the plain data and wraps the plain response to
the published bytes. Plus the primitives' edge cases."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from apdu_specs import scp as S

VECTORS = json.loads((Path(S.__file__).parent / "vectors" / "scp03.json").read_text())
KEYS = S.KeySet(bytes.fromhex(VECTORS["keys"]["enc"]), bytes.fromhex(VECTORS["keys"]["mac"]),
                bytes.fromhex(VECTORS["keys"]["dek"]), int(VECTORS["keys"]["version"], 16))
AID = bytes.fromhex(VECTORS["aid"])
SESSIONS = VECTORS["sessions"]


def _split(apdu: bytes) -> tuple[bytes, bytes, bool]:
    """(header, data, has Le) of a short APDU."""
    header, rest = apdu[:4], apdu[4:]
    if not rest:
        return header, b"", False
    if len(rest) == 1:
        return header, b"", True
    lc = rest[0]
    return header, rest[1:1 + lc], len(rest) > 1 + lc


@pytest.mark.parametrize("case", VECTORS["cmac"], ids=lambda c: f"{len(c['message']) // 2}B")
def test_cmac_rfc4493(case):
    assert S.cmac(bytes.fromhex(case["key"]), bytes.fromhex(case["message"])).hex().upper() == case["mac"]


def test_vectors_file_is_what_the_tests_expect():
    assert sorted(s["security_level"] for s in SESSIONS) == ["03", "11", "33"]
    assert [s["sequence_counter"] for s in SESSIONS] == [1, 2, 3]       # Scp03Test replays them in this order
    assert all("pysim" in s["source"] for s in SESSIONS) and "RFC 4493" in VECTORS["cmac_source"]


@pytest.mark.parametrize("session", SESSIONS, ids=lambda s: s["name"])
def test_published_session_host_side(session):
    command = bytes.fromhex(session["initialize_update"]["command"])
    host_challenge = command[5:13]
    init = S.INITIALIZE_UPDATE_RESPONSE_SCP03.decode(bytes.fromhex(session["initialize_update"]["response"]))
    assert (init["key_version"], init["scp_id"], init["scp_i"]) == (KEYS.version, 3, 0x70)
    assert init["sequence_counter"] == session["sequence_counter"]
    # the pseudo-random card challenge: KDF(K-ENC, 02, 64, sequence counter | AID)
    assert S.pseudo_random_challenge(KEYS.enc, init["sequence_counter"], AID) == init["card_challenge"]
    host = S.SecureChannel(KEYS, host_challenge, init["card_challenge"])
    assert host.card_cryptogram == init["card_cryptogram"]
    level = int(session["security_level"], 16)
    data = host.external_authenticate(level)
    assert bytes([0x84, 0x82, level, 0, len(data)]) + data == bytes.fromhex(session["external_authenticate"])
    for cmd in session["commands"]:
        header, plain, le = _split(bytes.fromhex(cmd["plain"]))
        out = host.wrap_command(header[0], header[1], header[2], header[3], plain)
        wrapped = bytes([header[0] | 0x04]) + header[1:] + bytes([len(out)]) + out + (b"\x00" if le else b"")
        assert wrapped.hex().upper() == cmd["wrapped"]
        if "response_wrapped" in cmd:
            got = host.unwrap_response(bytes.fromhex(cmd["response_wrapped"]), int(cmd["sw"], 16))
            assert got.hex().upper() == cmd["response_plain"]


@pytest.mark.parametrize("session", SESSIONS, ids=lambda s: s["name"])
def test_published_session_card_side(session):
    command = bytes.fromhex(session["initialize_update"]["command"])
    init = S.INITIALIZE_UPDATE_RESPONSE_SCP03.decode(bytes.fromhex(session["initialize_update"]["response"]))
    card_challenge = S.pseudo_random_challenge(KEYS.enc, session["sequence_counter"], AID)
    card = S.SecureChannel(KEYS, command[5:13], card_challenge)
    response = S.INITIALIZE_UPDATE_RESPONSE_SCP03.encode({
        "key_diversification": bytes(10), "key_version": KEYS.version, "scp_id": 3, "scp_i": 0x70,
        "card_challenge": card_challenge, "card_cryptogram": card.card_cryptogram,
        "sequence_counter": session["sequence_counter"]})
    assert response.hex().upper() == session["initialize_update"]["response"]
    assert init["card_challenge"] == card_challenge
    ext = bytes.fromhex(session["external_authenticate"])
    card.check_external_authenticate(ext[0], ext[2], ext[3], ext[5:])
    assert card.level == int(session["security_level"], 16)
    for cmd in session["commands"]:
        header, data, _ = _split(bytes.fromhex(cmd["wrapped"]))
        assert card.unwrap_command(header[0], header[1], header[2], header[3], data) == \
            _split(bytes.fromhex(cmd["plain"]))[1]
        if "response_plain" in cmd:
            wrapped = card.wrap_response(bytes.fromhex(cmd["response_plain"]), int(cmd["sw"], 16))
            assert wrapped.hex().upper() == cmd["response_wrapped"]


def test_published_external_authenticate_refused_when_altered():
    session = SESSIONS[0]
    command = bytes.fromhex(session["initialize_update"]["command"])
    ext = bytes.fromhex(session["external_authenticate"])
    challenge = S.pseudo_random_challenge(KEYS.enc, session["sequence_counter"], AID)
    for at, sw in ((5, S.SW_VERIFICATION_FAILED), (len(ext) - 1, S.SW_INCORRECT_SM_DATA)):
        bad = bytearray(ext)
        bad[at] ^= 1
        card = S.SecureChannel(KEYS, command[5:13], challenge)
        with pytest.raises(S.ScpError) as err:
            card.check_external_authenticate(bad[0], bad[2], bad[3], bytes(bad[5:]))
        assert err.value.sw == sw and not card.is_open
    card = S.SecureChannel(KEYS, command[5:13], challenge)              # the level is MACed too
    with pytest.raises(S.ScpError):
        card.check_external_authenticate(ext[0], ext[2] ^ 0x10, ext[3], ext[5:])


def _pair(level: int) -> tuple[S.SecureChannel, S.SecureChannel]:
    keys = S.KeySet(b"E" * 16, b"M" * 16, b"D" * 16, 1)
    host, card = S.SecureChannel(keys, b"h" * 8, b"c" * 8), S.SecureChannel(keys, b"h" * 8, b"c" * 8)
    card.check_external_authenticate(0x84, level, 0, host.external_authenticate(level))
    return host, card


@pytest.mark.parametrize("level", S.LEVELS, ids=lambda v: f"{v:02X}")
def test_every_level_both_sides(level):
    host, card = _pair(level)
    for n in (0, 1, 15, 16, 17, 250):
        data = bytes(range(n))
        wire = host.wrap_command(0x84, 0xE2, 0, 0, data)
        encrypted = bool(level & S.SL_CDEC and n)
        assert len(wire) == ((n // 16 + 1) * 16 if encrypted else n) + 8
        assert (data in wire) == (not encrypted) or n < 8
        assert card.unwrap_command(0x84, 0xE2, 0, 0, wire) == data
        answer = card.wrap_response(data[: n // 2])
        assert host.unwrap_response(answer, 0x9000) == data[: n // 2]
        assert len(answer) == (n // 2 if not level & S.SL_RMAC else
                               ((n // 2 // 16 + 1) * 16 if level & S.SL_RENC and n // 2 else n // 2) + 8)
        assert card.wrap_response(b"", 0x6A80) == b""                   # no R-MAC on an error
        assert (card.wrap_response(b"", 0x6310) != b"") == bool(level & S.SL_RMAC)   # warnings get one


def test_wrong_mac_length_padding_are_6988():
    host, card = _pair(0x03)
    wire = host.wrap_command(0x84, 0xE2, 0, 0, b"x" * 20)
    for bad in (wire[:-1] + bytes([wire[-1] ^ 1]), wire[:7], wire[:16] + wire[-8:]):
        _, c = _pair(0x03)
        with pytest.raises(S.ScpError) as err:
            c.unwrap_command(0x84, 0xE2, 0, 0, bad)
        assert err.value.sw == 0x6988
    with pytest.raises(S.ScpError):                 # header bits are MACed: another INS
        card.unwrap_command(0x84, 0xE4, 0, 0, wire)
    # a replayed command: the chain has moved on
    host, card = _pair(0x01)
    wire = host.wrap_command(0x84, 0xEE, 0, 0, b"")
    assert card.unwrap_command(0x84, 0xEE, 0, 0, wire) == b""
    with pytest.raises(S.ScpError):
        card.unwrap_command(0x84, 0xEE, 0, 0, wire)
    # a tampered response
    host, card = _pair(0x33)
    card.unwrap_command(0x84, 0xE2, 0, 0, host.wrap_command(0x84, 0xE2, 0, 0, b"abc"))
    answer = bytearray(card.wrap_response(b"secret"))
    answer[0] ^= 1
    with pytest.raises(S.ScpError):
        host.unwrap_response(bytes(answer), 0x9000)


def test_padding_and_keys():
    assert S.pad80(b"") == b"\x80" + bytes(15) and len(S.pad80(b"a" * 16)) == 32
    for data in (b"", b"a", b"a" * 15, b"\x80" * 16, b"\x00\x80" * 20):
        assert S.unpad80(S.pad80(data)) == data
    for bad in (b"", bytes(16), b"a" * 16, b"\x80" + bytes(16), bytes(15)):
        assert S.unpad80(bad) is None
    assert S.KeySet.from_bytes(b"k" * 16).single_key
    keys = S.KeySet.from_bytes(b"e" * 16 + b"m" * 16 + b"d" * 16, 2)
    assert (keys.enc, keys.mac, keys.dek, keys.version) == (b"e" * 16, b"m" * 16, b"d" * 16, 2)
    assert "eeee" not in repr(keys) and b"e".hex() * 4 not in repr(keys)
    with pytest.raises(ValueError):
        S.KeySet.from_bytes(b"k" * 32)
    assert S.strongest_level(0x70) == 0x33 and S.strongest_level(0x20) == 0x13 and S.strongest_level(0x00) == 0x03
    assert not S.level_supported(0x33, 0x20) and not S.level_supported(0x11, 0x00) and S.level_supported(0x03, 0)
    assert not S.level_supported(0x00, 0x70) and not S.level_supported(0x31, 0x70)
