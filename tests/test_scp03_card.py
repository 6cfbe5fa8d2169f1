"""SCP03 on the Python emulator's applet (card/applet_admin.py) driven by the host
client (host/client.py) and raw APDUs: every security level end to end (also in
T=0 mode), wrong MACs close the channel, a replayed EXTERNAL AUTHENTICATE is
refused, wrong keys count and lock, tearing never gives a try back, and the CLI's
key files (the new key set and the old 16-byte key)."""
from __future__ import annotations

import json
import os

import pytest
from cards import (
    OTHER_SIGNER,
    SELECT_APDU,
    TEST_ADMIN_KEY,
    TEST_KEY_ID,
    TEST_SIGNER,
    build_test_card,
    emulator_client,
    tx,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from apdu_specs import scp as S
from apdu_specs.manifest import key_id, public_point
from card.emulator import VirtualCard
from card.runtime import CardLimits
from host.client import AdminAuthError, BackupCard, PinRequiredError
from host.errors import UsageError
from host.link import EmulatorTransport, Link

KEYS = S.KeySet.from_bytes(TEST_ADMIN_KEY)
OTHER = public_point(OTHER_SIGNER.public_key())


@pytest.fixture
def vcard(tmp_path) -> VirtualCard:
    card = build_test_card(tmp_path / "card.img", capacity=256 * 1024)
    card.power_on()
    return card


def _handshake(card: VirtualCard, keys: S.KeySet = KEYS, challenge: bytes = bytes(range(8))):
    """INITIALIZE UPDATE: (the host's channel, the raw INITIALIZE UPDATE response)."""
    data, sw = tx(card, bytes.fromhex("8050000008") + challenge + b"\x00")
    assert sw == 0x9000
    init = S.INITIALIZE_UPDATE_RESPONSE_SCP03.decode(data)
    assert (init["scp_id"], init["scp_i"], init["sequence_counter"]) == (3, 0x60, None)
    return S.SecureChannel(keys, challenge, init["card_challenge"]), data


def _ext_auth_apdu(channel: S.SecureChannel, level: int) -> bytes:
    data = channel.external_authenticate(level)
    return bytes([0x84, 0x82, level, 0, len(data)]) + data


def _admin_apdu(channel: S.SecureChannel, ins: int, data: bytes) -> bytes:
    body = channel.wrap_command(0x84, ins, 0, 0, data)
    return bytes([0x84, ins, 0, 0, len(body)]) + body + b"\x00"


@pytest.mark.parametrize("limits", [CardLimits(), CardLimits.short(t0=True)], ids=["T1", "T0"])
@pytest.mark.parametrize("level", S.LEVELS, ids=lambda v: f"SL{v:02X}")
def test_every_level_through_the_client(tmp_path, level, limits):
    card = build_test_card(tmp_path / "c.img", capacity=256 * 1024, limits=limits)
    client = emulator_client(card, pin=False)
    assert client.open_admin(KEYS, level) == level and client.admin_level == level
    assert client.status().admin_authenticated
    assert client.put_trust_anchor(OTHER) == key_id(OTHER)
    assert set(client.list_anchors()) == {TEST_KEY_ID, key_id(OTHER)}
    client.delete_trust_anchor(key_id(OTHER))
    client.erase_backups()
    assert client.list_anchors() == [TEST_KEY_ID]
    card.store.check()


def test_the_host_defaults_to_the_strongest_level(vcard):
    client = emulator_client(vcard, pin=False)
    assert client.open_admin(TEST_ADMIN_KEY) == 0x33               # i = 60: R-MAC and R-ENC
    with pytest.raises(UsageError, match="security level 31"):
        client.open_admin(KEYS, 0x31)


def test_rmac_and_renc_on_the_wire(vcard):
    """The answer to an admin command carries the R-MAC at 1x (8 bytes over
    chaining value | SW), nothing at 01/03; error answers never carry one."""
    tx(vcard, SELECT_APDU)
    for level, answer_length in ((0x01, 0), (0x03, 0), (0x11, 8), (0x13, 8), (0x33, 8)):
        channel, _ = _handshake(vcard)
        assert tx(vcard, _ext_auth_apdu(channel, level))[1] == 0x9000
        data, sw = tx(vcard, _admin_apdu(channel, 0xE2, bytes(8) + OTHER))    # key id is not the point's
        assert (data, sw) == (b"", 0x6A80)
        data, sw = tx(vcard, _admin_apdu(channel, 0xE4, TEST_KEY_ID))
        assert sw == 0x9000 and len(data) == answer_length
        assert channel.unwrap_response(data, sw) == b""
        tx(vcard, bytes.fromhex("84E2000048") + bytes(72))                  # wrong MAC: closes, re-add below
        vcard.store.add_anchor(TEST_KEY_ID, public_point(TEST_SIGNER.public_key()))


def test_wrong_mac_closes_the_channel(vcard):
    tx(vcard, SELECT_APDU)
    assert tx(vcard, "84EE000008" + "00" * 8)[1] == 0x6982          # no channel
    channel, _ = _handshake(vcard)
    assert tx(vcard, _ext_auth_apdu(channel, 0x33))[1] == 0x9000
    bad = bytearray(_admin_apdu(channel, 0xEE, b""))
    bad[-2] ^= 1                                                      # the last MAC byte (Le follows)
    assert tx(vcard, bytes(bad))[1] == 0x6988
    assert tx(vcard, _admin_apdu(channel, 0xEE, b""))[1] == 0x6982    # closed
    # bad C-DEC padding, a block-less length, a MAC-less command: 6988, closed
    for make in (lambda c: bytes([0x84, 0xE4, 0, 0, 24]) + _mac_only(c, bytes(16)),
                 lambda c: bytes([0x84, 0xE4, 0, 0, 13]) + _mac_only(c, bytes(5)),
                 lambda c: bytes.fromhex("84E4000004") + bytes(4)):
        channel, _ = _handshake(vcard)
        assert tx(vcard, _ext_auth_apdu(channel, 0x03))[1] == 0x9000
        assert tx(vcard, make(channel))[1] == 0x6988
        assert not K_status(vcard)["admin_authenticated"]
    # the client forgets a channel the card closed, and says what to do
    client = emulator_client(vcard, pin=False)
    client.open_admin(KEYS, 0x13)
    client._scp._chain = bytes(16)                                    # desynchronised: the card will refuse
    with pytest.raises(AdminAuthError):
        client.erase_backups()
    with pytest.raises(UsageError, match="open_admin"):
        client.erase_backups()


def _mac_only(channel: S.SecureChannel, payload: bytes) -> bytes:
    """payload + a right C-MAC over it, not encrypted (a broken C-DEC block)."""
    channel._counter += 1
    channel._chain = channel._c_mac(0x84, 0xE4, 0, 0, payload)
    return payload + channel._chain[:8]


def K_status(card: VirtualCard) -> dict:
    from apdu_specs import commands as K
    data, sw = tx(card, "8010000000")
    assert sw == 0x9000
    return K.GET_STATUS_RESPONSE.decode(data)


def test_replayed_external_authenticate_is_refused(vcard):
    tx(vcard, SELECT_APDU)
    channel, first = _handshake(vcard)
    ext = _ext_auth_apdu(channel, 0x01)
    assert tx(vcard, ext)[1] == 0x9000
    assert tx(vcard, ext)[1] == 0x6985                  # no handshake pending: refused, and the channel closed
    assert not K_status(vcard)["admin_authenticated"]
    again, second = _handshake(vcard)                    # the same host challenge, a fresh card challenge
    assert second[13:21] != first[13:21]
    assert tx(vcard, ext)[1] == 0x6300                   # the recorded cryptogram does not fit it
    assert vcard.store.admin_tries_left() == 9
    assert tx(vcard, "84820100100000")[1] in (0x6985, 0x6700)


def test_wrong_keys_count_and_lock(vcard):
    tx(vcard, SELECT_APDU)
    wrong = S.KeySet.from_bytes(bytes(16))
    for _ in range(4):
        channel, _ = _handshake(vcard, wrong)
        assert tx(vcard, _ext_auth_apdu(channel, 0x33))[1] == 0x6300
    channel, _ = _handshake(vcard)                       # right cryptogram, wrong C-MAC: 6988, counted too
    bad = bytearray(_ext_auth_apdu(channel, 0x33))
    bad[-1] ^= 1
    assert tx(vcard, bytes(bad))[1] == 0x6988
    assert vcard.store.admin_tries_left() == 5
    for apdu in ("8050020008" + "00" * 8,):              # wrong key version (the card has 01): 6A88
        assert tx(vcard, apdu)[1] == 0x6A88
    assert tx(vcard, "80500000040000000000")[1] == 0x6700
    channel, _ = _handshake(vcard)
    assert tx(vcard, _ext_auth_apdu(channel, 0x01)[:-1])[1] == 0x6700    # Lc says 16: 15 sent
    assert vcard.store.admin_tries_left() == 5
    client = emulator_client(vcard, pin=False)
    with pytest.raises(AdminAuthError, match="card cryptogram is wrong"):     # the host checks first: uncounted
        client.open_admin(bytes(16))
    assert vcard.store.admin_tries_left() == 5
    for _ in range(5):
        channel, _ = _handshake(vcard, wrong)
        assert tx(vcard, _ext_auth_apdu(channel, 0x01))[1] == 0x6300
    assert vcard.store.admin_tries_left() == 0
    assert tx(vcard, "8050000008" + "00" * 8 + "00")[1] == 0x6983
    with pytest.raises(AdminAuthError, match="locked"):
        client.open_admin(KEYS)


def test_the_host_checks_the_card_before_it_proves_itself(vcard):
    """A card that answers a wrong cryptogram (not this card) gets no EXTERNAL
    AUTHENTICATE: nothing is counted, nothing is sent after INITIALIZE UPDATE."""
    sent: list[bytes] = []
    link = Link(EmulatorTransport(vcard))
    link.connect()
    client = BackupCard(link)
    client.select()
    real = link.transmit

    def spy(apdu):
        sent.append(bytes([apdu.cla, apdu.ins]))
        return real(apdu)

    link.transmit = spy          # type: ignore[method-assign]
    with pytest.raises(AdminAuthError):
        client.open_admin(S.KeySet(TEST_ADMIN_KEY, bytes(16), TEST_ADMIN_KEY))
    assert sent == [b"\x80\x50"] and vcard.store.admin_tries_left() == 10


def test_channel_closes_on_select_and_power(vcard):
    client = emulator_client(vcard, pin=False)
    client.open_admin(KEYS)
    channel = client._scp
    client.select()
    assert not client.status().admin_authenticated
    client._scp = channel
    with pytest.raises(PinRequiredError):
        client.erase_backups()


# ---- the CLI's key files ---------------------------------------------------------------------


@pytest.fixture
def cli_image(tmp_path, monkeypatch):
    from host.cli.card import main
    monkeypatch.chdir(tmp_path)
    (tmp_path / "signer.pem").write_bytes(OTHER_SIGNER.public_key().public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return main


def test_cli_key_set_file_and_old_key_file(cli_image, tmp_path, capsys):
    main = cli_image
    assert main(["card", "init", "--image", "a.img", "--pin", "2468", "--puk", "13572468",
                 "--admin-key-file", "a.key"]) == 0
    doc = json.loads((tmp_path / "a.key").read_text())
    assert doc["enc"] == doc["mac"] == doc["dek"] and doc["key_version"] == 1     # the emulator keeps one key
    assert oct((tmp_path / "a.key").stat().st_mode & 0o777) == "0o600"
    for level in ("01", "03", "11", "13", "33", None):
        extra = [] if level is None else ["--scp-level", level]
        assert main(["card", "trust", "add", "signer.pem", "--emulator", "a.img", "--admin-key-file", "a.key",
                     *extra]) == 0
        assert main(["card", "trust", "remove", key_id(OTHER).hex(), "--emulator", "a.img",
                     "--admin-key-file", "a.key", *extra]) == 0
    out = capsys.readouterr()
    assert doc["enc"] not in out.out + out.err and doc["enc"].lower() not in out.out + out.err
    # the old form: one 16-byte key in hex, used as K-ENC, K-MAC and K-DEK
    (tmp_path / "old.key").write_text(TEST_ADMIN_KEY.hex() + "\n")
    assert main(["card", "init", "--image", "b.img", "--pin", "2468", "--puk", "13572468",
                 "--admin-key-file", "old.key"]) == 0
    assert main(["card", "erase", "--yes", "--emulator", "b.img", "--admin-key-file", "old.key"]) == 0
    (tmp_path / "raw.key").write_bytes(TEST_ADMIN_KEY)                   # raw 16 bytes: the same key
    assert main(["card", "erase", "--yes", "--emulator", "b.img", "--admin-key-file", "raw.key"]) == 0
    # the same key as a key set file, key version 1 (the card's) and 2 (not the card's)
    for version, code in ((1, 0), (2, 6)):  # another key version: credentials refused
        (tmp_path / f"v{version}.key").write_text(json.dumps({
            "format": "simvault SCP03 key set", "key_version": version, "enc": TEST_ADMIN_KEY.hex(),
            "mac": TEST_ADMIN_KEY.hex(), "dek": TEST_ADMIN_KEY.hex()}))
        assert main(["card", "erase", "--yes", "--emulator", "b.img", "--admin-key-file", f"v{version}.key"]) == code
    assert "no admin key set of version 02" in capsys.readouterr().err
    assert main(["card", "erase", "--yes", "--emulator", "b.img", "--admin-key-file", "a.key"]) == 6   # wrong key: credentials refused (docs/CLI.md)
    assert "cryptogram is wrong" in capsys.readouterr().err


@pytest.mark.parametrize("content,message", [
    ("not a key", "not an admin key file"),
    ('{"format": "simvault SCP03 key set", "enc": "00", "mac": "00", "dek": "00"}', "32 hex digits"),
    ('{"format": "other", "enc": "", "mac": "", "dek": ""}', "not an admin key file"),
    ('{"format": "simvault SCP03 key set", "key_version": 300, "enc": "", "mac": "", "dek": ""}', "key_version"),
    ("00" * 15, "not an admin key file"),
])
def test_cli_bad_key_files_are_one_clear_line(cli_image, tmp_path, capsys, content, message):
    main = cli_image
    (tmp_path / "k").write_text(TEST_ADMIN_KEY.hex())
    assert main(["card", "init", "--image", "c.img", "--pin", "2468", "--puk", "13572468",
                 "--admin-key-file", "k"]) == 0
    (tmp_path / "bad.key").write_text(content)
    capsys.readouterr()
    assert main(["card", "erase", "--yes", "--emulator", "c.img", "--admin-key-file", "bad.key"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli_three_key_set_on_the_emulator_is_refused_clearly(cli_image, tmp_path, capsys):
    main = cli_image
    (tmp_path / "three.key").write_text(json.dumps({
        "format": "simvault SCP03 key set", "key_version": 1, "enc": os.urandom(16).hex(),
        "mac": os.urandom(16).hex(), "dek": os.urandom(16).hex()}))
    code = main(["card", "init", "--image", "d.img", "--pin", "2468", "--puk", "13572468",
                 "--admin-key-file", "three.key"])
    err = capsys.readouterr().err
    if code == 0:         # the store learnt to keep a key set: then it must work end to end
        assert main(["card", "erase", "--yes", "--emulator", "d.img", "--admin-key-file", "three.key"]) == 0
    else:
        assert code == 2 and "keeps one admin key" in err and not (tmp_path / "d.img").exists()
