"""Records, limits and errors of the backup store (layout: card/IMAGE_FORMAT.md)."""
from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from enum import IntEnum

from apdu_specs.constants import LifeCycle  # one source of truth with GET STATUS
from host.errors import SimvaultError

STORE_MAGIC = b"SVSTORE\0"
STORE_VERSION = 1

PIN_MAX_TRIES = 3
PUK_MAX_TRIES = 10
ADMIN_MAX_FAILURES = 10    # failed EXTERNAL AUTHENTICATEs before the admin key locks for good
PIN_MIN_LEN, PIN_MAX_LEN = 4, 8
PUK_LEN = 8
ADMIN_KEY_LEN = 16
KEY_ID_LEN = 8
PUBKEY_LEN = 65
BACKUP_ID_LEN = 16
CHUNK_ID_LEN = 32
SIGNATURE_LEN = 64
META_MAX = 32
MAX_ANCHORS = 8
MAX_BACKUPS = 16
MAX_CHUNK = 64 * 1024
MAX_MANIFEST = 256 * 1024
DEFAULT_BLOCK_SIZE = 256


# Stored life-cycle bytes: apdu_specs LifeCycle.BLANK (0x00) or .PERSONALISED
# (0x07); PIN_BLOCKED is derived from the PIN counter, never stored.  Images
# written before the two enums were merged hold 0x0F for PERSONALISED.
LEGACY_PERSONALISED = 0x0F
STORED_LIFECYCLES = (LifeCycle.BLANK, LifeCycle.PERSONALISED)


def lifecycle_from_byte(value: int) -> LifeCycle:
    """The life cycle a config byte stores; ValueError for any other byte."""
    if value == LEGACY_PERSONALISED:
        return LifeCycle.PERSONALISED
    if value not in STORED_LIFECYCLES:
        raise ValueError(f"bad life-cycle byte {value:#x}")
    return LifeCycle(value)


class ChunkState(IntEnum):
    FREE = 0
    PENDING = 1            # stored by the open session, refcount 0
    COMMITTED = 2


# ---- binary records ---------------------------------------------------------

# header at data offset 0: magic, version, block_size, nblocks, max_chunks,
# off_config, off_anchors, off_dir, off_chunks, off_fat, off_blocks; + 8-byte tag
HEADER = struct.Struct("<8sHHIIIIIIII")

# config area (offsets inside it)
CFG_LIFECYCLE = 0          # u8
CFG_PENDING_ERASE = 1      # u8: 0 none, 1 erase_backups, 2 factory_reset
CFG_PIN_TRIES = 2          # u8, written alone (non-journaled) by verify_pin
CFG_PUK_TRIES = 3          # u8, written alone by unblock_pin
CFG_ADMIN_FAILURES = 4     # u8, failed admin authentications (0 = none), written alone
CFG_PIN = 8                # salt 16 + sha256(salt || pin) 32
CFG_PUK = 56               # salt 16 + sha256(salt || puk) 32
CFG_ADMIN = 104            # key version u8 + key 16
CFG_HWM = 128              # u64 sequence high-water mark
CFG_SESSION = 136          # SESSION record
CONFIG_SIZE = 256
SECRET = struct.Struct("<16s32s")
ADMIN = struct.Struct("<B16s")
HWM = struct.Struct("<Q")
SESSION = struct.Struct("<B16sII")      # active, backup id, manifest head, manifest length

ANCHOR = struct.Struct("<B8s65s")       # used, key id, uncompressed P-256 point
ANCHOR_SIZE = 80

# backup directory entry
DIR = struct.Struct("<BBxxI16sQQQIII64s32s")
# used, meta_len, chunk_count, backup_id, sequence, created, size,
# manifest_head, manifest_len, list_head, signature, meta
DIR_SIZE = 192

# chunk table entry: state u8, pad, refcount u32 | length u32, head u32, id, sha256
CHUNK_RC = struct.Struct("<BxxxI")
CHUNK = struct.Struct("<BxxxIII32s32s")
CHUNK_SIZE = 80

assert DIR.size <= DIR_SIZE and ANCHOR.size <= ANCHOR_SIZE and CHUNK.size == CHUNK_SIZE
assert CFG_SESSION + SESSION.size <= CONFIG_SIZE
assert CFG_ADMIN_FAILURES == CFG_PIN_TRIES + 2      # factory_reset zeroes the three counters as one span


def secret_hash(salt: bytes, value: bytes) -> bytes:
    return hashlib.sha256(salt + value).digest()


# ---- what the API returns ---------------------------------------------------

@dataclass(frozen=True)
class BackupInfo:
    backup_id: bytes
    sequence: int
    created: int
    size: int
    manifest_length: int
    signature: bytes
    chunk_count: int       # length of the chunk id list as committed
    meta: bytes            # up to 32 opaque bytes for the applet


@dataclass(frozen=True)
class ChunkInfo:
    chunk_id: bytes
    length: int
    sha256: bytes
    refcount: int
    state: ChunkState


@dataclass(frozen=True)
class SessionInfo:
    backup_id: bytes
    manifest_length: int
    pending_chunks: int
    resumed: bool = False


@dataclass(frozen=True)
class TrustAnchor:
    key_id: bytes
    public_key: bytes


@dataclass(frozen=True)
class StoreStats:
    capacity: int          # bytes of the block area
    used: int              # bytes in allocated blocks
    free: int
    chunks: int            # committed + pending
    pending_chunks: int
    backups: int
    block_size: int
    max_chunks: int
    max_backups: int
    journal_capacity: int


# ---- errors (``sw`` = the status word the applet should answer) -------------

class StoreError(SimvaultError):
    sw = 0x6F00


class StoreFull(StoreError):
    """No space (blocks, directory, anchors or journal)."""
    sw = 0x6A84


class ChunkTableFull(StoreFull):
    """Every chunk entry is taken (the bytes may still be free): apdu_specs CHUNK_TABLE_FULL."""
    sw = 0x668B


class InvalidArgument(StoreError):
    sw = 0x6A80


class NotFormatted(StoreError):
    sw = 0x6F00


class NotPersonalised(StoreError):
    sw = 0x6985


class AlreadyPersonalised(StoreError):
    sw = 0x6985


class NoSession(StoreError):
    sw = 0x6985


class ChunkExists(StoreError):
    sw = 0x6A89


class ChunkNotFound(StoreError):
    sw = 0x6A88


class BackupExists(StoreError):
    sw = 0x6A89


class BackupNotFound(StoreError):
    sw = 0x6A88


class AnchorNotFound(StoreError):
    sw = 0x6A88


class SequenceRollback(StoreError):
    """COMMIT with a sequence not above the high-water mark."""
    sw = 0x6985


class PukBlocked(StoreError):
    sw = 0x6983


class StoreCorrupt(StoreError):
    """check() found an inconsistency (a bug, or a damaged image)."""
