"""The DS password of a DM-commanded backup through Data Sync (use case 3) is sealed to the
device's encryption key (host.backup.sealed): over real HTTP, through a TCP relay that
records every byte between the agent and the DM server, the password crosses in no readable
form; a device without a registered key gets no DS job over plain http (a clear error), an
agent refuses a cleartext password over plain http, and a sealed blob opens only for its
device, job and DS account."""
from __future__ import annotations

import base64
import socket
import threading

import pytest

from host.backup.keys import generate_identity
from host.dm.agent.api import ExecRequest
from host.dm.agent.mo_ds import exec_backup_via_ds
from host.backup.sealed import open_sealed, seal
from host.dm.server.db import Store
from host.dm.server.ds_jobs import command_backup_via_ds, command_restore_via_ds
from host.dm.server.registry import set_enc_key
from host.dm.session import format_kv
from host.ds.server import run_server_in_thread
from host.ds.store import DsStore
from host.errors import IntegrityError, UsageError
from host.syncml.status import StatusCode
from test_dm_fixtures import db_url, pg_cluster, world  # noqa: F401 - the fixtures

pytestmark = pytest.mark.timeout(120)
DS_PW = "ds secret;pw=42"


class Relay:
    """A loopback TCP relay that keeps what each side sent (real sockets, real HTTP through it)."""

    def __init__(self, port: int) -> None:
        self.target = ("127.0.0.1", port)
        self.to_device = bytearray()
        self.to_server = bytearray()
        self._lock = threading.Lock()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, upstream, self.to_server), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, self.to_device), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, record: bytearray) -> None:
        try:
            while chunk := src.recv(65536):
                with self._lock:
                    record.extend(chunk)
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def ds(tmp_path):
    store = DsStore(f"sqlite:///{tmp_path / 'ds.db'}")
    store.add_user("phone", DS_PW)
    with run_server_in_thread(store) as srv:
        yield srv, store
    store.close()


def _secret_forms(password: str) -> list[bytes]:
    raw = password.encode()
    from urllib.parse import quote
    return [raw, quote(password, safe="").encode(), base64.b64encode(raw), base64.b64encode(b"phone:" + raw)]


def test_the_ds_password_crosses_the_dm_wire_only_sealed(world, ds):  # noqa: F811
    srv, ds_store = ds
    dev = world.add_device("phone", start=False)
    relay = Relay(world.port)
    try:
        dev.agent = world.start_agent(dev, server_url=f"{relay.url}/dm")
        job = world.wait_job(command_backup_via_ds(world.web.server, dev.device_id, srv.url, "phone", DS_PW)["id"])
        assert job["state"] == "succeeded", job["reason"]
        bid = world.web.server.store.results(job["id"])[0]["data"]["id"]
        job = world.wait_job(command_restore_via_ds(world.web.server, dev.device_id, backup_id=bid)["id"])
        assert job["state"] == "succeeded", job["reason"]
    finally:
        relay.close()
    wire = bytes(relay.to_device)
    assert wire.count(b"BackupViaDS") >= 1 and wire.count(b"RestoreViaDS") >= 1
    assert wire.count(b"sealed=") >= 2 and b"password=" not in wire
    for form in _secret_forms(DS_PW):
        assert form not in wire and form not in bytes(relay.to_server)
    assert len(ds_store.sessions(5)) == 2  # the device really used the password it opened


def test_no_ds_job_for_a_device_without_encryption_key_over_plain_http(world, ds):  # noqa: F811
    srv, ds_store = ds
    dev = world.add_device("phone", enc_key=False)
    server = world.web.server
    with pytest.raises(UsageError, match="no registered encryption key.*device-key"):
        command_backup_via_ds(server, dev.device_id, srv.url, "phone", DS_PW)
    status, _ = world.api("POST", "/api/ds-accounts", {"name": "acc", "url": srv.url, "user": "phone",
                                                       "password": DS_PW})
    assert status == 201
    status, body = world.api("POST", "/api/jobs", {"device": dev.device_id, "kind": "backup_via_ds",
                                                   "target": "ds", "params": {"account": "acc"}})
    assert status == 400 and "no registered encryption key" in body["error"], body
    # a job queued through the Store alone (library use) fails when the Exec would be built: nothing sent
    job = server.submit_job(command_backup_via_ds(server.store, dev.device_id, srv.url, "phone", DS_PW))
    job = world.wait_job(job["id"])
    assert job["state"] == "failed" and "in cleartext" in job["reason"], job
    assert ds_store.sessions(5) == []
    # registered now, the same request works
    set_enc_key(server.store, dev.device_id, (dev.identity.directory / "device.enc.pub.pem").read_bytes())
    with pytest.raises(UsageError, match="is the signing key"):
        set_enc_key(server.store, dev.device_id, (dev.identity.directory / "device.sign.pub.pem").read_bytes())
    job = world.wait_job(command_backup_via_ds(server, dev.device_id, srv.url, "phone", None)["id"])
    assert job["state"] == "succeeded", job["reason"]


