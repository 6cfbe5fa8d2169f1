"""The emulator through the real stack: pcscd + vpcd + card.vpcd bridge, driven
by pyscard with host/client.py, and by independent PC/SC clients (scriptor
from pcsc-tools, opensc-tool) sending raw APDUs."""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from cards import TEST_KEY_ID, TEST_PIN, build_test_card, make_backup, upload

from apdu_specs import commands as K
from apdu_specs.fci import FCI
from card.runtime import CardLimits
from host.client import BackupCard, NotFoundOnCardError, WrongPinError
from host.link import Link, PcscTransport

pytestmark = pytest.mark.pcsc

SELECT_HEX = "00 A4 04 00 0A F0 53 49 4D 56 41 55 4C 54 01 00"


def _client(reader: str) -> BackupCard:
    link = Link(PcscTransport(reader))
    link.connect()
    client = BackupCard(link)
    client.select()
    # this is our card, not another test's: a fresh test card
    assert client.list_anchors() == [TEST_KEY_ID] and client.status().backups == 0
    return client


@pytest.mark.parametrize("limits", [CardLimits(), CardLimits.short(t0=True)], ids=["extended-T1", "short-T0"])
def test_whole_cycle_through_pcscd(tmp_path, vpcd_card, limits):
    card = build_test_card(tmp_path / "card.img", limits=limits, capacity=512 * 1024)
    reader = vpcd_card(card, slot=0)
    client = _client(reader)
    assert client.link.transport.protocol == ("T=0" if limits.t0 else "T=1")
    assert client.fci.extended_length is limits.extended
    client.verify_pin(TEST_PIN)
    backup = make_backup(3, [os.urandom(16384), os.urandom(3000), b"small"])
    entry = upload(client, backup)
    assert client.list_backups() == [entry]
    assert client.read_manifest(backup.backup_id) == backup.manifest
    assert client.read_signature(backup.backup_id) == backup.signature
    for cid, data in backup.chunks.items():
        assert client.read_chunk(cid, len(data)) == data
    client.delete_backup(backup.backup_id)
    with pytest.raises(NotFoundOnCardError):
        client.read_manifest(backup.backup_id)
    client.link.disconnect()          # PcscTransport resets the card: the PIN is forgotten
    client = BackupCard(Link(PcscTransport(reader)))
    client.link.connect()
    client.select()
    assert not client.status().pin_verified
    with pytest.raises(WrongPinError):
        client.verify_pin("9999")
    client.link.disconnect()
    card.store.check(deep=True)


def _responses(text: str) -> list[tuple[bytes, int]]:
    """scriptor's "< 90 00 : Normal processing." lines -> (data, sw)."""
    out = []
    for block in re.findall(r"^< ([0-9A-F \n]+?) :", text, re.MULTILINE):
        raw = bytes.fromhex(block.replace(" ", "").replace("\n", ""))
        out.append((raw[:-2], int.from_bytes(raw[-2:], "big")))
    return out


def test_scriptor_raw_apdus(tmp_path, vpcd_card):
    if shutil.which("scriptor") is None:
        pytest.fail("scriptor (pcsc-tools) is not installed: run scripts/setup.sh")
    card = build_test_card(tmp_path / "card.img", capacity=256 * 1024)
    reader = vpcd_card(card, slot=0)
    script = "\n".join([SELECT_HEX, "80 10 00 00 00", "00 20 00 81 08 39 39 39 39 FF FF FF FF",
                        "00 20 00 81 08 31 32 33 34 FF FF FF FF", "80 10 00 00 00", "80 FE 00 00 00"]) + "\n"
    result = subprocess.run(["scriptor", "-r", reader], input=script, capture_output=True, text=True, timeout=30)
    answers = _responses(result.stdout)
    assert len(answers) == 6, result.stdout + result.stderr
    fci, sw = answers[0]
    assert sw == 0x9000 and FCI.decode(fci).max_chunk_size == 16384
    status = K.GET_STATUS_RESPONSE.decode(answers[1][0])
    assert answers[1][1] == 0x9000 and status["pin_tries"] == 3 and not status["pin_verified"]
    assert answers[2] == (b"", 0x63C2)
    assert answers[3] == (b"", 0x9000)
    assert K.GET_STATUS_RESPONSE.decode(answers[4][0])["pin_verified"]
    assert answers[5] == (b"", 0x6D00)


def test_opensc_tool_raw_apdus(tmp_path, vpcd_card):
    if shutil.which("opensc-tool") is None:
        pytest.fail("opensc-tool (opensc) is not installed: run scripts/setup.sh")
    card = build_test_card(tmp_path / "card.img", capacity=256 * 1024)
    reader = vpcd_card(card, slot=0)
    listing = subprocess.run(["opensc-tool", "-l"], capture_output=True, text=True, timeout=30).stdout
    index = next(line.split()[0] for line in listing.splitlines() if line.rstrip().endswith(reader))
    apdus = [SELECT_HEX.replace(" ", ":"), "80:10:00:00:00", "00:20:00:81:08:31:32:33:34:FF:FF:FF:FF"]
    args = ["opensc-tool", "-r", index]
    for apdu in apdus:
        args += ["-s", apdu]
    result = subprocess.run(args, capture_output=True, text=True, timeout=30)
    text = result.stdout + result.stderr
    sws = re.findall(r"Received \(SW1=0x([0-9A-F]{2}), SW2=0x([0-9A-F]{2})\)", text, re.IGNORECASE)
    assert [(int(a, 16) << 8) | int(b, 16) for a, b in sws] == [0x9000, 0x9000, 0x9000], text
    assert "6F 20 84 0A F0 53 49 4D 56 41 55 4C 54 01" in text.upper().replace("\n", " ") or "6F2084" in text
