"""Fixtures of the DM tests (imported by tests/test_dm_*.py; no tests here).

``db_url`` runs a test on SQLite and on PostgreSQL (a throwaway cluster on
loopback, marked ``postgres``). ``DMWorld`` starts the real DM server (aiohttp
on 127.0.0.1, real database) and real agents (their own trees, keys, cards,
loopback listeners); every exchange goes over HTTP.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from host.dm.agent.core import AgentConfig, DMAgent
from host.dm.agent.bar import CardAccess
from host.dm.agent.tree import DMACC
from host.dm.server.pgcluster import TempPostgres
from host.dm.server.registry import register_device
from host.dm.server.webapp import DMWebServer, ServerThread, build_server, create_job_checked
from host.backup.keys import Identity, generate_identity
from host.tree.model import DMTree
from host.tree.ops import diff
from host.tree.tnds import read_tnds, write_tnds

DATA = Path(__file__).parent / "data"
PHONE_TREE = DATA / "phone_tree.tnds.xml"
PIN = "1234"
ADMIN_TOKEN = "test-admin-token-0123456789"
DEV_PASSWORD = "device-password-1"
SRV_PASSWORD = "server-password-1"


@pytest.fixture(scope="session")
def pg_cluster():
    with TempPostgres() as pg:
        yield pg


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/dm.db"
    pg = request.getfixturevalue("pg_cluster")
    pg.reset()
    return pg.url


@dataclass
class Device:
    device_id: str
    tree_path: Path
    identity: Identity
    agent: DMAgent | None
    card_image: Path | None


def tree_with_id(tree_bytes: bytes, device_id: str) -> bytes:
    tree = read_tnds(tree_bytes)
    tree.replace("./DevInfo/DevId", device_id)
    return write_tnds(tree)


def personalise_card(image: Path, identity: Identity) -> None:
    from card.emulator import personalise
    personalise(image, capacity=1 << 20, pin=PIN, puk="12345678", admin_key=os.urandom(16),
                trust_anchors=[identity.signer.public_point])


def comparable(tree: DMTree) -> DMTree:
    """The tree without our DM account's nonces (they rotate every session)."""
    copy = tree.copy()
    for side in ("ClientSide", "ServerSide"):
        uri = f"{DMACC}/AppAuth/{side}/AAuthData"
        if copy.find(uri) is not None:
            copy.delete(uri)
    return copy


class QuietPlugin:
    """A test server plugin's base: every hook does nothing (override those you need)."""

    name = "test-quiet"

    def on_session(self, ctx) -> None:  # type: ignore[no-untyped-def]
        pass

    def on_status(self, ctx, tag, status) -> None:  # type: ignore[no-untyped-def]
        pass

    def on_results(self, ctx, tag, results, item) -> None:  # type: ignore[no-untyped-def]
        pass

    def on_generic_alert(self, ctx, alert, item):  # type: ignore[no-untyped-def]
        return None


def differences(a: DMTree, b: DMTree) -> list[tuple[str, str]]:
    return [(c.kind, c.uri) for c in diff(comparable(a), comparable(b))]