def _exec(agent, data: str, correlator: str = "c-1") -> int:
    return exec_backup_via_ds(ExecRequest(agent=agent, uri="./Vendor/simvault/BaR/Operations/BackupViaDS",
                                          data=data, correlator=correlator, server_id="simvault-dms")).status


def test_the_agent_opens_only_what_was_sealed_to_it_for_this_job(world, tmp_path):  # noqa: F811
    dev = world.add_device("phone")
    agent, point = dev.agent, dev.identity.recipient.public_point
    url, user = "http://127.0.0.1:9/sync", "phone"

    def data(**kw: str) -> str:
        return format_kv({"url": url, "user": user, **kw})

    def sealed(**bind: str) -> str:
        args = {"device_id": dev.device_id, "correlator": "c-1", "url": url, "user": user, **bind}
        return seal(point, DS_PW, **args)

    assert _exec(agent, data(sealed=sealed())) == StatusCode.ACCEPTED_FOR_PROCESSING
    assert _exec(agent, data(password=DS_PW)) == StatusCode.FORBIDDEN  # cleartext over plain http
    for other in ({"correlator": "c-2"}, {"device_id": "IMEI:0"}, {"url": "http://127.0.0.1:8/sync"},
                  {"user": "eve"}):
        assert _exec(agent, data(sealed=sealed(**other))) == StatusCode.FORBIDDEN, other
    foreign = generate_identity(tmp_path / "foreign").recipient.public_point
    assert _exec(agent, data(sealed=seal(foreign, DS_PW, device_id=dev.device_id, correlator="c-1",
                                          url=url, user=user))) == StatusCode.FORBIDDEN
    blob = bytearray(base64.b64decode(sealed()))
    blob[-1] ^= 1
    assert _exec(agent, data(sealed=base64.b64encode(bytes(blob)).decode())) == StatusCode.FORBIDDEN
    assert _exec(agent, data(sealed="not base64!")) == StatusCode.FORBIDDEN


def test_seal_round_trip_and_clear_error(tmp_path):
    ident = generate_identity(tmp_path / "k")
    bind = {"device_id": "IMEI:1", "correlator": "7", "url": "https://ds/sync", "user": "u"}
    blob = seal(ident.recipient.public_point, DS_PW, **bind)
    assert open_sealed(ident.decryptor, blob, **bind) == DS_PW
    assert DS_PW.encode() not in base64.b64decode(blob)
    with pytest.raises(IntegrityError, match="do not open with this device's encryption key"):
        open_sealed(ident.decryptor, blob, **{**bind, "correlator": "8"})
    with pytest.raises(IntegrityError):
        open_sealed(ident.decryptor, "A" * 5000, **bind)


def test_an_older_database_gets_the_new_column_and_keeps_its_devices(db_url, tmp_path):  # noqa: F811
    from sqlalchemy import inspect

    from host.fsutil import private_sqlite_file
    from test_dm_migrations import old_release_database
    url = db_url
    if url.startswith("sqlite"):
        private_sqlite_file(url.split(":///", 1)[1])
    old_release_database(url, "0001")  # the schema before the encryption key (and migrations)
    store = Store(url)
    assert "enc_key" in {c["name"] for c in inspect(store.engine).get_columns("devices")}
    [device] = store.devices()
    assert device["id"] == "IMEI:1" and device["enc_key_id"] is None
    ident = generate_identity(tmp_path / "k")
    row = set_enc_key(store, "IMEI:1", (tmp_path / "k" / "device.enc.pub.pem").read_bytes())
    assert row["enc_key_id"] == ident.recipient.key_id.hex()
    with pytest.raises(UsageError, match="not registered"):
        set_enc_key(store, "IMEI:2", (tmp_path / "k" / "device.enc.pub.pem").read_bytes())
    store.close()

