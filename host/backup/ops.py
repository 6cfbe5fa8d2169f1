"""The library API behind `simvault backup/restore/...`, for the CLI, the DM agent and DS.

    backup_tree(tree, identity, *, previous=None, scope=None, exclude_secrets=False,
                policy=DEFAULT_POLICY, archive_format=3) -> Archive
    backup_to_card(card, archive, progress=None) -> UploadReport
    archive_from_card(card, backup_id, with_chunks=True) -> Archive
    latest_archive_on_card(card, device_id) -> Archive | None   (what an incremental needs)
    write_archive_file(path, archive, *, directory=None) / read_archive_file(path) -> Archive
    restore_tree_file(tree_path, archive, identity, *, dry_run=False, keep_secrets=False,
                      force_device=False, force_sequence=False, state=None, create=False) -> RestoreReport
    card_entries(card, with_device=False); is_directory_target(path)
    HostState(path): last sequences per device, pending card uploads (resume)

Everything is verified before anything is written; files are replaced
atomically (temp file + os.replace).
"""
from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apdu_specs import constants as C
from apdu_specs.manifest import verify_raw
from apdu_specs.sw import SW
from host.archive import DEFAULT_POLICY, Archive, RebasePolicy, make_archive, make_layered_archive
from host.archive.build import CODEC_BYTE, chain_keys_of, device_id_of, tree_digest
from host.archive.crypto import STORED_OVERHEAD
from host.archive.keyblock import recipients_of
from host.errors import ArchiveError, CardError, CardFullError, IntegrityError, SimvaultError, UsageError
from host.fsutil import atomic_write
from host.backup.files import (  # noqa: F401 - part of this module's API
    ARCHIVE_SUFFIX,
    HostState,
    _missing,
    _read_bytes,
    archives_in,
    find_archive,
    host_state,
    is_directory_target,
    read_archive_file,
    read_tree_file,
    write_archive_file,
)
from host.backup.card_fit import FULL_SWS, CardRoom, check_fits, full_message, manifest_too_long, upload_need
from host.backup.keys import Identity
from host.backup.restore import (  # noqa: F401 - part of this module's API
    IDENTITY_URIS,
    RestoreReport,
    _keep_live_identity,
    restore_tree,
    restore_tree_file,
)
from host.tree.model import DMTree

Progress = Callable[[int, int], None]  # (done bytes, total bytes)


# ---- backup ------------------------------------------------------------------------


def backup_tree(tree: DMTree, identity: Identity, *, previous: Archive | None = None,
                scope: Iterable[str] | None = None, exclude_secrets: bool = False,
                device_id: str | None = None, min_sequence: int = 0,
                max_chunk_size: int = C.MAX_CHUNK_SIZE, policy: RebasePolicy = DEFAULT_POLICY,
                archive_format: int = 3) -> Archive:
    """An archive of tree signed by identity, wrapped for its recipients.

    Format 3 (the default): incremental on previous (a base plus one more delta
    layer, or a re-base as policy says) when previous is a complete format-3
    archive of ours (signed by identity, valid signature), encrypted for
    identity, wrapped for no key that identity no longer lists (a removed
    recipient must not read later backups), of the same scope, whose chunks fit
    max_chunk_size; else a full backup. archive_format=1 writes the CDC format
    of earlier releases (still read everywhere)."""
    if archive_format not in (1, 3):
        raise UsageError(f"archive format {archive_format} unknown; use 3 (or 1, the CDC format)")
    if previous is not None and not _continuable(previous, identity, scope, max_chunk_size, archive_format):
        previous = None  # not ours, or not comparable: start a new chain
    created = int(time.time())
    # above the previous backup and what the destination has seen; the clock keeps it
    # rising across hosts and wiped state
    sequence = max(created, previous.sequence + 1 if previous is not None else 0, min_sequence)
    common = dict(device_id=device_id, previous=previous, decryptor=identity.decryptor, scope=scope,
                  exclude_secrets=exclude_secrets, max_chunk_size=max_chunk_size, sequence=sequence,
                  created=created)
    if archive_format == 1:
        return make_archive(tree, identity.signer, identity.recipients(), **common)  # type: ignore[arg-type]
    return make_layered_archive(tree, identity.signer, identity.recipients(), policy=policy,
                                **common)  # type: ignore[arg-type]


def _continuable(previous: Archive, identity: Identity, scope: Iterable[str] | None,
                 max_chunk_size: int, archive_format: int) -> bool:
    if previous.format != archive_format or tuple(scope or (".",)) != previous.host.scope:
        return False
    if not _chain_continuable(previous, identity):
        return False
    if archive_format == 1:
        return previous.host.chunker.max_size + STORED_OVERHEAD + CODEC_BYTE <= max_chunk_size
    return not previous.missing_chunks()   # a format-3 incremental rebuilds the previous tree