class DMWorld:
    """One DM server and its devices, for a test."""

    def __init__(self, root: Path, db_url: str, *, max_msg_size: int = 8192,
                 running_timeout: float = 900.0, ssl_context: Any = None,
                 server_options: dict[str, Any] | None = None) -> None:
        self.root = root
        self.server_options = dict(server_options or {})  # more build_server keywords (paths=, ...)
        self.ssl_context = ssl_context  # host.tls.server_context: the server on https
        self.db_url = db_url
        self.max_msg_size = max_msg_size
        self.running_timeout = running_timeout
        self.port = 0
        self.thread: ServerThread | None = None
        self.devices: dict[str, Device] = {}
        self.start_server()

    # ------------------------------------------------------------ server
    @property
    def web(self) -> DMWebServer:
        assert self.thread is not None
        return self.thread.web

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}"

    def start_server(self) -> None:
        web = build_server(self.db_url, port=self.port, admin_token=ADMIN_TOKEN, tick_interval=0.1,
                           max_msg_size=self.max_msg_size, running_timeout=self.running_timeout,
                           ssl_context=self.ssl_context, **self.server_options)
        web.server.renotify_after = 1.0
        self.thread = ServerThread(web).start()
        self.port = web.port

    def stop_server(self) -> None:
        if self.thread is not None:
            self.thread.stop()
            self.thread.web.server.store.close()
            self.thread = None

    # ------------------------------------------------------------ devices
    def add_device(self, name: str, *, auth: str = "md5", card: str | None = None, start: bool = True,
                   tree_bytes: bytes | None = None, agent_max_msg_size: int = 4096,
                   register: bool = True, reader: str | None = None, wbxml: bool = False,
                   enc_key: bool = True) -> Device:
        """card: None, "emulator" (in-process image) or "reader" (pass ``reader``); enc_key: register
        the device's encryption key (DS passwords sealed to it)."""
        ddir = self.root / name
        ddir.mkdir(parents=True)
        device_id = f"IMEI:35000000000{len(self.devices):04d}"
        tree_path = ddir / "tree.tnds.xml"
        tree_path.write_bytes(tree_with_id(tree_bytes or PHONE_TREE.read_bytes(), device_id))
        identity = generate_identity(ddir / "keys")
        image = None
        access = None
        if card is not None:
            image = ddir / "card.img"
            personalise_card(image, identity)
            access = CardAccess(emulator=image) if card == "emulator" else CardAccess(reader=reader)
        if register:
            register_device(self.web.server.store, "simvault-dms", device_id, DEV_PASSWORD, SRV_PASSWORD,
                            auth_type=auth,
                            public_key_pem=(ddir / "keys" / "device.sign.pub.pem").read_bytes(),
                            enc_key_pem=(ddir / "keys" / "device.enc.pub.pem").read_bytes() if enc_key else None)
        dev = Device(device_id, tree_path, identity, None, image)
        if start:
            dev.agent = self.start_agent(dev, auth=auth, card=access, max_msg_size=agent_max_msg_size, wbxml=wbxml)
        self.devices[name] = dev
        return dev

    def start_agent(self, dev: Device, *, auth: str = "md5", card: CardAccess | None = None,
                    max_msg_size: int = 4096, password: str = DEV_PASSWORD, wbxml: bool = False,
                    server_url: str | None = None, ca_file: Path | None = None) -> DMAgent:
        agent = DMAgent(AgentConfig(tree=dev.tree_path, server_url=server_url or f"{self.url}/dm", device_id=dev.device_id,
                                    key_dir=dev.identity.directory, password=password,
                                    server_password=SRV_PASSWORD, auth_type=auth, card=card,
                                    max_msg_size=max_msg_size, retry_interval=0.5, policy_poll=0.2,
                                    change_debounce=0.5, wbxml=wbxml, ca_file=ca_file),
                         identity=dev.identity).start()
        assert agent.wait_idle(20)
        return agent

    # ------------------------------------------------------------ jobs
    def job(self, device: Device, kind: str, target: str, **kw: Any) -> dict[str, Any]:
        return create_job_checked(self.web.server, device.device_id, kind, target, **kw)

    def wait_job(self, job_id: int, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        job: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            job = self.web.server.store.job(job_id)
            assert job is not None
            if job["state"] in ("succeeded", "failed"):
                return job
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} did not finish in {timeout}s: {job}")

    def api(self, method: str, path: str, body: Any = None, token: str | None = ADMIN_TOKEN) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {token}"} if token else {})})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def close(self) -> None:
        for dev in self.devices.values():
            if dev.agent is not None:
                dev.agent.stop()
        self.stop_server()


@pytest.fixture
def world(tmp_path, db_url, monkeypatch):
    monkeypatch.setenv("SIMVAULT_PIN", PIN)
    w = DMWorld(tmp_path, db_url)
    try:
        yield w
    finally:
        w.close()
        shutil.rmtree(tmp_path / "unused", ignore_errors=True)
