"""Progress bars at a real terminal: `simvault` runs in a subprocess whose stderr is a
pseudo-terminal (pty); uploads (backup, import) and downloads (restore, export) draw a bar
with bytes, rate and time left; without a terminal nothing but the result is printed; a
transfer shorter than a second draws nothing; an error starts on a line of its own."""
from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from cards import TEST_PIN, build_test_card
from test_dm_fixtures import ADMIN_TOKEN, world  # noqa: F401 - fixture

from host.backup.keys import generate_identity
from host.cli import exitcodes
from host.tree.generate import generate_tree
from host.tree.tnds import write_tnds

ROOT = Path(__file__).resolve().parent.parent
BAR = re.compile(r"(upload to card|read from card|push to DS): +(\d+)% \|[^|]*\| [\d.]+[kM]?B/[\d.]+[kM]?B  "
                 r"([\d.]+[kMG]?B/s|\?B/s)  ETA (\d\d:\d\d|\?)")


def _env(root: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "SIMVAULT_HOME": str(root / "home"), "SIMVAULT_PIN": TEST_PIN,
            **extra}


def at_terminal(root: Path, *argv: str, **env: str) -> tuple[int, str, str]:
    """Run simvault with stderr on a 100-column pty: (exit code, stdout, what the terminal showed)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "host.cli", *argv], cwd=root, env=_env(root, **env),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    shown = b""
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:            # EIO: the child closed the terminal
            break
        if not data:
            break
        shown += data
    os.close(master)
    out = proc.stdout.read().decode() if proc.stdout else ""
    return proc.wait(30), out, shown.decode(errors="replace")


def piped(root: Path, *argv: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "host.cli", *argv], cwd=root, env=_env(root, **env),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def rig(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("progress")
    ident = generate_identity(root / "home")
    build_test_card(root / "card.img", anchors=[ident.signer.public_point]).close()
    build_test_card(root / "small.img", capacity=96 * 1024, anchors=[ident.signer.public_point]).close()
    big = generate_tree(500, 4)
    for i in range(80):     # random values do not compress: ~320 KB, about 20 chunks
        big.add(f"./Vendor/Blob{i}", os.urandom(4000), format="bin", create_parents=True)
    (root / "big.xml").write_bytes(write_tnds(big))
    (root / "phone.xml").write_bytes((ROOT / "tests" / "data" / "phone_tree.tnds.xml").read_bytes())
    return root


def _bars(shown: str, kind: str) -> list[re.Match]:
    bars = [m for m in BAR.finditer(shown) if m.group(1).startswith(kind)]
    assert bars, shown
    last = bars[-1]
    assert last.group(2) == "100" and last.group(3).endswith("B/s") and last.group(3) != "?B/s", shown
    assert re.fullmatch(r"\d\d:\d\d", last.group(4)), shown
    assert shown.endswith("\r\n"), shown             # the bar's line is ended
    return bars


def test_uploads_and_downloads_draw_a_bar_with_rate_and_eta(rig):
    code, out, shown = at_terminal(rig, "backup", "--tree", "big.xml", "--emulator", "card.img",
                                   SIMVAULT_PROGRESS_DELAY="0")
    assert code == 0, shown
    assert re.fullmatch(r"backup [0-9a-f]{32} committed to card 'emulator card.img': \d+ bytes in \d+ APDUs, "
                        r"\d+ of \d+ chunk\(s\) sent, full backup \(a new chain\)\n", out), out
    _bars(shown, "upload to")
    backup_id = out.split()[1]
    for argv in (("restore", "--tree", "big.xml", "--dry-run"), ("export", "--id", backup_id, "--out", "big.svarch"),
                 ("verify",)):
        code, out, shown = at_terminal(rig, *argv, "--emulator", "card.img", SIMVAULT_PROGRESS_DELAY="0")
        assert code == 0 and out, shown
        _bars(shown, "read from")
    code, out, shown = at_terminal(rig, "import", "big.svarch", "--emulator", "small.img",
                                   SIMVAULT_PROGRESS_DELAY="0")
    # the small card cannot hold it: whatever was drawn, the error starts on a line of its own
    assert code == 1 and "simvault: error: card full" in shown, shown
    assert re.search(r"(^|\n)simvault: error: card full", shown), shown


def test_no_terminal_no_bar_and_short_transfers_draw_nothing(rig):
    result = piped(rig, "backup", "--tree", "big.xml", "--full", "--emulator", "card.img",
                   SIMVAULT_PROGRESS_DELAY="0")
    assert result.returncode == 0 and result.stderr == "" and result.stdout.count("\n") == 1, result.stderr
    # a terminal, the default delay of a second, a transfer of milliseconds: no bar
    code, out, shown = at_terminal(rig, "backup", "--tree", "phone.xml", "--emulator", "card.img")
    assert code == 0 and out.startswith("backup ") and shown == "", shown
    # --progress draws it without a terminal (a log), --no-progress never
    result = piped(rig, "backup", "--tree", "phone.xml", "--full", "--progress", "--emulator", "card.img")
    assert result.returncode == 0 and BAR.search(result.stderr), result.stderr
    code, out, shown = at_terminal(rig, "backup", "--tree", "big.xml", "--full", "--no-progress",
                                   "--emulator", "card.img", SIMVAULT_PROGRESS_DELAY="0")
    assert code == 0 and shown == "", shown


@pytest.fixture
def db_url(tmp_path) -> str:          # SQLite only: the status line does not depend on the database
    return f"sqlite:///{tmp_path}/dm.db"


def test_dm_wait_shows_the_job_state_at_a_terminal(world, tmp_path):  # noqa: F811
    dev = world.add_device("idle", start=False)             # registered, its agent never comes
    code, out, shown = at_terminal(tmp_path, "dm", "backup-start", dev.device_id, "--wait", "1.5", "--api", world.url,
                                   SIMVAULT_PROGRESS_DELAY="0", SIMVAULT_DM_ADMIN_TOKEN=ADMIN_TOKEN)
    assert code == exitcodes.UNFINISHED and out.startswith("job "), shown
    assert re.search(rf"\rjob \d+ \(backup server, {dev.device_id}\): queued  00:0\d *\r\nsimvault: job \d+ still "
                     r"queued after 1.5s", shown), shown


def test_an_error_or_ctrl_c_ends_the_bar_line_first(capsys):
    from host.cli import progress, ui
    from host.errors import TransportError
    gone = TransportError("reader gone: plug it in again")
    for err, last in ((gone, f"simvault: error: {gone}"), (KeyboardInterrupt(), "simvault: interrupted")):
        show = progress.Bar("upload to card", delay=0)
        show(1000, 4000)
        assert ui.fail(err) == exitcodes.code_for(err)
        err_text = capsys.readouterr().err
        assert BAR.search(err_text) and err_text.endswith(f"\n{last}\n"), err_text
        assert progress._OPEN == []


def test_ds_push_and_pull_at_a_terminal(rig, tmp_path):
    from host.ds.server import run_server_in_thread
    from host.ds.store import DsStore
    store = DsStore(f"sqlite:///{tmp_path / 'ds.db'}")
    store.add_user("phone1", "ds-secret")
    assert piped(rig, "backup", "--tree", "big.xml", "--to", str(tmp_path / "big.svarch")).returncode == 0
    with run_server_in_thread(store, max_msg_size=64 * 1024) as server:     # several messages each way
        common = ["--url", server.url, "--user", "phone1", "--state", str(tmp_path / "state.json")]
        code, out, shown = at_terminal(rig, "ds", "push", str(tmp_path / "big.svarch"), *common,
                                       SIMVAULT_PROGRESS_DELAY="0", SIMVAULT_DS_PASSWORD="ds-secret")
        assert code == 0 and out.startswith("backup ") and " pushed to " in out, shown
        _bars(shown, "push to DS")
        code, out, shown = at_terminal(rig, "ds", "pull", str(tmp_path / "back.svarch"), *common,
                                       SIMVAULT_PROGRESS_DELAY="0", SIMVAULT_DS_PASSWORD="ds-secret")
        assert code == 0 and " pulled from " in out, shown
        assert re.search(r"pull from DS: [\d.]+[kM]B  [\d.]+[kMG]?B/s  \d\d:\d\d so far\r\n$", shown), shown
    assert (tmp_path / "back.svarch").read_bytes() == (tmp_path / "big.svarch").read_bytes()
