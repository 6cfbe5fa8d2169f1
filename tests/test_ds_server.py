"""DS backup and restore end to end: DsClient over real HTTP (loopback) to simvault's
DS server on a real database (SQLite file, and a throwaway PostgreSQL cluster)."""
from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

import pytest

from host.cli import ds as ds_cli
from host.cli import exitcodes
from host.ds.backup import backup_tree_via_ds, restore_tree_via_ds
from host.ds.client import DsAccount, DsClient, replace_anchor
from host.ds.errors import DsAuthError, DsNoBackupError
from host.ds.payload import decode_item, encode_item
from host.ds.server import run_server_in_thread
from host.ds.state import AnchorStore
from host.ds.store import DsStore
from host.backup.keys import generate_identity
from host.syncml.status import AlertCode, StatusCode
from host.tree.canonical import canonical_bytes
from host.tree.generate import generate_tree, mutate_leaves


@pytest.fixture(scope="module")
def postgres():
    from host.dm.server.pgcluster import TempPostgres
    with TempPostgres(database="simvault_ds") as pg:
        yield pg.url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'ds.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres")
    s = DsStore(url)
    if request.param == "postgres":  # a clean schema per test
        from host.ds.store import Base
        Base.metadata.drop_all(s.engine)
        Base.metadata.create_all(s.engine)
    s.add_user("alice", "alice-pw")
    s.add_user("bob", "bob-pw")
    yield s
    s.close()


@pytest.fixture
def server(store):
    with run_server_in_thread(store) as srv:
        yield srv


@pytest.fixture(scope="module")
def identity(tmp_path_factory):
    return generate_identity(tmp_path_factory.mktemp("keys"))


def account(url: str, **kw) -> DsAccount:
    base = {"url": url, "username": "alice", "password": "alice-pw", "device_id": "dev-1"}
    base.update(kw)
    return DsAccount(**base)


def test_payload_roundtrip_survives_crlf_normalisation():
    data = os.urandom(5000)
    text = encode_item("ab12", data)
    crlf = text.replace("\n", "\r\n") + "\r\n"  # what SyncEvolution's file backend stores
    assert decode_item(crlf).archive == data


def test_tree_backup_and_restore_byte_identical(server, identity, tmp_path):
    tree = generate_tree(100_000, seed=3)
    before = canonical_bytes(tree)  # restore_tree keeps content, not child order: compare canonically
    anchors = AnchorStore(tmp_path / "state.json")
    outcome = backup_tree_via_ds(tree, identity, account(server.url, backup_mode="refresh"), anchors)
    assert outcome.ds.mode == AlertCode.REFRESH_FROM_CLIENT and outcome.ds.items == 1
    fields = outcome.result_fields()
    assert fields["id"] == outcome.backup_id and fields["ds-status"] == 200 and fields["location"] == "ds"

    mutate_leaves(tree, 0.2, seed=1)
    assert canonical_bytes(tree) != before
    report, result = restore_tree_via_ds(tree, identity, account(server.url), anchors)
    assert result.mode == AlertCode.REFRESH_FROM_SERVER and report.backup_id == outcome.backup_id
    assert canonical_bytes(tree) == before
    # the anchors moved: the state file has our last Next
    state = AnchorStore(tmp_path / "state.json").get(AnchorStore.key(server.url, "alice", "backup"))
    assert state.last_anchor and state.last_backup_id == outcome.backup_id


@pytest.mark.parametrize("wbxml", [False, True])
def test_large_object_within_small_messages(store, wbxml):
    with run_server_in_thread(store, max_msg_size=6000) as srv:
        data = os.urandom(60_000)
        client = DsClient(account(srv.url, max_msg_size=6000, wbxml=wbxml, backup_mode="refresh"))
        result = client.backup(data, "feed01")
        assert result.messages > 10  # chunked with MoreData into many messages
        restored = client.restore()
        assert restored.archive == data and restored.backup_id == "feed01" and restored.messages > 10
    log = store.sessions(2)
    assert [s.mode for s in log] == [205, 203] and all(s.status == 200 for s in log)


def test_md5_authentication_with_server_nonce(server):
    client = DsClient(account(server.url, auth="md5", backup_mode="refresh"))
    first = client.backup(b"x" * 1000, "aa")
    assert first.messages == 2 + 1  # the first attempt has no nonce yet: 407 + Chal, then md5
    second = client.backup(b"y" * 1000, "bb")
    assert second.messages == 2  # the nonce from the last session's Chal is accepted at once
    assert client.restore().archive == b"y" * 1000


def test_wrong_password_and_unknown_user_are_refused(server, store):
    anchors = AnchorStore(None)
    DsClient(account(server.url), anchors).backup(b"good", "01")
    before = anchors.get(AnchorStore.key(server.url, "alice", "backup"))
    for acc in (account(server.url, password="nope"), account(server.url, username="mallory"),
                account(server.url, password="nope", auth="md5")):
        with pytest.raises(DsAuthError, match="refused the credentials"):
            DsClient(acc, anchors).backup(b"evil", "02")
    assert anchors.get(AnchorStore.key(server.url, "alice", "backup")) == before
    assert DsClient(account(server.url)).restore().archive == b"good"


