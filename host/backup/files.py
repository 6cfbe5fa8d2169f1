"""Archive and tree files, and the host's own state (host.backup.ops re-exports all of it).

Files are replaced atomically (temp file + os.replace).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from host.archive import Archive
from host.errors import ArchiveError, SimvaultError, TreeError, UsageError
from host.fsutil import atomic_write
from host.backup.keys import Identity
from host.tree.model import DMTree
from host.tree.tnds import read_tnds


ARCHIVE_SUFFIX = ".svarch"


# ---- files -------------------------------------------------------------------------


def is_directory_target(path: str | Path) -> bool:
    """A destination meant as a directory: it ends in '/' or is one already."""
    text = str(path) if not isinstance(path, str) else path
    return text.endswith(("/", os.sep)) or Path(path).is_dir()


def write_archive_file(path: str | Path, archive: Archive, *, directory: bool | None = None) -> Path:
    """Write archive to path; a directory (``directory``, or a path ending in '/' or
    an existing directory) gets <backup id>.svarch, created 0700 if missing.
    Returns the file."""
    if directory is None:
        directory = is_directory_target(path)
    path = Path(path)
    if directory:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = path / f"{archive.backup_id.hex()}{ARCHIVE_SUFFIX}"
    atomic_write(path, archive.to_bytes())
    return path


_WHAT_TO_GIVE = {
    "tree": "give the device's tree, a TNDS XML file (restore --create writes a new one)",
    "archive": "give a .svarch file or a directory of them (made by 'simvault backup --to' or 'simvault export')",
}


def _missing(path: Path, what: str = "archive") -> UsageError:
    return UsageError(f"no such file or directory: {path}: {_WHAT_TO_GIVE[what]}")


def _read_bytes(path: Path, what: str, error: type[SimvaultError]) -> bytes:
    """The bytes of a file the user named: UsageError when it is missing, ``error`` otherwise."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise _missing(path, what) from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror}") from None


def read_archive_file(path: Path) -> Archive:
    """The archive in a file; errors name the file."""
    data = _read_bytes(path, "archive", ArchiveError)
    try:
        return Archive.from_bytes(data)
    except ArchiveError as exc:
        raise type(exc)(f"{path}: {exc}") from None


def archives_in(directory: Path) -> list[tuple[Path, Archive]]:
    """Archives of a directory, oldest sequence first (unreadable files skipped)."""
    out = []
    for p in sorted(Path(directory).glob(f"*{ARCHIVE_SUFFIX}")):
        try:
            out.append((p, read_archive_file(p)))
        except ArchiveError:
            continue
    return sorted(out, key=lambda pa: pa[1].sequence)


def find_archive(source: Path, backup_id: bytes | None) -> Archive:
    source = Path(source)
    if not source.exists():
        raise _missing(source)
    if source.is_file():
        archive = read_archive_file(source)
        if backup_id is not None and archive.backup_id != backup_id:
            raise UsageError(f"{source} holds backup {archive.backup_id.hex()}, not {backup_id.hex()}: drop --id, "
                             "or give that backup's file or its directory")
        return archive
    found = archives_in(source)
    if backup_id is not None:
        found = [pa for pa in found if pa[1].backup_id == backup_id]
    if not found:
        raise UsageError(f"no backup{' ' + backup_id.hex() if backup_id else ''} in {source}: "
                         f"'simvault list --from {source}' shows what it holds")
    return found[-1][1]


def read_tree_file(path: Path) -> DMTree:
    data = _read_bytes(path, "tree", UsageError)
    try:
        return read_tnds(data)
    except TreeError as exc:        # XmlError included: say which file
        raise type(exc)(f"{path}: {exc}") from None


# ---- host state --------------------------------------------------------------------


class HostState:
    """Small JSON state in the key directory: sequences seen and pending uploads."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.data: dict[str, Any] = json.loads(self.path.read_text())
        except FileNotFoundError:
            self.data = {}
        except (OSError, ValueError, RecursionError):
            raise UsageError(f"state file {self.path} is damaged; remove it") from None
        if not isinstance(self.data, dict) or not isinstance(self.data.setdefault("devices", {}), dict):
            raise UsageError(f"state file {self.path} is damaged; remove it")

    def device(self, device_id: str) -> dict[str, Any]:
        return self.data["devices"].setdefault(device_id, {})

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps(self.data, sort_keys=True, indent=1).encode())

    def last_restored(self, device_id: str) -> int | None:
        return self.device(device_id).get("last_restored_sequence")

    def note_restored(self, device_id: str, sequence: int) -> None:
        dev = self.device(device_id)
        dev["last_restored_sequence"] = max(sequence, dev.get("last_restored_sequence", 0))
        self.save()

    def pending_dir(self) -> Path:
        d = self.path.parent / "pending"
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        return d


def host_state(identity: Identity) -> HostState:
    return HostState(identity.directory / "state.json")
