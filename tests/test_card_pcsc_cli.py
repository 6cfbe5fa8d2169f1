"""`simvault card serve` as a process on vpcd, seen by pcscd: `readers`,
`card status --reader`, `apdu --reader`; SIGTERM stops it cleanly."""
from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from cards import build_test_card
from conftest import ROOT, VPCD_PORTS, VPCD_READERS, _wait_presence, vpcd_slot_lock

from host.cli_card import main

pytestmark = pytest.mark.pcsc


def test_serve_readers_status_apdu(tmp_path, vpcd_card, capsys):   # vpcd_card: pcscd is up
    build_test_card(tmp_path / "card.img", capacity=256 * 1024).close()
    with vpcd_slot_lock(0):
        reader = VPCD_READERS[0]
        assert _wait_presence(reader, False, 10), f"{reader} is busy"
        proc = subprocess.Popen([sys.executable, "-m", "host.cli_card", "card", "serve", "--image",
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
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
        assert code == 0, proc.stderr.read() if proc.stderr else ""
        assert "stopped" in (proc.stderr.read() if proc.stderr else "")
        assert _wait_presence(reader, False, 10)
