"""Archive format 3: a base plus node-level delta layers, so an incremental sends what changed.

    base    = zstd-19 of the whole canonical plaintext, cut into pieces of at most
              the card's max chunk size (few, large chunks: few table entries)
    layer i = delta.diff_trees(tree before, tree after), zstd-19 with the base
              plaintext as a raw-content dictionary (names, ACLs, Types: all there)
    piece   = nonce | AES-256-GCM(payload slice, AAD = label | chain id | chunk id) | tag
    chunk id = HMAC-SHA256(chunk-id key, "simvault/segment/v3" | segment | piece | slice)

The manifest's chunk table lists the base pieces, then each layer's pieces,
oldest first: every chunk this backup needs, so it restores after any older
backup of the chain is deleted (the card refcounts chunks). An incremental
copies the table entries of its previous backup and adds one layer: it sends
one small chunk plus the manifest. Policy (RebasePolicy): the newest layer is
merged into the new one while it is small (a table entry costs 68 bytes in
every later manifest), and the chain is re-based (a new full backup, new
keys) when it has too many layers, when the layers outweigh the base, or when
this incremental would cost more than the chain's average backup so far.
"""
from __future__ import annotations

import hmac
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from apdu_specs import constants as C
from apdu_specs.manifest import MANIFEST, ChunkRef, OnCardManifest
from host.errors import ArchiveError, IntegrityError, TreeError, UsageError
from host.backup.keys import Decryptor, Recipient, Signer
from host.tree.canonical import canonical_bytes, from_canonical
from host.tree.model import DMTree
from host.tree.ops import select
from host.tree.secrets import strip_secrets

from .archive import Archive
from .build import chain_keys_of, check_previous, device_id_of
from .crypto import STORED_OVERHEAD_V4, ChainKeys, wrap_info
from .delta import apply_delta, diff_trees
from .keyblock import encode_key_block, recipients_of
from .layered_host import LAYERED_VERSION, MAX_PLAIN_SIZE, LayeredHost, Segment
from .pieces import compress_segment, open_segments, seal_segment, segment_plain

TABLE_ENTRY = 68


@dataclass(frozen=True)
class RebasePolicy:
    """When an incremental merges layers or re-bases (see the module doc and ARCHIVE_FORMAT.md)."""

    merge_below: int = 256           # stored bytes: a newest layer below this is merged into the next
    max_layers: int = 64             # layers per backup (restore applies each one)
    max_layer_fraction: float = 1.0  # layers' stored bytes above this x base: re-base
    amortize: bool = True            # re-base when this incremental costs more than the chain's average


DEFAULT_POLICY = RebasePolicy()


def rebuild(segments: list[bytes], upto: int | None = None) -> DMTree:
    """The tree of the base with layers 1..upto (all by default) applied."""
    try:
        tree = from_canonical(segments[0])
    except TreeError as exc:
        raise IntegrityError(f"the base tree does not decode ({exc})") from None
    for delta in segments[1:(len(segments) if upto is None else upto + 1)]:
        apply_delta(tree, delta)
    return tree


def verify_layered(archive: Archive, keys: ChainKeys) -> tuple[DMTree, int]:
    """Open, rebuild and check a format-3 archive: (tree, canonical size). The tree MAC
    covers the canonical plaintext of the rebuilt tree, so a layer applied wrongly
    (or by another simvault's different rules) is refused, not restored."""
    host: LayeredHost = archive.host  # type: ignore[assignment]
    segments = open_segments(archive, keys)
    bid = archive.backup_id.hex()
    if len(segments) == 1:
        canonical = segments[0]
        _check_mac(bid, keys, host, canonical)
        try:
            return from_canonical(canonical), len(canonical)
        except TreeError as exc:
            raise IntegrityError(f"backup {bid}: tree does not decode ({exc})") from None
    tree = rebuild(segments)     # the base decodes strictly; apply_delta validates what it touches
    canonical = canonical_bytes(tree)
    _check_mac(bid, keys, host, canonical)
    return tree, len(canonical)


def _check_mac(bid: str, keys: ChainKeys, host: LayeredHost, canonical: bytes) -> None:
    if len(canonical) != host.plain_size:
        raise IntegrityError(f"backup {bid}: the rebuilt tree is not its signed size")
    if not hmac.compare_digest(layered_digest(keys, host.version, canonical), host.tree_digest):
        raise IntegrityError(f"backup {bid}: the reassembled tree does not match its hash")


