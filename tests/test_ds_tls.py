"""simvault's DS server over TLS: the library and CLI client check its certificate against a
CA made in the test (--ca-file), refuse a server they cannot verify with a clear error, and use
case 3 runs with both the DM and the DS server on https (the agent's one trust file)."""
from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from host import tls
from host.backup.keys import generate_identity
from host.backup.ops import backup_tree, write_archive_file
from host.dm.server.ds_jobs import command_backup_via_ds, command_restore_via_ds
from host.ds.client import DsAccount, DsClient
from host.ds.errors import DsTransportError
from host.ds.server import run_server_in_thread
from host.ds.state import AnchorStore
from host.ds.store import DsStore
from host.tree.generate import generate_tree
from test_dm_cli import _port
from test_dm_tls import make_ca, tls_world  # noqa: F401 - the fixture

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parent.parent
PW = "ds-tls-password"


@pytest.fixture
def https_ds(tmp_path):
    ca, cert, key = make_ca(tmp_path / "ds-pki", "DS test CA")
    store = DsStore(f"sqlite:///{tmp_path / 'ds.db'}")
    store.add_user("phone", PW)
    with run_server_in_thread(store, ssl_context=tls.server_context(cert, key)) as srv:
        yield srv, store, ca
    store.close()


def test_ds_client_backs_up_and_restores_over_https(https_ds):
    srv, store, ca = https_ds
    assert srv.url.startswith("https://")
    account = DsAccount(url=srv.url, username="phone", password=PW, device_id="dev-tls", ca_file=ca)
    DsClient(account, AnchorStore(None)).backup(b"archive over tls", "01")
    assert DsClient(account, AnchorStore(None)).restore().archive == b"archive over tls"


@pytest.mark.parametrize("which", ["no CA", "another CA"])
def test_ds_client_refuses_a_server_it_cannot_verify(https_ds, tmp_path, which):
    srv, store, _ = https_ds
    other = None if which == "no CA" else make_ca(tmp_path / "other", "someone else's CA")[0]
    account = DsAccount(url=srv.url, username="phone", password=PW, device_id="dev-x", ca_file=other)
    with pytest.raises(DsTransportError, match=r"certificate is not trusted .*--ca-file"):
        DsClient(account, AnchorStore(None)).backup(b"x", "01")
    assert store.sessions(5) == []  # nothing reached the server's sessions


def test_plain_http_on_the_tls_port_gets_nothing(https_ds):
    srv, _, _ = https_ds
    with pytest.raises(OSError):
        urllib.request.urlopen(srv.url.replace("https://", "http://"), timeout=5).read()


def test_ds_cli_server_push_pull_over_https(tmp_path):
    ca, cert, key = make_ca(tmp_path / "pki")
    db = f"sqlite:///{tmp_path / 'srv.db'}"
    env = {**os.environ, "SIMVAULT_DS_PASSWORD": PW, "PYTHONPATH": str(ROOT)}
    ds = [sys.executable, "-m", "host.cli", "ds"]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(ds + list(args), env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)

    assert run("user", "add", "phone", "--db", db).returncode == 0
    half = run("server", "--db", db, "--tls-key", str(key))
    assert half.returncode != 0 and "--tls-cert and --tls-key go together" in half.stderr
    port = _port()
    server = subprocess.Popen(ds + ["server", "--listen", f"127.0.0.1:{port}", "--db", db, "--tls-cert", str(cert),
                                    "--tls-key", str(key)], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = f"https://127.0.0.1:{port}/sync"
        assert url in server.stdout.readline()
        identity = generate_identity(tmp_path / "keys")
        archive = write_archive_file(tmp_path, backup_tree(generate_tree(20_000, seed=3), identity))
        common = ["--url", url, "--user", "phone", "--state", str(tmp_path / "state.json")]
        refused = run("push", str(archive), *common)
        assert refused.returncode != 0 and "certificate is not trusted" in refused.stderr \
            and "--ca-file" in refused.stderr and "Traceback" not in refused.stderr
        pushed = run("push", str(archive), *common, "--ca-file", str(ca))
        assert pushed.returncode == 0, pushed.stderr
        out = tmp_path / "pulled.svarch"
        pulled = run("pull", str(out), *common, "--ca-file", str(ca))
        assert pulled.returncode == 0, pulled.stderr
        assert out.read_bytes() == archive.read_bytes()
    finally:
        server.terminate()
        server.wait(10)


def test_use_case_3_with_dm_and_ds_on_https(tls_world, tmp_path):  # noqa: F811
    """The DM server and the DS server on https, certificates from one test CA: the agent's
    --ca-file covers both; backup through DS, then restore, with the DS password sealed."""
    world, ca = tls_world
    ca_pem = ca.read_bytes()
    _, cert, key = make_ca(tmp_path / "ds-pki", "DS CA")
    both = tmp_path / "both-cas.pem"  # the DM server's CA and the DS server's in one trust file
    both.write_bytes(ca_pem + (tmp_path / "ds-pki" / "ca.pem").read_bytes())
    store = DsStore(f"sqlite:///{tmp_path / 'ds.db'}")
    store.add_user("phone", PW)
    with run_server_in_thread(store, ssl_context=tls.server_context(cert, key)) as ds:
        dev = world.add_device("phone", start=False)
        dev.agent = world.start_agent(dev, ca_file=both)
        job = world.wait_job(command_backup_via_ds(world.web.server, dev.device_id, ds.url, "phone", PW)["id"])
        assert job["state"] == "succeeded", job["reason"]
        bid = world.web.server.store.results(job["id"])[0]["data"]["id"]
        job = world.wait_job(command_restore_via_ds(world.web.server, dev.device_id, backup_id=bid)["id"])
        assert job["state"] == "succeeded", job["reason"]
        assert len(store.sessions(5)) == 2

        dev2 = world.add_device("phone2", start=False)  # trusts the DM server's CA only
        dev2.agent = world.start_agent(dev2, ca_file=ca)
        job = world.wait_job(command_backup_via_ds(world.web.server, dev2.device_id, ds.url, "phone", None)["id"])
        assert job["state"] == "failed"
        message = world.web.server.store.results(job["id"])[0]["data"]["message"]
        assert "certificate is not trusted" in message and "--ca-file" in message, message
    store.close()
