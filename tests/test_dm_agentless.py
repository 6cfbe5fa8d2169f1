"""Agentless backup and restore (issue 18, point 2): a stock OMA DM 1.2 client without the BaR MO,
over real HTTP, against build_server on SQLite (and PostgreSQL once).

The client is tests/stock_dm_client.py: the agent's command execution on a plain tree,
configured to support TNDS, StructData or neither, Atomic or not, and to misbehave.
"""
from __future__ import annotations

import base64

import pytest

from host.archive import Archive, verify_archive
from host.backup.keys import generate_identity
from host.dm.server.agentless.config import AgentlessConfig, server_identity
from host.dm.server.registry import register_device
from host.dm.server.webapp import ServerThread, build_server, create_job_checked
from host.errors import UsageError
from host.syncml import model as m
from host.tree.model import DMTree
from stock_dm_client import StockClient, open_tree
from test_dm_fixtures import db_url, pg_cluster  # noqa: F401 - fixtures

pytestmark = pytest.mark.timeout(120)

DEV = "IMEI:490154203237518"
PASSWORD, SERVER_PASSWORD = "device-password-1", "server-password-1"


def phone() -> DMTree:
    t = open_tree(DMTree())
    t.add("./DevInfo", None, format="node", acl="Get=*")  # read-only, as on a real handset
    for leaf, value in (("DevId", DEV), ("Man", "Acme"), ("Mod", "A-1"), ("DmV", "1.2"), ("Lang", "en")):
        t.add(f"./DevInfo/{leaf}", value, format="chr")
    t.add("./DevDetail", None, format="node")
    t.add("./DevDetail/FwV", "1.0.3", format="chr")
    t.add("./DevDetail/LrgObj", "true", format="bool")
    t.add("./DMAcc", None, format="node")
    t.add("./DMAcc/srv", None, format="node")
    t.add("./DMAcc/srv/Addr", "http://127.0.0.1/dm", format="chr", type="text/plain")
    t.add("./DMAcc/srv/Key", base64.b64encode(b"\x00\x01\xfe\xff").decode(), format="b64")
    t.add("./DMAcc/srv/Secret", "s3cret", format="chr", acl="Replace=*")  # a secret the client hides
    t.add("./DMAcc/ours", None, format="node")  # the server's own account: a restore keeps it live
    t.add("./DMAcc/ours/ServerID", "simvault-dms", format="chr")
    t.add("./DMAcc/ours/AAuthName", "dev-user", format="chr")
    t.add("./Settings", None, format="node")
    for i in range(12):
        t.add(f"./Settings/S{i}", str(i * 7), format="int")
    t.add("./Settings/Empty", None, format="node")
    t.add("./Settings/Locked", "on", format="chr", acl="Get=*")  # the server may read it, not write it
    return t


@pytest.fixture()
def rig(tmp_path, request):
    url = request.getfixturevalue("db_url") if "db_url" in request.fixturenames else f"sqlite:///{tmp_path}/dm.db"
    generate_identity(tmp_path / "server-key")
    operator = generate_identity(tmp_path / "operator")
    ident = server_identity(tmp_path / "server-key", [tmp_path / "operator" / "device.enc.pub.pem"])
    web = build_server(url, admin_token="t", tick_interval=0.05,
                       agentless=AgentlessConfig(identity=ident, gets_per_message=8))
    thread = ServerThread(web).start()
    register_device(web.server.store, "simvault-dms", DEV, PASSWORD, SERVER_PASSWORD, auth_type="md5")
    yield web, thread, ident, operator
    thread.stop()
    web.server.store.close()


def client(thread, tree, **kw) -> StockClient:
    return StockClient(f"{thread.url}/dm", DEV, PASSWORD, tree, **kw)


def backup(web, c: StockClient, **params) -> dict:
    job = create_job_checked(web.server, DEV, "backup", "server", params=params or None, notify=False)
    c.session()
    return web.server.store.job(job["id"])


def comparable(tree: DMTree, drop: tuple[str, ...] = ()) -> dict:
    out = {}
    for uri, node in tree.walk():
        if uri == "." or any(uri == d or uri.startswith(d + "/") for d in drop):
            continue
        out[uri] = "node" if node.interior else (node.effective_format, node.data)
    return out


