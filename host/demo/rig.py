"""The demo's world: keys, a personalised card (in-process or behind pcscd), the DM
server, simvault's DS server and one device agent, all in one work directory.

    with DemoRig.build(workdir, say, use_pcsc=True, slot=0) as rig:
        rig.job("backup", "server") ...
    # every thread, server and bridge is stopped here, also on error or Ctrl-C

Secrets (card PIN, PUK and admin key, DM and DS passwords, admin token) are
random per run, live only in this process and are never printed. The agent
reads its card PIN from an environment variable of this process (as
``simvault dm agent`` does), removed again at the end.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from host.dm.agent.core import AgentConfig, DMAgent
from host.dm.agent.bar import CardAccess
from host.dm.agent.tree import BAR, PRESERVED_ON_RESTORE
from host.dm.server.backup_plugin import BackupPlugin
from host.dm.server.ds_jobs import DsBackupRecorder
from host.dm.server.registry import register_device
from host.dm.server.webapp import DMWebServer, ServerThread, build_server, create_job_checked
from host.errors import SimvaultError, TransportError, UsageError
from host.backup.keys import Identity, generate_identity
from host.tree.canonical import canonical_bytes
from host.tree.generate import phone_tree
from host.tree.model import DMTree
from host.tree.tnds import write_tnds

PIN_ENV = "SIMVAULT_DEMO_PIN"
SERVER_ID = "simvault-dms"
DS_USER = "demo-phone"
VPCD_HOST = "127.0.0.1"
VPCD_PORTS = (35963, 35964)
VPCD_READERS = ("Virtual PCD 00 00", "Virtual PCD 00 01")
SLOT_WAIT_SECONDS = 120.0
CARD_WAIT_SECONDS = 10.0
JOB_TIMEOUT = 60.0
AGENT_MAX_MSG_SIZE = 4096  # a constrained handset: archives travel as OMA DM large objects

Say = Callable[[str], None]


class DemoFailure(SimvaultError):
    """A demo step did not verify."""


def comparable(tree: DMTree) -> bytes:
    """Canonical bytes of the tree without what a restore keeps from the live tree
    (the Backup MO and the agent's own DM account with its rotating nonces)."""
    work = tree.copy()
    for uri in PRESERVED_ON_RESTORE:
        if work.find(uri) is not None:
            work.delete(uri)
    return canonical_bytes(work)


def without_preserved(tree: DMTree) -> DMTree:
    work = tree.copy()
    for uri in PRESERVED_ON_RESTORE:
        if work.find(uri) is not None:
            work.delete(uri)
    return work


@dataclass
class DemoRig:
    workdir: Path
    say: Say
    use_pcsc: bool
    slot: int
    card_impl: str = "python"        # "javacard": the Java Card applet in jCardSim behind pcscd
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    device_id: str = ""
    tree_path: Path = Path()
    identity: Identity | None = None
    card_image: Path = Path()
    web: DMWebServer | None = None
    dm_url: str = ""
    ds: Any = None
    ds_store: Any = None
    ds_password: str = ""
    agent: DMAgent | None = None
    bridge: Any = None
    _java_perso: Any = None
    reader: str = ""

    # ------------------------------------------------------------ life cycle
    @classmethod
    @contextlib.contextmanager
    def build(cls, workdir: Path, say: Say, *, use_pcsc: bool, slot: int,
              card_impl: str = "python") -> Iterator[DemoRig]:
        rig = cls(workdir, say, use_pcsc, slot, card_impl)
        with rig.stack:
            rig._setup()
            yield rig
        # reached only when every callback ran: agent, servers, bridge, slot lock, PIN variable
        say("stopped: agent, DM server, DS server" + (", vpcd bridge" if use_pcsc else ""))

    def _setup(self) -> None:
        say, wd = self.say, self.workdir
        previous_pin = os.environ.get(PIN_ENV)
        self.stack.callback(_restore_env, PIN_ENV, previous_pin)
        pin = f"{secrets.randbelow(10 ** 6):06d}"
        os.environ[PIN_ENV] = pin

        tree = phone_tree(0)  # = tests/data/phone_tree.tnds.xml (tests/test_tnds.py checks it)
        self.device_id = str(tree.find("./DevInfo/DevId").value)  # type: ignore[union-attr]
        self.tree_path = wd / "device" / "phone.tnds.xml"
        self.tree_path.parent.mkdir(parents=True)
        self.tree_path.write_bytes(write_tnds(tree))
        nodes = sum(1 for _ in tree.walk())
        say(f"device tree: {self.tree_path.name}, {nodes} nodes, {self.tree_path.stat().st_size} bytes TNDS, "
            f"DevId {self.device_id}")

        self.identity = generate_identity(wd / "device" / "keys")
        say(f"device keys: signing key {self.identity.signer.key_id.hex()}, "
            f"encryption key {self.identity.decryptor.key_id.hex()} (EC P-256, files 0600)")

        from card.emulator import personalise
        self.card_image = wd / "card" / "card.img"
        self.card_image.parent.mkdir()
        puk, admin_key = f"{secrets.randbelow(10 ** 8):08d}", secrets.token_bytes(16)
        if self.card_impl == "javacard":
            from card.jcardsim import Personalisation
            self._java_perso = Personalisation(pin=pin, puk=puk, admin_key=admin_key, capacity=1 << 20,
                                               trust_anchors=(self.identity.signer.public_point,))
        else:
            personalise(self.card_image, capacity=1 << 20, pin=pin, puk=puk, admin_key=admin_key,
                        trust_anchors=[self.identity.signer.public_point])
            say("card personalised: 1 MiB image, trust anchor = device signing key, PIN set (not shown)")
        card = self._card_access()

        dm_password, srv_password = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
        web = build_server(f"sqlite:///{wd / 'dm.db'}", admin_token=secrets.token_urlsafe(16),
                           tick_interval=0.2, plugins=[DsBackupRecorder(), BackupPlugin()])
        web.server.renotify_after = 1.0
        server = ServerThread(web).start()
        self.stack.callback(_stop_dm, server)
        self.web, self.dm_url = web, f"{server.url}/dm"
        say(f"DM server: {self.dm_url} (SQLite {wd.name}/dm.db)")

        from host.ds.server import run_server_in_thread
        from host.ds.store import DsStore
        ds_store = DsStore(f"sqlite:///{wd / 'ds.db'}")
        self.stack.callback(ds_store.close)
        self.ds_password = secrets.token_urlsafe(12)
        ds_store.add_user(DS_USER, self.ds_password)
        self.ds = self.stack.enter_context(run_server_in_thread(ds_store))
        self.ds_store = ds_store
        say(f"DS server: {self.ds.url} (SQLite {wd.name}/ds.db, user {DS_USER})")

        register_device(web.server.store, SERVER_ID, self.device_id, dm_password, srv_password,
                        public_key_pem=(self.identity.directory / "device.sign.pub.pem").read_bytes(),
                        enc_key_pem=(self.identity.directory / "device.enc.pub.pem").read_bytes())
        say("device registered with the DM server: md5 digest auth, its public signing and encryption keys")

        agent = DMAgent(AgentConfig(tree=self.tree_path, server_url=self.dm_url, device_id=self.device_id,
                                    key_dir=self.identity.directory, password=dm_password,
                                    server_password=srv_password, server_id=SERVER_ID, card=card,
                                    max_msg_size=AGENT_MAX_MSG_SIZE, retry_interval=0.5, policy_poll=0.2),
                        identity=self.identity)
        self.agent = agent.start()
        self.stack.callback(agent.stop)
        reported = self.wait_until(lambda: web.server.store.device(self.device_id).notify_url, 10)
        if not agent.wait_idle(30) or not reported:
            raise DemoFailure("the agent did not reach the DM server: see -v output")
        say(f"device agent: first session done, notification address {agent.notify_url}")

    def _card_access(self) -> CardAccess:
        if not self.use_pcsc:
            self.say(f"card: in-process emulator ({self.card_image.name}) (--no-pcsc)")
            return CardAccess(emulator=self.card_image, pin_env=PIN_ENV)
        from card.emulator import VirtualCard
        from card.vpcd import VpcdBridge, slot_lock
        from host.link.pcsc import list_readers, wait_for_card
        port, reader = VPCD_PORTS[self.slot], VPCD_READERS[self.slot]
        try:
            names = list_readers()
        except TransportError as exc:
            raise TransportError(f"{exc} (or run the demo with --no-pcsc)") from None
        if reader not in names:
            raise TransportError(f"pcscd lacks the reader {reader!r}: install vsmartcard-vpcd and run "
                                 "scripts/pcscd.sh start (or use --no-pcsc)")
        try:
            self.stack.enter_context(slot_lock(port, timeout=0.0))
        except TimeoutError:
            self.say(f"waiting for vpcd slot {self.slot} (another simvault run holds it) ...")
            try:
                self.stack.enter_context(slot_lock(port, timeout=SLOT_WAIT_SECONDS))
            except TimeoutError as exc:
                raise TransportError(f"{exc}: try --slot {1 - self.slot}") from None
        if not wait_for_card(reader, False, CARD_WAIT_SECONDS):
            raise TransportError(f"{reader} already shows a card (a stray 'card serve' or vicc on port {port}?)")
        if self.card_impl == "javacard":
            from card.jcardsim import JavaCard
            java = JavaCard(self._java_perso, VPCD_HOST, port, notify=lambda line: None)
            self.stack.callback(_stop_bridge, java, reader)
            java.start()
            java.wait_connected()           # JavaCardUnavailable (a SimvaultError) says why not
            self.bridge = java
            what = ("Java Card applet in jCardSim (1 MiB store, trust anchor = device signing key, PIN set, "
                    "not shown; RAM only)")
        else:
            virtual = VirtualCard.open(self.card_image, exclusive=True)
            self.stack.callback(virtual.close)
            self.bridge = VpcdBridge(virtual, VPCD_HOST, port)
            self.bridge.run_in_thread()
            self.stack.callback(_stop_bridge, self.bridge, reader)
            what = "emulator"
        if not wait_for_card(reader, True, CARD_WAIT_SECONDS):
            raise TransportError(f"pcscd did not see the card in {reader}: check scripts/pcscd.sh status")
        self.reader = reader
        self.say(f"card: {what} bridged into pcscd via vpcd, the agent uses PC/SC reader {reader!r}")
        return CardAccess(reader=reader, pin_env=PIN_ENV)

    # ------------------------------------------------------------ helpers for the steps
    @staticmethod
    def wait_until(cond: Callable[[], Any], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return True
            time.sleep(0.05)
        return bool(cond())

    @property
    def store(self) -> Any:
        assert self.web is not None
        return self.web.server.store

    @property
    def apdus(self) -> int | None:
        return self.bridge.apdus if self.bridge is not None else None

    def job(self, kind: str, target: str, **kw: Any) -> dict[str, Any]:
        assert self.web is not None
        return create_job_checked(self.web.server, self.device_id, kind, target, **kw)

    def wait_job(self, job_id: int, timeout: float = JOB_TIMEOUT) -> dict[str, Any]:
        """The job once succeeded/failed (and the agent idle: reports delivered, node cleanup done)."""
        store = self.store
        if not self.wait_until(lambda: store.job(job_id)["state"] in ("succeeded", "failed"), timeout):
            raise DemoFailure(f"job {job_id} did not finish within {timeout:.0f}s: {store.job(job_id)['state']}")
        assert self.agent is not None
        self.agent.wait_idle(timeout)
        return store.job(job_id)

    def result(self, job_id: int) -> dict[str, str]:
        results = self.store.results(job_id)
        return results[-1]["data"] if results else {}

    def live(self) -> DMTree:
        assert self.agent is not None
        with self.agent.tree.lock:
            return self.agent.tree.tree.copy()

    def backup_location(self, backup_id: str) -> str | None:
        assert self.agent is not None
        return self.agent.tree.value(f"{BAR}/Backups/{backup_id}/Location")

    def card_backups(self) -> list[str]:
        assert self.agent is not None and self.agent.card is not None and self.agent.wait_idle(30)
        with self.agent.card.open() as card:
            return [e.backup_id.hex() for e in card.list_backups()]  # type: ignore[attr-defined]


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def _stop_dm(server: ServerThread) -> None:
    server.stop()
    server.web.server.store.close()


def _stop_bridge(bridge: Any, reader: str) -> None:
    from host.link.pcsc import wait_for_card
    bridge.stop()
    wait_for_card(reader, False, CARD_WAIT_SECONDS)


def check_workdir(path: Path) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UsageError(f"--workdir {path} is not an empty directory: give a new or empty one")