def _signed_by(archive: Archive, identity: Identity) -> bool:
    return (archive.manifest.signer_key_id == identity.signer.key_id
            and verify_raw(identity.signer.public_point, archive.manifest_bytes, archive.signature))


def _chain_continuable(previous: Archive, identity: Identity) -> bool:
    wanted = {r.key_id for r in identity.recipients()}
    try:
        have = recipients_of(previous)      # host section, or the base chunk's key block (v4)
    except IntegrityError:
        return False
    return identity.decryptor.key_id in have and set(have) <= wanted and _signed_by(previous, identity)


def _archive_holds(archive: Archive, identity: Identity, tree: DMTree, scope: Iterable[str] | None,
                   exclude_secrets: bool) -> bool:
    """Whether archive (signed by identity) is a backup of exactly this tree's plaintext."""
    from host.tree.canonical import canonical_bytes
    from host.tree.ops import select
    from host.tree.secrets import strip_secrets
    if not _signed_by(archive, identity):
        return False
    selected = select(tree, list(scope)) if scope else tree
    plain = canonical_bytes(strip_secrets(selected) if exclude_secrets else selected)
    keys = chain_keys_of(archive, identity.decryptor)
    return hmac.compare_digest(tree_digest(archive.host, keys, plain), archive.host.tree_digest)


@dataclass
class UploadReport:
    backup_id: str
    sequence: int
    chunks_total: int
    chunks_sent: int
    bytes_sent: int
    bytes_total: int
    resumed: bool
    entry: dict = field(default_factory=dict)


def backup_to_card(card: Any, archive: Archive, progress: Progress | None = None, *,
                   known_on_card: Iterable[bytes] = ()) -> UploadReport:
    """Upload archive to a selected, PIN-verified BackupCard: first whether it fits
    (GET STATUS, QUERY CHUNKS: free bytes and chunk entries against the new chunks and
    the manifest in whole blocks, a free backup slot, the card's manifest limit;
    host.backup.card_fit; CardFullError before anything is written), then BEGIN
    (resumes an interrupted upload of the same id), PUT CHUNK for the missing ones
    only, PUT MANIFEST, COMMIT. The card verifies signature, hashes and sequence.
    known_on_card: chunk ids the caller knows the card holds (those of a committed
    backup it lists), not queried again: 32 bytes each on the wire. Should one be
    gone after all, COMMIT refuses the backup and nothing changes."""
    status = card.status()
    room = CardRoom.of(status)
    known = frozenset(known_on_card)
    unknown = [c for c in archive.manifest.chunks if c.chunk_id not in known]
    present = card.query_chunks([c.chunk_id for c in unknown]) if unknown else []
    todo = [c for c, here in zip(unknown, present) if not here]
    _all_at_hand(archive, todo)
    need = upload_need({c.chunk_id: c.size for c in todo}.values(), len(archive.manifest_bytes),
                       len(archive.manifest.chunks), room.block_size)
    check_fits(room, need)
    begin = _begin(card, archive)
    # BEGIN of another id drops a pending session's chunks: then ask again after it
    try:
        return _upload(card, archive, begin, progress, unknown, None if status.session_active else todo)
    except CardError as err:
        if err.sw not in FULL_SWS:
            raise
        raise CardFullError(full_message(err.sw, room, need), err.sw) from None


def _begin(card: Any, archive: Archive) -> Any:
    m = archive.manifest
    try:
        return card.begin_backup(m.backup_id, m.sequence, len(archive.manifest_bytes))
    except CardError as err:        # BEGIN reserves nothing: its 6A84 is the manifest's length
        if err.sw != SW.NOT_ENOUGH_MEMORY:
            raise
        raise CardFullError(manifest_too_long(len(archive.manifest_bytes), None, len(m.chunks)), err.sw) from None


def _upload(card: Any, archive: Archive, begin: Any, progress: Progress | None, unknown: list,
            todo: list | None) -> UploadReport:
    m = archive.manifest
    resumed = bool(_field(begin, "resumed", False))
    if todo is None:
        present = card.query_chunks([c.chunk_id for c in unknown]) if unknown else []
        todo = [c for c, here in zip(unknown, present) if not here]
        _all_at_hand(archive, todo)
    total = sum(c.size for c in todo) + len(archive.manifest_bytes)
    done = 0
    for ref in todo:
        try:
            card.put_chunk(ref.chunk_id, archive.chunks[ref.chunk_id])
        except CardError as err:
            if err.sw != 0x6A89:  # already there (a race with a resumed session): fine
                raise
        done += ref.size
        if progress:
            progress(done, total)
    card.put_manifest(archive.manifest_bytes)
    done += len(archive.manifest_bytes)
    if progress:
        progress(done, total)
    entry = card.commit(archive.signature)
    return UploadReport(m.backup_id.hex(), m.sequence, len(m.chunks), len(todo), done, total, resumed,
                        _entry_dict(entry))


