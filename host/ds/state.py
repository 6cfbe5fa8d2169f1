"""The DS client's small state file: sync anchors and the next auth nonce per datastore.

One JSON document, keyed by "<server URL>|<user>|<datastore>", written
atomically (temp file + rename) so a crash never leaves half a file. Anchors
only move forward after a session completed; a failed session leaves them.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from host.ds.errors import DsError
from host.fsutil import atomic_write

STATE_VERSION = 1


@dataclass
class DatastoreState:
    last_anchor: str | None = None  # our Next of the last completed session
    server_anchor: str | None = None  # the server's Next of that session
    next_nonce: str | None = None  # b64 nonce from the server's last Chal (md5)
    last_backup_id: str | None = None
    luids: list[str] | None = None  # our items on the server (two-way backups delete the older ones)
    interrupted_mode: int | None = None  # sync type of a session cut after the server alerted back (resume)


def new_anchor(previous: str | None) -> str:
    """A fresh Next anchor: a time stamp that always differs from ``previous``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    anchor, n = stamp, 0
    while anchor == previous:
        n += 1
        anchor = f"{stamp}-{n}"
    return anchor


class AnchorStore:
    """Anchors per (server URL, user, datastore); ``path=None`` keeps them in memory."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path is not None else None
        self._data: dict[str, dict[str, str | None]] = {}
        if self.path is not None and self.path.exists():
            try:
                doc = json.loads(self.path.read_text("utf-8"))
                if doc.get("version") != STATE_VERSION or not isinstance(doc.get("datastores"), dict):
                    raise ValueError("version")
                self._data = doc["datastores"]
            except (ValueError, OSError) as exc:
                raise DsError(f"DS state file {self.path} is unreadable ({exc}): delete it to force a slow sync") from None

    @staticmethod
    def key(url: str, user: str, datastore: str) -> str:
        return f"{url}|{user}|{datastore}"

    def get(self, key: str) -> DatastoreState:
        raw = self._data.get(key, {})
        return DatastoreState(**{k: raw.get(k) for k in DatastoreState.__dataclass_fields__})  # type: ignore[arg-type]

    def put(self, key: str, state: DatastoreState) -> None:
        self._data[key] = asdict(state)
        self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        doc = json.dumps({"version": STATE_VERSION, "datastores": self._data}, indent=1, sort_keys=True)
        atomic_write(self.path, doc.encode("utf-8"))