def layered_digest(keys: ChainKeys, version: int, canonical: bytes) -> bytes:
    """The tree MAC of a layered host section: 32 bytes (v3), 16 (v4)."""
    return keys.tree_mac_v4(canonical) if version == 4 else keys.tree_mac(canonical)


# ---- making an archive -----------------------------------------------------------------


@dataclass
class _Plan:
    keys: ChainKeys
    wrapped: dict[bytes, bytes]
    segments: list[Segment]
    entries: list[tuple[ChunkRef, bytes]]      # the table, with stored bytes
    previous: Archive | None = None
    generation: int = 1
    sent_before: int = 0


def selected_plaintext(tree: DMTree, scope: Iterable[str] | None, exclude_secrets: bool
                       ) -> tuple[DMTree, tuple[str, ...], bytes]:
    scope_list = tuple(scope) if scope else (".",)
    selected = select(tree, scope_list) if scope_list != (".",) else tree
    if exclude_secrets:
        selected = strip_secrets(selected)
    return selected, scope_list, canonical_bytes(selected)


def make_layered_archive(tree: DMTree, signer: Signer, recipients: Sequence[Recipient], *,
                         device_id: str | None = None, previous: Archive | None = None,
                         decryptor: Decryptor | None = None, scope: Iterable[str] | None = None,
                         exclude_secrets: bool = False, sequence: int | None = None,
                         created: int | None = None, backup_id: bytes | None = None,
                         max_chunk_size: int = C.MAX_CHUNK_SIZE,
                         policy: RebasePolicy = DEFAULT_POLICY) -> Archive:
    """A signed format-3 archive of tree: a full one (a base), or with previous (a
    complete format-3 archive signed by signer) an incremental that adds one layer,
    merges small layers or re-bases as policy says (module doc)."""
    if not recipients:
        raise UsageError("an archive needs at least one recipient key")
    device_id = device_id if device_id is not None else device_id_of(tree)
    created = int(time.time()) if created is None else created
    selected, scope_list, plain = selected_plaintext(tree, scope, exclude_secrets)
    if len(plain) > MAX_PLAIN_SIZE:
        raise UsageError("the tree's canonical plaintext exceeds 256 MiB: back up a --scope")
    max_piece = max_chunk_size - STORED_OVERHEAD_V4
    if max_piece < 256:
        raise UsageError(f"max chunk size {max_chunk_size} is too small for an archive chunk")
    plan = None
    if previous is not None:
        plan = _incremental_plan(previous, selected, plain, signer, recipients, decryptor,
                                 max_chunk_size, max_piece, policy)
    if plan is None:      # a full backup: new chain keys, wrapped once, in the base's key block
        keys = ChainKeys.generate()
        wrapped = {r.key_id: r.wrap(keys.secret, wrap_info(keys.chain_id, r.key_id)) for r in recipients}
        if max_piece - len(encode_key_block(wrapped)) < 256:
            raise UsageError(f"max chunk size {max_chunk_size} is too small for {len(wrapped)} recipients' keys")
        plan = _Plan(keys, wrapped, [], [])
        plan.entries = seal_segment(keys, 0, compress_segment(plain, None), max_piece,
                                    key_block=encode_key_block(wrapped))
        plan.segments = [Segment(len(plan.entries), len(plain))]
    prev = plan.previous
    if sequence is None:
        sequence = max(created, prev.sequence + 1 if prev is not None else 0)
    old_ids = {c.chunk_id for c in prev.manifest.chunks} if prev is not None else set()
    new_bytes = sum(ref.size for ref, _ in plan.entries if ref.chunk_id not in old_ids)

    def build(sent: int) -> bytes:
        host = LayeredHost(chain_id=plan.keys.chain_id, tree_digest=plan.keys.tree_mac_v4(plain),
                           plain_size=len(plain), recipients={}, segments=tuple(plan.segments),
                           scope=scope_list, secrets="excluded" if exclude_secrets else "included",
                           previous=prev.backup_id if prev is not None else None,
                           generation=plan.generation, sent=sent, version=LAYERED_VERSION)
        m = OnCardManifest(backup_id=bid, sequence=sequence, created=created, device_id=device_id,
                           signer_key_id=signer.key_id, chunks=tuple(ref for ref, _ in plan.entries),
                           host_section=host.encode())
        return MANIFEST.build(m)

    bid = backup_id or os.urandom(C.BACKUP_ID_LENGTH)
    estimate = plan.sent_before + new_bytes + len(build(0)) + C.SIGNATURE_LENGTH
    manifest_bytes = build(estimate)   # the varint may grow by a byte: "sent" is an estimate
    if len(manifest_bytes) > C.MAX_MANIFEST_SIZE:
        raise ArchiveError("the manifest exceeds 1 MiB: make a full backup")
    return Archive(manifest_bytes, signer.sign(manifest_bytes), {ref.chunk_id: data for ref, data in plan.entries})