@pytest.mark.parametrize("features,strategy", [
    ({}, "tnds"),
    ({"tnds": False, "structdata": True}, "structdata"),
    ({"tnds": False}, "walk"),
    ({"tnds": False, "no_format": True}, "walk"),
])
def test_backup_by_each_strategy(rig, features, strategy) -> None:
    web, thread, ident, operator = rig
    tree = phone()
    job = backup(web, client(thread, tree, **features))
    assert job["state"] == "succeeded", job["reason"]
    assert f"strategy {strategy}" in job["reason"]
    assert "auto: no signing key registered" in job["reason"]
    [row] = web.server.store.backups(DEV)
    assert row["backup_id"] == job["backup_id"] and row["meta"]["strategy"] == strategy
    if strategy != "tnds":
        assert "fallback tnds: 406" in job["reason"]
    for who in (ident, operator):  # the server and the operator's key both open it
        decryptor = who.decryptor
        got = verify_archive(Archive.from_bytes(web.server.store.backup_archive(DEV, row["backup_id"])),
                             ident.trust, decryptor, device_id=DEV)
        assert comparable(got.tree) == comparable(tree, drop=("./DMAcc/srv/Secret",))
    refused = [(r["data"]["uri"], r["code"]) for r in web.server.store.results(job["id"])]
    # TNDS and StructData leave a hidden node out silently; the walk sees it listed and reports it
    assert refused == ([("./DMAcc/srv/Secret", 425)] if strategy == "walk" else [])


def test_restore_preview_apply_and_read_back(rig) -> None:
    web, thread, ident, _ = rig
    tree = phone()
    c = client(thread, tree, atomic="refuse")
    job = backup(web, c)
    bid = job["backup_id"]
    tree.replace("./Settings/S3", "999")
    tree.delete("./DMAcc/srv/Key")
    tree.add("./Settings/Junk", "x", format="chr")
    tree.replace("./Settings/Locked", "off")  # read-only to the server: the restore cannot undo it
    tree.replace("./DevDetail/FwV", "2.0.0")  # a firmware update since: the device's identity stays live
    tree.replace("./DMAcc/ours/AAuthName", "new-user")  # our own account: stays live
    preview = create_job_checked(web.server, DEV, "restore", "server", backup_id=bid,
                                 params={"dry_run": True}, notify=False)
    c.session()
    preview = web.server.store.job(preview["id"])
    assert preview["state"] == "succeeded", preview["reason"]
    assert "nothing applied" in preview["reason"]
    [diff] = [r["data"]["diff"] for r in web.server.store.results(preview["id"])]
    assert "./Settings/Junk" in diff and "./DMAcc/srv/Key" in diff and "./Settings/Locked" in diff
    assert "FwV" not in diff and "AAuthName" not in diff
    assert "kept live: ./DevInfo ./DevDetail ./DMAcc/ours" in preview["reason"]
    assert tree.find("./Settings/Junk") is not None  # nothing written

    restore = create_job_checked(web.server, DEV, "restore", "server", backup_id=bid, notify=False)
    c.session()
    restore = web.server.store.job(restore["id"])
    assert restore["state"] == "failed"  # one node refused: reported, the rest applied
    refused = [r["data"] for r in web.server.store.results(restore["id"]) if "uri" in r["data"]]
    assert [(r["uri"], r["command"], r["code"]) for r in refused] == [("./Settings/Locked", "Replace", 425)]
    assert tree.get("./DevDetail/FwV").value == "2.0.0" and tree.get("./DMAcc/ours/AAuthName").value == "new-user"
    assert tree.find("./Settings/Junk") is None and tree.get("./Settings/S3").value == "21"
    assert tree.get("./DMAcc/srv/Key").data == b"\x00\x01\xfe\xff"


@pytest.mark.parametrize("atomic", ["yes", "refuse", "ignore"])
def test_restore_with_each_atomic_behaviour(rig, atomic) -> None:
    web, thread, _, _ = rig
    tree = phone()
    c = client(thread, tree, atomic=atomic, tnds=False)
    bid = backup(web, c)["backup_id"]
    before = comparable(tree)
    tree.delete("./Settings")  # a whole subtree lost: Add, parents first
    tree.add("./Extra/A/B", "x", format="chr", create_parents=True)  # one grown: one Delete at its top
    tree.replace("./DMAcc/srv/Addr", "http://evil.example/dm")
    restore = create_job_checked(web.server, DEV, "restore", "server", backup_id=bid, notify=False)
    c.session()
    restore = web.server.store.job(restore["id"])
    assert restore["state"] == "succeeded", restore["reason"]
    assert "every changed node read back" in restore["reason"]
    assert ("in one Atomic" in restore["reason"]) == (atomic == "yes")
    assert comparable(tree) == before


