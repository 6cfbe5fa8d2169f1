"""The DM server over TLS: a test CA made here, the server on https, the agent and the admin
CLI checking its certificate; no CA, a foreign CA or a mismatched key each get a clear error."""
from __future__ import annotations

import datetime
import ipaddress
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from host.backup.keys import generate_identity
from host import tls
from host.errors import UsageError
from test_dm_cli import _port
from test_dm_fixtures import PHONE_TREE, DMWorld, tree_with_id

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parent.parent


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(directory: Path, name: str = "simvault test CA") -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 / localhost: (ca.pem, server.pem, server.key)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "simvault DM server")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(_pem_key(key))
    return paths


@pytest.fixture
def tls_world(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMVAULT_PIN", "1234")
    ca, cert, key = make_ca(tmp_path / "pki")
    w = DMWorld(tmp_path / "world", f"sqlite:///{tmp_path}/dm.db", ssl_context=tls.server_context(cert, key))
    try:
        yield w, ca
    finally:
        w.close()


def test_agent_backs_up_and_restores_over_https(tls_world):
    world, ca = tls_world
    assert world.url.startswith("https://")
    dev = world.add_device("phone", start=False)
    dev.agent = world.start_agent(dev, ca_file=ca)
    job = world.wait_job(world.job(dev, "backup", "server")["id"])
    assert job["state"] == "succeeded", job["reason"]
    [stored] = world.web.server.store.backups(dev.device_id)
    job = world.wait_job(world.job(dev, "restore", "server", backup_id=stored["backup_id"])["id"])
    assert job["state"] == "succeeded", job["reason"]
    assert all(r.ok for r in dev.agent.history), [r.reason for r in dev.agent.history]


def test_ds_job_for_a_device_without_encryption_key_runs_inside_tls(tls_world, tmp_path):
    """No registered encryption key: over https the DS password may travel inside TLS (the
    agent accepts password= only from an https server); the job runs end to end."""
    from host.dm.server.ds_jobs import command_backup_via_ds
    from host.ds.server import run_server_in_thread
    from host.ds.store import DsStore
    world, ca = tls_world
    ds_store = DsStore(f"sqlite:///{tmp_path / 'ds.db'}")
    ds_store.add_user("phone", "ds-password-9")
    with run_server_in_thread(ds_store) as ds:
        dev = world.add_device("phone", start=False, enc_key=False)
        dev.agent = world.start_agent(dev, ca_file=ca)
        job = command_backup_via_ds(world.web.server, dev.device_id, ds.url, "phone", "ds-password-9")
        job = world.wait_job(job["id"])
        assert job["state"] == "succeeded", job["reason"]
        assert len(ds_store.sessions(5)) == 1
    ds_store.close()


@pytest.mark.parametrize("which", ["no CA", "another CA"])
def test_agent_refuses_a_server_it_cannot_verify(tls_world, tmp_path, which):
    world, _ = tls_world
    other = None if which == "no CA" else make_ca(tmp_path / "other", "someone else's CA")[0]
    dev = world.add_device("phone", start=False)
    dev.agent = world.start_agent(dev, ca_file=other)
    job = world.job(dev, "backup", "server")
    deadline = time.monotonic() + 10
    while not dev.agent.history and time.monotonic() < deadline:
        time.sleep(0.05)
    assert dev.agent.history and not dev.agent.history[-1].ok
    reason = dev.agent.history[-1].reason
    assert "certificate is not trusted" in reason and "--ca-file" in reason, reason
    assert world.web.server.store.job(job["id"])["state"] != "succeeded"
    assert world.web.server.store.backups(dev.device_id) == []


def test_plain_http_gets_no_dm_answer_from_the_tls_port(tls_world):
    world, _ = tls_world
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{world.port}/api/health", timeout=5).read()


def test_bad_server_key_material_is_a_clear_usage_error(tmp_path):
    _, cert, _ = make_ca(tmp_path / "a")
    _, _, foreign_key = make_ca(tmp_path / "b")
    with pytest.raises(UsageError, match="are not a PEM certificate and its private key"):
        tls.server_context(cert, foreign_key)
    with pytest.raises(UsageError, match="cannot read"):
        tls.server_context(cert, tmp_path / "missing.key")
    with pytest.raises(UsageError, match="cannot read the CA file"):
        tls.client_context(tmp_path / "missing-ca.pem")
    with pytest.raises(UsageError, match="go together"):
        tls.check_pair(cert, None)


def test_operator_flow_over_https_with_the_cli(tmp_path):
    """`simvault dm server --tls-cert/--tls-key`, device-add and backup-start over https with
    --ca-file, the agent process with --ca-file; without the CA the CLI says what to pass."""
    ca, cert, key = make_ca(tmp_path / "pki")
    device = "IMEI:351234567890999"
    env = dict(os.environ, SIMVAULT_DM_ADMIN_TOKEN="tls-token-123", SIMVAULT_DM_PASSWORD="dev-password-1",
               SIMVAULT_DM_SERVER_PASSWORD="srv-password-1", PYTHONPATH=str(ROOT))
    port, agent_port = _port(), _port()
    api = f"https://127.0.0.1:{port}"
    dm = [sys.executable, "-m", "host.cli.dm", "dm"]

    def run(*args: str, ca_file: Path | None = ca) -> subprocess.CompletedProcess:
        extra = ["--ca-file", str(ca_file)] if ca_file else []
        return subprocess.run(dm + list(args) + ["--api", api, "--json", *extra], env=env, capture_output=True,
                              text=True, timeout=60, cwd=ROOT)

    tree = tmp_path / "tree.xml"
    tree.write_bytes(tree_with_id(PHONE_TREE.read_bytes(), device))
    generate_identity(tmp_path / "keys")
    bad = subprocess.run(dm + ["server", "--tls-cert", str(cert)], env=env, capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert bad.returncode != 0 and "--tls-cert and --tls-key go together" in bad.stderr
    server = subprocess.Popen(dm + ["server", "--listen", f"127.0.0.1:{port}", "--db", f"sqlite:///{tmp_path}/dm.db",
                                    "--tls-cert", str(cert), "--tls-key", str(key)],
                              env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    agent = None
    try:
        assert server.stdout is not None
        assert f"on {api}/dm" in server.stdout.readline()
        refused = run("devices", ca_file=None)
        assert refused.returncode != 0 and "certificate we do not trust" in refused.stderr \
            and "--ca-file" in refused.stderr, refused.stderr
        added = run("device-add", device, "--public-key", str(tmp_path / "keys" / "device.sign.pub.pem"))
        assert added.returncode == 0, added.stderr
        agent = subprocess.Popen(dm + ["agent", "--tree", str(tree), "--server", f"{api}/dm", "--device-id", device,
                                       "--key", str(tmp_path / "keys"), "--listen", f"127.0.0.1:{agent_port}",
                                       "--ca-file", str(ca)],
                                 env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            listed = run("devices")
            if listed.returncode == 0 and json.loads(listed.stdout)[0]["notify_url"]:
                break
            time.sleep(0.2)
        started = run("backup-start", device, "--target", "server", "--wait", "30")
        if started.returncode != 0:
            agent.terminate()
            raise AssertionError(started.stderr + agent.communicate(timeout=15)[1][-3000:])
        assert json.loads(started.stdout)["state"] == "succeeded"
        [backup] = [b for b in json.loads(run("backups", "--device", device).stdout) if b["location"] == "server"]
        assert backup["size"] > 0
    finally:
        for proc in (agent, server):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=15)
