"""The `simvault dm` commands as an operator runs them: separate processes, real HTTP."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from host.backup.keys import generate_identity
from test_dm_fixtures import PHONE_TREE, tree_with_id

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parent.parent
DEVICE = "IMEI:351234567890123"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not come up")


def test_operator_flow_with_the_cli(tmp_path) -> None:
    env = dict(os.environ, SIMVAULT_DM_ADMIN_TOKEN="cli-token-123", SIMVAULT_DM_PASSWORD="dev-password-1",
               SIMVAULT_DM_SERVER_PASSWORD="srv-password-1", PYTHONPATH=str(ROOT))
    port, agent_port = _port(), _port()
    api = f"http://127.0.0.1:{port}"
    dm = [sys.executable, "-m", "host.cli.dm", "dm"]

    def run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(dm + list(args) + ["--api", api, "--json"], env=env, capture_output=True, text=True,
                                timeout=60, cwd=ROOT)
        assert (result.returncode == 0) == ok, result.stderr
        return result

    tree = tmp_path / "tree.xml"
    tree.write_bytes(tree_with_id(PHONE_TREE.read_bytes(), DEVICE))
    generate_identity(tmp_path / "keys")
    server = subprocess.Popen(dm + ["server", "--listen", f"127.0.0.1:{port}", "--db", f"sqlite:///{tmp_path}/dm.db"],
                              env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    agent = None
    try:
        _wait_http(f"{api}/api/health")
        run("device-add", DEVICE, "--public-key", str(tmp_path / "keys" / "device.sign.pub.pem"))
        agent = subprocess.Popen(dm + ["agent", "--tree", str(tree), "--server", f"{api}/dm", "--device-id", DEVICE,
                                       "--key", str(tmp_path / "keys"), "--listen", f"127.0.0.1:{agent_port}"],
                                 env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_http(f"http://127.0.0.1:{agent_port}/control/status")
        deadline = time.monotonic() + 20
        while not json.loads(run("devices").stdout)[0]["notify_url"] and time.monotonic() < deadline:
            time.sleep(0.2)
        job = json.loads(run("backup-start", DEVICE, "--target", "server", "--wait", "30").stdout)
        assert job["state"] == "succeeded", job
        [backup] = [b for b in json.loads(run("backups", "--device", DEVICE).stdout) if b["location"] == "server"]
        job = json.loads(run("restore-start", DEVICE, "--id", backup["backup_id"], "--source", "server",
                             "--wait", "30").stdout)
        assert job["state"] == "succeeded", job
        detail = json.loads(run("job", str(job["id"])).stdout)
        assert detail["results"][0]["data"]["id"] == backup["backup_id"]
        # use case 2 from the device's side: the user asks, the server accepts
        control = ["--control", f"http://127.0.0.1:{agent_port}"]
        asked = subprocess.run(dm + ["agent", "backup-now", *control], env=env, cwd=ROOT, check=True,
                               capture_output=True, text=True, timeout=30)
        assert asked.stdout == "agent: backup request queued ('simvault dm agent status' shows its sessions)\n"
        status = subprocess.run(dm + ["agent", "status", *control], env=env, cwd=ROOT, check=True,
                                capture_output=True, text=True, timeout=30).stdout
        assert status.startswith(f"agent for {DEVICE}: ") and "  ok  " in status, status
        status = subprocess.run(dm + ["agent", "status", *control, "--json"], env=env, cwd=ROOT, check=True,
                                capture_output=True, text=True, timeout=30).stdout
        assert json.loads(status)["device"] == DEVICE and json.loads(status)["sessions"][0]["ok"] is True
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            jobs = json.loads(run("jobs", "--device", DEVICE).stdout)
            if len(jobs) == 3 and jobs[0]["state"] == "succeeded":
                break
            time.sleep(0.2)
        assert jobs[0]["origin"] == "device:user" and jobs[0]["state"] == "succeeded", jobs
        # errors are one line, exit code non-zero
        bad = run("restore-start", DEVICE, "--id", "00" * 16, ok=False)
        assert "not stored on the server" in bad.stderr and "Traceback" not in bad.stderr
    finally:
        for proc in (agent, server):
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
    assert server.returncode == 0