def test_atomic_rollback_reports_every_refusal(rig) -> None:
    web, thread, _, _ = rig
    tree = phone()
    c = client(thread, tree)
    bid = backup(web, c)["backup_id"]
    tree.replace("./Settings/S1", "0")
    tree.replace("./Settings/Locked", "off")
    restore = create_job_checked(web.server, DEV, "restore", "server", backup_id=bid, notify=False)
    c.session()
    restore = web.server.store.job(restore["id"])
    assert restore["state"] == "failed" and "rolled the Atomic back" in restore["reason"]
    assert tree.get("./Settings/S1").value == "0"  # nothing applied
    refused = [r["data"] for r in web.server.store.results(restore["id"]) if "uri" in r["data"]]
    assert [(r["uri"], r["code"]) for r in refused] == [("./Settings/Locked", 425)]


def test_modes_and_job_checks(rig) -> None:
    web, thread, _, _ = rig
    with pytest.raises(UsageError, match="scope"):
        create_job_checked(web.server, DEV, "backup", "server", scope="./A/../B", notify=False)
    with pytest.raises(UsageError, match="mode"):
        create_job_checked(web.server, DEV, "backup", "server", params={"mode": "magic"}, notify=False)
    job = backup(web, client(thread, phone()), mode="agent")  # the BaR Exec answered 404: no fallback
    assert job["state"] == "failed" and "404" in job["reason"]
    job = backup(web, client(thread, phone()), mode="standard")
    assert job["state"] == "succeeded" and "auto" not in job["reason"]
    with pytest.raises(UsageError, match="read by the server"):
        create_job_checked(web.server, DEV, "restore", "server", backup_id=job["backup_id"],
                           params={"mode": "agent"}, notify=False)


def test_auto_falls_back_when_the_bar_exec_fails(rig, tmp_path) -> None:
    """A device registered with a signing key (it could be an agent): the BaR Exec goes first;
    answered 404 (no such node), the server reads the tree in the same session."""
    web, thread, _, _ = rig
    web.server.store.update_device(DEV, public_key=generate_identity(tmp_path / "dev").signer.public_point)
    c = client(thread, phone())
    job = backup(web, c)
    assert job["state"] == "succeeded", job["reason"]
    assert "auto: no BaR MO (its Exec answered 404)" in job["reason"] and "strategy tnds" in job["reason"]
    assert len(web.server.store.sessions(DEV)) == 1 and web.server.store.backups(DEV)


def test_an_agent_backup_names_its_strategy(tmp_path) -> None:
    from test_dm_fixtures import DMWorld
    world = DMWorld(tmp_path / "w", f"sqlite:///{tmp_path}/dm.db")
    try:
        phone = world.add_device("phone")  # simvault's agent: auto goes through its BaR MO
        job = world.wait_job(world.job(phone, "backup", "server")["id"])
        assert job["state"] == "succeeded" and job["reason"].endswith("strategy agent"), job["reason"]
        [row] = world.web.server.store.backups(phone.device_id)
        assert row["meta"]["strategy"] == "agent"
        with pytest.raises(UsageError, match="made by the device's agent"):
            create_job_checked(world.web.server, phone.device_id, "restore", "server", backup_id=row["backup_id"],
                               params={"dry_run": True}, notify=False)
    finally:
        world.close()


def _corrupt_results(msg: m.SyncMLMessage) -> m.SyncMLMessage:
    for cmd in msg.commands:
        if isinstance(cmd, m.Results):
            cmd.items = [m.Item(source=i.source, meta=m.Meta(format="node"), data="a//b") for i in cmd.items]
    return msg


def _drop_results(msg: m.SyncMLMessage) -> m.SyncMLMessage:
    msg.commands = [c for c in msg.commands if not isinstance(c, m.Results)]
    return msg


def _not_utf8(msg: m.SyncMLMessage) -> m.SyncMLMessage:
    """The TNDS sent as binary (Format b64) whose bytes are not UTF-8."""
    for cmd in msg.commands:
        if isinstance(cmd, m.Results):
            cmd.items = [m.Item(source=i.source, meta=m.Meta(format="b64", type=i.meta.type if i.meta else None),
                                data=b"<MgmtTree>\xff\xfe") for i in cmd.items]
    return msg


def _lying_size(msg: m.SyncMLMessage) -> m.SyncMLMessage:
    for cmd in msg.commands:
        if isinstance(cmd, m.Results) and cmd.items and cmd.items[0].meta and cmd.items[0].meta.size:
            cmd.items[0].meta.size += 1000
    return msg


