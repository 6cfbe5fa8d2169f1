"""Command data and response layouts of every simvault applet command.

Naming: ``<COMMAND>_DATA`` is the command data field, ``<COMMAND>_RESPONSE`` the
response data (without SW1 SW2). Integers are big-endian. Vectors are hex.
"""
from __future__ import annotations

from construct import (
    Bytes,
    Flag,
    GreedyBytes,
    GreedyRange,
    Int8ub,
    Int16ub,
    Int32ub,
    Int64ub,
    Optional,
    Struct,
)

from . import constants as C
from .codec import Codec, CodecError, register, struct_codec

# --- PIN blocks -----------------------------------------------------------------


def pin_block(pin: str) -> bytes:
    """ASCII digits padded with 0xFF to 8 bytes (the PIN stays out of traces: mark it secret)."""
    if not pin.isdigit() or not C.PIN_MIN_DIGITS <= len(pin) <= C.PIN_MAX_DIGITS:
        raise CodecError(f"a PIN is {C.PIN_MIN_DIGITS} to {C.PIN_MAX_DIGITS} digits")
    return pin.encode("ascii").ljust(C.PIN_BLOCK_LENGTH, bytes([C.PIN_PAD]))


def parse_pin_block(block: bytes) -> bytes:
    """Digits of a PIN block; CodecError if the padding or digits are wrong."""
    if len(block) != C.PIN_BLOCK_LENGTH:
        raise CodecError("a PIN block is 8 bytes")
    digits = block.rstrip(bytes([C.PIN_PAD]))
    if not C.PIN_MIN_DIGITS <= len(digits) or not digits.isdigit():
        raise CodecError("a PIN block holds 4 to 8 ASCII digits padded with FF")
    return digits


VERIFY_DATA = struct_codec("VERIFY_DATA", Struct("pin" / Bytes(8)),
                           [("31323334FFFFFFFF", {"pin": b"1234\xff\xff\xff\xff"})])
CHANGE_REFERENCE_DATA_DATA = struct_codec(
    "CHANGE_REFERENCE_DATA_DATA", Struct("old" / Bytes(8), "new" / Bytes(8)),
    [("31323334FFFFFFFF3536373839FFFFFF", {"old": b"1234\xff\xff\xff\xff", "new": b"56789\xff\xff\xff"})])
RESET_RETRY_COUNTER_DATA = struct_codec(
    "RESET_RETRY_COUNTER_DATA", Struct("puk" / Bytes(8), "new" / Bytes(8)),
    [("313233343536373830303030FFFFFFFF", {"puk": b"12345678", "new": b"0000\xff\xff\xff\xff"})])

# --- status ---------------------------------------------------------------------

GET_STATUS_RESPONSE = struct_codec("GET_STATUS_RESPONSE", Struct(
    "applet_version" / Int8ub,
    "life_cycle" / Int8ub,
    "pin_verified" / Flag,
    "pin_tries" / Int8ub,
    "pin_max_tries" / Int8ub,
    "puk_tries" / Int8ub,
    "admin_authenticated" / Flag,
    "capacity" / Int32ub,
    "free" / Int32ub,
    "backups" / Int8ub,
    "max_backups" / Int8ub,
    "chunks" / Int32ub,
    "anchors" / Int8ub,
    "highest_sequence" / Int64ub,
    "session_active" / Flag,
    # appended in applet version 1 with the chunk-entries install parameter; absent (None)
    # in the 31-byte answer of earlier cards
    "chunk_entries" / Optional(Int32ub),
    "block_size" / Optional(Int16ub),
    "max_manifest" / Optional(Int32ub),
), [("01" "07" "00" "03" "03" "0A" "00" "00100000" "00080000" "02" "10" "00000005" "01" "0000000000000009" "00"
     "00000200" "0100" "00002000",
     {"applet_version": 1, "life_cycle": 7, "pin_verified": False, "pin_tries": 3, "pin_max_tries": 3,
      "puk_tries": 10, "admin_authenticated": False, "capacity": 0x100000, "free": 0x80000, "backups": 2,
      "max_backups": 16, "chunks": 5, "anchors": 1, "highest_sequence": 9, "session_active": False,
      "chunk_entries": 512, "block_size": 256, "max_manifest": 8192}),
    ("01" "07" "00" "03" "03" "0A" "00" "00100000" "00080000" "02" "10" "00000005" "01" "0000000000000009" "00",
     {"applet_version": 1, "life_cycle": 7, "pin_verified": False, "pin_tries": 3, "pin_max_tries": 3,
      "puk_tries": 10, "admin_authenticated": False, "capacity": 0x100000, "free": 0x80000, "backups": 2,
      "max_backups": 16, "chunks": 5, "anchors": 1, "highest_sequence": 9, "session_active": False,
      "chunk_entries": None, "block_size": None, "max_manifest": None})])