def test_users_see_only_their_own_datastores(server):
    DsClient(account(server.url)).backup(b"alice's", "01")
    with pytest.raises(DsNoBackupError, match="no datastore"):
        DsClient(account(server.url, username="bob", password="bob-pw")).restore()


def test_wrong_anchor_gives_508_and_slow_sync(server):
    anchors = AnchorStore(None)
    acc = account(server.url)
    DsClient(acc, anchors).backup(b"one", "01")
    replace_anchor(anchors, acc, "20000101T000000Z")  # not what the server stored
    result = DsClient(acc, anchors).backup(b"two", "02")
    assert result.slow_sync and result.mode == AlertCode.SLOW_SYNC
    # the slow sync merged: both archives are there now, each selectable by id
    assert DsClient(acc, anchors).restore("02").archive == b"two"
    assert DsClient(acc, anchors).restore("01").archive == b"one"
    assert DsClient(acc, anchors).restore().archive == b"two"  # without id: this client's last backup
    with pytest.raises(DsNoBackupError, match="holds 2 archives"):
        DsClient(dataclasses.replace(acc, device_id="another")).restore()  # no state: ambiguous
    # after the slow sync the anchors agree again: a plain refresh works
    assert DsClient(acc, anchors).backup(b"three", "03").slow_sync is False


def test_restore_from_an_empty_or_unknown_datastore(server):
    with pytest.raises(DsNoBackupError):
        DsClient(account(server.url, datastore="nothing-here")).restore()


def test_cli_user_add_list_remove(tmp_path, monkeypatch, capsys):
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    parser = argparse.ArgumentParser()
    ds_cli.register(parser.add_subparsers())
    monkeypatch.setenv(ds_cli.PASSWORD_ENV, "s3cret")

    def run(*argv: str) -> int:
        args = parser.parse_args(["ds", *argv, "--db", db])
        return args.func(args)

    assert run("user", "add", "carol") == 0
    assert run("user", "list") == 0
    assert "carol" in capsys.readouterr().out
    assert DsStore(db).check_basic("carol", "s3cret")
    assert run("user", "remove", "carol") == 0
    assert not DsStore(db).check_basic("carol", "s3cret")


def test_two_way_backup_replaces_then_deletes_older(server):
    anchors = AnchorStore(None)
    acc = account(server.url, backup_mode="two-way", device_id="dev-2way")
    first = DsClient(acc, anchors).backup(b"first", "01")
    assert first.mode == AlertCode.SLOW_SYNC  # a new device: the server asks for a slow sync (508)
    second = DsClient(acc, anchors).backup(b"second", "02")
    assert second.mode == AlertCode.TWO_WAY and not second.slow_sync
    restored = DsClient(acc, anchors).restore()
    assert restored.archive == b"second" and restored.items == 1  # "01" was deleted after "02" arrived


def test_cli_server_push_pull(tmp_path, identity):
    import socket
    import subprocess
    import sys

    from host.backup.ops import backup_tree, write_archive_file

    db = f"sqlite:///{tmp_path / 'srv.db'}"
    env = {**os.environ, ds_cli.PASSWORD_ENV: "cli-pw", "PYTHONPATH": str(Path(__file__).parent.parent)}
    run = [sys.executable, "-m", "host.cli", "ds"]
    subprocess.run([*run, "user", "add", "cli", "--db", db], env=env, check=True, capture_output=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([*run, "server", "--listen", f"127.0.0.1:{port}", "--db", db], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()  # printed once it listens
        url = f"http://127.0.0.1:{port}/sync"
        assert url in line
        archive_file = write_archive_file(tmp_path, backup_tree(generate_tree(20_000, seed=9), identity))
        common = ["--url", url, "--user", "cli", "--state", str(tmp_path / "state.json")]
        pushed = subprocess.run([*run, "push", str(archive_file), *common], env=env, capture_output=True, text=True, check=False)
        assert pushed.returncode == 0, pushed.stderr
        out = tmp_path / "pulled.svarch"
        pulled = subprocess.run([*run, "pull", str(out), *common], env=env, capture_output=True, text=True, check=False)
        assert pulled.returncode == 0, pulled.stderr
        assert out.read_bytes() == archive_file.read_bytes()
        bad = subprocess.run([*run, "pull", str(out), *common], env={**env, ds_cli.PASSWORD_ENV: "wrong"},
                             capture_output=True, text=True, check=False)
        assert bad.returncode == exitcodes.DENIED and "refused the credentials" in bad.stderr and "Traceback" not in bad.stderr
    finally:
        server.terminate()
        server.wait(10)


def test_replace_of_a_held_item_is_200_and_of_a_new_one_201(server):
    """SyncML DS 1.2 representation protocol (issue 11, point 2), over HTTP to the real server:
    the client Replaces its archive item; the server holds it already the second time."""
    acc = account(server.url, backup_mode="two-way", device_id="dev-replace")
    anchors = AnchorStore(None)
    assert DsClient(acc, anchors).backup(b"first", "01").item_statuses == (StatusCode.ITEM_ADDED,)
    assert DsClient(acc, anchors).backup(b"again", "01").item_statuses == (StatusCode.OK,)
    assert DsClient(acc, anchors).backup(b"other", "02").item_statuses == (StatusCode.ITEM_ADDED,)
    assert DsClient(acc, anchors).restore().archive == b"other"
