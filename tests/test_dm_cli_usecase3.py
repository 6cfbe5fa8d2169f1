"""Use case 3 the way the README runs it, every step a separate `simvault dm` process: a DS
account (password from $SIMVAULT_DS_PASSWORD, stored encrypted, never printed), BackupViaDS and
RestoreViaDS jobs from backup-start/restore-start, the DS backup in `dm backups`; then the server
and the agent stop promptly on SIGTERM, even with a client that never finishes its request."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from host.ds.server import run_server_in_thread
from host.ds.store import DsStore
from host.backup.keys import generate_identity
from test_dm_cli import _port, _wait_http
from test_dm_fixtures import PHONE_TREE, tree_with_id

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parent.parent
DEVICE = "IMEI:351234567890777"
DS_PW = "ds-secret-password-9"


def _stop_time(proc: subprocess.Popen) -> float:
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    return time.monotonic() - start


def test_use_case_3_through_the_cli_then_prompt_shutdown(tmp_path) -> None:
    env = dict(os.environ, SIMVAULT_DM_ADMIN_TOKEN="cli-token-456", SIMVAULT_DM_PASSWORD="dev-password-1",
               SIMVAULT_DM_SERVER_PASSWORD="srv-password-1", PYTHONPATH=str(ROOT))
    env.pop("SIMVAULT_DS_PASSWORD", None)
    port, agent_port = _port(), _port()
    api = f"http://127.0.0.1:{port}"
    dm = [sys.executable, "-m", "host.cli.dm", "dm"]

    def run(*args: str, ok: bool = True, extra_env: dict | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run(dm + list(args) + ["--api", api], env={**env, **(extra_env or {})},
                                capture_output=True, text=True, timeout=60, cwd=ROOT, stdin=subprocess.DEVNULL)
        assert (result.returncode == 0) == ok, result.stderr
        assert DS_PW not in result.stdout + result.stderr
        return result

    tree = tmp_path / "tree.xml"
    tree.write_bytes(tree_with_id(PHONE_TREE.read_bytes(), DEVICE))
    generate_identity(tmp_path / "keys")
    ds_store = DsStore(f"sqlite:///{tmp_path / 'ds.db'}")
    ds_store.add_user("phone1", DS_PW)
    server = agent = None
    with run_server_in_thread(ds_store) as ds:
        try:
            server = subprocess.Popen(dm + ["server", "--listen", f"127.0.0.1:{port}", "--db",
                                            f"sqlite:///{tmp_path}/dm.db"], env=env, cwd=ROOT,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            _wait_http(f"{api}/api/health")
            run("device-add", DEVICE, "--public-key", str(tmp_path / "keys" / "device.sign.pub.pem"),
                "--enc-key", str(tmp_path / "keys" / "device.enc.pub.pem"))
            agent = subprocess.Popen(dm + ["agent", "--tree", str(tree), "--server", f"{api}/dm", "--device-id",
                                           DEVICE, "--key", str(tmp_path / "keys"), "--listen",
                                           f"127.0.0.1:{agent_port}"],
                                     env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            _wait_http(f"http://127.0.0.1:{agent_port}/control/status")

            # no password in the environment and no terminal: a one-line error naming the variable
            bad = run("ds-account", "add", "phone-ds", "--url", ds.url, "--user", "phone1", ok=False)
            assert bad.stderr.count("\n") == 1 and "$SIMVAULT_DS_PASSWORD" in bad.stderr
            added = run("ds-account", "add", "phone-ds", "--url", ds.url, "--user", "phone1",
                        extra_env={"SIMVAULT_DS_PASSWORD": DS_PW})
            assert "password stored encrypted" in added.stdout
            listed = run("ds-account", "list")
            assert listed.stdout.split("\n")[1].split()[:3] == ["phone-ds", ds.url, "phone1"]
            assert json.loads(run("ds-account", "list", "--json").stdout)[0]["username"] == "phone1"
            missing = run("backup-start", DEVICE, "--target", "ds", ok=False)
            assert "--ds-account" in missing.stderr

            job = run("backup-start", DEVICE, "--target", "ds", "--ds-account", "phone-ds", "--wait", "30").stdout
            assert job.splitlines()[0].endswith("backup_via_ds ds for " + DEVICE + " -> succeeded"), job
            [backup] = json.loads(run("backups", "--device", DEVICE, "--json").stdout)
            assert backup["location"] == "ds" and backup["url"] == ds.url and backup["size"] > 0
            text = run("backups").stdout
            assert f"{DEVICE}  ds" in text and backup["backup_id"] in text and f"phone1@{ds.url}#backup" in text
            assert len(ds_store.sessions(5)) == 1

            job = run("restore-start", DEVICE, "--source", "ds", "--ds-account", "phone-ds",
                      "--id", backup["backup_id"], "--wait", "30").stdout
            assert "restore_via_ds ds" in job and "-> succeeded" in job and backup["backup_id"] in job, job
            assert len(ds_store.sessions(5)) == 2  # the archive came back through DS

            # a client that never finishes its request does not hold the server up
            hung = socket.create_connection(("127.0.0.1", port))
            hung.sendall(b"POST /dm HTTP/1.1\r\nHost: x\r\nContent-Type: application/vnd.syncml.dm+xml\r\n"
                         b"Content-Length: 500\r\n\r\n<SyncML>")
            time.sleep(0.5)
            assert _stop_time(agent) < 1.0 and agent.returncode == 0, agent.stderr.read()
            assert _stop_time(server) < 1.5 and server.returncode == 0, server.stderr.read()
            hung.close()
        finally:
            for proc in (agent, server):
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait()
