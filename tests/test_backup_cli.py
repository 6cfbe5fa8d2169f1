"""The backup commands end to end: keys, backup/restore/list/verify/delete/export/import,
through a file directory and through the in-process emulator (--emulator IMAGE)."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from cards import TEST_PIN, build_test_card, run_cli

from host.cli import backup as cli_backup
from host.cli import card as cli_card
from host.backup.keys import load_identity
from host.tree.generate import mutate_leaves
from host.tree.secrets import secret_uris
from host.tree.tnds import read_tnds, write_tnds

SAMPLE = Path(__file__).parent / "data" / "phone_tree.tnds.xml"


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    """host.cli.main's contract (one-line errors, exit codes) over the card and backup commands."""
    return run_cli(argv, capsys, cli_card, cli_backup)


@pytest.fixture
def env(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SIMVAULT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SIMVAULT_PIN", TEST_PIN)
    code, out, _ = run(["keys", "gen", "--json"], capsys)
    assert code == 0
    ident = load_identity(tmp_path / "home")
    build_test_card(tmp_path / "card.img", anchors=[ident.signer.public_point]).close()
    tree = tmp_path / "live.xml"
    tree.write_bytes(SAMPLE.read_bytes())
    return tmp_path, json.loads(out)


def test_keys_show_and_perms(env, capsys):
    tmp, gen = env
    code, out, _ = run(["keys", "show", "--json"], capsys)
    doc = json.loads(out)
    assert code == 0 and doc["sign"]["key_id"] == gen["sign"]["key_id"]
    assert doc["trusted"] == [gen["sign"]["key_id"]]
    for f in (tmp / "home").glob("*.pem"):
        if not f.name.endswith(".pub.pem"):
            assert f.stat().st_mode & 0o777 == 0o600


def test_file_backup_restore_dry_run_and_apply(env, capsys):
    tmp, _ = env
    store = tmp / "backups"
    store.mkdir()
    code, out, err = run(["backup", "--tree", str(tmp / "live.xml"), "--to", str(store), "--json"], capsys)
    assert code == 0, err
    first = json.loads(out)
    live = read_tnds((tmp / "live.xml").read_bytes())
    changed = mutate_leaves(live, 0.05, seed=1)
    changed = [u for u in changed if u != "./DevInfo/DevId"]
    (tmp / "live.xml").write_bytes(write_tnds(live))
    code, out, _ = run(["restore", "--from", str(store), "--tree", str(tmp / "live.xml"), "--dry-run", "--json"],
                       capsys)
    assert code == 0
    assert {c["uri"] for c in json.loads(out)["changes"]} >= set(changed)
    assert read_tnds((tmp / "live.xml").read_bytes()) == live          # dry run changed nothing
    code, out, _ = run(["restore", "--from", str(store), "--id", first["backup_id"],
                        "--tree", str(tmp / "live.xml")], capsys)
    assert code == 0
    assert read_tnds((tmp / "live.xml").read_bytes()) == read_tnds(SAMPLE.read_bytes())
    code, out, _ = run(["list", "--from", str(store), "--json"], capsys)
    assert [b["backup_id"] for b in json.loads(out)["backups"]] == [first["backup_id"]]


def test_card_backup_incremental_export_import_delete(env, capsys):
    tmp, _ = env
    card = ["--emulator", str(tmp / "card.img")]
    code, out, err = run(["backup", "--tree", str(tmp / "live.xml"), "--json", *card], capsys)
    assert code == 0, err
    full = json.loads(out)
    live = read_tnds((tmp / "live.xml").read_bytes())
    mutate_leaves(live, 0.01, seed=3)
    live.replace("./DevInfo/DevId", read_tnds(SAMPLE.read_bytes()).get("./DevInfo/DevId").value)
    (tmp / "live.xml").write_bytes(write_tnds(live))
    code, out, err = run(["backup", "--tree", str(tmp / "live.xml"), "--json", *card], capsys)
    assert code == 0, err
    inc = json.loads(out)
    assert inc["sequence"] > full["sequence"] and inc["chunks_sent"] <= inc["chunks_total"]
    code, out, _ = run(["list", "--json", *card], capsys)
    assert [b["backup_id"] for b in json.loads(out)["backups"]] == [full["backup_id"], inc["backup_id"]]
    code, out, _ = run(["verify", "--id", inc["backup_id"], *card], capsys)
    assert code == 0 and "verified" in out
    exported = tmp / "x.svarch"
    assert run(["export", "--id", inc["backup_id"], "--out", str(exported), *card], capsys)[0] == 0
    assert run(["delete", "--id", inc["backup_id"], *card], capsys)[0] == 0
    # the card remembers the highest sequence: re-importing the deleted backup is a rollback
    code, _, err = run(["import", str(exported), *card], capsys)
    assert code != 0 and "668A" in err
    # onto another card it goes, and comes back byte for byte
    ident = load_identity(tmp / "home")
    build_test_card(tmp / "card2.img", anchors=[ident.signer.public_point]).close()
    card2 = ["--emulator", str(tmp / "card2.img")]
    assert run(["import", str(exported), *card2], capsys)[0] == 0
    again = tmp / "y.svarch"
    assert run(["export", "--id", inc["backup_id"], "--out", str(again), *card2], capsys)[0] == 0
    assert again.read_bytes() == exported.read_bytes()
    card = card2
    (tmp / "live.xml").write_bytes(SAMPLE.read_bytes())
    code, out, err = run(["restore", "--id", inc["backup_id"], "--tree", str(tmp / "live.xml"), *card], capsys)
    assert code == 0, err
    assert read_tnds((tmp / "live.xml").read_bytes()) == live


def test_exclude_and_keep_secrets(env, capsys):
    tmp, _ = env
    store = tmp / "b"
    store.mkdir()
    assert run(["backup", "--tree", str(tmp / "live.xml"), "--to", str(store), "--exclude-secrets"], capsys)[0] == 0
    path = next(store.glob("*.svarch"))
    assert b"AAuthSecret" not in path.read_bytes()
    code, out, _ = run(["verify", "--from", str(path), "--json"], capsys)
    assert code == 0 and json.loads(out)["secrets"] == "excluded"
    # restoring a backup without secrets keeps the live credentials
    live = read_tnds((tmp / "live.xml").read_bytes())
    before = {u: live.get(u).value for u in secret_uris(live)}
    assert run(["restore", "--from", str(path), "--tree", str(tmp / "live.xml")], capsys)[0] == 0
    after = read_tnds((tmp / "live.xml").read_bytes())
    assert {u: after.get(u).value for u in secret_uris(after)} == before


def test_errors_are_one_line_and_leave_the_tree(env, capsys):
    tmp, _ = env
    before = (tmp / "live.xml").read_bytes()
    bogus = tmp / "bogus.svarch"
    bogus.write_bytes(b"SVARCH1\n\x00\x00\x00\x05hello")
    code, _, err = run(["restore", "--from", str(bogus), "--tree", str(tmp / "live.xml")], capsys)
    assert code != 0 and err.count("\n") == 1 and "simvault: error:" in err
    assert (tmp / "live.xml").read_bytes() == before
    code, _, err = run(["restore", "--tree", str(tmp / "live.xml"), "--emulator", str(tmp / "card.img")], capsys)
    assert code != 0 and "no backup" in err


def test_progress_bar_on_stderr_only_when_asked_or_a_terminal(env, capsys):
    tmp, _ = env
    code, out, err = run(["backup", "--tree", str(tmp / "live.xml"), "--progress",
                          "--emulator", str(tmp / "card.img")], capsys)
    assert code == 0 and out.startswith("backup ") and out.count("\n") == 1
    last = err.split("\r")[-1]
    assert re.fullmatch(r"upload to card: 100% \|\S+\| [\d.]+kB/[\d.]+kB  [\d.]+[kMG]?B/s  ETA 00:00\n", last), err
    # captured stderr is no terminal: without --progress nothing but the result is printed
    code, out, err = run(["backup", "--tree", str(tmp / "live.xml"), "--full", "--emulator", str(tmp / "card.img")],
                         capsys)
    assert code == 0 and err == "" and out.count("\n") == 1