def _all_at_hand(archive: Archive, todo: list) -> None:
    missing = [c.chunk_id for c in todo if c.chunk_id not in archive.chunks]
    if missing:
        raise ArchiveError(f"{len(missing)} chunk(s) are neither on the card nor in the archive; "
                           "make a full backup ('simvault backup --full')")


def _field(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _entry_dict(entry: Any) -> dict:
    if entry is None:
        return {}
    out = {}
    for k in ("backup_id", "sequence", "created", "manifest_length", "chunk_count", "stored_bytes"):
        v = _field(entry, k)
        if v is not None:
            out[k] = v.hex() if isinstance(v, (bytes, bytearray)) else v
    return out


def card_entries(card: Any, with_device: bool = False) -> list[dict]:
    """The card's directory as dicts; with_device adds each backup's device_id from
    its manifest (one short read per backup; '-' when it cannot be read)."""
    out = []
    for e in card.list_backups():
        entry = _entry_dict(e)
        if with_device:
            try:
                raw = card.read_manifest(_field(e, "backup_id"), _field(e, "manifest_length"))
                entry["device_id"] = Archive(raw, bytes(C.SIGNATURE_LENGTH), {}).device_id
            except SimvaultError:
                entry["device_id"] = "-"
        out.append(entry)
    return out


def archive_from_card(card: Any, backup_id: bytes, with_chunks: bool = True,
                      progress: Progress | None = None, manifest_length: int | None = None) -> Archive:
    """Read a backup's manifest, signature and chunks (without chunks: a format-1
    archive's dictionary chunk only, what a format-1 incremental needs)."""
    manifest_bytes = card.read_manifest(backup_id, manifest_length)
    archive = Archive(manifest_bytes, card.read_signature(backup_id), {})
    if archive.backup_id != backup_id:
        raise ArchiveError("the card returned the manifest of another backup")
    if not with_chunks and archive.format == 1 and archive.host.dictionary is not None:
        ref = archive.manifest.chunks[-1]   # the chain's dictionary: an incremental needs it
        archive.chunks[ref.chunk_id] = card.read_chunk(ref.chunk_id, ref.size)
    if with_chunks:
        total = archive.manifest.total_size
        done = 0
        for ref in archive.manifest.chunks:
            archive.chunks[ref.chunk_id] = card.read_chunk(ref.chunk_id, ref.size)
            done += ref.size
            if progress:
                progress(done, total)
    return archive


def latest_archive_on_card(card: Any, device_id: str | None = None) -> Archive | None:
    """The newest backup on the card (of device_id), as an incremental needs it: a
    format-3 backup complete (its chunks read back), a format-1 one manifest and
    dictionary only."""
    for entry in sorted(card.list_backups(), key=lambda e: _field(e, "sequence"), reverse=True):
        archive = archive_from_card(card, _field(entry, "backup_id"), with_chunks=False,
                                    manifest_length=_field(entry, "manifest_length"))
        if device_id is None or archive.device_id == device_id:
            return _complete(card, archive)
    return None


def _complete(card: Any, archive: Archive) -> Archive:
    """A format-3 archive with every chunk (read from the card); format 1 as it is."""
    if archive.format == 3:
        for ref in archive.manifest.chunks:
            if ref.chunk_id not in archive.chunks:
                archive.chunks[ref.chunk_id] = card.read_chunk(ref.chunk_id, ref.size)
    return archive


def plain_sha256(tree: DMTree, scope: Iterable[str] | None, exclude_secrets: bool) -> bytes:
    """SHA-256 of the canonical plaintext a backup of tree would hold (what a version 1
    archive's host section stores; version 2 stores a keyed MAC instead)."""
    from host.tree.canonical import canonical_bytes
    from host.tree.ops import select
    from host.tree.secrets import strip_secrets
    selected = select(tree, list(scope)) if scope else tree
    if exclude_secrets:
        selected = strip_secrets(selected)
    return hashlib.sha256(canonical_bytes(selected)).digest()


def _device_file(directory: Path, device_id: str) -> Path:
    return Path(directory) / (hashlib.sha256(device_id.encode()).hexdigest()[:16] + ARCHIVE_SUFFIX)


def _previous_for_card(card: Any, device_id: str, cache_dir: Path | None) -> Archive | None:
    """The card's newest backup of device_id as the base of an incremental: the host's
    copy when it is that same backup (nothing read over the link), else read from the
    card (format 3: every chunk, the delta needs the previous tree; format 1: manifest
    and dictionary)."""
    mine = None
    if cache_dir is not None and _device_file(cache_dir, device_id).exists():
        try:
            mine = read_archive_file(_device_file(cache_dir, device_id))
        except ArchiveError:
            mine = None
    entries = sorted(card.list_backups(), key=lambda e: _field(e, "sequence"), reverse=True)
    for entry in entries:
        if mine is not None and _field(entry, "backup_id") == mine.backup_id:
            return mine
        archive = archive_from_card(card, _field(entry, "backup_id"), with_chunks=False,
                                    manifest_length=_field(entry, "manifest_length"))
        if archive.device_id == device_id:
            return _complete(card, archive)
    return None


def backup_tree_to_card(card: Any, tree: DMTree, identity: Identity, *,
                        scope: Iterable[str] | None = None, exclude_secrets: bool = False,
                        incremental: bool = True, pending_dir: Path | None = None,
                        progress: Progress | None = None, policy: RebasePolicy = DEFAULT_POLICY,
                        archive_format: int = 3) -> tuple[Archive, UploadReport]:
    """The whole card backup: incremental on the card's newest backup of this device,
    sequence above the card's highest, chunks no larger than its FCI allows.

    pending_dir (the CLI uses <key dir>/pending): the archive waits there until
    COMMIT; when an earlier run was interrupted and the tree is unchanged, that
    same archive (same backup id) is uploaded again and the card resumes its
    session. After COMMIT it stays there as <device>.last copy, so the next
    incremental reads nothing back from the card (without it, a format-3
    incremental reads the previous backup's chunks back: its tree is the delta's
    starting point)."""
    scope_t = tuple(scope) if scope else (".",)
    device_id = device_id_of(tree)
    highest = card.status().highest_sequence
    pending = last_dir = None
    if pending_dir is not None:
        pending = _device_file(pending_dir, device_id)
        last_dir = Path(pending_dir) / "last"
    archive = previous = None
    resumed_from_file = False
    if pending is not None and pending.exists():
        try:
            old = read_archive_file(pending)
            if (old.host.scope == scope_t and old.sequence > highest and old.format == archive_format
                    and old.host.secrets == ("excluded" if exclude_secrets else "included")
                    and _archive_holds(old, identity, tree, scope, exclude_secrets)):
                archive, resumed_from_file = old, True
        except ArchiveError:  # a damaged pending file is dropped
            pass
    if archive is None:
        previous = _previous_for_card(card, device_id, last_dir) if incremental else None
        max_chunk = card.fci.max_chunk_size if getattr(card, "fci", None) else C.MAX_CHUNK_SIZE
        archive = backup_tree(tree, identity, previous=previous, scope=scope,
                              exclude_secrets=exclude_secrets, min_sequence=highest + 1,
                              max_chunk_size=max_chunk, policy=policy, archive_format=archive_format)
        if previous is not None and archive.host.chain_id == previous.host.chain_id:
            for cid in archive.missing_chunks():          # reused chunks: keep a complete copy
                if cid in previous.chunks:
                    archive.chunks[cid] = previous.chunks[cid]
        if pending is not None:
            pending.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not archive.missing_chunks():
                write_archive_file(pending, archive)
    known: set[bytes] = set()
    if previous is not None and not resumed_from_file:   # committed on this card: its chunks are there
        known = {c.chunk_id for c in previous.manifest.chunks}
    report = backup_to_card(card, archive, progress, known_on_card=known)
    report.resumed = report.resumed or resumed_from_file
    if pending is not None and last_dir is not None:
        if not archive.missing_chunks():
            last_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_archive_file(_device_file(last_dir, device_id), archive)
        pending.unlink(missing_ok=True)
    return archive, report

__all__ = [
    "HostState",
    "RestoreReport",
    "SimvaultError",
    "UploadReport",
    "archive_from_card",
    "archives_in",
    "atomic_write",
    "backup_to_card",
    "backup_tree",
    "backup_tree_to_card",
    "card_entries",
    "find_archive",
    "host_state",
    "is_directory_target",
    "latest_archive_on_card",
    "plain_sha256",
    "read_archive_file",
    "read_tree_file",
    "restore_tree",
    "restore_tree_file",
    "write_archive_file",
]
