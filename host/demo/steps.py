"""The demo's steps: the origin document's three use cases, restores after
corruption, and a tampered backup refused. Each step verifies what it shows and
raises DemoFailure otherwise; each backup or restore adds a row to the summary.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from host.demo.rig import DS_USER, DemoFailure, DemoRig, comparable, without_preserved
from host.dm.agent.tree import BAR
from host.tree.model import DMTree
from host.tree.ops import Change, diff
from host.tree.tnds import read_tnds

FUMO_NODE = "./FUMO/FwUpdate"
FUMO_TYPE = "org.openmobilealliance.dm.firmwareupdate.update"


@dataclass
class Row:
    use_case: str
    destination: str
    result: str
    backup_id: str
    size: int | None
    seconds: float
    apdus: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": round(self.seconds, 3)}


class Steps:
    """Runs the steps in order on one rig; ``rows`` is the summary table."""

    def __init__(self, rig: DemoRig, say: Callable[[str], None], ok: Callable[[str], None]) -> None:
        self.rig, self.say, self.ok = rig, say, ok
        self.rows: list[Row] = []
        self.original: DMTree = without_preserved(rig.live())
        self.original_bytes = comparable(rig.live())

    # ------------------------------------------------------------ helpers
    def _job(self, kind: str, target: str, **kw: Any) -> tuple[dict[str, Any], list[str], float, int | None]:
        """Create a server job, follow its states until done; (job, states seen, seconds, APDUs)."""
        rig = self.rig
        apdus0, t0 = rig.apdus, time.monotonic()
        job = rig.job(kind, target, **kw)
        return self._follow(job["id"], ["queued"], t0, apdus0)

    def _follow(self, job_id: int, states: list[str], t0: float,
                apdus0: int | None) -> tuple[dict[str, Any], list[str], float, int | None]:
        store = self.rig.store
        if not self.rig.wait_until(lambda: store.job(job_id)["state"] in ("succeeded", "failed"), 60):
            raise DemoFailure(f"job {job_id} stuck in state {store.job(job_id)['state']} after 60 s")
        seconds = time.monotonic() - t0
        assert self.rig.agent is not None
        self.rig.agent.wait_idle(30)
        apdus = None if apdus0 is None or self.rig.apdus is None else self.rig.apdus - apdus0
        return store.job(job_id), self._path(job_id, states[0]), seconds, apdus

    def _path(self, job_id: int, first: str) -> list[str]:
        """The job's states as the server's audit log recorded them (queued -> ... -> succeeded)."""
        path = [first]
        names = {"created": "queued"}
        events = sorted(self.rig.store.audit_log(self.rig.device_id, limit=1000), key=lambda a: a["id"])
        for event in events:
            if event["event"].startswith("job.") and event["detail"].split(" ", 1)[0] == str(job_id):
                state = event["event"][4:]
                state = names.get(state, state)
                if state != path[-1]:
                    path.append(state)
        return path

    def _messages(self, job: dict[str, Any]) -> int:
        """DM messages exchanged in the sessions since the job was created."""
        return sum(r["messages"] for r in self.rig.store.sessions(self.rig.device_id)
                   if r["started_at"] >= job["created_at"] - 0.01)

    @staticmethod
    def _need(cond: bool, message: str) -> None:
        if not cond:
            raise DemoFailure(message)

    def _succeeded(self, job: dict[str, Any], what: str) -> dict[str, str]:
        self._need(job["state"] == "succeeded", f"{what}: job {job['id']} {job['state']}: {job['reason']}")
        return self.rig.result(job["id"])

    @staticmethod
    def _apdu_text(apdus: int | None) -> str:
        return f", {apdus} APDUs through pcscd" if apdus is not None else ""

    def _verify_tree(self, what: str) -> None:
        """The live tree and the saved file equal the original (canonical bytes)."""
        live = comparable(self.rig.live())
        on_disk = comparable(read_tnds(self.rig.tree_path.read_bytes()))
        self._need(live == self.original_bytes, f"{what}: the live tree differs from the original")
        self._need(on_disk == self.original_bytes, f"{what}: the saved tree file differs from the original")

    def _corrupt(self, changes: Callable[[DMTree], None], who: str) -> None:
        agent = self.rig.agent
        assert agent is not None and agent.wait_idle(30)
        with agent.tree.lock:
            changes(agent.tree.tree)
        agent.tree.save()
        shown = condensed_diff(diff(self.original, without_preserved(self.rig.live())))
        self._need(bool(shown), "the corruption changed nothing")
        self.say(f"{who}; diff against the original:")
        for line in shown:
            self.say(f"    {line}")

    # ------------------------------------------------------------ use case 1
    def use_case_1(self) -> None:
        rig = self.rig
        job, states, secs, _ = self._job("backup", "server")
        data = self._succeeded(job, "backup to the server")
        bid = job["backup_id"] or data.get("id", "")
        stored = [b for b in rig.store.backups(rig.device_id) if b["backup_id"] == bid]
        self._need(len(stored) == 1, f"backup {bid} is not stored on the DM server")
        self._need(rig.backup_location(bid) == "server", "the device did not record the backup's location")
        self._need(rig.agent is not None and rig.agent.tree.tree.find(f"{BAR}/Backups/{bid}/Archive") is None,
                   "the server did not delete the uploaded Archive node")
        size = stored[0]["size"]
        self.ok(f"server -> device: Package 0, session, Exec Backup destination=server; job {job['id']} {' -> '.join(states)} "
                f"in {secs:.2f}s; backup {bid[:16]} fetched (Get, large object; "
                f"{self._messages(job)} DM messages), signature and chunk hashes verified by the server, stored ({size} bytes, seq {stored[0]['sequence']})")
        self.rows.append(Row("1 server-initiated", "DM server", "stored+verified", bid, size, secs))

        job, states, secs, apdus = self._job("backup", "card")
        data = self._succeeded(job, "backup to the card")
        bid = data.get("id", "")
        on_card = rig.card_backups()
        self._need(bid in on_card, f"backup {bid} is not listed by the card")
        self.ok(f"server -> device: Exec Backup destination=card; job {job['id']} {' -> '.join(states)} "
                f"in {secs:.2f}s; backup {bid[:16]} committed on the card ({data.get('size')} bytes, manifest "
                f"signature checked by the card's trust anchor{self._apdu_text(apdus)}); card lists {len(on_card)}")
        self.rows.append(Row("1 server-initiated", "smart card", "committed", bid, int(data.get("size", 0)), secs,
                             apdus))

    # ------------------------------------------------------------ use case 2
    def use_case_2(self) -> None:
        rig = self.rig
        agent = rig.agent
        assert agent is not None and rig.web is not None
        before = {j["id"] for j in rig.store.jobs(rig.device_id)}
        apdus0, t0 = rig.apdus, time.monotonic()
        agent.backup_now(None, reason="user")

        def new_job() -> dict[str, Any] | None:
            fresh = [j for j in rig.store.jobs(rig.device_id) if j["id"] not in before]
            return fresh[0] if fresh else None

        self._need(rig.wait_until(new_job, 20), "the server created no job for the device's request")
        created = new_job()
        assert created is not None
        self.say(f"device -> server: Alert 1201 + Generic Alert (reason=user, no destination); server policy "
                 f"accepted: job {created['id']}, origin {created['origin']}, destination {created['target']}")
        job, states, secs, apdus = self._follow(created["id"], ["queued"], t0, apdus0)
        data = self._succeeded(job, "device-initiated backup")
        bid = job["backup_id"] or data.get("id", "")
        where = "DM server" if job["target"] == "server" else "smart card"
        if job["target"] == "server":
            self._need(any(b["backup_id"] == bid for b in rig.store.backups(rig.device_id)),
                       f"backup {bid} is not stored on the DM server")
        else:
            self._need(bid in rig.card_backups(), f"backup {bid} is not on the card")
        self.ok(f"job {job['id']} {' -> '.join(states)} in {secs:.2f}s: backup {bid[:16]} on the {where} "
                f"({data.get('size')} bytes)")
        self.rows.append(Row("2 user request", where, "stored+verified", bid, int(data.get("size", 0)), secs))

        if agent.card is None:
            return
        self._need((agent.tree.value(f"{BAR}/Policy/BeforeFirmwareUpdate") or "").lower() == "true",
                   "Policy/BeforeFirmwareUpdate is not set on the device")
        on_card = set(rig.card_backups())
        before = {j["id"] for j in rig.store.jobs(rig.device_id)}
        job, states, secs, apdus = self._job("firmware_update", "device", params={"node": FUMO_NODE})
        self._succeeded(job, "firmware update")
        fumo = self.rig.result(job["id"])
        new = [b for b in rig.card_backups() if b not in on_card]
        self._need(agent.firmware_updates == 1 and agent.tree.value(f"{FUMO_NODE}/State") == "100",
                   f"the firmware update did not complete: {job['reason']}")
        self._need(len(new) == 1, "the firmware update did not back up to the card first")
        recorded = [j for j in rig.store.jobs(rig.device_id) if j["id"] not in before
                    and j["origin"] == "device:firmware" and j["backup_id"] == new[0]]
        self._need(len(recorded) == 1 and recorded[0]["state"] == "succeeded",
                   "the DM server has no record of the backup made before the firmware update")
        size = int(agent.tree.value(f"{BAR}/Backups/{new[0]}/Size") or 0)
        self.ok(f"server job {job['id']} firmware_update (Exec {FUMO_NODE}/Update) {' -> '.join(states)} in "
                f"{secs:.2f}s: Policy/BeforeFirmwareUpdate backed up to the card first (backup {new[0][:16]}, "
                f"{size} bytes{self._apdu_text(apdus)}; recorded by the server as job {recorded[0]['id']}, origin "
                f"device:firmware), then the update ran: FUMO State 100, FUMO result {fumo.get('code')} "
                f"({fumo.get('message')}, Generic Alert 1226 {FUMO_TYPE})")
        self.rows.append(Row("2 policy: firmware", "smart card", "committed", new[0], size, secs, apdus))

    # ------------------------------------------------------------ restores after corruption
    def restores(self) -> None:
        rig = self.rig

        def bad_actor(tree: DMTree) -> None:
            tree.delete("./DMAcc/unitel1")
            tree.replace("./Con/telco-one-internet/NAP/Addr", "apn.attacker.example")
            tree.replace("./Con/telco-one-internet/PX/Proxy1/Addr", "203.0.113.66")

        self._corrupt(bad_actor, "corrupted: operator DM account deleted, APN and proxy redirected")
        server_backup = rig.store.backups(rig.device_id)[-1]  # the newest (ordered by sequence)
        bid = server_backup["backup_id"]
        job, states, secs, _ = self._job("restore", "server", backup_id=bid)
        self._succeeded(job, "restore from the server")
        self._verify_tree("restore from the server")
        self.ok(f"restore from the DM server: backup {bid[:16]} sent to Staging (Replace, large object; "
                f"{self._messages(job)} DM messages), verified by the device, applied all-or-nothing; job {' -> '.join(states)} in {secs:.2f}s; "
                "tree == original (canonical bytes, live and on disk)")
        self.rows.append(Row("restore", "DM server", "tree == original", bid, server_backup["size"], secs))

        if rig.agent is None or rig.agent.card is None:
            return

        def broken_update(tree: DMTree) -> None:
            tree.replace("./DevDetail/FwV", "FW-0.0.1-broken")
            tree.delete("./Con/mms-profile")
            tree.add("./DMAcc/rogue", None, format="node")
            tree.add("./DMAcc/rogue/ServerID", "rogue-dms", format="chr")

        self._corrupt(broken_update, "corrupted again: firmware version, MMS profile lost, rogue DM account")
        bid = rig.card_backups()[-1]  # the newest on the card (oldest sequence first)
        job, states, secs, apdus = self._job("restore", "card", backup_id=bid)
        data = self._succeeded(job, "restore from the card")
        self._verify_tree("restore from the card")
        self.ok(f"restore from the smart card: backup {bid[:16]} read back{self._apdu_text(apdus)}, verified, "
                f"applied; job {' -> '.join(states)} in {secs:.2f}s; tree == original (canonical bytes)")
        size = int(data.get("size") or rig.agent.tree.value(f"{BAR}/Backups/{bid}/Size") or 0)
        self.rows.append(Row("restore", "smart card", "tree == original", bid, size, secs, apdus))

    # ------------------------------------------------------------ use case 3
    def use_case_3(self) -> None:
        from host.dm.server.ds_jobs import (
            command_backup_via_ds,
            command_restore_via_ds,
            ds_backups,
        )
        rig = self.rig
        assert rig.web is not None
        t0 = time.monotonic()
        job = command_backup_via_ds(rig.web.server, rig.device_id, rig.ds.url, DS_USER, rig.ds_password)
        job, states, secs, _ = self._follow(job["id"], ["queued"], t0, None)
        data = self._succeeded(job, "BackupViaDS")
        bid = data.get("id", "")
        records = [r for r in ds_backups(rig.store, rig.device_id) if r["backup_id"] == bid]
        self._need(len(records) == 1, "the DM server has no record of the DS backup")
        items = rig.ds_store.items(DS_USER, "backup")
        self._need(len(items) == 1, f"the DS datastore holds {len(items)} items, expected 1")
        self._need(rig.backup_location(bid) == "ds", "the device did not record the DS backup")
        self.ok(f"DM server -> Exec BackupViaDS; the device ran a SyncML DS two-way sync (Replace new, Delete old) to the DS "
                f"server: ds-status {data.get('ds-status')}, {data.get('items')} item, {data.get('bytes')} bytes on "
                f"the wire; Generic Alert back to the DM server, job {' -> '.join(states)} in {secs:.2f}s; "
                f"backup {bid[:16]} ({data.get('size')} bytes) recorded at {DS_USER}/backup")
        self.rows.append(Row("3 via Data Sync", "DS server", "stored", bid, int(data.get("size", 0)), secs))

        def wiped(tree: DMTree) -> None:
            tree.delete("./SCOMO/Inventory/Deployed")
            tree.replace("./DevInfo/Lang", "xx-XX")

        self._corrupt(wiped, "corrupted: SCOMO inventory wiped, language changed")
        t0 = time.monotonic()
        job = command_restore_via_ds(rig.web.server, rig.device_id, rig.ds_password, backup_id=bid)
        job, states, secs, _ = self._follow(job["id"], ["queued"], t0, None)
        data = self._succeeded(job, "RestoreViaDS")
        self._verify_tree("restore via DS")
        self.ok(f"Exec RestoreViaDS: DS refresh-from-server (205), archive verified, applied; job "
                f"{' -> '.join(states)} in {secs:.2f}s; tree == original (canonical bytes)")
        self.rows.append(Row("3 restore via DS", "DS server", "tree == original", bid, int(data.get("size", 0)),
                             secs))

    # ------------------------------------------------------------ tampering
    def tampered(self) -> None:
        from sqlalchemy import select

        from host.archive import Archive
        from host.dm.server.backup_plugin import ARCHIVE_TYPE
        from host.dm.server.db import BackupRow
        from host.dm.server.tables import BlobRow
        rig = self.rig
        agent = rig.agent
        assert agent is not None
        job, _, _, _ = self._job("backup", "server")
        self._succeeded(job, "fresh backup to the server")
        bid = job["backup_id"]
        data = bytearray(rig.store.backup_archive(rig.device_id, bid) or b"")
        last = Archive.from_bytes(bytes(data)).manifest.chunks[-1]
        data[len(data) - last.size // 2] ^= 0x01  # the middle of the last stored chunk (bit rot)
        with rig.store.session() as s:  # a bad actor with write access to the server's database
            row = s.scalars(select(BackupRow).where(BackupRow.device_id == rig.device_id,
                                                    BackupRow.backup_id == bid)).one()
            if row.parts:  # stored content-addressed: the chunk's bytes are in its blob
                s.get(BlobRow, row.parts[-1]).data = bytes(data[len(data) - last.size:])
            else:
                row.archive = bytes(data)
        self.say(f"bad actor: flipped one bit of backup {bid[:16]} in the DM server's database")

        def one_change(tree: DMTree) -> None:
            tree.replace("./Con/telco-one-internet/MTU", "576")

        self._corrupt(one_change, "the device needs a restore (MTU changed)")
        before = comparable(rig.live())
        job, _states, secs, _ = self._job("restore", "server", backup_id=bid)
        self._need(job["state"] == "failed" and "is damaged" in (job["reason"] or ""),
                   f"the server sent its tampered copy: job {job['state']}: {job['reason']}")
        self._need(agent.tree.tree.find(f"{BAR}/Staging/Archive") is None, "the server staged the tampered copy")
        self._untouched(before, "the refused restore")
        self.ok(f"restore refused by the server before sending anything: {job['reason']}")
        self.rows.append(Row("tampered restore", "DM server", "refused by server", bid, len(data), secs))

        # second variant: the tampered copy reaches the device's Staging node anyway
        with agent.tree.lock:
            agent.tree.set_leaf(f"{BAR}/Staging/Archive", bytes(data), "bin", ARCHIVE_TYPE)
        self.say(f"bad actor: put the tampered copy of {bid[:16]} straight into the device's Staging/Archive")
        job, _states, secs, _ = self._job("restore", "staging", backup_id=bid)
        self._need(job["state"] == "failed", "the tampered backup was restored")
        refusal = rig.result(job["id"]).get("message", job["reason"])
        self._untouched(before, "the refused restore")
        self.ok(f"restore refused by the device: {refusal}")
        self.ok("tree untouched: live tree and file identical to before both attempts (nothing applied)")
        self.rows.append(Row("tampered restore", "device Staging", "refused by device", bid, len(data), secs))

    def _untouched(self, before: bytes, what: str) -> None:
        self._need(comparable(self.rig.live()) == before, f"{what} changed the live tree")
        self._need(comparable(read_tnds(self.rig.tree_path.read_bytes())) == before, f"{what} changed the tree file")


def condensed_diff(changes: list[Change], limit: int = 8) -> list[str]:
    """A removed/added subtree as one line; secret values never shown."""
    lines: list[str] = []
    covered: list[str] = []
    for c in changes:
        if any(c.uri.startswith(p + "/") for p in covered):
            continue
        if c.kind in ("added", "removed"):
            n = sum(1 for d in changes if d.kind == c.kind and (d.uri == c.uri or d.uri.startswith(c.uri + "/")))
            covered.append(c.uri)
            lines.append(f"{'+' if c.kind == 'added' else '-'} {c.uri}" + (f" ({n} nodes)" if n > 1 else ""))
        else:
            assert c.before is not None and c.after is not None
            if c.secret:
                lines.append(f"~ {c.uri}: <secret changed>")
            else:
                lines.append(f"~ {c.uri}: {_short(c.before.value)} -> {_short(c.after.value)}")
    if len(lines) > limit:
        lines = lines[:limit] + [f"... {len(lines) - limit} more"]
    return lines


def _short(value: object) -> str:
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
