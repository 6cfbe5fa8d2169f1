"""The Backup MO on the server side: a :class:`~host.dm.server.plugin.ServerPlugin`.

It turns jobs (table ``jobs``) into DM commands on ./Vendor/simvault/BaR
(docs/BACKUP_MO.md) and results back into job states:

backup   Exec Operations/Backup (destination=server|card) -> 202 -> later Generic
         Alert (urn:simvault:bar:result:1.0, Correlator = job's). For the server
         destination the plugin then Gets Backups/<id>/Archive (a large object),
         verifies it against the device's registered signing key (signature and
         every chunk hash, host.archive) before storing it, and Deletes the node.
restore  source=server: Replace Staging/Archive with the stored archive, then Exec
         Operations/Restore source=staging; source=card: Exec Restore source=card.
delete   location=server: removed from the database; Exec Operations/Delete so
         the device marks its Backups node.
backup_via_ds / restore_via_ds
         Exec Operations/BackupViaDS|RestoreViaDS with the job's params["data"];
         the result alert is recorded like any other (items, bytes, ds-status).

A device's own request (Generic Alert urn:simvault:bar:request:1.0) goes to a
:class:`DevicePolicy`: accept -> a job and the Exec in the same session;
refuse -> Status 406.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import re
from dataclasses import dataclass
from typing import Any, Protocol

from host.archive import Archive, verify_integrity, verify_signature
from host.dm.server.db import Store, StoreError
from host.dm.server.plugin import SessionContext
from host.dm.session import format_kv, parse_kv
from host.errors import ArchiveError, IntegrityError, SimvaultError, SyncMLError, UsageError
from host.syncml import model as m
from host.syncml.status import StatusCode, is_success, status_name

log = logging.getLogger(__name__)

BAR = "./Vendor/simvault/BaR"
OPS = BAR + "/Operations"
RESULT_TYPE = "urn:simvault:bar:result:1.0"
REQUEST_TYPE = "urn:simvault:bar:request:1.0"
ARCHIVE_TYPE = "application/vnd.simvault.archive"
EXEC_NODE = {"backup": "Backup", "restore": "Restore", "delete": "Delete",
             "backup_via_ds": "BackupViaDS", "restore_via_ds": "RestoreViaDS"}


FUMO_TYPE_PREFIX = "org.openmobilealliance.dm.firmwareupdate."
FUMO_DEFAULT_NODE = "./FUMO/FwUpdate"
_FUMO_NODE_RE = re.compile(r"^\./FUMO/[A-Za-z0-9_.-]{1,64}$")
# OMA FUMO 1.0 result codes a report may carry (the rest read as "FUMO result <code>")
FUMO_RESULTS = {200: "Successful", 400: "Management Client Error", 401: "User Cancelled",
                402: "Corrupted Firmware Update Package", 403: "Firmware Update Package - Device Mismatch",
                404: "Failed Firmware Update Package Validation", 405: "Firmware Update Package Not Acceptable",
                408: "Not Implemented", 409: "Undefined Error", 410: "Firmware Update Failed"}


def fumo_node(params: dict[str, Any] | None) -> str:
    """The FUMO node of a firmware_update job (./FUMO/<x>); UsageError for anything else."""
    node = str((params or {}).get("node") or FUMO_DEFAULT_NODE).rstrip("/")
    if not _FUMO_NODE_RE.match(node):
        raise UsageError(f"FUMO node {node[:80]!r}: give ./FUMO/<name>")
    return node


class _OneKey:
    """Trust anchors holding just the device's registered signing key."""

    def __init__(self, point: bytes) -> None:
        from apdu_specs.manifest import key_id
        self.point, self.kid = point, key_id(point)

    def get(self, kid: bytes) -> bytes | None:
        return self.point if hmac.compare_digest(kid, self.kid) else None


