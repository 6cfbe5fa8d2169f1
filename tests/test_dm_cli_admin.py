"""The operator's `simvault dm` commands added after a user's walk through the README:
backups wherever they live, device-remove, readable output with --json, help on every
option, and no message naming an option that does not exist. Real DM server on loopback
(SQLite and PostgreSQL), real agents with an emulated card, the CLI through host.cli.main."""
from __future__ import annotations

import argparse
import ast
import json
import re
from pathlib import Path

import pytest

from host.cli import build_parser, main
from test_dm_fixtures import ADMIN_TOKEN, DEV_PASSWORD, SRV_PASSWORD, db_url, pg_cluster, world  # noqa: F401 - fixtures

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parent.parent


def dm(capsys, w, *args: str) -> tuple[int, str, str]:
    code = main(["dm", *args, "--api", w.url])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_backups_lists_server_card_and_removed_device_backups(world, capsys, monkeypatch) -> None:  # noqa: F811
    monkeypatch.setenv("SIMVAULT_DM_ADMIN_TOKEN", ADMIN_TOKEN)
    dev = world.add_device("phone", card="emulator")
    card_job = world.wait_job(world.job(dev, "backup", "card")["id"])
    server_job = world.wait_job(world.job(dev, "backup", "server")["id"])
    assert card_job["state"] == server_job["state"] == "succeeded"
    card_id = world.web.server.store.results(card_job["id"])[0]["data"]["id"]  # the card job knows it only here
    server_id = server_job["backup_id"]
    assert card_job["backup_id"] == card_id  # on the job too since the user asked where it went
    assert card_id and server_id

    code, out, _ = dm(capsys, world, "backups", "--device", dev.device_id)
    assert code == 0 and out.splitlines()[0].split()[:4] == ["DEVICE", "LOCATION", "BACKUP", "ID"]
    rows = {line.split()[2]: line.split()[1] for line in out.splitlines()[1:]}
    assert rows == {card_id: "card", server_id: "server"}
    code, out, _ = dm(capsys, world, "backups", "--json")
    listed = json.loads(out)
    assert {(b["location"], b["backup_id"]) for b in listed} == {("card", card_id), ("server", server_id)}
    assert next(b for b in listed if b["location"] == "card")["size"] > 0

    # what the listing shows is what restore-start --source card takes
    code, out, err = dm(capsys, world, "restore-start", dev.device_id, "--source", "card", "--id", card_id,
                        "--wait", "30")
    assert code == 0, err
    assert out.startswith(f"job ") and "restore card" in out and "-> succeeded" in out and card_id in out
    # a card backup deleted through the server leaves the listing
    assert world.wait_job(world.job(dev, "delete", "card", backup_id=card_id)["id"])["state"] == "succeeded"
    code, out, _ = dm(capsys, world, "backups", "--json")
    assert [(b["location"], b["backup_id"]) for b in json.loads(out)] == [("server", server_id)]

    # readable by default, the API's JSON with --json
    code, out, _ = dm(capsys, world, "jobs", "--device", dev.device_id)
    assert out.splitlines()[0].split()[:5] == ["ID", "DEVICE", "KIND", "TARGET", "STATE"] and "succeeded" in out
    code, out, _ = dm(capsys, world, "jobs", "--json")
    assert {j["id"] for j in json.loads(out)} >= {card_job["id"], server_job["id"]}
    code, out, _ = dm(capsys, world, "job", str(card_job["id"]), "--json")
    assert json.loads(out)["results"][0]["data"]["location"] == "card"
    code, out, _ = dm(capsys, world, "devices")
    assert out.splitlines()[1].split()[:2] == [dev.device_id, "md5"]
    code, out, _ = dm(capsys, world, "devices", "--json")
    assert [d["id"] for d in json.loads(out)] == [dev.device_id]

    # device-remove keeps the server backups (shown as such) and they come back with the device
    code, out, _ = dm(capsys, world, "device-remove", dev.device_id)
    assert code == 0 and "1 server backup(s) kept" in out
    code, out, _ = dm(capsys, world, "devices", "--json")
    assert json.loads(out) == []
    code, out, _ = dm(capsys, world, "backups", "--json")
    assert [(b["location"], b["backup_id"]) for b in json.loads(out)] == [("server (removed device)", server_id)]
    assert any(a["event"] == "device.removed" and a["detail"] == "kept 1 backups"
               for a in world.web.server.store.audit_log(dev.device_id))
    code, _, err = dm(capsys, world, "device-remove", dev.device_id)
    assert code != 0 and err.count("\n") == 1 and "not registered" in err
    monkeypatch.setenv("SIMVAULT_DM_PASSWORD", DEV_PASSWORD)
    monkeypatch.setenv("SIMVAULT_DM_SERVER_PASSWORD", SRV_PASSWORD)
    key = dev.identity.directory / "device.sign.pub.pem"
    code, out, err = dm(capsys, world, "device-add", dev.device_id, "--public-key", str(key), "--auth", "md5")
    assert code == 0, err
    code, out, _ = dm(capsys, world, "backups", "--json")
    assert [(b["location"], b["backup_id"]) for b in json.loads(out)] == [("server", server_id)]
    assert world.web.server.store.backup_archive(dev.device_id, server_id) is not None
    code, out, _ = dm(capsys, world, "device-remove", dev.device_id, "--purge")
    assert code == 0 and "1 server backup(s) deleted" in out
    code, out, _ = dm(capsys, world, "backups", "--json")
    assert json.loads(out) == []


