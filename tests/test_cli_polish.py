"""The README walk-through polish, run as real commands on the in-process
emulator (--emulator IMAGE) and archive files: directory destinations, card
full, init capacity, --force-device identity, --create, verify without the
signing key, errors naming files, PIN grammar, `list` lines."""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from cards import TEST_PIN, TEST_PUK, build_test_card, emulator_client, run_cli

from host.cli import backup as cli_backup
from host.cli import card as cli_card
from host.cli import ds as ds_cli
from host.backup.keys import load_identity
from host.tree.generate import generate_tree
from host.tree.tnds import read_tnds, write_tnds

SAMPLE = Path(__file__).parent / "data" / "phone_tree.tnds.xml"
DEVICE = "IMEI:356604876475938"


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    """host.cli.run's contract (one-line errors, exit codes) over the card, backup and ds commands."""
    return run_cli(argv, capsys, cli_card, cli_backup, ds_cli)


@pytest.fixture
def env(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SIMVAULT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SIMVAULT_PIN", TEST_PIN)
    assert run(["keys", "gen"], capsys)[0] == 0
    ident = load_identity(tmp_path / "home")
    build_test_card(tmp_path / "card.img", anchors=[ident.signer.public_point]).close()
    (tmp_path / "phone.xml").write_bytes(SAMPLE.read_bytes())
    return tmp_path


# 1 ---------------------------------------------------------------------------------------


def test_backup_to_a_trailing_slash_makes_a_directory(env, capsys):
    code, out, err = run(["backup", "--tree", "phone.xml", "--to", "backups/", "--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert (env / "backups").is_dir() and (env / "backups").stat().st_mode & 0o777 == 0o700
    assert Path(doc["destination"]) == Path("backups") / f"{doc['backup_id']}.svarch"
    # an existing directory without the slash is a directory too; a plain name is a file
    code, out, _ = run(["backup", "--tree", "phone.xml", "--to", "backups", "--full", "--json"], capsys)
    assert code == 0 and Path(json.loads(out)["destination"]).parent == Path("backups")
    assert run(["backup", "--tree", "phone.xml", "--to", "one.svarch"], capsys)[0] == 0
    assert (env / "one.svarch").is_file()
    # export --out DIR/ lands in the directory too
    assert run(["backup", "--tree", "phone.xml", "--emulator", "card.img"], capsys)[0] == 0
    code, out, err = run(["export", "--id", _card_ids(capsys)[0], "--out", "exports/", "--emulator", "card.img"],
                         capsys)
    assert code == 0, err
    assert len(list((env / "exports").glob("*.svarch"))) == 1


def _card_ids(capsys) -> list[str]:
    code, out, _ = run(["list", "--json", "--emulator", "card.img"], capsys)
    assert code == 0
    return [b["backup_id"] for b in json.loads(out)["backups"]]


# 3 ---------------------------------------------------------------------------------------


def test_card_full_is_refused_before_the_upload_with_both_numbers_and_the_way_out(env, capsys):
    ident = load_identity(env / "home")
    build_test_card(env / "small.img", capacity=96 * 1024, anchors=[ident.signer.public_point]).close()
    big = generate_tree(2_000, 2)
    for i in range(60):     # random values do not compress: far more than the card holds
        big.add(f"./Vendor/Blob{i}", os.urandom(2000), format="bin", create_parents=True)
    (env / "big.xml").write_bytes(write_tnds(big))
    card = ["--emulator", "small.img"]
    before = run(["card", "status", "--json", *card], capsys)[1]
    code, out, err = run(["backup", "--tree", "big.xml", *card], capsys)
    assert code == 1 and err.count("\n") == 1
    m = re.fullmatch(r"simvault: error: card full, nothing written: bytes ran out: this backup needs (\d+) bytes "
                     r"\((\d+) new chunks, manifest, id list; 256-byte blocks\) and \2 chunk entries; the card has (\d+) of "
                     r"\3 bytes and 64 of 64 entries free: delete a backup \('simvault list', 'simvault delete --id "
                     r"ID'\) and, once the old chain is gone, 'simvault backup --full'; back up less \(--scope, "
                     r"--exclude-secrets\); or a bigger card \('simvault card init --capacity BYTES --chunk-entries "
                     r"N'; install parameters 06, 07\)\n", err)
    assert m, err
    assert int(m.group(1)) > int(m.group(3)) and int(m.group(1)) > 96 * 1024
    assert run(["card", "status", "--json", *card], capsys)[1] == before    # nothing written, no pending upload
    assert not json.loads(before)["session_active"]


def test_abort_upload_frees_an_interrupted_uploads_memory(env, capsys):
    from apdu_specs.manifest import key_id
    card = ["--emulator", "c.img"]
    vcard = build_test_card(env / "c.img")
    bc = emulator_client(vcard)
    bc.begin_backup(b"\x01" * 16, 7, 300)
    bc.put_chunk(key_id(b"x") * 4, b"x" * 5000)       # an upload cut short after one chunk
    vcard.close()
    code, out, _ = run(["card", "status", *card], capsys)
    assert "an interrupted upload is pending" in out and "'simvault card abort-upload'" in out
    held = int(re.search(r"memory: (\d+) of", out).group(1))
    assert re.search(r"; 511 of 512 chunk entries free\n", out), out
    code, out, err = run(["card", "abort-upload", *card], capsys)
    assert code == 0, err
    assert out.startswith("interrupted upload aborted: its memory is free again")
    code, out, _ = run(["card", "status", *card], capsys)
    assert "pending" not in out and int(re.search(r"memory: (\d+) of", out).group(1)) > held
    assert "512 of 512 chunk entries free" in out
    assert run(["card", "abort-upload", *card], capsys)[1] == "no interrupted upload on the card: nothing to abort\n"


# 4 ---------------------------------------------------------------------------------------


def test_init_capacity_minimum_and_honest_sizes(env, capsys):
    args = ["card", "init", "--pin", "2468", "--puk", "13572468", "--admin-key-file", "admin.key"]
    code, out, err = run([*args, "--image", "tiny.img", "--capacity", "8192"], capsys)
    assert code == 2 and "at least 16384 bytes" in err and not (env / "tiny.img").exists()
    code, out, err = run([*args, "--image", "min.img", "--capacity", "16384"], capsys)
    assert code == 0, err
    size = (env / "min.img").stat().st_size
    assert out == (f"card image min.img personalised: NVM 16384 bytes (image file {size} bytes with header "
                   "and journal), 0 trust anchor(s)\n")
    assert size > 16384


# 5 ---------------------------------------------------------------------------------------


def test_force_device_keeps_the_live_identity(env, capsys):
    other = read_tnds(SAMPLE.read_bytes())
    other.replace("./DevInfo/DevId", "IMEI:490154203237518")
    other.replace("./DevInfo/Man", "Other Maker")
    other.replace("./DevDetail/FwV", "9.9.9")
    (env / "other.xml").write_bytes(write_tnds(other))
    assert run(["backup", "--tree", "other.xml", "--to", "b/"], capsys)[0] == 0
    code, _, err = run(["restore", "--tree", "phone.xml", "--from", "b/"], capsys)
    assert code != 0 and "--force-device" in err
    code, out, err = run(["restore", "--tree", "phone.xml", "--from", "b/", "--force-device", "--dry-run"], capsys)
    assert code == 0, err
    assert "kept from the live device (--force-device keeps its identity): ./DevInfo, ./DevDetail" in out
    assert "DevInfo" not in out.replace("./DevInfo, ./DevDetail", "")
    code, out, err = run(["restore", "--tree", "phone.xml", "--from", "b/", "--force-device"], capsys)
    assert code == 0, err
    live, sample = read_tnds((env / "phone.xml").read_bytes()), read_tnds(SAMPLE.read_bytes())
    for uri in ("./DevInfo", "./DevDetail"):
        assert [(u, n.value) for u, n in live.walk(uri)] == [(u, n.value) for u, n in sample.walk(uri)]
    assert "./DevInfo, ./DevDetail" in " ".join(cli_backup_help("restore").split())


def cli_backup_help(command: str) -> str:
    parser = argparse.ArgumentParser(prog="simvault")
    sub = parser.add_subparsers(dest="command")
    cli_backup.register(sub)
    return sub.choices[command].format_help()


# 6 ---------------------------------------------------------------------------------------


def test_restore_create_rebuilds_a_lost_tree(env, capsys):
    assert run(["backup", "--tree", "phone.xml", "--to", "b/"], capsys)[0] == 0
    code, _, err = run(["restore", "--tree", "new.xml", "--from", "b/"], capsys)
    assert code == 2 and err == "simvault: error: no such tree file: new.xml: to rebuild it from the backup, add --create\n"
    code, _out, err = run(["restore", "--tree", "new.xml", "--from", "b/", "--create"], capsys)
    assert code == 0, err
    assert read_tnds((env / "new.xml").read_bytes()) == read_tnds(SAMPLE.read_bytes())
    assert (env / "new.xml").stat().st_mode & 0o777 == 0o600
    before = (env / "phone.xml").read_bytes()
    code, _, err = run(["restore", "--tree", "phone.xml", "--from", "b/", "--create"], capsys)
    assert code == 2 and "phone.xml exists: --create only writes a new tree file" in err
    assert (env / "phone.xml").read_bytes() == before


# 7 ---------------------------------------------------------------------------------------


def test_verify_needs_no_signing_key(env, capsys):
    assert run(["backup", "--tree", "phone.xml", "--to", "b/"], capsys)[0] == 0
    (env / "home" / "device.sign.pem").unlink()
    code, out, err = run(["verify", "--from", "b/"], capsys)
    assert code == 0 and "verified" in out, err
    (env / "home" / "device.enc.pem").unlink()          # the decryption key is needed
    code, _, err = run(["verify", "--from", "b/"], capsys)
    assert code != 0 and "device.enc.pem" in err


# 8 ---------------------------------------------------------------------------------------


def test_errors_name_the_file(env, capsys):
    (env / "bad.xml").write_text("<MgmtTree><Node>")
    code, _, err = run(["backup", "--tree", "bad.xml", "--to", "b/"], capsys)
    assert code != 0 and err.startswith("simvault: error: bad.xml: XML malformed: "), err
    (env / "b.svarch").write_text("hello\n")
    for cmd in (["list", "--from", "b.svarch"], ["verify", "--from", "b.svarch"]):
        code, _, err = run(cmd, capsys)
        assert code != 0 and err.startswith("simvault: error: b.svarch: not a simvault archive"), err
    for cmd in (["restore", "--tree", "phone.xml", "--from", "nonexist"], ["list", "--from", "nonexist"],
                ["verify", "--from", "nonexist"], ["delete", "--id", "00" * 16, "--from", "nonexist"],
                ["backup", "--tree", "nonexist", "--to", "b/"]):
        code, _, err = run(cmd, capsys)
        what = "the device's tree, a TNDS XML file" if cmd[0] == "backup" else "a .svarch file or a directory"
        assert code == 2 and err.count("\n") == 1, (cmd, err)
        assert err.startswith(f"simvault: error: no such file or directory: nonexist: give {what}"), (cmd, err)


# 9 ---------------------------------------------------------------------------------------


def test_pin_grammar_and_blocked_hint(env, capsys, monkeypatch):
    card = ["--emulator", "card.img"]
    monkeypatch.setenv("SIMVAULT_PIN", "9999")
    check = ": check the PIN ($SIMVAULT_PIN, --pin-env or the prompt); the PIN blocks when none is left\n"
    assert run(["card", "pin", "verify", *card], capsys)[2].endswith("wrong PIN, 2 tries left" + check)
    assert run(["card", "pin", "verify", *card], capsys)[2].endswith("wrong PIN, 1 try left" + check)
    out = run(["card", "status", *card], capsys)[1]
    assert "PIN: 1/3 try left, PUK: 10 tries left\n" in out
    hint = ("'simvault card pin unblock' (PUK from $SIMVAULT_PUK, new PIN from $SIMVAULT_NEW_PIN)")
    err = run(["card", "pin", "verify", *card], capsys)[2]
    assert "PIN is now blocked: unblock it with " + hint in err
    monkeypatch.setenv("SIMVAULT_PIN", TEST_PIN)
    err = run(["backup", "--tree", "phone.xml", *card], capsys)[2]
    assert err == "simvault: error: VERIFY: card answered 6983: the PIN is blocked: unblock it with " + hint + "\n"
    assert hint in run(["card", "status", *card], capsys)[1]
    monkeypatch.setenv("SIMVAULT_PUK", TEST_PUK)
    monkeypatch.setenv("SIMVAULT_NEW_PIN", TEST_PIN)
    assert run(["card", "pin", "unblock", *card], capsys)[0] == 0


# 10 --------------------------------------------------------------------------------------


LIST_LINE = re.compile(r"[0-9a-f]{32}  seq \d+  created \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ  \d+ bytes  device (\S+)")


def test_list_lines_iso_time_device_no_trailing_space(env, capsys):
    assert run(["backup", "--tree", "phone.xml", "--emulator", "card.img"], capsys)[0] == 0
    assert run(["backup", "--tree", "phone.xml", "--to", "b/"], capsys)[0] == 0
    for where in (["--emulator", "card.img"], ["--from", "b/"]):
        code, out, _ = run(["list", *where], capsys)
        lines = out.splitlines()
        assert code == 0 and len(lines) == 1
        m = LIST_LINE.fullmatch(lines[0])
        assert m and m.group(1) == DEVICE, lines[0]
    code, out, _ = run(["list", "--json", "--emulator", "card.img"], capsys)
    entry = json.loads(out)["backups"][0]
    assert entry["device_id"] == DEVICE and entry["created_utc"].endswith("Z")


# 2 (the "card in reader" line through pcscd: tests/test_card_pcsc_cli.py) -----------------


def test_serve_warns_without_vpcd_once_per_interval(tmp_path):
    import signal
    import subprocess
    import time
    build_test_card(tmp_path / "card.img").close()
    proc = subprocess.Popen([sys.executable, "-m", "host.cli.card", "card", "serve", "--image",
                             str(tmp_path / "card.img"), "--vpcd", "127.0.0.1:1"],
                            cwd=Path(__file__).parent.parent, stderr=subprocess.PIPE, text=True)
    time.sleep(2.0)         # five connection attempts (backoff 0.05 s doubling): one warning
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    err = proc.stderr.read()
    assert err.count("no vpcd at 127.0.0.1:1: is pcscd running with vsmartcard-vpcd? retrying\n") == 1, err


def test_bridge_repeats_the_warning_after_the_interval_and_names_readers():
    import time

    from card.vpcd import VpcdBridge, reader_for_port
    from host.link.echo_card import EchoCard
    lines: list[str] = []
    bridge = VpcdBridge(EchoCard(), "127.0.0.1", 1, notify=lines.append, warn_interval=0.3)
    with bridge:
        time.sleep(1.3)     # attempts at 0, .05, .15, .35, .75: warnings at 0, .35, .75
    assert 2 <= len(lines) <= 4 and set(lines) == {
        "no vpcd at 127.0.0.1:1: is pcscd running with vsmartcard-vpcd? retrying"}
    assert (reader_for_port(35963), reader_for_port(35964), reader_for_port(40000)) == (
        "Virtual PCD 00 00", "Virtual PCD 00 01", None)
    assert VpcdBridge(EchoCard(), port=40000).reader_description == "the vpcd reader of port 40000"


# 11 --------------------------------------------------------------------------------------


def _subparsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _subparsers(sub, (*path, name))


def test_every_option_of_every_command_has_help():
    from host.cli import build_parser
    seen, missing = 0, []
    for path, parser in _subparsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            seen += 1
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"simvault {' '.join(path)} {'/'.join(action.option_strings) or action.dest}")
    assert seen > 100 and not missing, missing


# 12 --------------------------------------------------------------------------------------


def test_keys_gen_takes_key_dir_and_out_alias(env, capsys):
    code, out, err = run(["keys", "gen", "--key", "k1", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["directory"] == "k1" and (env / "k1" / "device.sign.pem").exists()
    assert run(["keys", "gen", "--out", "k2"], capsys)[0] == 0 and (env / "k2" / "device.enc.pem").exists()
    code, out, _ = run(["keys", "show", "--key", "k1", "--json"], capsys)
    assert code == 0 and json.loads(out)["directory"] == "k1"


# 13, 15 (readers --json and apdu through pcscd: tests/test_card_pcsc_cli.py) -----------------


def test_apdu_json_and_help_asks_for_le(env, capsys):
    code, out, _ = run(["apdu", "--json", "--emulator", "card.img", "00A404000AF053494D5641554C540100",
                        "8010000000", "0020008100"], capsys)
    doc = json.loads(out)
    assert code == 1 and [e["sw"] for e in doc] == ["9000", "9000", "63C3"]
    assert doc[1] == {**doc[1], "apdu": "8010000000", "name": "OK", "meaning": "success"} and doc[1]["response"]
    assert doc[2]["name"] == "WRONG_PIN" and doc[2]["response"] == ""
    parser = argparse.ArgumentParser(prog="simvault")
    cli_card.register(parser.add_subparsers(dest="command"))
    text = " ".join(parser._subparsers._group_actions[0].choices["apdu"].format_help().split())
    assert "Give Le for commands that return data: GET STATUS is 8010000000 (case 2), not 80100000" in text


# 14 --------------------------------------------------------------------------------------


def test_ds_push_names_the_mode_and_the_anchor_state(env, capsys, monkeypatch):
    from host.ds.server import run_server_in_thread
    from host.ds.store import DsStore
    store = DsStore(f"sqlite:///{env / 'ds.db'}")
    store.add_user("phone1", "ds-secret")
    monkeypatch.setenv("SIMVAULT_DS_PASSWORD", "ds-secret")
    assert run(["backup", "--tree", "phone.xml", "--to", "b/"], capsys)[0] == 0
    archive = str(next((env / "b").glob("*.svarch")))
    with run_server_in_thread(store) as server:
        common = ["--url", server.url, "--user", "phone1", "--state", "ds-state.json"]
        code, out, err = run(["ds", "push", archive, *common, "--json"], capsys)
        assert code == 0, err
        first = json.loads(out)
        code, out, err = run(["ds", "push", archive, *common, "--mode", "refresh", "--json"], capsys)
        assert code == 0, err
        second = json.loads(out)
        code, out, err = run(["ds", "push", archive, *common], capsys)     # readable without --json
        assert code == 0 and err == "", err
        assert re.fullmatch(rf"backup {second['backup_id']} pushed to {re.escape(server.url)} as phone1 "
                            r"\(datastore backup\): \d+ bytes in \d+ message\(s\), two-way sync; "
                            r"anchors in ds-state.json\n", out), out
    assert (first["mode"], first["alert"], first["slow_sync"]) == ("two-way", 201, True)
    assert (second["mode"], second["alert"]) == ("refresh", 203)
    assert first["anchor_state"] == "ds-state.json" and (env / "ds-state.json").exists()