@pytest.mark.parametrize("fault,message", [
    (_corrupt_results, "invalid node name"),
    (_drop_results, "no whole Results"),
    (_not_utf8, "not UTF-8"),
])
def test_bad_input_fails_the_job_and_stores_nothing(rig, fault, message) -> None:
    web, thread, _, _ = rig
    job = backup(web, client(thread, phone(), tnds=fault is _not_utf8, fault=fault))
    assert job["state"] == "failed" and message in job["reason"], job["reason"]
    assert web.server.store.backups(DEV) == []
    assert web.server.store.sessions(DEV)[0]["state"] == "ended"


def test_lying_large_object_size(rig) -> None:
    web, thread, _, _ = rig
    tree = phone()
    tree.add("./Settings/Big", "x" * 100_000, format="chr")  # above the server's MaxMsgSize
    job = backup(web, client(thread, tree, max_msg_size=4096, fault=_lying_size))
    assert job["state"] == "failed" and "Size" in job["reason"], job["reason"]
    assert web.server.store.backups(DEV) == []


def test_tree_over_the_cap(rig) -> None:
    web, thread, _, _ = rig
    [plugin] = [p for p in web.server.plugins if p.name == "agentless"]
    plugin.config.max_nodes = 10
    job = backup(web, client(thread, phone(), tnds=False))
    assert job["state"] == "failed" and "--agentless-max-nodes" in job["reason"]
    assert web.server.store.backups(DEV) == []


def test_client_that_stops_mid_walk(rig, monkeypatch) -> None:
    import host.dm.server.engine as engine
    web, thread, _, _ = rig
    create_job_checked(web.server, DEV, "backup", "server", params={"mode": "standard"}, notify=False)
    client(thread, phone(), tnds=False, stop_after=3).session()
    monkeypatch.setattr(engine, "SESSION_IDLE_TIMEOUT", 0.0)
    with web.server._lock:
        web.server._expire_idle_locked()
    [job] = web.server.store.jobs(DEV)
    assert job["state"] == "failed" and "nothing was stored" in job["reason"], job["reason"]
    assert web.server.store.backups(DEV) == []


def test_scope(rig) -> None:
    web, thread, ident, _ = rig
    tree = phone()
    job = create_job_checked(web.server, DEV, "backup", "server", scope="./Settings ./DevDetail", notify=False)
    client(thread, tree, tnds=False).session()
    job = web.server.store.job(job["id"])
    assert job["state"] == "succeeded", job["reason"]
    got = verify_archive(Archive.from_bytes(web.server.store.backup_archive(DEV, job["backup_id"])),
                         ident.trust, ident.decryptor, device_id=DEV)
    assert {u for u in comparable(got.tree)} == {u for u in comparable(tree) if u.startswith(("./Settings",
                                                                                               "./DevDetail"))}


def test_backup_and_restore_on_each_database(rig, db_url) -> None:  # noqa: F811 - fixture (sqlite, postgres)
    web, thread, _, _ = rig
    tree = phone()
    c = client(thread, tree, tnds=False, structdata=True)
    bid = backup(web, c)["backup_id"]
    tree.replace("./Settings/S2", "1")
    restore = create_job_checked(web.server, DEV, "restore", "server", backup_id=bid, notify=False)
    c.session()
    assert web.server.store.job(restore["id"])["state"] == "succeeded"
    assert tree.get("./Settings/S2").value == "14"


def test_no_server_key(tmp_path) -> None:
    web = build_server(f"sqlite:///{tmp_path}/dm.db", admin_token="t")
    thread = ServerThread(web).start()
    try:
        register_device(web.server.store, "simvault-dms", DEV, PASSWORD, SERVER_PASSWORD, auth_type="md5")
        job = backup(web, client(thread, phone()))
        assert job["state"] == "failed" and "--server-key" in job["reason"]
    finally:
        thread.stop()
        web.server.store.close()


def test_tnds_too_large_is_read_subtree_by_subtree(rig) -> None:
    web, thread, ident, _ = rig
    tree = phone()
    job = backup(web, client(thread, tree, tnds_limit=1500))  # the whole tree is refused (413), parts are not
    assert job["state"] == "succeeded", job["reason"]
    assert "strategy tnds" in job["reason"]
    got = verify_archive(Archive.from_bytes(web.server.store.backup_archive(DEV, job["backup_id"])),
                         ident.trust, ident.decryptor, device_id=DEV)
    assert comparable(got.tree) == comparable(tree, drop=("./DMAcc/srv/Secret",))