def verify_uploaded_archive(data: bytes, device_id: str, public_point: bytes | None) -> Archive:
    """Everything the server can check without the device's decryption key.

    The manifest signature by the device's registered key, the device id in the
    manifest, completeness, and every stored chunk against its signed SHA-256.
    Raises IntegrityError/ArchiveError; nothing is stored before this passes.
    """
    if public_point is None:
        raise IntegrityError(f"device {device_id} has no registered public key; register it to accept backups")
    archive = Archive.from_bytes(data)
    verify_signature(archive, _OneKey(public_point))
    if not hmac.compare_digest(archive.device_id.encode(), device_id.encode()):
        raise IntegrityError(f"archive belongs to device {archive.device_id!r}, not {device_id!r}")
    if archive.missing_chunks():
        raise IntegrityError("archive is incomplete: chunks are missing")
    for ref in archive.manifest.chunks:
        archive.checked_chunk(ref)
    return archive


def _is_hex(text: str) -> bool:
    return bool(text) and len(text) <= 64 and all(c in "0123456789abcdef" for c in text)


@dataclass
class Decision:
    accept: bool
    target: str = "server"
    reason: str = ""


class DevicePolicy:
    """Decides on device-initiated backup requests (override ``decide`` to change it).

    Default: accept when the device is allowed to ask and has no backup job
    open; the destination is the one the device asked for when it is server or
    card, else the device's default target.
    """

    def decide(self, store: Store, device_id: str, request: dict[str, str]) -> Decision:
        device = store.device(device_id)
        if device is None or not device.allow_device_backup:
            return Decision(False, reason="device-initiated backups are not allowed for this device")
        open_backups = [j for j in store.jobs(device_id=device_id, states=("running",)) if j["kind"] == "backup"]
        if open_backups:
            return Decision(False, reason=f"backup job {open_backups[0]['id']} is already running")
        wanted = request.get("destination", "")
        target = wanted if wanted in ("server", "card") else device.default_target
        return Decision(True, target=target, reason=request.get("reason", "user"))


class Handover(Protocol):
    """Another plugin that serves some server jobs itself (host.dm.server.agentless)."""

    def claims(self, store: Store, job: dict[str, Any]) -> bool: ...

    def take_over(self, ctx: SessionContext, job_id: int, code: int) -> bool: ...


