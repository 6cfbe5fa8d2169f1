"""Identifiers of the simvault backup applet: AID, classes, instructions, limits.

These numbers are the card interface. apdu_specs/README.md explains each one;
tests/test_apdu_specs.py keeps that document and this module in step.
"""
from __future__ import annotations

from enum import IntEnum

# Proprietary AID: 'F0' (unregistered, ISO 7816-5 category F) + "SIMVAULT" + version 01.
AID = bytes.fromhex("F0") + b"SIMVAULT" + bytes([0x01])

APPLET_VERSION = 1
MANIFEST_FORMAT_VERSION = 1

CLA_ISO = 0x00          # ISO 7816-4 inter-industry commands
CLA_PROPRIETARY = 0x80  # simvault commands
CLA_SECURE = 0x84       # proprietary + secure messaging (C-MAC), admin commands
CLA_CHAINING = 0x10     # ISO 7816-4 command chaining bit
CLA_SM_BIT = 0x04


class Ins(IntEnum):
    # ISO 7816-4 inter-industry (CLA 00)
    SELECT = 0xA4
    GET_RESPONSE = 0xC0
    VERIFY = 0x20
    CHANGE_REFERENCE_DATA = 0x24
    RESET_RETRY_COUNTER = 0x2C
    # simvault (CLA 80)
    GET_STATUS = 0x10
    BEGIN_BACKUP = 0x20
    QUERY_CHUNKS = 0x22
    PUT_CHUNK = 0x24
    PUT_MANIFEST = 0x26
    COMMIT_BACKUP = 0x28
    ABORT_BACKUP = 0x2A
    LIST_BACKUPS = 0x30
    READ_MANIFEST = 0x32
    READ_CHUNK = 0x34
    DELETE_BACKUP = 0x36
    LIST_ANCHORS = 0x40
    # SCP03-style secure channel (GlobalPlatform numbering)
    INITIALIZE_UPDATE = 0x50     # CLA 80
    EXTERNAL_AUTHENTICATE = 0x82  # CLA 84
    # administration (CLA 84, C-MAC, after EXTERNAL AUTHENTICATE)
    PUT_TRUST_ANCHOR = 0xE2
    DELETE_TRUST_ANCHOR = 0xE4
    ERASE_BACKUPS = 0xEE


# SELECT P1/P2
SELECT_BY_DF_NAME = 0x04
SELECT_FIRST_OR_ONLY = 0x00

# PIN references (ISO 7816-4 P2: 0x80 = specific reference data, 0x01 = PIN 1)
PIN_REFERENCE = 0x81
PIN_BLOCK_LENGTH = 8  # PIN and PUK are sent as ASCII digits padded with 0xFF to 8 bytes
PIN_PAD = 0xFF
PIN_MIN_DIGITS = 4
PIN_MAX_DIGITS = 8
PUK_DIGITS = 8
PIN_MAX_TRIES = 3
PUK_MAX_TRIES = 10

# READ_MANIFEST P1
READ_MANIFEST_BODY = 0x00
READ_MANIFEST_SIGNATURE = 0x01

# Sizes
BACKUP_ID_LENGTH = 16
CHUNK_ID_LENGTH = 32
CHUNK_HASH_LENGTH = 32
KEY_ID_LENGTH = 8
EC_POINT_LENGTH = 65      # uncompressed P-256 point 04||X||Y
SIGNATURE_LENGTH = 64     # raw ECDSA P-256 r||s
MAX_BACKUPS = 16
MAX_TRUST_ANCHORS = 8
MAX_CHUNK_SIZE = 65535
MAX_MANIFEST_SIZE = 1 << 20
DEVICE_ID_MAX = 64

# Chunk table (install parameter 07 / `card init --chunk-entries`): one entry per chunk
# stored, shared by every backup that references it. Default: one entry per
# CHUNK_ENTRY_BLOCKS blocks of the store (a chunk of 2 KiB on average), within the bounds.
BLOCK_SIZE = 256
CHUNK_ENTRY_BLOCKS = 8
CHUNK_ENTRIES_MIN = 64            # the default's floor (an explicit value may be smaller: 1)
CHUNK_ENTRIES_MAX = 8192          # the Java applet keeps them in 256-entry pages (32 pages)


# The Java card's manifest buffer (install parameter 09; one short-indexed array, so at most
# 32767 bytes: about 480 chunks per backup). Default: 1/128 of the store within the bounds.
# The Python emulator takes any manifest up to 256 KiB. Both report theirs in GET STATUS.
MANIFEST_BUFFER_MIN, MANIFEST_BUFFER_MAX = 8192, 32767


def default_max_manifest(store_bytes: int) -> int:
    """The Java card's manifest buffer for a store of store_bytes when 09 is not given."""
    return max(MANIFEST_BUFFER_MIN, min(MANIFEST_BUFFER_MAX, store_bytes // 128))


def default_chunk_entries(store_bytes: int) -> int:
    """The chunk table size both cards choose for a store of store_bytes when none is given."""
    return max(CHUNK_ENTRIES_MIN, min(CHUNK_ENTRIES_MAX, store_bytes // (BLOCK_SIZE * CHUNK_ENTRY_BLOCKS)))

# SCP03-style secure channel
SCP_KEY_LENGTH = 16
SCP_CHALLENGE_LENGTH = 8
SCP_CRYPTOGRAM_LENGTH = 8
SCP_MAC_LENGTH = 8
SCP_SECURITY_LEVEL_CMAC = 0x01

# Life cycle (GET STATUS)
class LifeCycle(IntEnum):
    BLANK = 0x00
    PERSONALISED = 0x07
    PIN_BLOCKED = 0x0F
    TERMINATED = 0xFF