def layer_sizes(archive: Archive) -> list[int]:
    """Stored bytes of each segment (the base first)."""
    refs = archive.manifest.chunks
    return [sum(refs[i].size for i in rng) for rng in archive.host.segment_ranges()]  # type: ignore[union-attr]


def _incremental_plan(previous: Archive, new_tree: DMTree, plain: bytes, signer: Signer,
                      recipients: Sequence[Recipient], decryptor: Decryptor | None, max_chunk_size: int,
                      max_piece: int, policy: RebasePolicy) -> _Plan | None:
    """The table of an incremental on previous, or None: re-base (a full backup)."""
    if decryptor is None:
        raise UsageError("an incremental backup needs the device's decryption key")
    check_previous(previous, signer)
    host = previous.host
    if not isinstance(host, LayeredHost):
        raise UsageError(f"previous backup {previous.backup_id.hex()} is format {host.version}: "
                         "a format-3 incremental continues only a format-3 chain; make a full backup")
    if previous.missing_chunks():
        raise UsageError(f"an incremental needs every chunk of previous backup {previous.backup_id.hex()} "
                         "(read it with archive_from_card) or a full backup")
    if max(c.size for c in previous.manifest.chunks) > max_chunk_size:
        return None                 # the base's pieces do not fit this destination
    if host.version != LAYERED_VERSION:
        return None                 # a host section v3 chain: the next backup starts a v4 one
    chain_recipients = recipients_of(previous)
    if set(chain_recipients) != {r.key_id for r in recipients}:
        return None                 # the key block is fixed for the chain: other recipients, new keys
    keys = chain_keys_of(previous, decryptor)
    segments = open_segments(previous, keys)
    sizes = layer_sizes(previous)
    refs = previous.manifest.chunks
    ranges = host.segment_ranges()
    layers = len(segments) - 1
    merge = 0
    while merge < layers and sizes[layers - merge] < policy.merge_below:
        merge += 1
    start = rebuild(segments, layers - merge)          # the tree the new layer starts from
    old_plain = canonical_bytes(start) if merge == 0 else None
    if merge:
        prev_tree = start.copy()
        for delta in segments[len(segments) - merge:]:
            apply_delta(prev_tree, delta)
        old_plain = canonical_bytes(prev_tree)
    if (len(old_plain) != host.plain_size
            or not hmac.compare_digest(layered_digest(keys, host.version, old_plain), host.tree_digest)):
        raise IntegrityError(f"previous backup {previous.backup_id.hex()} does not rebuild to its signed tree")
    plan = _Plan(keys, chain_recipients, [], [], previous, host.generation + 1, host.sent)
    if plain == old_plain:                              # nothing changed: the same table
        plan.segments = list(host.segments)
        plan.entries = [(ref, previous.chunks[ref.chunk_id]) for ref in refs]
        return plan
    delta = diff_trees(start, new_tree)
    apply_delta(start, delta)                           # self-check: the layer rebuilds this tree
    if canonical_bytes(start) != plain:
        raise ArchiveError("internal error: the delta does not rebuild the tree; make a full backup")
    index = layers - merge + 1
    stored_delta = segment_plain(delta, index, LAYERED_VERSION)
    sealed = seal_segment(keys, index, compress_segment(stored_delta, segments[0]), max_piece)
    keep = ranges[index - 1].stop
    plan.segments = list(host.segments[:index]) + [Segment(len(sealed), len(stored_delta))]
    plan.entries = [(ref, previous.chunks[ref.chunk_id]) for ref in refs[:keep]] + sealed
    new_size = sum(ref.size for ref, _ in sealed)
    layer_bytes = sum(sizes[1:index]) + new_size
    manifest_estimate = 200 + len(host.encode()) + TABLE_ENTRY * len(plan.entries) + C.SIGNATURE_LENGTH
    if (index > policy.max_layers or layer_bytes > policy.max_layer_fraction * sizes[0]
            or (policy.amortize and new_size + manifest_estimate > host.sent / host.generation)):
        return None
    return plan
