"""Use case 3 end to end: the DM server commands a backup through Data Sync, the
device agent syncs an archive of its live tree to simvault's DS server, the
result (Generic Alert 1226) reaches the DM server, which records where the
backup lives and later commands RestoreViaDS. All over real HTTP on loopback,
real SQLite databases, the real agent and servers."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from host.archive.build import device_id_of
from host.dm.agent import AgentConfig, DMAgent
from host.dm.agent_tree import PRESERVED_ON_RESTORE
from host.dm.backup_plugin import BackupPlugin
from host.dm.mo_ds import (
    DsBackupRecorder,
    command_backup_via_ds,
    command_restore_via_ds,
    ds_backups,
    register_agent_handlers,
)
from host.dm.registry import register_device
from host.dm.webapp import ServerThread, build_server
from host.ds.client import DsAccount, DsClient
from host.ds.server import run_server_in_thread
from host.ds.store import DsStore
from host.keys import generate_identity
from host.tree.canonical import canonical_bytes
from host.tree.generate import generate_tree
from host.tree.tnds import write_tnds

DEVICE_PW, SERVER_PW, DS_PW = "device-pw-1", "server-pw-1", "ds-pw-123"


def comparable(tree) -> bytes:
    """The tree without the parts a restore keeps from the live tree (Backup MO, DM account)."""
    work = tree.copy()
    for uri in PRESERVED_ON_RESTORE:
        if work.find(uri) is not None:
            work.delete(uri)
    return canonical_bytes(work)


@pytest.fixture
def rig(tmp_path: Path):
    register_agent_handlers()
    ds_store = DsStore(f"sqlite:///{tmp_path / 'ds.db'}")
    ds_store.add_user("phone", DS_PW)
    with run_server_in_thread(ds_store) as ds:
        web = build_server(f"sqlite:///{tmp_path / 'dm.db'}", plugins=[DsBackupRecorder(), BackupPlugin()],
                           tick_interval=0.2)
        server = ServerThread(web).start()
        store = web.server.store
        tree = generate_tree(100_000, seed=5)
        device_id = device_id_of(tree)
        tree_path = tmp_path / "phone.tnds.xml"
        tree_path.write_bytes(write_tnds(tree))
        identity = generate_identity(tmp_path / "keys")
        register_device(store, "simvault-dms", device_id, DEVICE_PW, SERVER_PW,
                        public_key_pem=(tmp_path / "keys" / "device.sign.pub.pem").read_bytes())
        agent = DMAgent(AgentConfig(tree=tree_path, server_url=f"{server.url}/dm", device_id=device_id,
                                    key_dir=tmp_path / "keys", password=DEVICE_PW, server_password=SERVER_PW),
                        identity=identity).start()
        try:
            yield {"ds": ds, "ds_store": ds_store, "store": store, "agent": agent, "device_id": device_id}
        finally:
            agent.stop()
            server.stop()


def run_job(rig, job: dict, timeout: float = 30.0) -> dict:
    """Let the device pick up the job (client session), run it and report; return the final job."""
    store, agent = rig["store"], rig["agent"]
    agent.sync_now()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = store.job(job["id"])
        if current and current["state"] in ("succeeded", "failed"):
            return current
        if agent.wait_idle(0.2):
            agent.sync_now()  # deliver a pending report if the last session could not
        time.sleep(0.1)
    pytest.fail(f"job {job['id']} did not finish: {store.job(job['id'])}")


def test_dm_commands_backup_via_ds_then_restore(rig):
    store, agent, device_id, ds = rig["store"], rig["agent"], rig["device_id"], rig["ds"]
    original = comparable(agent.tree.tree)

    job = run_job(rig, command_backup_via_ds(store, device_id, ds.url, "phone", DS_PW))
    assert job["state"] == "succeeded", job
    result = store.results(job["id"])[0]
    data = result["data"]
    assert result["code"] == 200 and data["location"] == "ds" and data["ds-status"] == "200"
    assert int(data["items"]) == 1 and int(data["bytes"]) > int(data["size"]) > 1000
    backup_id = data["id"]
    records = ds_backups(store, device_id)
    assert [(r["backup_id"], r["url"], r["datastore"], r["username"]) for r in records] == \
        [(backup_id, ds.url, "backup", "phone")]
    assert agent.tree.value(f"./Vendor/simvault/BaR/Backups/{backup_id}/Location") == "ds"
    assert rig["ds_store"].sessions(1)[0].mode == 203

    with agent.tree.lock:  # damage the tree, but not the DM account (the agent must still reach the server)
        damage(agent.tree.tree)
    assert comparable(agent.tree.tree) != original

    job = run_job(rig, command_restore_via_ds(store, device_id, DS_PW))
    assert job["state"] == "succeeded", job
    assert store.results(job["id"])[0]["data"]["id"] == backup_id
    assert comparable(agent.tree.tree) == original
    assert comparable(_reload(agent)) == original  # saved to the tree file too


def damage(tree) -> None:
    for n, (uri, node) in enumerate(list(tree.walk())):
        if n % 3 == 0 and not node.interior and node.format == "chr" \
                and not uri.startswith(PRESERVED_ON_RESTORE) and uri != "./DevInfo/DevId":
            node.value = "damaged"


def _reload(agent):
    from host.tree.tnds import read_tnds
    return read_tnds(Path(agent.config.tree).read_bytes())


def test_failed_ds_backup_reports_failure_and_keeps_previous(rig):
    store, agent, device_id, ds = rig["store"], rig["agent"], rig["device_id"], rig["ds"]
    ok = run_job(rig, command_backup_via_ds(store, device_id, ds.url, "phone", DS_PW))
    assert ok["state"] == "succeeded"
    previous = DsClient(DsAccount(url=ds.url, username="phone", password=DS_PW, device_id="probe")).restore()

    bad = run_job(rig, command_backup_via_ds(store, device_id, ds.url, "phone", "wrong-password"))
    assert bad["state"] == "failed"
    data = store.results(bad["id"])[0]["data"]
    assert data["code"] == "500" and data["ds-status"] == "401" and "credentials" in data["message"]

    gone = run_job(rig, command_backup_via_ds(store, device_id, "http://127.0.0.1:9/sync", "phone", DS_PW))
    assert gone["state"] == "failed"
    assert "unreachable" in store.results(gone["id"])[0]["data"]["message"]

    assert len(ds_backups(store, device_id)) == 1  # failures are not recorded as backups
    again = DsClient(DsAccount(url=ds.url, username="phone", password=DS_PW, device_id="probe")).restore()
    assert again.archive == previous.archive
    assert agent.tree.value("./Vendor/simvault/BaR/LastResult/Code") == "500"


def test_failed_restore_via_ds_leaves_the_tree_untouched(rig):
    store, agent, device_id, ds = rig["store"], rig["agent"], rig["device_id"], rig["ds"]
    assert run_job(rig, command_backup_via_ds(store, device_id, ds.url, "phone", DS_PW))["state"] == "succeeded"
    with agent.tree.lock:
        damage(agent.tree.tree)
    before = comparable(agent.tree.tree)
    job = run_job(rig, command_restore_via_ds(store, device_id, DS_PW, backup_id="00" * 16, url=ds.url,
                                              user="phone"))
    assert job["state"] == "failed"
    data = store.results(job["id"])[0]["data"]
    assert data["code"] == "500" and data["ds-status"] == "404" and "has no backup" in data["message"]
    assert comparable(agent.tree.tree) == before and comparable(_reload(agent)) == before
