"""Making an archive from a DM tree: select, strip secrets, chunk, compress, encrypt, sign."""
from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Iterable, Sequence

from apdu_specs import constants as C
from apdu_specs.manifest import MANIFEST, ChunkRef, OnCardManifest, verify_raw
from host.errors import ArchiveError, IntegrityError, UsageError
from host.backup.keys import Decryptor, Recipient, Signer
from host.tree.canonical import canonical_bytes
from host.tree.model import DMTree
from host.tree.ops import select
from host.tree.secrets import strip_secrets

from .archive import Archive, default_order
from .cdc import ChunkerParams, gear_table, split
from .codec import DEFAULT_CODEC, ChunkCodec, compress_chunk, train_dictionary
from .crypto import STORED_OVERHEAD, ChainKeys, wrap_info
from .host_section import HostSection
from .keyblock import recipients_of


def tree_digest(host: HostSection, keys: ChainKeys, plain: bytes) -> bytes:
    """The host section's digest of plain: keyed MAC (v2, layered v3), truncated to 16
    bytes (layered v4), bare SHA-256 (v1 archives)."""
    if host.version == 1:
        return hashlib.sha256(plain).digest()
    return keys.tree_mac_v4(plain) if host.version == 4 else keys.tree_mac(plain)


def check_previous(previous: Archive, signer: Signer) -> None:
    """An incremental reuses the previous backup's chain keys, dictionary and stored
    chunks: refuse a previous backup this signer did not sign. (HPKE base mode does
    not authenticate the sender: anyone can wrap a chain secret *they* know to our
    public key, and an unverified manifest would make us encrypt under it.)"""
    if (previous.manifest.signer_key_id != signer.key_id
            or not verify_raw(signer.public_point, previous.manifest_bytes, previous.signature)):
        raise IntegrityError(f"previous backup {previous.backup_id.hex()} is not signed by this "
                             "device's key: refusing to continue its chain; make a full backup")

DEVINFO_DEVID = "./DevInfo/DevId"
CODEC_BYTE = 1  # the payload's codec byte (see codec.py)
DICT_PREFIX = b"simvault/zstd-dict/v1\x00"  # a dictionary chunk's plaintext starts so: never a tree's bytes
DICT_MAX_PLAIN = 1 << 17


def device_id_of(tree: DMTree) -> str:
    node = tree.find(DEVINFO_DEVID)
    if node is None or node.interior or not isinstance(node.value, str) or not node.value:
        raise UsageError("the tree has no ./DevInfo/DevId leaf; give the device id explicitly")
    return node.value


def chain_keys_of(archive: Archive, decryptor: Decryptor) -> ChainKeys:
    """Unwrap the chain keys of archive with decryptor's private key."""
    blob = recipients_of(archive).get(decryptor.key_id)
    if blob is None:
        raise IntegrityError(f"backup {archive.backup_id.hex()} is not encrypted for key "
                             f"{decryptor.key_id.hex()}: wrong key directory or another device's backup")
    secret = decryptor.unwrap(blob, wrap_info(archive.host.chain_id, decryptor.key_id))
    return ChainKeys.from_secret(archive.host.chain_id, secret)


def dictionary_of(archive: Archive, keys: ChainKeys) -> bytes | None:
    """The chain's zstd dictionary, decrypted from its chunk (IntegrityError if damaged)."""
    cid = archive.host.dictionary
    if cid is None:
        return None
    ref = archive.manifest.chunks[-1]
    stored = archive.chunks.get(cid)
    if stored is None:
        raise IntegrityError(f"backup {archive.backup_id.hex()} lacks its dictionary chunk: read it first")
    if len(stored) != ref.size or not hmac.compare_digest(hashlib.sha256(stored).digest(), ref.sha256):
        raise IntegrityError("the dictionary chunk does not match its signed hash: tampered backup")
    # the dictionary itself is compressed without a dictionary (codec byte 0 or 1)
    plain = ChunkCodec("zstd").decompress(keys.open(cid, stored), DICT_MAX_PLAIN)
    if not hmac.compare_digest(keys.chunk_id(plain), cid) or not plain.startswith(DICT_PREFIX):
        raise IntegrityError("the dictionary chunk decrypts to other data than its id: tampered")
    return plain[len(DICT_PREFIX):]


def chunker_for(max_chunk_size: int, chunker: ChunkerParams | None = None) -> ChunkerParams:
    """Chunker parameters whose largest stored chunk fits the card's max chunk size."""
    base = chunker or ChunkerParams()
    limit = max_chunk_size - STORED_OVERHEAD - CODEC_BYTE
    if limit < 256:
        raise UsageError(f"max chunk size {max_chunk_size} is too small for an archive chunk")
    return base.fitted(limit)


