"""Restore: verify an archive completely, then apply it all-or-nothing (host.backup.ops
re-exports these names).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from host.archive import Archive, verify_archive
from host.archive.build import device_id_of
from host.errors import UsageError
from host.fsutil import atomic_write
from host.backup.keys import Identity
from host.tree.model import DMTree
from host.tree.ops import Change, apply_restore, render_diff
from host.tree.tnds import write_tnds

from host.backup.files import HostState, read_tree_file


# ---- restore -----------------------------------------------------------------------


@dataclass
class RestoreReport:
    backup_id: str
    sequence: int
    device_id: str
    applied: bool
    changes: list[Change]
    kept_live: list[str] = field(default_factory=list)   # subtrees kept from the live tree

    def as_dict(self) -> dict:
        return {"backup_id": self.backup_id, "sequence": self.sequence, "device_id": self.device_id,
                "applied": self.applied, "kept_live": list(self.kept_live),
                "changes": [{"kind": c.kind, "uri": c.uri, "fields": list(c.fields), "secret": c.secret}
                            for c in self.changes]}

    def render(self) -> str:
        text = render_diff(self.changes)
        if self.kept_live:
            text += (f"kept from the live device (--force-device keeps its identity): "
                     f"{', '.join(self.kept_live)}\n")
        return text


# The device's identity: a restore with force_device (another device's backup) keeps them live.
IDENTITY_URIS = ("./DevInfo", "./DevDetail")


def _keep_live_identity(live: DMTree, restored: DMTree) -> list[str]:
    """Put live's identity subtrees into restored (in place); the URIs kept."""
    kept = []
    for uri in IDENTITY_URIS:
        node = live.find(uri)
        if restored.find(uri) is not None:
            restored.delete(uri)
        if node is not None:
            restored.add_subtree(uri, node.copy(), create_parents=True)
            kept.append(uri)
    return kept


def restore_tree(live: DMTree, archive: Archive, identity: Identity, *, dry_run: bool = False,
                 keep_secrets: bool = False, force_device: bool = False,
                 force_sequence: bool = False, state: HostState | None = None,
                 device_id: str | None = None, record: bool = True) -> RestoreReport:
    """Verify archive fully, then apply it onto live (all-or-nothing, in memory).

    device_id defaults to the live tree's ./DevInfo/DevId. A backup made with
    secrets excluded always keeps the live secrets (else restoring would wipe
    the DM credentials). force_device (another device's backup) keeps the live
    ./DevInfo and ./DevDetail: the device stays itself."""
    if device_id is None:
        try:
            device_id = device_id_of(live)
        except UsageError:
            device_id = None
    min_seq = state.last_restored(archive.device_id) if state is not None else None
    verified = verify_archive(archive, identity.trust, identity.decryptor, device_id=device_id,
                              force_device=force_device, min_sequence=min_seq,
                              force_sequence=force_sequence)
    keep = keep_secrets or archive.host.secrets == "excluded"
    kept = _keep_live_identity(live, verified.tree) if force_device else []
    changes = apply_restore(live, verified.tree, verified.scope, keep_live_secrets=keep, dry_run=dry_run)
    if record and not dry_run and state is not None:
        state.note_restored(archive.device_id, archive.sequence)
    return RestoreReport(archive.backup_id.hex(), archive.sequence, archive.device_id, not dry_run, changes,
                         kept)


def restore_tree_file(tree_path: Path, archive: Archive, identity: Identity, *, dry_run: bool = False,
                      keep_secrets: bool = False, force_device: bool = False,
                      force_sequence: bool = False, state: HostState | None = None,
                      create: bool = False) -> RestoreReport:
    """restore_tree onto a TNDS file, replaced atomically; untouched on any error.

    create: the file must not exist; the backup is restored onto an empty tree
    and written there (0600): rebuilding a lost device's tree."""
    tree_path = Path(tree_path)
    if create:
        if tree_path.exists():
            raise UsageError(f"{tree_path} exists: --create only writes a new tree file; "
                             "drop --create to restore onto it")
        live = DMTree()
    else:
        if not tree_path.exists():
            raise UsageError(f"no such tree file: {tree_path}: to rebuild it from the backup, add --create")
        live = read_tree_file(tree_path)
    report = restore_tree(live, archive, identity, dry_run=dry_run, keep_secrets=keep_secrets,
                          force_device=force_device, force_sequence=force_sequence, state=state,
                          record=False)
    if dry_run:
        return report
    data = write_tnds(live)
    mode = 0o600 if create else tree_path.stat().st_mode & 0o777
    atomic_write(tree_path, data.encode("utf-8") if isinstance(data, str) else data, mode=mode)
    if state is not None:
        state.note_restored(archive.device_id, archive.sequence)
    return report