class BackupPlugin:
    """See module doc. ``name`` tags the commands it sends. ``handover``: the jobs it claims
    are left to it, and a backup Exec answered 404/405/406 is offered to it."""

    name = "simvault-bar"

    def __init__(self, policy: DevicePolicy | None = None, handover: Handover | None = None) -> None:
        self.policy = policy or DevicePolicy()
        self.handover = handover

    # ------------------------------------------------------------ sending
    def on_session(self, ctx: SessionContext) -> None:
        dispatched: set[int] = ctx.state.setdefault("dispatched", set())
        fetching: set[int] = ctx.state.setdefault("fetching", set())
        open_jobs = ctx.store.jobs(device_id=ctx.device_id, states=("queued", "notified", "running"))  # one query
        for job in reversed(open_jobs):
            if self.handover is not None and self.handover.claims(ctx.store, job):
                continue
            if job["state"] != "running":
                if job["id"] not in dispatched:
                    self.dispatch(ctx, job)
            elif (job["kind"] == "backup" and job["target"] == "server" and job["backup_id"]
                    and job["id"] not in fetching):
                self._fetch(ctx, job["id"], job["backup_id"])

    def _fetch(self, ctx: SessionContext, job_id: int, backup_id: str) -> None:
        """Get the archive the device keeps for us (again, if an earlier upload was cut)."""
        ctx.state.setdefault("fetching", set()).add(job_id)
        node = f"{BAR}/Backups/{backup_id}/Archive"
        ctx.send(m.Get(cmd_id=1, items=[m.Item(target=m.Target(node))]), ("fetch", job_id, node))

    def dispatch(self, ctx: SessionContext, job: dict[str, Any]) -> None:
        """Queue the commands of one job and mark it running."""
        ctx.state.setdefault("dispatched", set()).add(job["id"])
        kind, target, store = job["kind"], job["target"], ctx.store
        params = job.get("params") or {}
        if kind == "backup":
            data = format_kv({"destination": target, "scope": job.get("scope") or None,
                              "exclude-secrets": 1 if params.get("exclude_secrets") else None})
        elif kind == "restore":
            source = target
            if target == "server":
                archive = self._stored_archive_checked(ctx, job)
                if archive is None:
                    return
                ctx.send(m.Replace(cmd_id=1, meta=m.Meta(format="b64", type=ARCHIVE_TYPE),
                                   items=[m.Item(target=m.Target(BAR + "/Staging/Archive"), data=archive)]),
                         ("staging", job["id"]))
                source = "staging"
            data = format_kv({"id": job["backup_id"], "source": source,
                              "keep-secrets": 1 if params.get("keep_secrets") else None,
                              "force-device": 1 if params.get("force_device") else None})
        elif kind == "delete":
            if target == "server":
                store.delete_backup(ctx.device_id, job["backup_id"] or "")
            data = format_kv({"id": job["backup_id"], "location": target})
        elif kind == "firmware_update":
            try:
                node = fumo_node(params)
            except UsageError as exc:
                store.set_job_state(job["id"], "failed", str(exc))
                return
            ctx.state.setdefault("awaiting", set()).add(job["id"])
            ctx.send(m.Exec(cmd_id=1, correlator=job["correlator"], item=m.Item(target=m.Target(f"{node}/Update"))),
                     ("exec", job["id"]))
            store.set_job_state(job["id"], "running", f"sent in session {ctx.session_id}")
            return
        else:
            data = str(params.get("data", ""))
            if kind in ("backup_via_ds", "restore_via_ds"):  # account=<name> -> the password, sealed
                from host.dm.server.ds_accounts import exec_data_for_job
                device = store.device(ctx.device_id)
                try:
                    data = exec_data_for_job(store, data, device_id=ctx.device_id, correlator=job["correlator"],
                                             enc_key=device.enc_key if device else None, tls=ctx.tls)
                except SimvaultError as exc:
                    store.set_job_state(job["id"], "failed", str(exc))
                    return
        ctx.state.setdefault("awaiting", set()).add(job["id"])
        ctx.send(m.Exec(cmd_id=1, correlator=job["correlator"],
                        item=m.Item(target=m.Target(f"{OPS}/{EXEC_NODE[kind]}"),
                                    meta=m.Meta(format="chr", type="text/plain"), data=data)),
                 ("exec", job["id"]))
        store.set_job_state(job["id"], "running", f"sent in session {ctx.session_id}")

    @staticmethod
    def _stored_archive_checked(ctx: SessionContext, job: dict[str, Any]) -> bytes | None:
        """The stored archive, re-verified before it leaves: the SHA-256 recorded at arrival and
        the signature and chunk hashes against the device's registered key. Any mismatch fails
        the job (nothing is sent)."""
        store, bid = ctx.store, job["backup_id"] or ""
        try:
            stored = store.backup_archive_and_hash(ctx.device_id, bid)
        except StoreError as exc:  # a stored chunk missing or not matching its SHA-256
            store.audit("backup.damaged", ctx.device_id, f"{bid[:64]}: {exc}")
            store.set_job_state(job["id"], "failed", f"server copy of backup {bid} is damaged: {exc}; nothing sent")
            return None
        if stored is None:
            store.set_job_state(job["id"], "failed", f"backup {bid} of {ctx.device_id} is not stored on the server")
            return None
        data, recorded = stored
        try:
            if not hmac.compare_digest(hashlib.sha256(data).hexdigest(), recorded):
                raise IntegrityError("its SHA-256 differs from the one recorded at arrival")
            device = store.device(ctx.device_id)
            if device is None or device.public_key is None:
                raise IntegrityError("the device has no registered signing key to check it against")
            archive = Archive.from_bytes(data)
            verify_integrity(archive, _OneKey(device.public_key))
            if not hmac.compare_digest(archive.device_id.encode(), ctx.device_id.encode()):
                raise IntegrityError(f"it belongs to device {archive.device_id!r}")
        except (IntegrityError, ArchiveError) as exc:
            store.audit("backup.damaged", ctx.device_id, f"{bid[:64]}: {exc}")
            store.set_job_state(job["id"], "failed", f"server copy of backup {bid} is damaged: {exc}; nothing sent")
            return None
        return data

    # ------------------------------------------------------------ answers
    def on_status(self, ctx: SessionContext, tag: object, status: m.Status) -> None:
        if not isinstance(tag, tuple):
            return
        what, job_id = tag[0], tag[1]
        code = status.data
        if what == "exec":
            ctx.state.setdefault("awaiting", set()).discard(job_id)
        if code in (StatusCode.CHUNKED_ITEM_ACCEPTED, StatusCode.ACCEPTED_FOR_PROCESSING) or what == "cleanup":
            return
        if what == "exec" and code == StatusCode.OK:
            return  # finished synchronously; its Generic Alert still carries the result
        if what == "exec" and self.handover is not None and self.handover.take_over(ctx, job_id, code):
            return  # no BaR MO on this device: read with standard commands, same session
        if not is_success(code):
            ctx.store.set_job_state(job_id, "failed", f"device answered {what} with {code} "
                                                      f"({status_name(code)})")

    def on_session_end(self, ctx: SessionContext, state: str) -> None:
        """An Exec the device never answered (session aborted or lost): queue the job again."""
        for job_id in ctx.state.pop("awaiting", set()):
            ctx.store.set_job_state(job_id, "queued", "the device did not answer the command; retrying",
                                    only_from=("running",))
        ctx.state.get("dispatched", set()).clear()

    def on_results(self, ctx: SessionContext, tag: object, results: m.Results, item: m.Item) -> None:
        if not (isinstance(tag, tuple) and tag[0] == "fetch"):
            return
        job_id, node = tag[1], tag[2] if len(tag) > 2 else None
        store = ctx.store
        data = item.data
        if not isinstance(data, bytes):
            store.set_job_state(job_id, "failed", "archive arrived without Format b64")
            return
        device = store.device(ctx.device_id)
        try:
            archive = verify_uploaded_archive(data, ctx.device_id, device.public_key if device else None)
            stored = store.store_backup(ctx.device_id, archive.backup_id.hex(), archive.sequence, data,
                                        {**archive.summary(), "strategy": "agent"}, job_id)
        except (IntegrityError, ArchiveError) as exc:
            store.audit("backup.rejected", ctx.device_id, str(exc))
            store.set_job_state(job_id, "failed", f"uploaded archive refused: {exc}")
            return
        except SimvaultError as exc:
            store.set_job_state(job_id, "failed", f"storing the archive failed: {exc}")
            return
        store.set_job_state(job_id, "succeeded",
                            f"stored backup {stored['backup_id']} ({stored['size']} bytes): strategy agent")
        if node:
            ctx.send(m.Delete(cmd_id=1, items=[m.Item(target=m.Target(node))]), ("cleanup", job_id))

    def on_generic_alert(self, ctx: SessionContext, alert: m.Alert, item: m.Item) -> int | None:
        kind = item.meta.type if item.meta else None
        if kind == RESULT_TYPE:
            return self._on_result(ctx, alert, item)
        if kind == REQUEST_TYPE:
            return self._on_request(ctx, item)
        if kind and kind.startswith(FUMO_TYPE_PREFIX):
            return self._on_fumo_result(ctx, alert, item)
        return None

    def _on_fumo_result(self, ctx: SessionContext, alert: m.Alert, item: m.Item) -> int:
        """OMA FUMO result (Generic Alert 1226, Data = the result code) of a firmware_update job."""
        store = ctx.store
        try:
            code = int(str(item.data or "").strip())
        except ValueError:
            return StatusCode.BAD_REQUEST
        job = store.job_by_correlator(ctx.device_id, alert.correlator or "")
        if job is None or job["kind"] != "firmware_update":
            store.audit("result.unmatched", ctx.device_id, f"FUMO correlator {(alert.correlator or '')[:64]}")
            return StatusCode.NOT_FOUND
        if job["state"] in ("succeeded", "failed"):
            return StatusCode.OK  # a repeated report: recorded the first time
        node = item.source.loc_uri if item.source else ""
        text = FUMO_RESULTS.get(code, f"FUMO result {code}")
        store.add_result(ctx.device_id, job["id"], code, {"code": str(code), "node": node, "message": text})
        if 200 <= code < 300:
            store.set_job_state(job["id"], "succeeded", f"firmware updated ({code} {text}) at {node}")
        else:
            store.set_job_state(job["id"], "failed", f"firmware update failed: {code} {text}")
        return StatusCode.OK

    def _on_result(self, ctx: SessionContext, alert: m.Alert, item: m.Item) -> int:
        store = ctx.store
        try:
            data = parse_kv(item.data if isinstance(item.data, str) else "")
            code = int(data.get("code", "500"))
        except (SyncMLError, ValueError):
            return StatusCode.BAD_REQUEST
        correlator = alert.correlator or ""
        job = store.job_by_correlator(ctx.device_id, correlator)
        if job is None and correlator.startswith("device:"):
            # a report of the device's own backup: resent (our Status got lost) -> the same job
            job = store.job_for_backup(ctx.device_id, data["id"]) if data.get("id") else None
            if job is None:
                job = self._unsolicited(ctx, correlator, data)
            if job is None:
                return StatusCode.OPTIONAL_FEATURE_NOT_SUPPORTED
        if job is not None and job["state"] in ("succeeded", "failed"):
            return StatusCode.OK  # a repeated report (the device retried): recorded the first time
        store.add_result(ctx.device_id, job["id"] if job else None, code, data)
        if job is None:
            store.audit("result.unmatched", ctx.device_id, f"correlator {correlator[:64]}")
            return StatusCode.NOT_FOUND
        if not is_success(code):
            store.set_job_state(job["id"], "failed", f"device reported {code}: {data.get('message', '')}")
            return StatusCode.OK
        if job["kind"] == "backup" and data.get("location") == "server":
            backup_id = data.get("id", "")
            if not _is_hex(backup_id):
                store.set_job_state(job["id"], "failed", "device reported no valid backup id")
                return StatusCode.BAD_REQUEST
            if job["backup_id"] == backup_id and job["id"] in ctx.state.get("fetching", set()):
                return StatusCode.OK  # the same report twice in one session: one Get is enough
            self._fetch(ctx, job["id"], backup_id)
            store.set_job_state(job["id"], "running", f"fetching backup {backup_id}", backup_id=backup_id)
            return StatusCode.OK
        summary = data.get("message") or f"{job['kind']} done"
        if data.get("id"):
            summary = f"{summary} (backup {data['id']} at {data.get('location', job['target'])})"
        made = data.get("id", "") if job["kind"] in ("backup", "backup_via_ds") and not job["backup_id"] else ""
        # a card or DS backup's id on its job too (dm jobs shows it; the archive is not on the server)
        store.set_job_state(job["id"], "succeeded", summary, **({"backup_id": made} if _is_hex(made) else {}))
        return StatusCode.OK

    def _unsolicited(self, ctx: SessionContext, correlator: str, data: dict[str, str]) -> dict[str, Any] | None:
        """A backup the device made on its own policy (ServerApproval false): its Correlator is
        'device:<reason>'. The server's policy still decides whether to record (and fetch) it."""
        reason = correlator.split(":", 1)[1][:24] or "policy"
        location = data.get("location", "")
        decision = self.policy.decide(ctx.store, ctx.device_id, {"reason": reason, "destination": location})
        if not decision.accept or location not in ("server", "card"):
            ctx.store.audit("report.refused", ctx.device_id, decision.reason or f"location {location[:16]}")
            return None
        backup_id = data.get("id", "")
        return ctx.store.create_job(ctx.device_id, "backup", location, origin=f"device:{reason}", state="running",
                                    backup_id=backup_id if _is_hex(backup_id) else None)

    def _on_request(self, ctx: SessionContext, item: m.Item) -> int:
        try:
            request = parse_kv(item.data if isinstance(item.data, str) else "")
        except SyncMLError:
            return StatusCode.BAD_REQUEST
        origin = f"device:{request.get('reason', 'user')}"[:32]
        if any(j["origin"] == origin and j["kind"] == "backup"
               for j in ctx.store.jobs(device_id=ctx.device_id, states=("queued", "notified", "running"))):
            return StatusCode.OK  # the same request again (our answer got lost): the job is under way
        decision = self.policy.decide(ctx.store, ctx.device_id, request)
        if not decision.accept:
            ctx.store.audit("request.refused", ctx.device_id, decision.reason)
            return StatusCode.OPTIONAL_FEATURE_NOT_SUPPORTED
        job = ctx.store.create_job(ctx.device_id, "backup", decision.target, origin=origin)
        self.dispatch(ctx, job)
        return StatusCode.OK
