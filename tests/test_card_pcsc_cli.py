"""`simvault card serve` as a process on vpcd, seen by pcscd: `readers`,
`card status --reader`, `apdu --reader`; SIGTERM stops it cleanly."""
from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
from cards import build_test_card
from conftest import ROOT, VPCD_PORTS, VPCD_READERS, _wait_presence, vpcd_slot_lock

from host.cli import exitcodes
from host.cli.card import main

pytestmark = pytest.mark.pcsc


def test_serve_readers_status_apdu(tmp_path, vpcd_card, capsys):   # vpcd_card: pcscd is up
    build_test_card(tmp_path / "card.img", capacity=256 * 1024).close()
    with vpcd_slot_lock(0):
        reader = VPCD_READERS[0]
        assert _wait_presence(reader, False, 10), f"{reader} is busy"
        proc = subprocess.Popen([sys.executable, "-m", "host.cli.card", "card", "serve", "--image",
                                 str(tmp_path / "card.img"), "--vpcd", f"127.0.0.1:{VPCD_PORTS[0]}"],
                                cwd=ROOT, stderr=subprocess.PIPE, text=True)
        try:
            assert _wait_presence(reader, True, 15), "pcscd did not see the served card"
            assert main(["readers"]) == 0
            listing = capsys.readouterr().out
            assert f"0: {reader}: card present, ATR 3B8E800180738021C05873696D7661756C74C8" in listing
            assert main(["card", "status", "--reader", reader, "--json"]) == 0
            assert '"pin_tries": 3' in capsys.readouterr().out
            assert main(["apdu", "--reader", "*PCD 00 00", "00A404000AF053494D5641554C5401", "0020008100"]) == 1
            out = capsys.readouterr().out.splitlines()
            assert out[0].startswith("<< 6F20") and out[1] == "<< 63C3 WRONG_PIN: wrong PIN or PUK, 3 tries left"
            assert main(["readers", "--json"]) == 0
            found = json.loads(capsys.readouterr().out)["readers"]
            assert {"index": 0, "name": reader, "card_present": True,
                    "atr": "3B8E800180738021C05873696D7661756C74C8"} in found
            # case 1 over T=1: the card answers 6129, the link fetches it with GET RESPONSE
            assert main(["apdu", "--json", "--reader", reader, "00A404000AF053494D5641554C5401",
                         "80100000", "8010000000"]) == 0
            got = json.loads(capsys.readouterr().out)
            assert [e["sw"] for e in got] == ["9000", "9000", "9000"]
            assert got[1]["apdu"] == "80100000" and got[1]["response"] == got[2]["response"] != ""
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
        err = proc.stderr.read() if proc.stderr else ""
        assert code == 0, err
        assert "stopped" in err
        assert f"card in reader '{reader}' (vpcd 127.0.0.1:{VPCD_PORTS[0]})\n" in err
        assert "no vpcd" not in err
        assert _wait_presence(reader, False, 10)


class ForeignCard:
    """A card without the simvault applet: SELECT answers 6A82."""

    atr = bytes.fromhex("3B8180018080")     # T=1, no historical capabilities

    def power_on(self) -> bytes:
        return self.atr

    def power_off(self) -> None:
        pass

    def reset(self) -> bytes:
        return self.atr

    def transmit(self, apdu: bytes) -> bytes:
        return b"\x6a\x82"


def test_card_without_the_applet_is_one_clear_line(vpcd_card, capsys):
    reader = vpcd_card(ForeignCard(), slot=0)
    assert main(["card", "status", "--reader", reader]) == exitcodes.UNAVAILABLE
    err = capsys.readouterr().err.strip()
    assert err == (f"simvault: error: no simvault applet on the card in {reader}: SELECT F053494D5641554C5401 "
                   "answered 6A82 FILE_NOT_FOUND: use a simvault card, or another reader (--reader; "
                   "'simvault readers' lists them)")


def test_empty_reader_is_one_clear_line(vpcd_card, capsys):
    reader = vpcd_card(ForeignCard(), slot=0)
    vpcd_card.remove(reader)
    assert main(["card", "status", "--reader", reader]) == exitcodes.UNAVAILABLE
    err = capsys.readouterr().err
    assert "no card in the reader" in err and err.count("\n") == 1
    assert main(["readers"]) == 0                                  # readers are listed, empty or not
    assert f"0: {reader}: no card" in capsys.readouterr().out


def test_second_serve_of_one_image_is_refused(tmp_path, pcscd):
    """`card serve` locks its image: a second emulator on it (served or
    --emulator) exits 2 with one line, and the first keeps serving."""
    from conftest import served_image
    image = tmp_path / "card.img"
    build_test_card(image, capacity=256 * 1024).close()
    with served_image(image, slot=0) as (reader, proc):
        second = subprocess.run([sys.executable, "-m", "host.cli.card", "card", "serve", "--image", str(image),
                                 "--vpcd", "127.0.0.1:1"], cwd=ROOT, capture_output=True,
                                text=True, timeout=30)
        assert second.returncode == 2
        assert second.stderr == (f"simvault: error: card image {image} is in use by another simvault process "
                                 "(card serve?): stop it or talk to it through its reader\n")
        assert proc.poll() is None and _wait_presence(reader, True, 1)