# --- backup upload --------------------------------------------------------------

BEGIN_BACKUP_DATA = struct_codec("BEGIN_BACKUP_DATA", Struct(
    "backup_id" / Bytes(C.BACKUP_ID_LENGTH),
    "sequence" / Int64ub,
    "manifest_length" / Int32ub,
), [("00112233445566778899AABBCCDDEEFF" "0000000000000007" "00000400",
     {"backup_id": bytes.fromhex("00112233445566778899AABBCCDDEEFF"), "sequence": 7, "manifest_length": 1024})])

BEGIN_BACKUP_RESPONSE = struct_codec("BEGIN_BACKUP_RESPONSE", Struct(
    "resumed" / Flag,
    "chunks_received" / Int32ub,
    "manifest_received" / Int32ub,
), [("01" "00000003" "00000100", {"resumed": True, "chunks_received": 3, "manifest_received": 256})])

QUERY_CHUNKS_DATA = struct_codec("QUERY_CHUNKS_DATA", Struct(
    "chunk_ids" / GreedyRange(Bytes(C.CHUNK_ID_LENGTH)),
), [("AA" * 32 + "BB" * 32, {"chunk_ids": [b"\xaa" * 32, b"\xbb" * 32]})])


def _bitmap_build(flags: list[bool]) -> bytes:
    out = bytearray((len(flags) + 7) // 8)
    for i, flag in enumerate(flags):
        if flag:
            out[i // 8] |= 0x80 >> (i % 8)
    return bytes(out)


def _bitmap_parse(data: bytes) -> list[bool]:
    """All bits, MSB first; the caller truncates to the number of ids it asked about."""
    return [bool(byte & (0x80 >> bit)) for byte in data for bit in range(8)]


QUERY_CHUNKS_RESPONSE = register(Codec("QUERY_CHUNKS_RESPONSE", _bitmap_build, _bitmap_parse,
                                       [("A0", [True, False, True, False, False, False, False, False])]))

PUT_CHUNK_DATA = struct_codec("PUT_CHUNK_DATA", Struct(
    "chunk_id" / Bytes(C.CHUNK_ID_LENGTH),
    "data" / GreedyBytes,
), [("11" * 32 + "DEADBEEF", {"chunk_id": b"\x11" * 32, "data": bytes.fromhex("DEADBEEF")})])

PUT_MANIFEST_DATA = struct_codec("PUT_MANIFEST_DATA", Struct(
    "offset" / Int32ub,
    "data" / GreedyBytes,
), [("00000100" "E1028001", {"offset": 256, "data": bytes.fromhex("E1028001")})])

COMMIT_BACKUP_DATA = struct_codec("COMMIT_BACKUP_DATA", Struct(
    "signature" / Bytes(C.SIGNATURE_LENGTH),
), [("01" * 64, {"signature": b"\x01" * 64})])

BACKUP_ENTRY = Struct(
    "backup_id" / Bytes(C.BACKUP_ID_LENGTH),
    "sequence" / Int64ub,
    "created" / Int64ub,
    "manifest_length" / Int32ub,
    "chunk_count" / Int32ub,
    "stored_bytes" / Int32ub,
)
_ENTRY_VECTOR_HEX = "00" * 15 + "01" + "0000000000000002" + "0000000065000000" + "00000200" + "00000003" + "00001000"
_ENTRY_VECTOR = {"backup_id": b"\x00" * 15 + b"\x01", "sequence": 2, "created": 0x65000000,
                 "manifest_length": 512, "chunk_count": 3, "stored_bytes": 4096}

COMMIT_BACKUP_RESPONSE = struct_codec("COMMIT_BACKUP_RESPONSE", BACKUP_ENTRY, [(_ENTRY_VECTOR_HEX, _ENTRY_VECTOR)])

# --- reading --------------------------------------------------------------------

LIST_BACKUPS_RESPONSE = struct_codec("LIST_BACKUPS_RESPONSE", Struct(
    "total" / Int8ub,
    "entries" / GreedyRange(BACKUP_ENTRY),
), [("01" + _ENTRY_VECTOR_HEX, {"total": 1, "entries": [_ENTRY_VECTOR]})])

READ_MANIFEST_DATA = struct_codec("READ_MANIFEST_DATA", Struct(
    "backup_id" / Bytes(C.BACKUP_ID_LENGTH),
    "offset" / Int32ub,
), [("00" * 15 + "01" + "00000000", {"backup_id": b"\x00" * 15 + b"\x01", "offset": 0})])

READ_CHUNK_DATA = struct_codec("READ_CHUNK_DATA", Struct(
    "chunk_id" / Bytes(C.CHUNK_ID_LENGTH),
    "offset" / Int32ub,
), [("22" * 32 + "00000F00", {"chunk_id": b"\x22" * 32, "offset": 0xF00})])

DELETE_BACKUP_DATA = struct_codec("DELETE_BACKUP_DATA", Struct(
    "backup_id" / Bytes(C.BACKUP_ID_LENGTH),
), [("00" * 15 + "01", {"backup_id": b"\x00" * 15 + b"\x01"})])

LIST_ANCHORS_RESPONSE = struct_codec("LIST_ANCHORS_RESPONSE", Struct(
    "key_ids" / GreedyRange(Bytes(C.KEY_ID_LENGTH)),
), [("0102030405060708", {"key_ids": [bytes.fromhex("0102030405060708")]})])

# --- secure channel and administration -------------------------------------------

INITIALIZE_UPDATE_DATA = struct_codec("INITIALIZE_UPDATE_DATA", Struct(
    "host_challenge" / Bytes(C.SCP_CHALLENGE_LENGTH),
), [("0011223344556677", {"host_challenge": bytes.fromhex("0011223344556677")})])

INITIALIZE_UPDATE_RESPONSE = struct_codec("INITIALIZE_UPDATE_RESPONSE", Struct(
    "key_diversification" / Bytes(10),
    "key_version" / Int8ub,
    "scp_id" / Int8ub,
    "scp_i" / Int8ub,
    "card_challenge" / Bytes(C.SCP_CHALLENGE_LENGTH),
    "card_cryptogram" / Bytes(C.SCP_CRYPTOGRAM_LENGTH),
), [("00" * 10 + "30" + "03" + "00" + "AA" * 8 + "BB" * 8,
     {"key_diversification": b"\x00" * 10, "key_version": 0x30, "scp_id": 3, "scp_i": 0,
      "card_challenge": b"\xaa" * 8, "card_cryptogram": b"\xbb" * 8})])

EXTERNAL_AUTHENTICATE_DATA = struct_codec("EXTERNAL_AUTHENTICATE_DATA", Struct(
    "host_cryptogram" / Bytes(C.SCP_CRYPTOGRAM_LENGTH),
), [("CC" * 8, {"host_cryptogram": b"\xcc" * 8})])

PUT_TRUST_ANCHOR_DATA = struct_codec("PUT_TRUST_ANCHOR_DATA", Struct(
    "key_id" / Bytes(C.KEY_ID_LENGTH),
    "public_key" / Bytes(C.EC_POINT_LENGTH),
), [("0102030405060708" + "04" + "11" * 64,
     {"key_id": bytes.fromhex("0102030405060708"), "public_key": b"\x04" + b"\x11" * 64})])

DELETE_TRUST_ANCHOR_DATA = struct_codec("DELETE_TRUST_ANCHOR_DATA", Struct(
    "key_id" / Bytes(C.KEY_ID_LENGTH),
), [("0102030405060708", {"key_id": bytes.fromhex("0102030405060708")})])
