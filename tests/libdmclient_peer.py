"""intel libdmclient's testdmclient as a device of simvault's DM server (tests' helper, no tests).

``testdmclient`` (session fixture) builds it with scripts/libdmclient.sh (once per source,
cached) and fails loudly when it cannot. ``StockDevice`` is one provisioned client: its DM
account is tests/mgtobj/simvault.dmacc filled in (server address with the path it uses,
ServerID, user, passwords, auth type) and read by the DMAcc plugin tests/mgtobj/dmacc_file.c,
which keeps the nonces the server hands out from one run to the next. Its DevId is
libdmclient's test DevInfo value, ``DMCtest``.

    dev = StockDevice(client, tmp_path, address=f"{world.url}/funambol/dm")
    dev.register(world.web.server.store)             # dm device-add DMCtest --user dmctest --auth basic
    run = dev.session(wbxml=True)                    # one testdmclient process, one DM session
    assert run.returncode == 0, run.log
"""
from __future__ import annotations

import os
import string
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

import pytest

from host.dm.server.registry import register_device
from host.syncml import model as m
from test_dm_fixtures import QuietPlugin

ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = ROOT / "scripts" / "libdmclient.sh"
ACCOUNT_TEMPLATE = Path(__file__).parent / "mgtobj" / "simvault.dmacc"
DEV_ID = "DMCtest"  # libdmclient's tests/mgtobj/DevInfo: ./DevInfo/DevId
SERVER_ID = "simvault-dms"
USER = "dmctest"
PASSWORD = "dmc-password-1"
SERVER_PASSWORD = "dmc-server-pw-1"
RUN_TIMEOUT = 60.0


@pytest.fixture(scope="session")
def testdmclient() -> Path:
    """The built client (scripts/libdmclient.sh; about 20-40 s the first time, then cached)."""
    run = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, f"scripts/libdmclient.sh failed:\n{run.stderr[-3000:]}"
    client = Path(run.stdout.strip().splitlines()[-1])
    assert client.is_file(), f"scripts/libdmclient.sh printed {client}, which does not exist"
    return client


@dataclass
class Run:
    returncode: int
    log: str  # testdmclient's stderr: every packet it sent and received


class StockDevice:
    """One testdmclient with its own provisioned DM account file."""

    def __init__(self, client: Path, root: Path, *, address: str, auth_type: str = "BASIC", user: str = USER,
                 password: str = PASSWORD, server_password: str = SERVER_PASSWORD) -> None:
        self.client = client
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.password = password
        self.server_password = server_password
        self.user = user
        self.account = root / "dmacc.tsv"
        self.account.write_text(string.Template(ACCOUNT_TEMPLATE.read_text()).substitute(
            server_id=SERVER_ID, address=address, auth_type=auth_type, user=user,
            password=password, server_password=server_password))

    def register(self, store, *, auth: str = "basic", password: str | None = None,  # type: ignore[no-untyped-def]
                 **kw) -> dict:
        """The operator's side of the provisioning: dm device-add DMCtest --user dmctest --auth AUTH."""
        return register_device(store, SERVER_ID, DEV_ID, password or self.password, self.server_password,
                               auth_type=auth, username=self.user, **kw)

    def command(self, *, wbxml: bool = False) -> tuple[list[str], dict[str, str]]:
        return ([str(self.client), "-s", SERVER_ID] + (["-w"] if wbxml else []),
                {**os.environ, "SIMVAULT_DMACC": str(self.account)})

    def session(self, *, wbxml: bool = False, timeout: float = RUN_TIMEOUT) -> Run:
        """One testdmclient run: one client-initiated session (Alert 1201, SessionID 1); a UI
        alert (1100-1103) is answered with no input."""
        cmd, env = self.command(wbxml=wbxml)
        run = subprocess.run(cmd, cwd=self.root, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                             timeout=timeout)
        return Run(run.returncode, run.stderr.decode("utf-8", "replace"))

    def start(self) -> subprocess.Popen:
        """A testdmclient in the background, its stdin a pipe: a UI alert waits for the user."""
        cmd, env = self.command()
        return subprocess.Popen(cmd, cwd=self.root, env=env, stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def edit_account(self, *, values: dict[str, str] | None = None, remove: tuple[str, ...] = (),
                     acl: dict[str, str] | None = None, nodes: dict[str, str] | None = None) -> None:
        """Change the device's DMAcc file as the device itself would (between sessions): leaf
        values (a new URI is added as a leaf), leaves removed, ACLs of new leaves, new interior
        nodes with their ACL."""
        lines, seen = [], set()
        for line in self.account.read_text().splitlines():
            fields = line.split("\t")
            uri = fields[1] if len(fields) > 1 else None
            if uri in remove:
                continue
            if uri in (values or {}):
                fields = fields[:3] + [quote(values[uri], safe="")]
                seen.add(uri)
            lines.append("\t".join(fields))
        lines += ["\t".join(("node", uri, node_acl)) for uri, node_acl in (nodes or {}).items()]
        for uri, value in (values or {}).items():
            if uri not in seen:
                lines.append("\t".join(("leaf", uri, (acl or {}).get(uri, "-"), quote(value, safe=""))))
        self.account.write_text("\n".join(lines) + "\n")

    def account_value(self, uri: str) -> str:
        for line in self.account.read_text().splitlines():
            fields = line.split("\t")
            if len(fields) >= 3 and fields[1] == uri:
                return unquote(fields[3], errors="replace") if len(fields) > 3 else ""  # %XX-escaped
        raise KeyError(uri)


class Prober(QuietPlugin):
    """A server plugin that sends fixed commands in a device's first session and records its
    answers: {label: (status code, [(uri, format, data)] of the Results)} -- the capability probe."""

    name = "prober"

    def __init__(self, commands: dict[str, "m.Command"]) -> None:
        self.commands = commands
        self.answers: dict[str, tuple[int | None, list[tuple[str | None, str | None, object]]]] = {}
        self.statuses: dict[str, list[tuple[str, int]]] = {}  # every Status that reached a label
        self.sent = False

    def on_session(self, ctx) -> None:  # type: ignore[no-untyped-def]
        if self.sent:
            return
        self.sent = True
        for label, cmd in self.commands.items():
            self.answers[label] = (None, [])
            ctx.send(cmd, label)

    def on_status(self, ctx, tag, status) -> None:  # type: ignore[no-untyped-def]
        if tag in self.answers:
            self.statuses.setdefault(tag, []).append((status.cmd, status.data))
            if status.cmd == self.commands[tag].name:  # (an Atomic's commands report to its tag too)
                self.answers[tag] = (status.data, self.answers[tag][1])

    def on_results(self, ctx, tag, results, item) -> None:  # type: ignore[no-untyped-def]
        if tag in self.answers:
            fmt = item.meta.format if item.meta else (results.meta.format if results.meta else None)
            self.answers[tag][1].append((item.source.loc_uri if item.source else None, fmt, item.data))


class HoldOpen(QuietPlugin):
    """A server plugin whose first session asks the user to confirm (Alert 1101): testdmclient
    waits on its stdin, so the session stays open on the server until the client is killed."""

    name = "hold-open"

    def __init__(self) -> None:
        self.asked = False

    def on_session(self, ctx) -> None:  # type: ignore[no-untyped-def]
        if not self.asked:
            self.asked = True
            ctx.send(m.Alert(cmd_id=1, data=1101, items=[m.Item(data="Proceed with the update?")]))
