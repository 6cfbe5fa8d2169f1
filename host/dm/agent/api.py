"""What the agent's modules share, so that their imports point one way (docs/ARCHITECTURE.md).

    core (DMAgent) -> session, listener, handlers -> bar, fumo, mo_ds -> api, card, tree
                   -> commands (CommandExecutor) -> api

* The Exec handler API: a handler gets an :class:`ExecRequest` and answers an
  :class:`ExecOutcome` (status, and the ``work`` that runs after the session and
  returns the :class:`AlertReport` sent back in a Generic Alert 1226);
  :func:`register_exec_handler` routes Exec by URI suffix. host.dm.agent.handlers
  registers the agent's own MOs (BaR, FUMO, DS) in one place.
* :class:`Agent`: the agent as its handlers, listener and command executor see it
  (DMAgent in host.dm.agent.core is the one implementation), so none of them imports
  the core that imports them.
* The agent's configuration and records (AgentConfig, PendingReport, SessionRecord).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

from host.dm.agent.card import CardAccess

if TYPE_CHECKING:
    from host.backup.keys import Identity
    from host.dm.agent.tree import AgentTree

RESULT_TYPE = "urn:simvault:bar:result:1.0"


@dataclass
class AgentConfig:
    tree: Path
    server_url: str
    device_id: str
    key_dir: Path
    key_name: str = "device"
    username: str | None = None
    password: str | None = None
    server_id: str = "simvault-dms"
    server_password: str | None = None
    auth_type: str = "md5"  # upgraded to hmac when the server's challenge asks for it
    card: CardAccess | None = None
    listen: tuple[str, int] | None = ("127.0.0.1", 0)
    max_msg_size: int = 16 * 1024
    http_timeout: float = 30.0
    retry_interval: float = 2.0
    policy_poll: float = 1.0
    change_debounce: float = 2.0
    report_notify_url: bool = True
    wbxml: bool = False  # send application/vnd.syncml.dm+wbxml (the server answers in kind)
    # https server_url and https DS servers of its jobs: the CA(s) that issued their certificates (one
    # PEM file may hold several; else the system's trust store)
    ca_file: Path | None = None


@dataclass
class PendingReport:
    source_uri: str
    correlator: str | None
    code: int
    data: str
    type: str
    attempts: int = 0
    format: str = "chr"
    mark: str | None = None


@dataclass
class SessionRecord:
    ok: bool
    reason: str = ""
    messages: int = 0
    at: float = field(default_factory=time.time)


@dataclass
class AlertReport:
    """What an asynchronous Exec reports in its Generic Alert 1226."""

    code: int
    data: str
    type: str = RESULT_TYPE
    format: str = "chr"        # FUMO results: "int", Data = the result code (OMA FUMO 1.0)
    mark: str | None = None    # FUMO: "critical" on failure


class Agent(Protocol):
    """The device agent as the modules below host.dm.agent.core use it."""

    config: AgentConfig
    device_id: str
    tree: AgentTree
    identity: Identity
    card: CardAccess | None
    firmware_updates: int
    pending: list[PendingReport]
    history: list[SessionRecord]
    refusals: list[str]

    def queue_report(self, source_uri: str, correlator: str | None, report: AlertReport) -> None: ...
    def backup_now(self, destination: str | None = None, reason: str = "user") -> None: ...
    def restore_now(self, backup_id: str, source: str = "card") -> None: ...
    def sync_now(self) -> None: ...
    def on_notification(self, session_id: int) -> None: ...


@dataclass
class ExecRequest:
    agent: Agent
    uri: str
    data: str
    correlator: str | None
    server_id: str


@dataclass
class ExecOutcome:
    """status: 200 done, 202 accepted (``work`` runs after the session), 4xx/5xx refused."""

    status: int
    work: Callable[[], AlertReport] | None = None


ExecHandler = Callable[[ExecRequest], ExecOutcome]
_EXEC_HANDLERS: list[tuple[str, ExecHandler]] = []


def register_exec_handler(uri_suffix: str, handler: ExecHandler) -> None:
    """Route Exec on any node whose URI ends with ``uri_suffix`` (e.g.
    "BaR/Operations/BackupViaDS") to ``handler``. The last registration wins.

    The handler only validates and answers; every effect goes in ``ExecOutcome.work``
    (run after the session, and only if an enclosing Atomic committed)."""
    _EXEC_HANDLERS.insert(0, (uri_suffix, handler))


def exec_handler_for(uri: str) -> ExecHandler | None:
    for suffix, handler in _EXEC_HANDLERS:
        if uri.endswith(suffix):
            return handler
    return None
