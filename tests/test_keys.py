"""Key files, signers, decryptors and the trust store."""
from __future__ import annotations

import os

import pytest

from apdu_specs.manifest import key_id, verify_raw
from host.errors import IntegrityError, KeyFileError, UsageError
from host.backup.keys import (
    FileDecryptor,
    Recipient,
    TrustStore,
    fingerprint,
    generate_identity,
    load_identity,
    load_public_point,
)


def test_generate_load_sign_and_wrap(tmp_path):
    ident = generate_identity(tmp_path / "k", "device")
    again = load_identity(tmp_path / "k", "device")
    assert again.signer.key_id == ident.signer.key_id == key_id(ident.signer.public_point)
    assert again.signer.key_id != again.recipient.key_id          # separate signing and encryption keys
    sig = again.signer.sign(b"manifest")
    assert len(sig) == 64 and verify_raw(ident.signer.public_point, b"manifest", sig)
    blob = ident.recipient.wrap(b"s" * 64, b"info")
    assert again.decryptor.unwrap(blob, b"info") == b"s" * 64
    with pytest.raises(IntegrityError):
        again.decryptor.unwrap(blob, b"other info")
    assert ident.trust.key_ids() == [ident.signer.key_id]
    for name in ("device.sign.pem", "device.enc.pem"):
        assert (tmp_path / "k" / name).stat().st_mode & 0o777 == 0o600
    assert load_public_point(tmp_path / "k" / "device.sign.pub.pem") == ident.signer.public_point
    assert len(fingerprint(ident.signer.public_point).split(":")) == 16
    assert "key" not in repr(ident.signer).lower().replace("key_id", "")


def test_passphrase_and_refusals(tmp_path, monkeypatch):
    monkeypatch.delenv("SIMVAULT_PASSPHRASE", raising=False)
    generate_identity(tmp_path / "p", "d", passphrase=b"correct horse")
    assert b"ENCRYPTED" in (tmp_path / "p" / "d.sign.pem").read_bytes()
    with pytest.raises(KeyFileError, match="passphrase"):
        load_identity(tmp_path / "p", "d")
    with pytest.raises(KeyFileError):
        load_identity(tmp_path / "p", "d", passphrase=b"wrong")
    monkeypatch.setenv("SIMVAULT_PASSPHRASE", "correct horse")
    assert load_identity(tmp_path / "p", "d").name == "d"
    with pytest.raises(UsageError, match="exists"):
        generate_identity(tmp_path / "p", "d")
    os.chmod(tmp_path / "p" / "d.enc.pem", 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_identity(tmp_path / "p", "d")
    with pytest.raises(KeyFileError, match="keys gen"):
        load_identity(tmp_path / "nowhere")


def test_trust_store_and_recipients(tmp_path):
    dev = generate_identity(tmp_path / "dev")
    srv = generate_identity(tmp_path / "srv", "server")
    store = TrustStore(tmp_path / "dev" / "trusted")
    assert store.get(srv.signer.key_id) is None
    assert store.add(srv.signer.public_point) == srv.signer.key_id
    assert store.get(srv.signer.key_id) == srv.signer.public_point
    # a file whose content does not match its key id name is refused
    (store.directory / f"{srv.signer.key_id.hex()}.pem").write_bytes(
        (tmp_path / "dev" / "device.sign.pub.pem").read_bytes())
    with pytest.raises(KeyFileError, match="does not match"):
        store.get(srv.signer.key_id)
    TrustStore(tmp_path / "dev" / "recipients").add(srv.recipient.public_point)
    assert [r.key_id for r in dev.recipients()] == [dev.recipient.key_id, srv.recipient.key_id]
    assert isinstance(dev.recipients()[1], Recipient)
    assert isinstance(srv.decryptor, FileDecryptor)
