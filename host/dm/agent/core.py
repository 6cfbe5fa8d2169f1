"""The OMA DM 1.2 device agent: a DM client over HTTP holding the device's tree.

    agent = DMAgent(AgentConfig(tree=Path("phone.tnds.xml"), server_url="http://127.0.0.1:8080/dm",
                                device_id="IMEI:...", key_dir=Path("keys"), listen=("127.0.0.1", 0)))
    agent.start()                 # notification listener + worker (+ policies)
    agent.backup_now()            # Alert 1201 + Generic Alert request; the server decides
    agent.wait_idle(30)
    agent.stop()

One worker thread runs everything that touches the server or the card, in
order: sessions (after a Package 0, a user request, a policy, or to deliver
pending reports) and the operations an Exec accepted with 202. A session is
a loop of HTTP POSTs (host.dm.agent.session); reports that could not be
delivered stay queued (and in <tree>.reports.json) and are retried.

The loopback listener (:class:`host.dm.agent.listener.AgentListener`) takes
Package 0 notifications (digest checked before anything else) and local
control requests (backup-now, restore).
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
from typing import Any, Callable

from host.backup.keys import Identity, load_identity
from host.dm.agent import bar as agent_bar
from host.dm.agent import handlers
from host.dm.agent.api import AgentConfig, AlertReport, PendingReport, SessionRecord
from host.dm.agent.listener import AgentListener
from host.dm.agent.session import run_session
from host.dm.agent.tree import BAR, AgentTree, Credentials
from host.errors import SimvaultError, UsageError

log = logging.getLogger(__name__)

REQUEST_TYPE = "urn:simvault:bar:request:1.0"
__all__ = ["AgentConfig", "DMAgent", "PendingReport", "SessionRecord", "REQUEST_TYPE"]  # the first three: api


class DMAgent:
    """See module doc."""

    def __init__(self, config: AgentConfig, identity: Identity | None = None) -> None:
        handlers.register_defaults()  # the BaR, FUMO and DS Exec handlers (once per process)
        self.config = config
        self.device_id = config.device_id
        self.tree = AgentTree(config.tree)
        self.identity = identity or load_identity(config.key_dir, config.key_name)
        self.card = config.card
        existing = self._existing_credentials()
        creds = Credentials(
            username=config.username or (existing.username if existing else config.device_id),
            password=config.password or (existing.password if existing else ""),
            server_id=config.server_id,
            server_password=config.server_password or (existing.server_password if existing else ""),
            auth_type=config.auth_type, client_nonce=existing.client_nonce if existing else b"",
            server_nonce=existing.server_nonce if existing else b"")
        if not creds.password or not creds.server_password:
            raise UsageError("the agent needs its DM password and the server's password: set "
                             "$SIMVAULT_DM_PASSWORD and $SIMVAULT_DM_SERVER_PASSWORD (other names: "
                             "--password-env / --server-password-env) or provision ./DMAcc/simvault")
        self.tree.provision(device_id=config.device_id, server_url=config.server_url, creds=creds,
                            overwrite=bool(config.password))
        self.tree.save()
        self.reports_path = config.tree.with_name(config.tree.name + ".reports.json")
        self.pending: list[PendingReport] = self._load_reports()
        self.tasks: "queue.Queue[tuple[str, Any]]" = queue.Queue()
        self.history: list[SessionRecord] = []  # the last sessions (bounded)
        self.refusals: list[str] = []  # device-initiated requests the server refused
        self.firmware_updates = 0
        self._busy = threading.Event()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._policy: threading.Thread | None = None
        self.listener: AgentListener | None = None
        self._last_interval_backup = time.monotonic()
        self._seen_generation = self.tree.generation
        self._change_at: float | None = None
        self._notify_reported = False
        self._unsent_request: tuple[str, str | None] | None = None
        self._lock = threading.Lock()

    def _existing_credentials(self) -> Credentials | None:
        try:
            return self.tree.credentials()
        except UsageError:
            return None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> "DMAgent":
        if self.config.listen is not None:
            self.listener = AgentListener(self, *self.config.listen)
            self.listener.start()
        self._worker = threading.Thread(target=self._work_loop, name=f"dm-agent-{self.device_id}", daemon=True)
        self._worker.start()
        self._policy = threading.Thread(target=self._policy_loop, name="dm-agent-policy", daemon=True)
        self._policy.start()
        if self.listener is not None and self.config.report_notify_url:
            self.tasks.put(("session", ("client", None, "hello")))
        return self

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the listener, the policy thread and the worker; False when a session or
        operation was still running after ``timeout`` seconds (its daemon thread is left to die
        with the process: the tree file is only ever replaced whole, and the server retries)."""
        self._stop.set()
        self.tasks.put(("stop", None))
        if self.listener is not None:
            self.listener.stop()  # first: no new notification or control request meanwhile
        deadline = time.monotonic() + timeout
        if self._policy:
            self._policy.join(timeout=max(0.0, min(5.0, deadline - time.monotonic())))
        if self._worker:
            self._worker.join(timeout=max(0.0, deadline - time.monotonic()))
            return not self._worker.is_alive()
        return True

    @property
    def notify_url(self) -> str | None:
        return self.listener.notify_url if self.listener is not None else None

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """True once no task is queued or running (reports may still be pending retry)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.tasks.unfinished_tasks == 0 and not self._busy.is_set():
                return True
            time.sleep(0.02)
        return False

    # ------------------------------------------------------------ triggers
    def on_notification(self, session_id: int) -> None:
        """A verified Package 0: open the server-initiated session it asks for."""
        self.tasks.put(("session", ("server", f"{session_id:X}", "package0")))

    def backup_now(self, destination: str | None = None, reason: str = "user") -> None:
        """Use case 2: ask the DM server for a backup (Alert 1201 + Generic Alert).

        With Policy/ServerApproval false the agent backs up at once (to the
        destination given or Config/Destination) and reports the result without
        a Correlator; the server records it (and fetches a server-bound archive)."""
        if destination not in (None, "server", "card"):
            raise UsageError("destination must be server or card")
        approval = (self.tree.value(f"{BAR}/Policy/ServerApproval", "true") or "true").lower() == "true"
        if approval:
            self.tasks.put(("request", (reason, destination)))
            return
        where = destination or self.tree.value(f"{BAR}/Config/Destination", "server") or "server"
        self.tasks.put(("op", (f"{BAR}/Operations/Backup", f"device:{reason}",
                               lambda: agent_bar.run_backup(self, where, None, False))))

    def restore_now(self, backup_id: str, source: str = "card") -> None:
        """A local restore (from the card), reported to the server afterwards."""
        self.tasks.put(("op", (f"{BAR}/Operations/Restore", None,
                               lambda: agent_bar.run_restore(self, backup_id, source, False, False))))

    def sync_now(self) -> None:
        """A client-initiated session (delivers pending reports, picks up queued jobs)."""
        self.tasks.put(("session", ("client", None, "sync")))

    def queue_report(self, source_uri: str, correlator: str | None, report: AlertReport) -> None:
        with self._lock:
            self.pending.append(PendingReport(source_uri, correlator, report.code, report.data, report.type,
                                              format=report.format, mark=report.mark))
            self._save_reports()

    # ------------------------------------------------------------ worker
    def _work_loop(self) -> None:
        next_retry = 0.0
        # consecutive failed sessions: the device calls in again (a Package 0 nonce is used once,
        # so a server-initiated session that failed is not triggered again), backing off to a minute
        failures = 0
        while not self._stop.is_set():
            try:
                kind, arg = self.tasks.get(timeout=0.2)
            except queue.Empty:
                unreported = self.listener is not None and self.config.report_notify_url and not self._notify_reported
                if (self.pending or unreported or failures) and time.monotonic() >= next_retry:
                    if self._unsent_request is not None:  # a user/policy request not delivered yet
                        self.tasks.put(("request", self._unsent_request))
                    else:
                        self.tasks.put(("session", ("client", None, "retry")))
                    next_retry = time.monotonic() + min(60.0, self.config.retry_interval * 2 ** min(failures, 7))
                continue
            self._busy.set()
            try:
                if kind == "stop":
                    return
                if kind == "session":
                    initiator, session_id, why = arg
                    record = run_session(self, initiator, session_id)
                    self.history.append(record)
                    failures = 0 if record.ok else failures + 1
                    if not record.ok:
                        next_retry = time.monotonic() + min(60.0, self.config.retry_interval * 2 ** min(failures, 7))
                elif kind == "request":
                    reason, destination = arg
                    record = run_session(self, "client", None, request=(reason, destination))
                    self.history.append(record)
                    failures = 0 if record.ok else failures + 1
                    self._unsent_request = None if record.ok else (reason, destination)
                    if not record.ok:
                        next_retry = time.monotonic() + min(60.0, self.config.retry_interval * 2 ** min(failures, 7))
                elif kind == "op":
                    uri, correlator, work = arg
                    self._run_op(uri, correlator, work)
            except Exception:  # noqa: BLE001 - the worker must survive anything
                log.exception("agent task %s failed", kind)
            finally:
                del self.history[:-50]
                self._busy.clear()
                self.tasks.task_done()

    def _run_op(self, uri: str, correlator: str | None, work: Callable[[], AlertReport]) -> None:
        try:
            report = work()
        except SimvaultError as exc:
            report = AlertReport(500, f"code=500;message={str(exc)[:200]}")
        self.queue_report(uri, correlator, report)
        self.tasks.put(("session", ("client", None, "report")))

    def run_deferred(self, deferred: list) -> None:
        """Operations accepted (202) during a session: run after it, in order."""
        for uri, correlator, work in deferred:
            self.tasks.put(("op", (uri, correlator, work)))

    def take_reports(self) -> list[PendingReport]:
        with self._lock:
            return list(self.pending)

    def reports_delivered(self, delivered: list[PendingReport]) -> None:
        with self._lock:
            self.pending = [r for r in self.pending if r not in delivered]
            self._save_reports()

    def _load_reports(self) -> list[PendingReport]:
        try:
            raw = json.loads(self.reports_path.read_text())
            return [PendingReport(**r) for r in raw]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, TypeError):
            log.warning("pending reports file %s is damaged; starting without it", self.reports_path)
            return []

    def _save_reports(self) -> None:
        from host.fsutil import atomic_write
        atomic_write(self.reports_path, json.dumps([r.__dict__ for r in self.pending]).encode())

    # ------------------------------------------------------------ policies
    def _policy_loop(self) -> None:
        """Interval and on-change policies (Policy/Interval, Policy/OnChange, debounced)."""
        while not self._stop.wait(self.config.policy_poll):
            try:
                self.check_policies()
            except SimvaultError as exc:
                log.warning("policy check failed: %s", exc)

    def check_policies(self) -> None:
        now = time.monotonic()
        interval = int(self.tree.value(f"{BAR}/Policy/Interval", "0") or "0")
        if interval > 0 and now - self._last_interval_backup >= interval:
            self._last_interval_backup = now
            self.backup_now(reason="interval")
        on_change = (self.tree.value(f"{BAR}/Policy/OnChange", "false") or "false").lower() == "true"
        if self.tree.generation != self._seen_generation:
            self._seen_generation = self.tree.generation
            self._change_at = now
        if on_change and self._change_at is not None and now - self._change_at >= self.config.change_debounce:
            self._change_at = None
            self.backup_now(reason="change")
        elif not on_change:
            self._change_at = None