def test_device_enc_key_from_the_cli(world, capsys, monkeypatch, tmp_path) -> None:  # noqa: F811
    """device-add --enc-key and device-key register the key DS passwords are sealed to; the
    listing shows its id; the signing key, a non-key and an unknown device are clear errors."""
    from host.backup.keys import generate_identity
    monkeypatch.setenv("SIMVAULT_DM_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("SIMVAULT_DM_PASSWORD", DEV_PASSWORD)
    monkeypatch.setenv("SIMVAULT_DM_SERVER_PASSWORD", SRV_PASSWORD)
    keys = tmp_path / "cli-keys"
    ident = generate_identity(keys)
    code, out, err = dm(capsys, world, "device-add", "IMEI:1", "--public-key", str(keys / "device.sign.pub.pem"),
                        "--enc-key", str(keys / "device.enc.pub.pem"))
    assert code == 0 and f"encryption key {ident.recipient.key_id.hex()}" in out, err
    code, out, err = dm(capsys, world, "device-add", "IMEI:2", "--public-key", str(keys / "device.sign.pub.pem"))
    assert code == 0, err
    code, out, _ = dm(capsys, world, "devices")
    assert ident.recipient.key_id.hex() in out and "ENC KEY" in out
    code, _, err = dm(capsys, world, "device-key", "IMEI:2", "--enc-key", str(keys / "device.sign.pub.pem"))
    assert code != 0 and "is the signing key" in err
    (tmp_path / "junk.pem").write_text("not a key")
    code, _, err = dm(capsys, world, "device-key", "IMEI:2", "--enc-key", str(tmp_path / "junk.pem"))
    assert code != 0 and "not a PEM public key" in err
    code, _, err = dm(capsys, world, "device-key", "IMEI:9", "--enc-key", str(keys / "device.enc.pub.pem"))
    assert code != 0 and "not registered" in err
    code, out, err = dm(capsys, world, "device-key", "IMEI:2", "--enc-key", str(keys / "device.enc.pub.pem"))
    assert code == 0 and ident.recipient.key_id.hex() in out, err
    code, out, _ = dm(capsys, world, "devices", "--json")
    assert {d["id"]: d["enc_key_id"] for d in json.loads(out)} == {"IMEI:1": ident.recipient.key_id.hex(),
                                                                  "IMEI:2": ident.recipient.key_id.hex()}
    assert any(a["event"] == "device.enc_key" for a in world.web.server.store.audit_log("IMEI:2"))


def _dm_parsers(command: str = "dm") -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    top = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    dm_parser = top.choices[command]
    sub = next(a for a in dm_parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_dm_option_has_help() -> None:
    missing = [f"dm {name} {'/'.join(a.option_strings) or a.dest}"
               for name, p in _dm_parsers().items() for a in p._actions
               if not isinstance(a, argparse._HelpAction) and not a.help]
    assert missing == []


def test_messages_name_only_options_that_exist() -> None:
    """Every '--option' a message in host/dm mentions is an option of some `simvault dm` command
    (or of `simvault keys`, which the console's messages name for the server's key)."""
    options = {o for p in [*_dm_parsers().values(), *_dm_parsers("keys").values()]
               for a in p._actions for o in a.option_strings}
    named: dict[str, str] = {}
    for path in sorted((ROOT / "host" / "dm").rglob("*.py")):
        if path.name == "pgcluster.py":  # the postgres tools' own options
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for opt in re.findall(r"(?<![\w-])--[a-z][a-z-]*", node.value):
                    named.setdefault(opt, path.name)
    assert {o: f for o, f in named.items() if o not in options} == {}
    assert "--password-env" in named and "--server-password-env" in named  # the agent's message names them


def test_agent_without_passwords_names_real_ways_to_give_them(world, capsys, monkeypatch, tmp_path) -> None:  # noqa: F811
    dev = world.add_device("phone", start=False)
    monkeypatch.delenv("SIMVAULT_DM_PASSWORD", raising=False)
    monkeypatch.delenv("SIMVAULT_DM_SERVER_PASSWORD", raising=False)
    # a fresh tree: no provisioned DM account to fall back on
    args = ["dm", "agent", "--tree", str(dev.tree_path), "--server", f"{world.url}/dm", "--device-id",
            dev.device_id, "--key", str(dev.identity.directory), "--listen", "127.0.0.1:0"]
    assert main(args) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "$SIMVAULT_DM_PASSWORD" in err and "--password-env" in err
    # the flags the message names work: the passwords from other variables, a session succeeds
    monkeypatch.setenv("MY_DEV_PW", DEV_PASSWORD)
    monkeypatch.setenv("MY_SRV_PW", SRV_PASSWORD)
    from host.dm.agent.core import DMAgent
    from host.cli.dm import agent_config  # the mapping `dm agent` runs
    parsed = build_parser().parse_args(args + ["--password-env", "MY_DEV_PW", "--server-password-env", "MY_SRV_PW"])
    agent = DMAgent(agent_config(parsed), identity=dev.identity).start()
    try:
        agent.sync_now()
        assert agent.wait_idle(20) and agent.history and agent.history[-1].ok, agent.history
    finally:
        agent.stop()


def test_wait_on_a_job_that_does_not_finish_is_not_a_success(world, capsys, monkeypatch) -> None:  # noqa: F811
    monkeypatch.setenv("SIMVAULT_DM_ADMIN_TOKEN", ADMIN_TOKEN)
    dev = world.add_device("silent", start=False)  # registered, but no agent runs: the job stays queued
    code, out, err = dm(capsys, world, "backup-start", dev.device_id, "--target", "server", "--wait", "1")
    assert code == 3 and "-> queued" in out
    assert "still queued after 1s" in err and "simvault dm agent" in err
