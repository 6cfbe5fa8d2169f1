"""DMServer's side away from the session: Package 0 notifications, the job ticker,
device removal and shutdown.

A mixin of host.dm.server.engine.DMServer (its state: the store, the notifier, the
session table and the notification bookkeeping, all set up in DMServer.__init__),
apart so that engine.py stays the session engine.
"""
from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import Any

from host.dm import dmauth
from host.dm.server.db import Device
from host.errors import SimvaultError
from host.syncml.package0 import Initiator, Notification, UIMode

log = logging.getLogger("host.dm.server.engine")
BLOB_COLLECTION_INTERVAL = 60.0  # seconds between two collections of unreferenced backup chunks


class JobsMixin:
    _next_blob_collection = 0.0  # monotonic time of the next collection of unreferenced chunks

    # ------------------------------------------------------------ notification and jobs
    def package0_for(self, device: Device, session_id: int | None = None) -> tuple[int, bytes]:
        sid = session_id if session_id is not None else secrets.randbelow(0xFFFF) + 1
        note = Notification(server_id=self.server_id, session_id=sid, ui_mode=UIMode.BACKGROUND,
                            initiator=Initiator.SERVER)
        return sid, dmauth.package0_from_secret(note, device.server_secret, dmauth.unb64(device.client_nonce))

    def notify(self, device_id: str) -> bool:
        """Send a Package 0 to the device; True when the notifier accepted it."""
        with self._lock:
            lock = self._notify_locks.setdefault(device_id, threading.Lock())
        with lock:
            return self._notify_locked(device_id)

    def submit_job(self, job: dict[str, Any]) -> dict[str, Any]:
        """A job just queued: notify its device now (queued -> notified); when the device
        cannot be reached the job stays queued and the ticker retries."""
        if self.notify(job["device_id"]):
            self.store.set_job_state(job["id"], "notified", only_from=("queued",))
            return self.store.job(job["id"]) or job
        return job

    def notify_many(self, device_ids: list[str]) -> dict[str, bool]:
        """Notify several devices at once (in parallel); {device: accepted}."""
        if len(device_ids) <= 1:
            return {d: self.notify(d) for d in device_ids}
        return dict(zip(device_ids, self._notify_pool.map(self.notify, device_ids), strict=True))

    def _notify_locked(self, device_id: str) -> bool:
        device = self.store.device(device_id)
        if device is None or self.notifier is None:
            return False
        now = time.monotonic()
        if now < self._notify_backoff.get(device_id, 0.0):
            return False
        if now - self._notified_at.get(device_id, -1e9) < self.renotify_after:
            return True  # one is on its way (same nonce): the device's session will pick up every job
        _, pkg = self.package0_for(device)
        try:
            self.notifier.notify(device.id, device.notify_url, pkg)
        except SimvaultError as exc:
            self.store.audit("notify.failed", device.id, str(exc))
            self._notify_backoff[device_id] = time.monotonic() + self.renotify_after
            return False
        self._notify_backoff.pop(device_id, None)
        self._notified_at[device_id] = time.monotonic()
        self.store.audit("notify.sent", device.id, device.notify_url or "")
        return True

    def tick(self) -> None:
        """Periodic work: fail stale jobs, notify devices with queued jobs.

        One light query for all open jobs (columns, not ORM rows) and one pass over the
        open sessions: with hundreds of devices the ticker stays cheap."""
        for job_id in self.store.expire_jobs(self.running_timeout, self.notified_timeout):
            log.info("job %s failed: timeout", job_id)
        if time.monotonic() >= self._next_blob_collection:
            self._next_blob_collection = time.monotonic() + BLOB_COLLECTION_INTERVAL
            removed = self.store.collect_blobs()
            if removed:
                log.info("removed %d backup chunks no backup lists any more", removed)
        now = time.time()
        rows = self.store.open_job_summaries()
        if not rows:
            return
        with self._lock:
            busy = {s.device_id for s in self._sessions.values() if not s.closed}
        waiting: dict[str, list] = {}
        for job in rows:
            if job.state in ("queued", "notified"):
                waiting.setdefault(job.device_id, []).append(job)
        due = [dev for dev, jobs in waiting.items() if dev not in busy and not all(
            j.state == "notified" and now - j.updated_at < self.renotify_after for j in jobs)]
        mono = time.monotonic()
        with self._lock:
            on_the_way = sum(1 for d, t in self._notified_at.items() if mono - t < self.renotify_after)
        room = max(0, self.max_active_devices - len(busy) - on_the_way)
        due = due[:room]  # oldest jobs first (rows are in id order)
        # an upload cut short (connection lost, server restart): notify again to fetch it
        refetch = {job.device_id: job for job in rows
                   if job.state == "running" and job.kind == "backup" and job.target == "server" and job.backup_id
                   and job.device_id not in busy and job.device_id not in waiting
                   and now - job.updated_at >= self.renotify_after}
        for dev, accepted in self.notify_many(due + list(refetch)).items():
            if not accepted:
                continue
            for j in waiting.get(dev, []):
                self.store.set_job_state(j.id, "notified", only_from=("queued", "notified"))
            if dev in refetch:
                job = refetch[dev]
                self.store.set_job_state(job.id, "running", f"fetching backup {job.backup_id} again")

    def remove_device(self, device_id: str, *, purge: bool = False) -> dict[str, Any]:
        """End the device's open sessions, then delete it (Store.remove_device: backups kept
        unless ``purge``)."""
        with self._lock:
            for key, sess in list(self._sessions.items()):
                if sess.device_id == device_id:
                    del self._sessions[key]
                    self._end(sess, "failed", "device removed")
            self._notified_at.pop(device_id, None)
            self._notify_backoff.pop(device_id, None)
        return self.store.remove_device(device_id, purge=purge)

    def close(self) -> None:
        """Stop the notification workers and end the open sessions (the web server's stop calls
        this): the devices open new ones once the server is back."""
        self._notify_pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for key, sess in list(self._sessions.items()):
                del self._sessions[key]
                self._end(sess, "failed", "server stopped")

    def _device_busy(self, device_id: str) -> bool:
        with self._lock:
            return any(s.device_id == device_id and not s.closed for s in self._sessions.values())

    def open_sessions(self) -> int:
        with self._lock:
            return sum(1 for s in self._sessions.values() if not s.closed)
