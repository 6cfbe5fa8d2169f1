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
from host.dm.agent.core import AgentConfig, DMAgent
from host.dm.agent.tree import PRESERVED_ON_RESTORE
from host.dm.server.backup_plugin import BackupPlugin
from host.dm.agent.handlers import register_defaults
from host.dm.server.ds_jobs import (
    DsBackupRecorder,
    command_backup_via_ds,
    command_restore_via_ds,
    ds_backups,
)
from host.dm.server.registry import register_device
from host.dm.server.webapp import ServerThread, build_server
from host.ds.client import DsAccount, DsClient
from host.ds.server import run_server_in_thread
from host.ds.store import DsStore
from host.backup.keys import generate_identity
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
    register_defaults()
    ds_store = DsStore(f"sqlite:///{tmp_path / 'ds.db'}")
    ds_store.add_user("phone", DS_PW)
    with run_server_in_thread(ds_store) as ds:
        web = build_server(f"sqlite:///{tmp_path / 'dm.db'}", plugins=[DsBackupRecorder(), BackupPlugin()],
                           tick_interval=0.2, admin_token="t")
        server = ServerThread(web).start()
        store = web.server.store
        tree = generate_tree(100_000, seed=5)
        device_id = device_id_of(tree)
        tree_path = tmp_path / "phone.tnds.xml"
        tree_path.write_bytes(write_tnds(tree))
        identity = generate_identity(tmp_path / "keys")
        register_device(store, "simvault-dms", device_id, DEVICE_PW, SERVER_PW,
                        public_key_pem=(tmp_path / "keys" / "device.sign.pub.pem").read_bytes(),
                        enc_key_pem=(tmp_path / "keys" / "device.enc.pub.pem").read_bytes())
        agent = DMAgent(AgentConfig(tree=tree_path, server_url=f"{server.url}/dm", device_id=device_id,
                                    key_dir=tmp_path / "keys", password=DEVICE_PW, server_password=SERVER_PW),
                        identity=identity).start()
        try:
            yield {"ds": ds, "ds_store": ds_store, "store": store, "agent": agent, "device_id": device_id,
                   "server_url": server.url, "tmp_path": tmp_path}
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
    assert rig["ds_store"].sessions(1)[0].mode in (200, 201)  # the default two-way (508 -> 201 the first time)
    assert_no_cleartext_ds_password(rig, job["id"])

    with agent.tree.lock:  # damage the tree, but not the DM account (the agent must still reach the server)
        damage(agent.tree.tree)
    assert comparable(agent.tree.tree) != original

    job = run_job(rig, command_restore_via_ds(store, device_id))  # the DS account stored with the backup job
    assert job["state"] == "succeeded", job
    assert store.results(job["id"])[0]["data"]["id"] == backup_id
    assert comparable(agent.tree.tree) == original
    assert comparable(_reload(agent)) == original  # saved to the tree file too


def assert_no_cleartext_ds_password(rig, job_id: int) -> None:
    """The DS password is in the Exec only: not in the job, its API/CLI output, the database or the audit."""
    import json
    import os
    import stat
    import urllib.request

    store = rig["store"]
    job = store.job(job_id)
    assert "account=" in job["params"]["data"] and DS_PW not in json.dumps(job, default=str)
    req = urllib.request.Request(f"{rig['server_url']}/api/jobs/{job_id}", headers={"Authorization": "Bearer t"})
    with urllib.request.urlopen(req, timeout=10) as resp:  # what `simvault dm job ID --json` prints
        api = resp.read().decode()
    assert str(job_id) in api and "account" in api and DS_PW not in api
    db_files = list(rig["tmp_path"].glob("dm.db*"))
    assert db_files and all(DS_PW.encode() not in f.read_bytes() for f in db_files if not f.name.endswith(".key"))
    key = rig["tmp_path"] / "dm.db.secret.key"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600 and len(key.read_bytes()) == 32


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


def test_backup_via_ds_waits_for_the_archive_lock(rig):
    """host.archive's zstd compressor is shared and not thread-safe: BackupViaDS makes its
    archive under host.dm.agent.bar.ARCHIVE_LOCK, like the agent's other backups."""
    import threading

    from host.dm.agent.bar import ARCHIVE_LOCK
    store, device_id, ds = rig["store"], rig["device_id"], rig["ds"]
    job = command_backup_via_ds(store, device_id, ds.url, "phone", DS_PW)
    result: dict = {}
    with ARCHIVE_LOCK:
        runner = threading.Thread(target=lambda: result.update(run_job(rig, job)))
        runner.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and store.job(job["id"])["state"] != "running":
            time.sleep(0.05)
        time.sleep(1.0)  # the agent's worker is now waiting for the lock
        assert store.job(job["id"])["state"] == "running" and rig["ds_store"].sessions(5) == []
    runner.join(30)
    assert result["state"] == "succeeded" and len(rig["ds_store"].sessions(5)) == 1


def test_admin_api_ds_account_then_backup_job_keeps_the_password_out(rig):
    """The admin path: POST /api/ds-accounts (password encrypted at rest), then POST /api/jobs
    naming the account; a job carrying a password is refused; nothing echoes the password."""
    import json
    import urllib.error
    import urllib.request

    def api(method: str, path: str, body: dict | None = None) -> tuple[int, str]:
        req = urllib.request.Request(f"{rig['server_url']}{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": "Bearer t", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    ds, device_id = rig["ds"], rig["device_id"]
    status, text = api("POST", "/api/ds-accounts", {"name": "phone-ds", "url": ds.url, "user": "phone",
                                                      "password": DS_PW})
    assert status == 201 and DS_PW not in text
    status, text = api("GET", "/api/ds-accounts")
    assert status == 200 and "phone-ds" in text and DS_PW not in text
    data = f"url={ds.url};user=phone;account=phone-ds"
    status, text = api("POST", "/api/jobs", {"device": device_id, "kind": "backup_via_ds", "target": "ds",
                                              "params": {"data": data + f";password={DS_PW}"}})
    assert status == 400 and "never a password" in text and DS_PW not in text
    status, text = api("POST", "/api/jobs", {"device": device_id, "kind": "backup_via_ds", "target": "ds",
                                              "params": {"data": data}})
    assert status == 201, text
    job = run_job(rig, json.loads(text))
    assert job["state"] == "succeeded", job
    assert_no_cleartext_ds_password(rig, job["id"])
