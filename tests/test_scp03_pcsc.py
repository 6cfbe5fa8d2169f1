"""SCP03 through the real stack: pcscd + vpcd, pyscard, host/client.py and the
CLI. The card is the Python emulator, or the Java Card applet in jCardSim under
``pytest --card javacard`` (conftest serves it with the same personalisation)."""
from __future__ import annotations

import pytest
from cards import OTHER_SIGNER, TEST_ADMIN_KEY, TEST_KEY_ID, build_test_card
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from apdu_specs import scp as S
from apdu_specs.manifest import key_id, public_point
from host.client import AdminAuthError, BackupCard, PinRequiredError
from host.link import Link, PcscTransport

pytestmark = pytest.mark.pcsc

OTHER = public_point(OTHER_SIGNER.public_key())


def _client(reader: str) -> BackupCard:
    link = Link(PcscTransport(reader))
    link.connect()
    client = BackupCard(link)
    client.select()
    assert client.list_anchors() == [TEST_KEY_ID]
    return client


def test_every_level_and_the_failure_rules_through_pcscd(tmp_path, vpcd_card):
    reader = vpcd_card(build_test_card(tmp_path / "card.img", capacity=256 * 1024))
    client = _client(reader)
    keys = S.KeySet.from_bytes(TEST_ADMIN_KEY)
    assert client.open_admin(keys) == 0x33                     # both cards offer R-MAC and R-ENC
    for level in S.LEVELS:
        assert client.open_admin(keys, level) == level
        assert client.status().admin_authenticated
        client.put_trust_anchor(OTHER)
        client.delete_trust_anchor(key_id(OTHER))
    client.erase_backups()
    # a wrong MAC: 6988, the card closes the channel
    client.open_admin(keys, 0x03)
    client._scp._chain = bytes(16)
    with pytest.raises(AdminAuthError) as err:
        client.put_trust_anchor(OTHER)
    assert err.value.sw == 0x6988
    assert not client.status().admin_authenticated
    # wrong keys: refused by the host before it proves itself (the card cryptogram)
    with pytest.raises(AdminAuthError, match="cryptogram is wrong"):
        client.open_admin(S.KeySet.from_bytes(bytes(16)))
    assert client.list_anchors() == [TEST_KEY_ID]
    client.open_admin(keys, 0x01)
    channel = client._scp
    client.link.disconnect()                                   # a reset closes the channel
    again = _client(reader)
    again._scp = channel
    with pytest.raises(PinRequiredError):                       # 6982: no channel on the card
        again.erase_backups()
    again.link.disconnect()


def test_cli_trust_and_erase_through_pcscd(tmp_path, vpcd_card, monkeypatch, capsys):
    from host.cli.card import main
    monkeypatch.chdir(tmp_path)
    (tmp_path / "old.key").write_text(TEST_ADMIN_KEY.hex() + "\n")       # the 16-byte form
    (tmp_path / "other.pem").write_bytes(OTHER_SIGNER.public_key().public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    reader = vpcd_card(build_test_card(tmp_path / "card.img", capacity=256 * 1024))
    common = ["--reader", reader, "--admin-key-file", "old.key"]
    assert main(["card", "trust", "add", "other.pem", *common]) == 0
    assert main(["card", "trust", "list", "--reader", reader]) == 0
    assert key_id(OTHER).hex() in capsys.readouterr().out
    assert main(["card", "trust", "remove", key_id(OTHER).hex(), *common, "--scp-level", "01"]) == 0
    assert main(["card", "erase", "--yes", *common, "--scp-level", "13"]) == 0
    capsys.readouterr()
    assert main(["card", "trust", "list", "--reader", reader]) == 0
    assert capsys.readouterr().out.split() == [TEST_KEY_ID.hex()]
