"""host/cli_card.py with the in-process emulator (--emulator IMAGE): init,
status, PIN, trust anchors, erase, raw APDUs; secrets never printed."""
from __future__ import annotations

import json

import pytest
from cards import OTHER_SIGNER, TEST_SIGNER
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from apdu_specs.manifest import key_id, public_point
from host.cli import exitcodes
from host.cli.card import main


@pytest.fixture
def image(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pem = tmp_path / "signer.pub.pem"
    pem.write_bytes(TEST_SIGNER.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    assert main(["card", "init", "--image", "card.img", "--pin", "2468", "--puk", "13572468",
                 "--admin-key-file", "admin.key", "--trust", str(pem), "--capacity", "262144"]) == 0
    return tmp_path / "card.img"


def test_init_status_and_refusal(image, capsys):
    capsys.readouterr()
    assert main(["card", "init", "--image", "new.img", "--pin", "2468", "--puk", "13572468",
                 "--admin-key-file", "new.key", "--capacity", "131072"]) == 0
    out = capsys.readouterr()
    assert "personalised" in out.out and "0 trust anchor" in out.out and "generated" in out.err
    assert "2468" not in out.out + out.err and "13572468" not in out.out + out.err
    keyset = json.loads((image.parent / "admin.key").read_text())     # an SCP03 key set (host/cli_card.py)
    assert keyset["format"] == "simvault SCP03 key set" and keyset["key_version"] == 1
    assert [len(bytes.fromhex(keyset[k])) for k in ("enc", "mac", "dek")] == [16, 16, 16]
    assert main(["card", "init", "--image", str(image), "--pin", "1111", "--puk", "11111111",
                 "--admin-key-file", "admin.key"]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["card", "status", "--emulator", str(image), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["pin_tries"], doc["anchors"], doc["life_cycle_name"], doc["backups"]) == (3, 1, "PERSONALISED", 0)


def test_pin_commands(image, capsys, monkeypatch):
    monkeypatch.setenv("SIMVAULT_PIN", "1111")
    assert main(["card", "pin", "verify", "--emulator", str(image)]) == exitcodes.DENIED
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "2 tries left" in err and "1111" not in err
    monkeypatch.setenv("MY_PIN", "2468")
    assert main(["card", "pin", "verify", "--emulator", str(image), "--pin-env", "MY_PIN", "--trace"]) == 0
    captured = capsys.readouterr()
    assert "PIN verified" in captured.out and "redacted 8 bytes" in captured.err and "32343638" not in captured.err
    monkeypatch.setenv("SIMVAULT_NEW_PIN", "9753")
    assert main(["card", "pin", "change", "--emulator", str(image), "--pin-env", "MY_PIN"]) == 0
    monkeypatch.setenv("SIMVAULT_PUK", "13572468")
    monkeypatch.setenv("SIMVAULT_NEW_PIN", "8642")
    assert main(["card", "pin", "unblock", "--emulator", str(image)]) == 0
    monkeypatch.setenv("SIMVAULT_PIN", "8642")
    assert main(["card", "pin", "verify", "--emulator", str(image)]) == 0


def test_trust_and_erase(image, capsys):
    other = image.parent / "other.pub.pem"
    other.write_bytes(OTHER_SIGNER.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    kid = key_id(public_point(OTHER_SIGNER.public_key())).hex()
    assert main(["card", "trust", "add", str(other), "--emulator", str(image), "--admin-key-file", "admin.key"]) == 0
    assert kid in capsys.readouterr().out
    assert main(["card", "trust", "list", "--emulator", str(image)]) == 0
    assert kid in capsys.readouterr().out
    assert main(["card", "trust", "remove", kid, "--emulator", str(image), "--admin-key-file", "admin.key"]) == 0
    (image.parent / "wrong.key").write_text("00" * 16)
    assert main(["card", "trust", "remove", kid, "--emulator", str(image), "--admin-key-file", "wrong.key"]) == exitcodes.DENIED
    assert "admin key" in capsys.readouterr().err
    assert main(["card", "erase", "--emulator", str(image), "--admin-key-file", "admin.key"]) == 2
    assert main(["card", "erase", "--emulator", str(image), "--admin-key-file", "admin.key", "--yes"]) == 0


def test_raw_apdus(image, capsys):
    assert main(["apdu", "--emulator", str(image), "00A404000AF053494D5641554C540100", "8010000000",
                 "80FE0000", "00"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("<< 6F20840AF053494D5641554C5401") and lines[0].endswith("9000 OK: success")
    assert "9000 OK" in lines[1]
    assert lines[2] == "<< 6D00 INS_NOT_SUPPORTED: instruction not supported"
    assert lines[3].startswith("<< 6700 WRONG_LENGTH")


def test_image_in_use_is_refused(image, capsys):
    from card.emulator import VirtualCard
    with VirtualCard.open(image, exclusive=True):          # as `card serve` holds it
        assert main(["card", "status", "--emulator", str(image)]) == 2
        assert "in use by another simvault process" in capsys.readouterr().err
    assert main(["card", "status", "--emulator", str(image)]) == 0