def make_archive(tree: DMTree, signer: Signer, recipients: Sequence[Recipient], *,
                 device_id: str | None = None, previous: Archive | None = None,
                 decryptor: Decryptor | None = None, scope: Iterable[str] | None = None,
                 exclude_secrets: bool = False, sequence: int | None = None,
                 created: int | None = None, backup_id: bytes | None = None,
                 codec: str = DEFAULT_CODEC, chunker: ChunkerParams | None = None,
                 max_chunk_size: int = C.MAX_CHUNK_SIZE) -> Archive:
    """Build and sign an archive of tree (or of its scope subtrees).

    previous: an earlier archive of the same device (its manifest is enough:
    chunks may be missing); the new one reuses its chain keys and chunker
    so unchanged chunks keep their ids and stored bytes; decryptor must open
    its wrapped keys. sequence defaults to max(previous + 1, now in seconds).
    """
    if not recipients:
        raise UsageError("an archive needs at least one recipient key")
    device_id = device_id if device_id is not None else device_id_of(tree)
    created = int(time.time()) if created is None else created
    scope_list = tuple(scope) if scope else (".",)
    selected = select(tree, scope_list) if scope_list != (".",) else tree
    if exclude_secrets:
        selected = strip_secrets(selected)
    plain = canonical_bytes(selected)

    if previous is not None:
        if decryptor is None:
            raise UsageError("an incremental backup needs the device's decryption key")
        check_previous(previous, signer)
        keys = chain_keys_of(previous, decryptor)
        params = previous.host.chunker
        wrapped = dict(previous.host.recipients)
        if previous.host.codec != codec:
            codec = previous.host.codec
    else:
        keys = ChainKeys.generate()
        params = chunker_for(max_chunk_size, chunker)
        wrapped = {}
    if params.max_size + STORED_OVERHEAD + CODEC_BYTE > max_chunk_size:
        raise ArchiveError("the previous backup's chunks are larger than this card takes; make a full backup")
    for r in recipients:
        if r.key_id not in wrapped:
            wrapped[r.key_id] = r.wrap(keys.secret, wrap_info(keys.chain_id, r.key_id))
    wanted = {r.key_id for r in recipients}
    wrapped = {k: v for k, v in wrapped.items() if k in wanted}

    prev_refs = {}
    pieces = split(plain, params, gear_table(keys.id_key))
    if previous is not None:
        prev_refs = {c.chunk_id: c for c in previous.manifest.chunks}
        zdict = dictionary_of(previous, keys)
    else:
        zdict = train_dictionary(pieces) if codec == "zstd" else None
    chunk_codec = ChunkCodec(codec, zdict)

    def stored_ref(cid: bytes, make_payload) -> tuple[ChunkRef, bytes]:  # type: ignore[no-untyped-def]
        data = previous.chunks.get(cid) if previous is not None and cid in prev_refs else None
        if data is not None and (len(data) != prev_refs[cid].size or not hmac.compare_digest(
                hashlib.sha256(data).digest(), prev_refs[cid].sha256)):
            data = None    # a damaged or planted copy: never sign its hash
        if data is None:   # not reusable as stored: encrypt (deterministically, see crypto.py)
            data = keys.seal(cid, make_payload())
        ref = prev_refs.get(cid)
        if ref is None or ref.size != len(data) or ref.sha256 != hashlib.sha256(data).digest():
            ref = ChunkRef(cid, hashlib.sha256(data).digest(), len(data))
        return ref, data

    refs: list[ChunkRef] = []
    index_of: dict[bytes, int] = {}
    order: list[int] = []
    stored: dict[bytes, bytes] = {}
    for piece in pieces:
        cid = keys.chunk_id(piece)
        if cid not in index_of:
            ref, data = stored_ref(cid, lambda p=piece: chunk_codec.compress(p))
            index_of[cid] = len(refs)
            refs.append(ref)
            stored[cid] = data
        order.append(index_of[cid])
    dict_id = None
    if zdict is not None:
        dict_plain = DICT_PREFIX + zdict
        dict_id = keys.chunk_id(dict_plain)
        ref, data = stored_ref(dict_id, lambda: compress_chunk(codec, dict_plain))
        refs.append(ref)
        stored[dict_id] = data

    host = HostSection(
        codec=codec, plain_size=len(plain), tree_digest=keys.tree_mac(plain),
        chain_id=keys.chain_id, recipients=wrapped, chunker=params, scope=scope_list,
        secrets="excluded" if exclude_secrets else "included",
        previous=previous.backup_id if previous is not None else None,
        order=tuple(order) if order != default_order(len(refs), dict_id is not None) else None,
        dictionary=dict_id)
    if sequence is None:
        sequence = max(created, previous.sequence + 1 if previous is not None else 0)
    manifest = OnCardManifest(
        backup_id=backup_id or os.urandom(C.BACKUP_ID_LENGTH), sequence=sequence, created=created,
        device_id=device_id, signer_key_id=signer.key_id, chunks=tuple(refs), host_section=host.encode())
    manifest_bytes = MANIFEST.build(manifest)
    if len(manifest_bytes) > C.MAX_MANIFEST_SIZE:
        raise ArchiveError("the manifest exceeds 1 MiB: raise the chunker's average size")
    return Archive(manifest_bytes, signer.sign(manifest_bytes), stored)
