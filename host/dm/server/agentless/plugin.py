"""The agentless ServerPlugin: backup and restore jobs for devices without simvault's BaR MO.

Jobs it takes (:meth:`AgentlessPlugin.claims`; BackupPlugin leaves those alone):
backup target server with params.mode standard, or auto for a device with no
registered signing key (no agent could sign a backup for it), or auto once
BackupPlugin's Exec was answered 404/405/406 (:meth:`take_over`: no BaR MO there;
the read starts in the same session); restore target server of a backup the
server made (its meta names a read strategy), or with params.mode standard or
params.dry_run.

backup   read the tree (reader.TreeReader) -> host.backup.ops.backup_tree signed by the
         server key, encrypted to the recipients -> verified and stored in one
         transaction; the job's reason names the strategy.
restore  verify the stored archive (recorded SHA-256, signature, every chunk, the
         device id, decryption) -> read the live tree the same way -> diff;
         params.dry_run: the diff is the job's result, nothing is written; else
         restore.Applier, then restore.ReadBack; refusals and mismatches are per-node
         results and fail the job.
One job at a time per session; a session that ends mid-job fails it (nothing stored).
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from host.archive import Archive, verify_archive
from host.dm.server.plugin import SessionContext
from host.errors import SimvaultError, UsageError
from host.syncml import model as m
from host.tree.ops import apply_restore, render_diff
from host.tree.uri import InvalidUri

from .config import MODES, STRATEGIES, AgentlessConfig
from .reader import Limits, ReadError, TreeReader, disjoint_scope
from .restore import Applier, ReadBack, keep_live, plan

log = logging.getLogger(__name__)

EXEC_FALLBACK = frozenset({404, 405, 406})  # BackupPlugin's Exec answered so: read it ourselves
MAX_NODE_RESULTS = 200  # per-node result rows per job (the rest counted in the reason)


@dataclass
class _Run:
    job: dict[str, Any]
    phase: str  # start | read | live | apply | verify
    pager: Any = None
    waiting: bool = False
    rounds: int = 0
    verified: Any = None  # restore: host.archive.VerifiedBackup
    notes: list[str] = field(default_factory=list)
    reports: list[dict] = field(default_factory=list)


def backup_strategy(store: Any, device_id: str, backup_id: str | None) -> str | None:
    """The read strategy a stored backup records (None: the device's agent made it, or no such
    backup). One column read: BackupPlugin asks this for every open restore job each round."""
    from sqlalchemy import select

    from host.dm.server.tables import BackupRow
    with store.reading() as s:
        meta = s.scalars(select(BackupRow.meta).where(BackupRow.device_id == device_id,
                                                      BackupRow.backup_id == (backup_id or ""))).first()
    strategy = (meta or {}).get("strategy")
    return strategy if strategy in STRATEGIES else None


def check_job_params(store: Any, kind: str, device_id: str, backup_id: str | None,
                     params: dict | None, scope: str | None = None) -> dict:
    """Validate params.mode / params.dry_run and the scope of a backup or restore to the server
    (UsageError)."""
    params = dict(params or {})
    try:
        disjoint_scope(scope.split() if scope else None)
    except InvalidUri as exc:
        raise UsageError(f"scope: {exc}") from None
    mode = params.get("mode", "auto")
    if mode not in MODES:
        raise UsageError(f"mode {str(mode)[:20]!r}: use {', '.join(MODES)}")
    if kind == "restore" and backup_id:
        made = backup_strategy(store, device_id, backup_id)
        if made and mode == "agent":
            raise UsageError(f"backup {backup_id} was read by the server ({made}): restore it with --mode "
                             "standard or auto")
        if not made and (mode == "standard" or params.get("dry_run")):
            raise UsageError(f"backup {backup_id} was made by the device's agent: the server restores it "
                             "through the BaR MO only (--mode agent or auto, no --dry-run)")
    elif params.get("dry_run"):
        raise UsageError("--dry-run goes with restore-start")
    return params


class AgentlessPlugin:
    """See module doc. Put it before BackupPlugin and give BackupPlugin ``handover=`` it."""

    name = "agentless"

    def __init__(self, config: AgentlessConfig | None = None) -> None:
        self.config = config or AgentlessConfig()
        self._resolved: dict[int, int] = {}  # auto job -> the code BackupPlugin's Exec got (404/405/406)
        self._lock = threading.Lock()

    # ------------------------------------------------------------ BackupPlugin's handover
    def claims(self, store: Any, job: dict[str, Any]) -> bool:
        if job["target"] != "server" or job["kind"] not in ("backup", "restore"):
            return False
        params = job.get("params") or {}
        if job["kind"] == "restore":
            return (params.get("mode") == "standard" or bool(params.get("dry_run"))
                    or backup_strategy(store, job["device_id"], job["backup_id"]) is not None)
        mode = params.get("mode") or "auto"
        if mode != "auto":
            return mode == "standard"
        with self._lock:
            if job["id"] in self._resolved:
                return True
        if job["state"] not in ("queued", "notified"):
            return False  # running: BackupPlugin's Exec is out (or came back 2xx)
        device = store.device(job["device_id"])
        return device is not None and device.public_key is None

    def take_over(self, ctx: SessionContext, job_id: int, code: int) -> bool:
        """BackupPlugin's Exec was answered ``code``: an auto backup continues here."""
        job = ctx.store.job(job_id)
        if (code not in EXEC_FALLBACK or job is None or job["kind"] != "backup" or job["target"] != "server"
                or (job.get("params") or {}).get("mode", "auto") != "auto"):
            return False
        with self._lock:
            self._resolved[job_id] = code
        ctx.store.set_job_state(job_id, "running", f"the BaR Exec answered {code}: reading the tree "
                                                   "with standard commands")
        return True

    # ------------------------------------------------------------ plugin calls
    def on_session(self, ctx: SessionContext) -> None:
        for _ in range(16):  # a job that ends without sending anything lets the next one start now
            run: _Run | None = ctx.state.get("run") or self._next_run(ctx)
            if run is None:
                return
            try:
                self._step(ctx, run)
            except SimvaultError as exc:
                self._finish(ctx, run, "failed", str(exc))
            if ctx.state.get("run") is not None or ctx.channel.has_pending:
                return

    def on_status(self, ctx: SessionContext, tag: object, status: m.Status) -> None:
        run = self._run_for(ctx, tag)
        if run is None:
            return
        key = tag[2]  # type: ignore[index]
        if run.phase == "apply":
            run.pager.on_status(key, status)
        else:
            run.pager.on_status(key, status.data)

    def on_results(self, ctx: SessionContext, tag: object, results: m.Results, item: m.Item) -> None:
        run = self._run_for(ctx, tag)
        if run is None or run.phase == "apply":
            return
        try:
            run.pager.on_item(tag[2], item, results.meta)  # type: ignore[index]
        except ReadError as exc:  # a cap crossed mid-package: stop now, the session ends cleanly
            self._finish(ctx, run, "failed", str(exc))

    def on_generic_alert(self, ctx: SessionContext, alert: m.Alert, item: m.Item) -> int | None:
        return None

    def on_session_end(self, ctx: SessionContext, state: str) -> None:
        run = ctx.state.pop("run", None)
        if run is not None and run.phase == "start":
            ctx.store.set_job_state(run.job["id"], "queued", f"the session {state} before the job started; "
                                                             "retrying", only_from=("running",))
        elif run is not None:
            what = "nothing was stored" if run.job["kind"] == "backup" else "the device may be partly restored"
            ctx.store.set_job_state(run.job["id"], "failed", f"the session {state} during the {run.phase} "
                                                             f"phase (after {run.rounds} rounds): {what}")

    # ------------------------------------------------------------ the job's steps
    def _run_for(self, ctx: SessionContext, tag: object) -> _Run | None:
        run = ctx.state.get("run")
        if run is None or not isinstance(tag, tuple) or len(tag) != 3:
            return None
        return run if (tag[0], tag[1]) == (run.job["id"], run.phase) else None

    def _next_run(self, ctx: SessionContext) -> _Run | None:
        done: set[int] = ctx.state.setdefault("done", set())
        for job in reversed(ctx.store.jobs(device_id=ctx.device_id, states=("queued", "notified", "running"))):
            if job["id"] in done or not self.claims(ctx.store, job):
                continue
            done.add(job["id"])
            run = ctx.state["run"] = _Run(job, "start")
            if (job.get("params") or {}).get("mode", "auto") == "auto" and job["kind"] == "backup":
                with self._lock:
                    code = self._resolved.get(job["id"])
                run.notes.append(f"auto: no BaR MO (its Exec answered {code})" if code else
                                 "auto: no signing key registered, so no agent: standard commands")
            ctx.store.set_job_state(job["id"], "running", f"reading in session {ctx.session_id}")
            return run
        return None

    def _limits(self) -> Limits:
        c = self.config
        return Limits(c.max_nodes, c.max_bytes, c.gets_per_message)

    def _start(self, ctx: SessionContext, job: dict[str, Any]) -> _Run:
        if job["kind"] == "backup":
            self.config.require_identity()
            return _Run(job, "read", TreeReader(_scope(job), self._limits(), self.config.strategies))
        run = _Run(job, "live")
        run.verified = self._verified(ctx, job)
        made = backup_strategy(ctx.store, ctx.device_id, job["backup_id"]) or STRATEGIES[0]
        order = (made,) + tuple(s for s in self.config.strategies if s != made)
        run.pager = TreeReader(list(run.verified.scope), self._limits(), order)
        return run

    def _step(self, ctx: SessionContext, run: _Run) -> None:
        if run.phase == "start":
            notes = run.notes
            run = ctx.state["run"] = self._start(ctx, run.job)
            run.notes = notes
        if run.waiting:
            run.pager.end_of_package()
            run.waiting = False
        if not run.pager.done:
            self._send_batch(ctx, run)
            return
        getattr(self, "_after_" + run.phase)(ctx, run)

    def _send_batch(self, ctx: SessionContext, run: _Run) -> None:
        job_id, phase = run.job["id"], run.phase
        if phase == "apply":
            for key, cmd in run.pager.next_commands():
                run.pager.sent(key, ctx.send(cmd, (job_id, phase, key)))
        else:
            for key, uri in run.pager.next_gets():
                ctx.send(m.Get(cmd_id=1, items=[m.Item(target=m.Target(uri))]), (job_id, phase, key))
        run.waiting = True
        run.rounds += 1
        if not ctx.channel.has_pending:  # nothing to send after all (e.g. Applier with nothing left)
            run.waiting = False
            self._step(ctx, run)

    def _after_read(self, ctx: SessionContext, run: _Run) -> None:
        from host.backup.ops import backup_tree
        reader: TreeReader = run.pager
        params = run.job.get("params") or {}
        scope = [u for u in reader.scope if reader.tree.find(u) is not None]
        if not scope:
            raise ReadError("nothing under the job's scope was readable: " + _refusals(reader.refused))
        archive = backup_tree(reader.tree, self.config.require_identity(), scope=scope if scope != ["."] else None,
                              exclude_secrets=bool(params.get("exclude_secrets")), device_id=ctx.device_id)
        data = archive.to_bytes()
        meta = {**archive.summary(), "strategy": reader.strategy, "made_by": "server", "nodes": reader.nodes,
                "unreadable": len(reader.refused)}
        stored = ctx.store.store_backup(ctx.device_id, archive.backup_id.hex(), archive.sequence, data, meta,
                                        run.job["id"])
        run.reports = [{"uri": u, "command": "Get", "code": c, "why": "not readable: left out of the backup"}
                       for u, c in reader.refused]
        text = (f"stored backup {stored['backup_id']} ({stored['size']} bytes): strategy {reader.strategy}, "
                f"{reader.nodes} nodes, {reader.gets} Gets in {run.rounds} rounds")
        run.notes += [f"fallback {f}" for f in reader.fallbacks]
        if reader.refused:
            run.notes.append(f"{len(reader.refused)} nodes not readable (per node in the results)")
        self._finish(ctx, run, "succeeded", text, backup_id=stored["backup_id"])

    def _after_live(self, ctx: SessionContext, run: _Run) -> None:
        reader: TreeReader = run.pager
        params = run.job.get("params") or {}
        verified = run.verified
        keep = bool(params.get("keep_secrets")) or verified.archive.host.secrets == "excluded"
        kept = keep_live(reader.tree, verified.tree, ctx.server_id)
        changes = apply_restore(reader.tree, verified.tree, verified.scope, keep_live_secrets=keep, dry_run=True)
        ops, skipped = plan(changes)
        run.reports = list(skipped)
        diff = render_diff(changes)
        ctx.store.add_result(ctx.device_id, run.job["id"], 200, {"diff": diff[:60_000],
                                                                 "strategy": reader.strategy})
        counts = diff.strip().splitlines()[-1] + (f" (kept live: {' '.join(kept)})" if kept else "")
        if params.get("dry_run"):
            self._finish(ctx, run, "succeeded", f"preview of backup {run.job['backup_id']} (nothing applied, "
                                                f"strategy {reader.strategy}): {counts}")
            return
        if not ops:
            self._finish(ctx, run, "failed" if skipped else "succeeded",
                         f"nothing to write: the device matches backup {run.job['backup_id']}")
            return
        run.phase, run.waiting = "apply", False
        run.pager = Applier(ops, ctx.channel.peer_max_msg_size, ctx.channel.peer_max_obj_size)
        run.notes.append(f"strategy {reader.strategy}: {counts}")
        self._send_batch(ctx, run)

    def _after_apply(self, ctx: SessionContext, run: _Run) -> None:
        applier: Applier = run.pager
        run.reports += applier.refused
        run.notes += applier.notes
        applied = applier.applied()
        if not applied:
            self._finish(ctx, run, "failed", "nothing was restored: " + _refusals(
                [(r["uri"], r["code"]) for r in applier.refused]) if applier.refused else "nothing was restored")
            return
        run.phase, run.waiting = "verify", False
        run.pager = ReadBack(applied, self.config.gets_per_message)
        run.notes.append(f"{len(applied)} of {len(applier.ops)} changes applied"
                         + (" in one Atomic" if applier.atomic and not applier.rolled_back else ""))
        self._send_batch(ctx, run)

    def _after_verify(self, ctx: SessionContext, run: _Run) -> None:
        run.reports += run.pager.mismatches
        bad = len(run.reports)
        state = "failed" if bad else "succeeded"
        head = (f"restored backup {run.job['backup_id']}, every changed node read back" if not bad else
                f"backup {run.job['backup_id']} restored only in part: {bad} nodes refused or differing "
                "(per node in the results)")
        self._finish(ctx, run, state, head)

    def _finish(self, ctx: SessionContext, run: _Run, state: str, text: str, **fields: Any) -> None:
        ctx.state.pop("run", None)
        with self._lock:
            self._resolved.pop(run.job["id"], None)
        for r in run.reports[:MAX_NODE_RESULTS]:
            ctx.store.add_result(ctx.device_id, run.job["id"], r["code"] or 0, r)
        extra = len(run.reports) - MAX_NODE_RESULTS
        notes = run.notes + ([f"{extra} more nodes not listed"] if extra > 0 else [])
        reason = text + ("; " + "; ".join(notes) if notes else "")
        ctx.store.set_job_state(run.job["id"], state, reason, **fields)
        if state == "failed":
            ctx.store.audit("agentless.failed", ctx.device_id, f"job {run.job['id']}: {text[:300]}")

    def _verified(self, ctx: SessionContext, job: dict[str, Any]) -> Any:
        """The stored archive, checked as a restore needs it (SimvaultError names what failed)."""
        identity = self.config.require_identity()
        bid = job["backup_id"] or ""
        stored = ctx.store.backup_archive_and_hash(ctx.device_id, bid)
        if stored is None:
            raise UsageError(f"backup {bid} of {ctx.device_id} is not stored on the server")
        data, recorded = stored
        if not hmac.compare_digest(hashlib.sha256(data).hexdigest(), recorded):
            raise ReadError(f"backup {bid} refused: its SHA-256 differs from the one recorded at arrival")
        try:
            return verify_archive(Archive.from_bytes(data), identity.trust, identity.decryptor,
                                  device_id=ctx.device_id)
        except SimvaultError as exc:
            ctx.store.audit("backup.damaged", ctx.device_id, f"{bid[:64]}: {exc}")
            raise ReadError(f"backup {bid} refused: {exc}") from None


def _scope(job: dict[str, Any]) -> list[str] | None:
    text = (job.get("scope") or "").strip()
    return text.split() if text else None


def _refusals(entries: list[tuple[str, int | None]]) -> str:
    shown = ", ".join(f"{u} ({c})" for u, c in entries[:5])
    return shown + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
