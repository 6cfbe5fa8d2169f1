"""Agentless backup and restore of a stock client's tree: libdmclient's testdmclient, unmodified.

The server reads testdmclient's tree with standard DM commands (it answers ?list= with 406:
the node-by-node walk), stores the server-signed archive, and restores a changed DM account
with Add/Replace/Delete plus a read-back; what the client refuses is reported per node.
Real HTTP, real database, the real client (tests/libdmclient_peer.py).
"""
from __future__ import annotations

import pytest

from host.archive import Archive, verify_archive
from host.backup.keys import generate_identity
from host.dm.server.agentless.config import AgentlessConfig, server_identity
from host.dm.server.webapp import create_job_checked
from libdmclient_peer import DEV_ID, StockDevice, testdmclient  # noqa: F401 - fixture
from test_dm_fixtures import DMWorld, db_url, pg_cluster  # noqa: F401 - fixtures

pytestmark = pytest.mark.timeout(180)

OTHER = "./DMAcc/other"  # a second DM account on the device (another server's): ours stays live


@pytest.fixture
def rig(tmp_path, db_url, testdmclient):  # noqa: F811
    generate_identity(tmp_path / "server-key")
    generate_identity(tmp_path / "operator")
    ident = server_identity(tmp_path / "server-key", [tmp_path / "operator" / "device.enc.pub.pem"])
    world = DMWorld(tmp_path / "world", db_url, server_options={
        "paths": ["/dm", "/funambol/dm"], "agentless": AgentlessConfig(identity=ident)})
    dev = StockDevice(testdmclient, tmp_path / "dmclient", address=f"{world.url}/funambol/dm", auth_type="DIGEST")
    dev.edit_account(values={f"{OTHER}/ServerID": "other-dms", f"{OTHER}/Name": "the other server",
                             f"{OTHER}/AppAddr/url/Addr": "http://127.0.0.1:9/other",
                             f"{OTHER}/Locked": "as provisioned"},
                     acl={f"{OTHER}/Locked": "Get=*"},  # the server may read it, not write it
                     nodes={OTHER: "Add=*&Delete=*&Get=*&Replace=*"})
    try:
        yield world, dev, ident
    finally:
        world.close()


def run_job(world: DMWorld, dev: StockDevice, kind: str, *, wbxml: bool = False,  # type: ignore[no-untyped-def]
            **kw) -> dict:
    job = create_job_checked(world.web.server, DEV_ID, kind, "server", notify=False, **kw)
    run = dev.session(wbxml=wbxml)  # the device's next session (a stock client is not notified here)
    assert run.returncode == 0, run.log[-3000:]
    return world.web.server.store.job(job["id"])


def archive_tree(world: DMWorld, ident, backup_id: str):  # type: ignore[no-untyped-def]
    raw = world.web.server.store.backup_archive(DEV_ID, backup_id)
    return verify_archive(Archive.from_bytes(raw), ident.trust, ident.decryptor, device_id=DEV_ID).tree


@pytest.mark.parametrize("mode,wbxml", [("standard", False), ("auto", True)], ids=["standard-xml", "auto-wbxml"])
def test_backup_of_testdmclients_tree(rig, tmp_path, mode, wbxml) -> None:
    world, dev, ident = rig
    extra = {}
    if mode == "auto":  # registered with a signing key, as if it had an agent: the BaR Exec goes first
        generate_identity(tmp_path / "as-agent")
        extra["public_key_pem"] = (tmp_path / "as-agent" / "device.sign.pub.pem").read_bytes()
    dev.register(world.web.server.store, auth="md5", **extra)
    job = run_job(world, dev, "backup", wbxml=wbxml, params={"mode": mode})
    assert job["state"] == "succeeded", job["reason"]
    assert "strategy walk" in job["reason"]  # ?list= answered 406: node by node
    if mode == "auto":
        assert "404" in job["reason"]  # no ./Vendor/simvault/BaR on this client
    [row] = world.web.server.store.backups(DEV_ID)
    assert row["meta"]["strategy"] == "walk"
    tree = archive_tree(world, ident, row["backup_id"])
    assert tree.get("./DevInfo/Man").value == "test manufacturer"
    assert tree.get("./DevInfo/Ext/Intel/test2").value == "data of test2"
    assert tree.get("./DevDetail/URI/MaxDepth").value == "0"
    assert tree.get("./DMAcc/simvault/AppAddr/url/Addr").value == f"{world.url}/funambol/dm"
    assert tree.get(f"{OTHER}/Locked").value == "as provisioned"
    assert tree.find("./test") is not None and tree.find("./Vendor/memory") is not None
    # what the client hides is not in the backup, and each hidden node is a result row
    assert tree.find("./DMAcc/simvault/AppAuth/toserver/AAuthSecret") is None
    hidden = {r["data"]["uri"]: r["code"] for r in world.web.server.store.results(job["id"]) if "uri" in r["data"]}
    assert hidden["./DMAcc/simvault/AppAuth/toserver/AAuthSecret"] == 425
    assert hidden["./Inbox"] == 425


def test_restore_of_a_changed_account_with_per_node_refusals(rig) -> None:
    world, dev, ident = rig
    dev.register(world.web.server.store, auth="md5")
    backup = run_job(world, dev, "backup", params={"mode": "standard"})
    assert backup["state"] == "succeeded", backup["reason"]
    bid = backup["backup_id"]
    # the device's account of the other server changed since: a value, a lost leaf, a new leaf,
    # and a leaf the server may not write
    dev.edit_account(values={f"{OTHER}/Name": "tampered", f"{OTHER}/Locked": "changed locally",
                             f"{OTHER}/Junk": "x"}, remove=(f"{OTHER}/AppAddr/url/Addr",))

    preview = run_job(world, dev, "restore", backup_id=bid, params={"dry_run": True})
    assert preview["state"] == "succeeded", preview["reason"]
    [diff] = [r["data"]["diff"] for r in world.web.server.store.results(preview["id"]) if "diff" in r["data"]]
    for uri in (f"{OTHER}/Name", f"{OTHER}/Locked", f"{OTHER}/Junk", f"{OTHER}/AppAddr/url/Addr"):
        assert uri in diff
    assert dev.account_value(f"{OTHER}/Name") == "tampered"  # nothing written

    restore = run_job(world, dev, "restore", backup_id=bid)
    assert restore["state"] == "failed" and "restored only in part" in restore["reason"], restore["reason"]
    refused = {(r["data"]["uri"], r["data"]["command"]): r["code"]
               for r in world.web.server.store.results(restore["id"]) if "uri" in r["data"]}
    assert refused == {(f"{OTHER}/Locked", "Replace"): 425}  # its ACL: Get only; reported, not dropped
    assert "1 of 4 changes applied" not in restore["reason"] and "3 of 4" in restore["reason"], restore["reason"]
    assert f"{OTHER}/Junk" not in dev.account.read_text()  # deleted
    assert dev.account_value(f"{OTHER}/Name") == "the other server"
    assert dev.account_value(f"{OTHER}/AppAddr/url/Addr") == "http://127.0.0.1:9/other"
    assert dev.account_value(f"{OTHER}/Locked") == "changed locally"
    # our own account (the session's credentials and nonces) stays live
    assert "./DMAcc/simvault" in restore["reason"]
