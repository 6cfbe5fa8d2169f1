"""Every command with bad input, run as `python -m host.cli` in a subprocess: the exit code
is the one host/cli/exitcodes.py gives that kind of error, stderr is one line naming what
to do (argparse's refusals too), stdout is empty, no traceback. The table is in every --help and in
docs/CLI.md. Cards: the in-process emulator; the DM server: a real one on loopback (SQLite)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from cards import TEST_PIN, TEST_PUK, build_test_card
from test_dm_fixtures import ADMIN_TOKEN, world  # noqa: F401 - fixture

from host.archive import Archive
from host.backup.keys import generate_identity
from host.backup.ops import backup_tree, read_tree_file, write_archive_file
from host.cli import exitcodes as X

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = Path(__file__).parent / "data" / "phone_tree.tnds.xml"
NO_ID = "00112233445566778899aabbccddeeff"
DEAD = "http://127.0.0.1:1"          # nothing listens on port 1


def simvault(cwd: Path, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(ROOT), "SIMVAULT_HOME": str(cwd / "home"), "SIMVAULT_PIN": TEST_PIN,
            "SIMVAULT_PUK": TEST_PUK}
    full.pop("SIMVAULT_DM_ADMIN_TOKEN", None)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "host.cli", *argv], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def rig(tmp_path_factory) -> Path:
    """A key directory, a card with one trusted signer and no backup, a tree, a good and a tampered
    archive file, a malformed tree and a file that is no archive."""
    root = tmp_path_factory.mktemp("exitcodes")
    ident = generate_identity(root / "home")
    build_test_card(root / "card.img", anchors=[ident.signer.public_point]).close()
    (root / "phone.xml").write_bytes(SAMPLE.read_bytes())
    (root / "bad.xml").write_text("<MgmtTree><Node>")
    good = backup_tree(read_tree_file(root / "phone.xml"), ident)
    write_archive_file(root / "good.svarch", good)
    write_archive_file(root / "tampered.svarch", Archive(good.manifest_bytes, bytes(len(good.signature)),
                                                         dict(good.chunks)))
    (root / "admin.key").write_text("00" * 16)
    return root


CARD = ("--emulator", "card.img")

# (argv, exit code, what stderr must name: the way out)
CASES = [
    (("backup", "--tree", "nope.xml", *CARD), X.USAGE, "give the device's tree, a TNDS XML file"),
    (("backup", "--tree", "bad.xml", "--to", "out/"), X.USAGE, "bad.xml: XML malformed"),
    (("backup", "--tree", "phone.xml", "--bogus"), X.USAGE, "unrecognized arguments: --bogus"),
    (("restore", "--tree", "phone.xml", "--id", NO_ID, *CARD), X.USAGE,
     f"backup {NO_ID} is not on the card (6A88): 'simvault list' shows the ids it holds"),
    (("restore", "--tree", "phone.xml", *CARD), X.USAGE, "the card holds no backup: make one with"),
    (("restore", "--tree", "phone.xml", "--from", "phone.xml"), X.USAGE, "give a file made by"),
    (("restore", "--tree", "phone.xml", "--from", "nothing/"), X.USAGE, "give a .svarch file or a directory"),
    (("verify", "--id", "zz", *CARD), X.USAGE, "must be 32 hex digits (see 'simvault list')"),
    (("export", "--id", NO_ID, "--out", "x.svarch", *CARD), X.USAGE, "'simvault list' shows the ids it holds"),
    (("delete", "--id", NO_ID, *CARD), X.USAGE, "'simvault list' shows the ids it holds"),
    (("import", "nope.svarch", *CARD), X.USAGE, "give a .svarch file"),
    (("list", "--emulator", "missing.img"), X.USAGE, "create one with 'simvault card init --image missing.img'"),
    (("keys", "show", "--key", "nokeys"), X.USAGE, "simvault keys gen"),
    (("card", "init", "--image", "tiny.img", "--capacity", "100", "--pin", "1234", "--puk", "12345678",
      "--admin-key-file", "new.key"), X.USAGE, "at least 16384 bytes"),
    (("card", "erase", *CARD, "--admin-key-file", "admin.key"), X.USAGE, "add --yes to confirm"),
    (("card", "trust", "remove", "xyz", *CARD, "--admin-key-file", "admin.key"), X.USAGE, "16 hex digits"),
    (("apdu", "nothex", *CARD), X.USAGE, "is not hex"),
    (("ds", "push", "nope.svarch", "--url", f"{DEAD}/sync", "--user", "u"), X.USAGE, "check the path"),
    (("ds", "user", "remove", "ghost", "--db", "sqlite:///ds.db"), X.USAGE, "'simvault ds user list'"),
    (("dm", "devices", "--api", DEAD), X.USAGE, "pass --admin-token or set $SIMVAULT_DM_ADMIN_TOKEN"),
    (("dm",), X.USAGE, "'simvault dm --help' lists them"),
    (("keys", "trust", "phone.xml"), X.USAGE, "give a .pub.pem file"),
    (("keys", "gen"), X.USAGE, "exists; pick another --name or directory"),
    (("readers", "--bogus"), X.USAGE, "'simvault --help' shows the options"),
    (("card", "serve"), X.USAGE, "--image IMAGE is needed"),
    (("card", "status", "--emulator", "missing.img"), X.USAGE, "simvault card init --image missing.img"),
    (("card", "abort-upload", "--emulator", "missing.img"), X.USAGE, "simvault card init"),
    (("card", "trust", "list", "--emulator", "missing.img"), X.USAGE, "simvault card init"),
    (("card", "trust", "add", "phone.xml", *CARD, "--admin-key-file", "admin.key"), X.USAGE, ".pub.pem"),
    (("card", "init", "--image", "card.img", "--admin-key-file", "admin.key"), X.USAGE, "pass --force"),
    (("card", "pin", "frobnicate", *CARD), X.USAGE, "'simvault card pin --help' shows the options"),
    (("dm", "server", "--listen", "nope"), X.USAGE, "write HOST:PORT"),
    (("dm", "server", "--tls-cert", "x.pem"), X.USAGE, "--tls-cert and --tls-key go together"),
    (("dm", "device-add", "D", "--public-key", "home/device.sign.pub.pem", "--admin-token", "t"), X.USAGE,
     "set $SIMVAULT_DM_PASSWORD"),
    (("dm", "device-key", "D", "--enc-key", "nope.pem", "--admin-token", "t"), X.USAGE, "'simvault keys gen' writes"),
    (("dm", "ds-account", "add", "--admin-token", "t"), X.USAGE, "simvault dm ds-account add NAME --url URL"),
    (("dm", "restore-start", "D", "--source", "ds", "--admin-token", "t"), X.USAGE, "--ds-account NAME"),
    (("dm", "agent"), X.USAGE, "the agent needs --tree, --server, --device-id, --key"),
    (("dm", "agent", "restore", "--control", DEAD), X.USAGE, "restore needs --id HEX"),
    (("ds", "server", "--listen", "nope"), X.USAGE, "expected HOST:PORT"),
    (("ds", "user", "add", "bob", "--db", "sqlite:///ds.db"), X.USAGE, "set $SIMVAULT_DS_PASSWORD"),
    (("ds", "pull", "o.svarch", "--url", f"{DEAD}/sync", "--user", "u"), X.USAGE, "set $SIMVAULT_DS_PASSWORD"),
    (("demo", "--bogus"), X.USAGE, "unrecognized arguments: --bogus"),
    (("verify", "--from", "tampered.svarch"), X.REFUSED, "tampered backup: restore another one ('simvault list'"),
    (("restore", "--tree", "phone.xml", "--from", "tampered.svarch"), X.REFUSED, "tampered backup"),
    (("card", "pin", "verify", *CARD), X.DENIED, "wrong PIN, 2 tries left: check the PIN"),
    (("card", "trust", "remove", "00" * 8, *CARD, "--admin-key-file", "admin.key"), X.DENIED, "admin key"),
    (("dm", "devices", "--api", DEAD, "--admin-token", "t"), X.UNAVAILABLE, "is 'simvault dm server' running?"),
    (("dm", "backups", "--api", DEAD, "--admin-token", "t"), X.UNAVAILABLE, "is 'simvault dm server' running?"),
    (("dm", "fumo-start", "D", "--api", DEAD, "--admin-token", "t"), X.UNAVAILABLE, "--api or $SIMVAULT_DM_API"),
    (("dm", "agent", "status", "--control", DEAD), X.UNAVAILABLE, "start it with 'simvault dm agent"),
    (("ds", "push", "good.svarch", "--url", f"{DEAD}/sync", "--user", "u"), X.UNAVAILABLE, ""),
]
ENV = {("card", "pin", "verify", *CARD): {"SIMVAULT_PIN": "9999"},
       CASES[-1][0]: {"SIMVAULT_DS_PASSWORD": "pw"},
       ("dm", "device-add", "D", "--public-key", "home/device.sign.pub.pem", "--admin-token", "t"):
           {"SIMVAULT_DM_PASSWORD": ""}}


def _check(result: subprocess.CompletedProcess, code: int, hint: str) -> None:
    err = result.stderr
    assert result.returncode == code, (result.args, result.returncode, err)
    assert "Traceback" not in err and result.stdout == "", (result.args, result.stdout, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("simvault: error: "), err
    assert hint in err, (hint, err)


@pytest.mark.parametrize("argv,code,hint", CASES, ids=[" ".join(c[0][:4]) for c in CASES])
def test_bad_input_exit_code_and_one_line(rig, argv, code, hint):
    _check(simvault(rig, *argv, env=ENV.get(argv)), code, hint)
    assert (rig / "phone.xml").read_bytes() == SAMPLE.read_bytes()       # nothing touched


def test_no_pcscd_is_unavailable(rig):
    result = simvault(rig, "list", env={"PCSCLITE_CSOCK_NAME": str(rig / "no-pcscd.sock")})
    _check(result, X.UNAVAILABLE, "is pcscd running?")


@pytest.fixture
def db_url(tmp_path) -> str:          # SQLite only: the exit codes do not depend on the database
    return f"sqlite:///{tmp_path}/dm.db"


def test_dm_admin_refusals(world, tmp_path):  # noqa: F811
    token = {"SIMVAULT_DM_ADMIN_TOKEN": ADMIN_TOKEN}
    _check(simvault(tmp_path, "dm", "devices", "--api", world.url, env={"SIMVAULT_DM_ADMIN_TOKEN": "wrong"}),
           X.DENIED, "check --admin-token / $SIMVAULT_DM_ADMIN_TOKEN")
    _check(simvault(tmp_path, "dm", "job", "999", "--api", world.url, env=token), X.USAGE, "'simvault dm")
    _check(simvault(tmp_path, "dm", "restore-start", "IMEI:1", "--api", world.url, env=token), X.USAGE,
           "restore-start needs --id")
    dev = world.add_device("idle", start=False)             # registered, its agent never comes
    result = simvault(tmp_path, "dm", "backup-start", dev.device_id, "--wait", "1", "--api", world.url, env=token)
    assert result.returncode == X.UNFINISHED and "still queued after 1s" in result.stderr, result.stderr
    assert result.stdout.startswith("job ")


def test_every_help_shows_the_exit_code_table(rig):
    from host.cli import build_parser, ui
    parser = build_parser()
    ui.add_epilogs(parser)
    seen = 0

    def walk(p) -> None:
        nonlocal seen
        text = p.format_help()
        assert X.EPILOG in text, p.prog
        seen += 1
        for action in p._actions:
            if hasattr(action, "choices") and isinstance(action.choices, dict):
                for sub in set(action.choices.values()):
                    walk(sub)
    walk(parser)
    assert seen > 30
    doc = (ROOT / "docs" / "CLI.md").read_text()
    for code, meaning in X.TABLE:
        assert re.search(rf"\| {code} \| [^|]*\| {re.escape(meaning)} \|", doc), (code, meaning)
    help_ = simvault(rig, "backup", "--help")
    assert help_.returncode == 0 and "exit codes:\n  0    done\n" in help_.stdout


SERVING = {"simvault card serve", "simvault dm server", "simvault ds server"}   # run until stopped


def test_every_command_that_prints_a_result_takes_json():
    from host.cli import build_parser
    leaves: dict[str, set[str]] = {}

    def walk(p) -> None:
        subs = [a for a in p._actions if isinstance(a.choices, dict) and a.choices]
        if not subs:
            leaves[p.prog] = {o for a in p._actions for o in a.option_strings}
        for action in subs:
            for sub in set(action.choices.values()):
                walk(sub)
    walk(build_parser())
    assert len(leaves) > 30
    lacking = sorted(prog for prog, options in leaves.items() if "--json" not in options and prog not in SERVING)
    assert lacking == [], lacking


def test_code_for_each_kind_of_error():
    from host import client_errors as ce
    from host import errors as e
    from host.ds import errors as dse
    expect = {
        e.SimvaultError("x"): X.FAILED, ce.CardError("x", 0x6F00): X.FAILED, ce.CardFullError("x", 0x6A84): X.FAILED,
        e.UsageError("x"): X.USAGE, e.TreeError("x"): X.USAGE, e.XmlError("x"): X.USAGE, e.ArchiveError("x"): X.USAGE,
        e.KeyFileError("x"): X.USAGE, ce.NotFoundOnCardError("x", 0x6A88): X.USAGE, dse.DsNoBackupError("x"): X.USAGE,
        e.TransportError("x"): X.UNAVAILABLE, e.ReaderNotFound("x"): X.UNAVAILABLE,
        ce.NoAppletError("x", 0x6A82): X.UNAVAILABLE, dse.DsTransportError("x"): X.UNAVAILABLE,
        e.IntegrityError("x"): X.REFUSED, ce.BackupRejectedError("x", 0x6688): X.REFUSED,
        ce.WrongPinError("x", 0x63C2, 2): X.DENIED, ce.PinBlockedError("x", 0x6983): X.DENIED,
        ce.AdminAuthError("x", 0x6300): X.DENIED, e.DeniedError("x"): X.DENIED, dse.DsAuthError("x"): X.DENIED,
        KeyboardInterrupt(): X.INTERRUPTED,
    }
    assert {type(err).__name__: X.code_for(err) for err in expect} == \
        {type(err).__name__: code for err, code in expect.items()}
    assert len({code for code, _ in X.TABLE}) == len(X.TABLE)