def test_wbxml_session(rig) -> None:
    web, thread, _, _ = rig
    tree = phone()
    c = client(thread, tree, wbxml=True, tnds=False)
    bid = backup(web, c)["backup_id"]
    tree.replace("./DMAcc/srv/Key", base64.b64encode(b"other").decode())
    job = create_job_checked(web.server, DEV, "restore", "server", backup_id=bid, notify=False)
    c.session()
    assert web.server.store.job(job["id"])["state"] == "succeeded"
    assert tree.get("./DMAcc/srv/Key").data == b"\x00\x01\xfe\xff"


def test_cli(tmp_path) -> None:
    """dm server --server-key/--recipient, dm backup-start --mode, dm restore-start --dry-run."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from test_dm_cli import _port, _wait_http
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, SIMVAULT_DM_ADMIN_TOKEN="cli-token-123", SIMVAULT_DM_PASSWORD=PASSWORD,
               SIMVAULT_DM_SERVER_PASSWORD=SERVER_PASSWORD, PYTHONPATH=str(root))
    dm = [sys.executable, "-m", "host.cli.dm", "dm"]
    port = _port()
    api = f"http://127.0.0.1:{port}"

    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(dm + list(args) + ["--api", api, "--json"], env=env, capture_output=True,
                                text=True, timeout=60, cwd=root)
        assert (result.returncode == 0) == ok, result.stderr
        return result

    generate_identity(tmp_path / "srv")
    generate_identity(tmp_path / "op")
    generate_identity(tmp_path / "dev")
    bad = subprocess.run(dm + ["server", "--recipient", str(tmp_path / "op" / "device.enc.pub.pem")], env=env,
                         capture_output=True, text=True, timeout=60, cwd=root)
    assert bad.returncode != 0 and "--server-key" in bad.stderr and "Traceback" not in bad.stderr
    server = subprocess.Popen(dm + ["server", "--listen", f"127.0.0.1:{port}", "--db", f"sqlite:///{tmp_path}/dm.db",
                                    "--server-key", str(tmp_path / "srv"),
                                    "--recipient", str(tmp_path / "op" / "device.enc.pub.pem")],
                              env=env, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_http(f"{api}/api/health")
        run("device-add", DEV, "--auth", "md5", "--public-key", str(tmp_path / "dev" / "device.sign.pub.pem"))
        assert "go with --target ds" in run("backup-start", DEV, "--mode", "refresh", ok=False).stderr
        job = json.loads(run("backup-start", DEV, "--mode", "standard").stdout)
        assert job["params"] == {"mode": "standard"}
        tree = phone()
        c = StockClient(f"{api}/dm", DEV, PASSWORD, tree)
        c.session()
        job = json.loads(run("job", str(job["id"])).stdout)
        assert job["state"] == "succeeded" and "strategy tnds" in job["reason"], job
        tree.replace("./Settings/S0", "5")
        preview = json.loads(run("restore-start", DEV, "--id", job["backup_id"], "--dry-run").stdout)
        c.session()
        text = subprocess.run(dm + ["job", str(preview["id"]), "--api", api], env=env, capture_output=True,
                              text=True, timeout=60, cwd=root).stdout
        assert "nothing applied" in text and "~ ./Settings/S0: value '5' -> '0'" in text, text
    finally:
        server.terminate()
        server.wait(timeout=15)



def test_restore_within_the_clients_max_msg_and_obj_size(rig) -> None:
    """A small client: the Atomic would not fit one message (applied one by one, said so), and a
    value above its MaxObjSize is not sent (reported for that node)."""
    web, thread, _, _ = rig
    tree = phone()
    tree.add("./Settings/Blob", "b" * 3000, format="chr")
    c = client(thread, tree, max_msg_size=2048, max_obj_size=2500)
    bid = backup(web, c)["backup_id"]
    for i in range(12):
        tree.replace(f"./Settings/S{i}", "-1")
    tree.replace("./Settings/Blob", "small")
    restore = create_job_checked(web.server, DEV, "restore", "server", backup_id=bid, notify=False)
    c.session()
    restore = web.server.store.job(restore["id"])
    assert restore["state"] == "failed" and "too many changes for one Atomic" in restore["reason"], restore["reason"]
    refused = [r["data"] for r in web.server.store.results(restore["id"]) if "uri" in r["data"]]
    assert [(r["uri"], r["why"]) for r in refused] == [
        ("./Settings/Blob", "value of 3000 bytes exceeds the device's MaxObjSize 2500")]
    assert [tree.get(f"./Settings/S{i}").value for i in range(12)] == [str(i * 7) for i in range(12)]
    assert tree.get("./Settings/Blob").value == "small"
