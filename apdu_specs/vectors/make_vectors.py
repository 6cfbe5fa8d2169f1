"""Write apdu_specs/vectors/*.json: APDU exchanges that every simvault card must answer
alike (the Python emulator: tests/test_vectors.py; the Java Card applet in jCardSim:
javacard/src/test/java/org/simvault/card/VectorsTest.java).

    .venv/bin/python apdu_specs/vectors/make_vectors.py          # (re)write the files
    .venv/bin/python apdu_specs/vectors/make_vectors.py --check  # exit 1 if they are stale

Commands and expected answers are built from the codecs of apdu_specs with the values
the README specifies; nothing is recorded from an implementation. Before writing, every
exchange is replayed on the Python emulator, so a file never holds an expectation the
reference card fails. Signatures are deterministic (RFC 6979): the files are reproducible.

File format (one scenario per file, each starting from a freshly personalised card):

    {"name", "description",
     "personalisation": {"pin", "puk", "admin_key" (hex), "trust_anchors" [hex points],
                         "capacity", "chunk_entries" (optional: absent means the default
                         for the capacity), "install_params" (hex: the Java applet's install data)},
     "steps": [{"note", "command" (hex C-APDU), "response" (hex data without SW),
                "sw" (4 hex digits), "mask" (hex, as long as response; optional: absent
                means all bits compared)} | {"note", "power": "cycle"}]}

A response matches when its length equals the expected one and (actual & mask) ==
(expected & mask) byte by byte; the status word must be equal. Masks mark what two
correct cards may answer differently: free memory, stored bytes (storage overhead),
the largest command and response (the platform's APDU buffer), card challenges.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature  # noqa: E402

from apdu_specs import commands as K  # noqa: E402
from apdu_specs import constants as C  # noqa: E402
from apdu_specs.fci import FCI, FEATURE_CHAINING, FEATURE_EXTENDED_LENGTH, Fci  # noqa: E402
from apdu_specs.manifest import MANIFEST, ChunkRef, OnCardManifest, key_id, public_point  # noqa: E402
from apdu_specs.sw import SW  # noqa: E402

HERE = Path(__file__).resolve().parent

# The test personalisation (tests/cards.py uses the same values; test keys only).
PIN, PUK = "1234", "12345678"
ADMIN_KEY = bytes.fromhex("404142434445464748494A4B4C4D4E4F")
CAPACITY = 256 * 1024
SIGNER = ec.derive_private_key(0x5157_4155_4C54_0001, ec.SECP256R1())
OTHER = ec.derive_private_key(0x5157_4155_4C54_0002, ec.SECP256R1())
SIGNER_POINT = public_point(SIGNER.public_key())
SIGNER_ID = key_id(SIGNER_POINT)
MAX_CHUNK = 16384


def apdu(cla: int, ins: int, p1: int = 0, p2: int = 0, data: bytes = b"", le: int | None = None,
         extended: bool = False) -> bytes:
    """A C-APDU of case 1-4, short or extended (ISO 7816-4 5.1)."""
    out = bytes((cla, ins, p1, p2))
    if extended:
        if data:
            out += b"\x00" + len(data).to_bytes(2, "big") + data
            if le is not None:
                out += (le % 65536).to_bytes(2, "big")
        elif le is not None:
            out += b"\x00" + (le % 65536).to_bytes(2, "big")
        return out
    if data:
        if len(data) > 255:
            raise ValueError("short APDU data above 255 bytes")
        out += bytes((len(data),)) + data
    if le is not None:
        out += bytes((le % 256,))
    return out


def sign(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256(), deterministic_signing=True)))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def seeded(label: str, size: int) -> bytes:
    return hashlib.shake_256(label.encode()).digest(size)


@dataclass
class Backup:
    backup_id: bytes
    sequence: int
    chunks: dict[bytes, bytes]
    manifest: bytes
    signature: bytes
    created: int = 1_700_000_000


def make_backup(label: str, sequence: int, sizes: list[int], *, signer: ec.EllipticCurvePrivateKey = SIGNER,
                backup_id: bytes | None = None, tamper: Callable[[list[ChunkRef]], None] | None = None,
                manifest_sequence: int | None = None) -> Backup:
    chunks = {hashlib.sha256(b"id" + seeded(f"{label}/{i}", n)).digest(): seeded(f"{label}/{i}", n)
              for i, n in enumerate(sizes)}
    refs = [ChunkRef(cid, hashlib.sha256(data).digest(), len(data)) for cid, data in chunks.items()]
    if tamper is not None:
        tamper(refs)
    bid = backup_id or hashlib.sha256(label.encode()).digest()[:16]
    parsed = OnCardManifest(backup_id=bid, sequence=manifest_sequence or sequence, created=1_700_000_000,
                            device_id="IMEI:490154203237518", signer_key_id=key_id(public_point(signer.public_key())),
                            chunks=tuple(refs), host_section=b'{"vectors":1}')
    raw = MANIFEST.encode(parsed)
    return Backup(bid, sequence, chunks, raw, sign(signer, raw))


def entry_bytes(b: Backup, stored: int = 0) -> bytes:
    return K.COMMIT_BACKUP_RESPONSE.encode({
        "backup_id": b.backup_id, "sequence": b.sequence, "created": b.created,
        "manifest_length": len(b.manifest), "chunk_count": len(b.chunks), "stored_bytes": stored})


ENTRY_MASK = bytes([0xFF] * (K.BACKUP_ENTRY.sizeof() - 4) + [0] * 4)     # stored_bytes: the card's overhead


def status(**changes: object) -> tuple[bytes, bytes]:
    """GET STATUS of the test card with ``changes``; mask: capacity and free memory (what the
    store's own tables take is the implementation's) and the largest manifest (the Java card's
    buffer, install parameter 09; the emulator's 256 KiB)."""
    fields = {"applet_version": C.APPLET_VERSION, "life_cycle": int(C.LifeCycle.PERSONALISED),
              "pin_verified": False, "pin_tries": C.PIN_MAX_TRIES, "pin_max_tries": C.PIN_MAX_TRIES,
              "puk_tries": C.PUK_MAX_TRIES, "admin_authenticated": False, "capacity": CAPACITY, "free": 0,
              "backups": 0, "max_backups": C.MAX_BACKUPS, "chunks": 0, "anchors": 1, "highest_sequence": 0,
              "session_active": False, "chunk_entries": C.default_chunk_entries(CAPACITY),
              "block_size": C.BLOCK_SIZE, "max_manifest": C.default_max_manifest(CAPACITY)}
    fields.update(changes)
    data = K.GET_STATUS_RESPONSE.encode(fields)
    mask = bytearray(b"\xff" * len(data))
    capacity_at = 7                                   # after the seven 1-byte fields
    mask[capacity_at:capacity_at + 8] = b"\x00" * 8   # capacity, free
    mask[-4:] = b"\x00" * 4                           # max manifest
    return data, bytes(mask)


FCI_BYTES = FCI.encode(Fci(aid=C.AID, applet_version=C.APPLET_VERSION, max_command_data=0, max_response_data=0,
                           features=FEATURE_EXTENDED_LENGTH | FEATURE_CHAINING, max_chunk_size=MAX_CHUNK))
# max command / response data (TLVs 81 and 82 in A5) depend on the platform's APDU buffer
_FCI_MASK = bytearray(b"\xff" * len(FCI_BYTES))
_at = FCI_BYTES.index(bytes.fromhex("8102"))
_FCI_MASK[_at + 2:_at + 4] = b"\x00\x00"
_FCI_MASK[_at + 6:_at + 8] = b"\x00\x00"
FCI_MASK = bytes(_FCI_MASK)


@dataclass
class Scenario:
    name: str
    description: str
    steps: list[dict] = field(default_factory=list)
    chunk_entries: int | None = None        # install parameter 07 (None: the default)

    def send(self, note: str, command: bytes, sw: int = SW.OK, response: bytes = b"",
             mask: bytes | None = None) -> None:
        step: dict = {"note": note, "command": command.hex().upper(), "response": response.hex().upper(),
                      "sw": f"{int(sw):04X}"}
        if mask is not None and mask != b"\xff" * len(response):
            assert len(mask) == len(response), note
            step["mask"] = mask.hex().upper()
        self.steps.append(step)

    def power_cycle(self, note: str) -> None:
        self.steps.append({"note": note, "power": "cycle"})

    # shorthands
    def select(self) -> None:
        self.send("SELECT the applet by AID: FCI", SELECT, response=FCI_BYTES, mask=FCI_MASK)

    def verify(self, pin: str = PIN, sw: int = SW.OK) -> None:
        self.send(f"VERIFY PIN {'(right)' if sw == SW.OK else '(wrong)'}",
                  apdu(0x00, C.Ins.VERIFY, 0x00, C.PIN_REFERENCE, K.pin_block(pin)), sw)

    def status(self, note: str, **changes: object) -> None:
        if self.chunk_entries is not None:
            changes.setdefault("chunk_entries", self.chunk_entries)
        data, mask = status(**changes)
        self.send(note, apdu(0x80, C.Ins.GET_STATUS, le=0), response=data, mask=mask)

    def begin(self, b: Backup, resumed: bool = False, chunks: int = 0, manifest: int = 0,
              sw: int = SW.OK, note: str = "BEGIN BACKUP") -> None:
        data = K.BEGIN_BACKUP_DATA.encode({"backup_id": b.backup_id, "sequence": b.sequence,
                                           "manifest_length": len(b.manifest)})
        answer = K.BEGIN_BACKUP_RESPONSE.encode({"resumed": resumed, "chunks_received": chunks,
                                                 "manifest_received": manifest}) if sw == SW.OK else b""
        self.send(note, apdu(0x80, C.Ins.BEGIN_BACKUP, data=data, le=0), sw, answer)

    def put_chunk(self, cid: bytes, data: bytes, sw: int = SW.OK, note: str = "PUT CHUNK") -> None:
        body = K.PUT_CHUNK_DATA.encode({"chunk_id": cid, "data": data})
        self.send(note, apdu(0x80, C.Ins.PUT_CHUNK, data=body, extended=len(body) > 255), sw)

    def put_manifest(self, b: Backup, pieces: int = 1, sw: int = SW.OK) -> None:
        step = -(-len(b.manifest) // pieces)
        for off in range(0, len(b.manifest), step):
            body = K.PUT_MANIFEST_DATA.encode({"offset": off, "data": b.manifest[off:off + step]})
            self.send(f"PUT MANIFEST at offset {off}", apdu(0x80, C.Ins.PUT_MANIFEST, data=body,
                                                             extended=len(body) > 255), sw)

    def commit(self, b: Backup, sw: int = SW.OK, signature: bytes | None = None, note: str = "COMMIT BACKUP") -> None:
        body = K.COMMIT_BACKUP_DATA.encode({"signature": signature or b.signature})
        if sw == SW.OK:
            self.send(note, apdu(0x80, C.Ins.COMMIT_BACKUP, data=body, le=0), sw, entry_bytes(b), ENTRY_MASK)
        else:
            self.send(note, apdu(0x80, C.Ins.COMMIT_BACKUP, data=body, le=0), sw)

    def upload(self, b: Backup, note: str) -> None:
        self.begin(b, note=f"BEGIN BACKUP: {note}")
        for cid, data in b.chunks.items():
            self.put_chunk(cid, data)
        self.put_manifest(b)
        self.commit(b)

    def abort(self) -> None:
        self.send("ABORT BACKUP", apdu(0x80, C.Ins.ABORT_BACKUP))


SELECT = apdu(0x00, C.Ins.SELECT, C.SELECT_BY_DF_NAME, 0x00, C.AID, le=0)


def scenario_select() -> Scenario:
    s = Scenario("select", "SELECT, class and instruction errors, T=1 61xx / GET RESPONSE, LIST ANCHORS")
    s.send("GET STATUS before any SELECT: applet not selected", apdu(0x80, C.Ins.GET_STATUS, le=0),
           SW.COMMAND_NOT_ALLOWED)
    s.send("SELECT an AID that is not on the card", apdu(0x00, 0xA4, 0x04, 0x00, C.AID[:-1] + b"\x02", le=0),
           SW.FILE_NOT_FOUND)
    s.select()
    s.send("SELECT without Le (case 3): the FCI waits behind 61xx",
           apdu(0x00, C.Ins.SELECT, 0x04, 0x00, C.AID), 0x6100 | len(FCI_BYTES))
    s.send("GET RESPONSE with Le = 61xx's xx: the FCI", apdu(0x00, C.Ins.GET_RESPONSE, le=len(FCI_BYTES)),
           response=FCI_BYTES, mask=FCI_MASK)
    s.send("GET RESPONSE with nothing pending", apdu(0x00, C.Ins.GET_RESPONSE, le=0), SW.CONDITIONS_NOT_SATISFIED)
    s.send("MANAGE CHANNEL: only the basic channel", apdu(0x00, 0x70, 0x00, 0x00, le=1),
           SW.LOGICAL_CHANNEL_NOT_SUPPORTED)
    s.send("GET STATUS on logical channel 1 (CLA 81)", apdu(0x81, C.Ins.GET_STATUS, le=0),
           SW.LOGICAL_CHANNEL_NOT_SUPPORTED)
    s.send("unknown instruction", apdu(0x80, 0xFE, le=0), SW.INS_NOT_SUPPORTED)
    s.send("unknown class", apdu(0xA0, C.Ins.GET_STATUS, le=0), SW.CLA_NOT_SUPPORTED)
    s.send("GET STATUS with P1 01", apdu(0x80, C.Ins.GET_STATUS, 0x01, 0x00, le=0), SW.INCORRECT_P1P2)
    s.send("LIST ANCHORS: the provisioned key id, no PIN needed", apdu(0x80, C.Ins.LIST_ANCHORS, le=0),
           response=K.LIST_ANCHORS_RESPONSE.encode({"key_ids": [SIGNER_ID]}))
    data, mask = status()
    s.send("GET STATUS without Le (case 1): the answer waits behind 61xx", apdu(0x80, C.Ins.GET_STATUS),
           0x6100 | len(data))
    s.send("GET RESPONSE with a smaller Le: that much, 61xx for the rest",
           apdu(0x00, C.Ins.GET_RESPONSE, le=8), 0x6100 | (len(data) - 8), data[:8], mask[:8])
    s.send("GET RESPONSE for the rest", apdu(0x00, C.Ins.GET_RESPONSE, le=0), response=data[8:], mask=mask[8:])
    return s


def scenario_pin() -> Scenario:
    s = Scenario("pin", "VERIFY, CHANGE REFERENCE DATA, RESET RETRY COUNTER: counters, blocking, PUK, errors")
    s.select()
    s.status("GET STATUS of a fresh card")
    s.send("VERIFY without data: tries left", apdu(0x00, C.Ins.VERIFY, 0x00, C.PIN_REFERENCE), 0x63C3)
    s.verify("9999", 0x63C2)
    s.send("VERIFY with P2 82 (no such PIN)", apdu(0x00, C.Ins.VERIFY, 0x00, 0x82, K.pin_block(PIN)),
           SW.INCORRECT_P1P2)
    s.send("VERIFY with a 4-byte block", apdu(0x00, C.Ins.VERIFY, 0x00, C.PIN_REFERENCE, b"1234"), SW.WRONG_DATA)
    s.send("VERIFY with a block of 2 digits", apdu(0x00, C.Ins.VERIFY, 0x00, C.PIN_REFERENCE,
                                                   b"12" + b"\xff" * 6), SW.WRONG_DATA)
    s.send("VERIFY without data: still 2 tries (malformed blocks cost none)",
           apdu(0x00, C.Ins.VERIFY, 0x00, C.PIN_REFERENCE), 0x63C2)
    s.verify()
    s.send("VERIFY without data once verified", apdu(0x00, C.Ins.VERIFY, 0x00, C.PIN_REFERENCE))
    s.status("GET STATUS: PIN verified, 3 tries again", pin_verified=True)
    body = K.CHANGE_REFERENCE_DATA_DATA.encode({"old": K.pin_block("0000"), "new": K.pin_block("13579")})
    s.send("CHANGE REFERENCE DATA with a wrong old PIN", apdu(0x00, C.Ins.CHANGE_REFERENCE_DATA, 0x00,
                                                              C.PIN_REFERENCE, body), 0x63C2)
    body = K.CHANGE_REFERENCE_DATA_DATA.encode({"old": K.pin_block(PIN), "new": K.pin_block("13579")})
    s.send("CHANGE REFERENCE DATA to 13579", apdu(0x00, C.Ins.CHANGE_REFERENCE_DATA, 0x00, C.PIN_REFERENCE, body))
    s.verify(PIN, 0x63C2)
    s.verify("13579")
    for left in (2, 1, 0):
        s.verify("0000", 0x63C0 | left)
    s.verify("13579", SW.AUTH_METHOD_BLOCKED)
    s.send("VERIFY without data: blocked", apdu(0x00, C.Ins.VERIFY, 0x00, C.PIN_REFERENCE), SW.AUTH_METHOD_BLOCKED)
    s.status("GET STATUS: PIN blocked", life_cycle=int(C.LifeCycle.PIN_BLOCKED), pin_tries=0)
    body = K.RESET_RETRY_COUNTER_DATA.encode({"puk": K.pin_block("87654321"), "new": K.pin_block("2468")})
    s.send("RESET RETRY COUNTER with a wrong PUK", apdu(0x00, C.Ins.RESET_RETRY_COUNTER, 0x00, C.PIN_REFERENCE,
                                                        body), 0x63C0 | (C.PUK_MAX_TRIES - 1))
    body = K.RESET_RETRY_COUNTER_DATA.encode({"puk": K.pin_block("1234"), "new": K.pin_block("2468")})
    s.send("RESET RETRY COUNTER with a 4-digit PUK", apdu(0x00, C.Ins.RESET_RETRY_COUNTER, 0x00, C.PIN_REFERENCE,
                                                          body), SW.WRONG_DATA)
    body = K.RESET_RETRY_COUNTER_DATA.encode({"puk": K.pin_block(PUK), "new": K.pin_block("2468")})
    s.send("RESET RETRY COUNTER with the PUK: new PIN 2468", apdu(0x00, C.Ins.RESET_RETRY_COUNTER, 0x00,
                                                                  C.PIN_REFERENCE, body))
    s.status("GET STATUS: unblocked, not verified, PUK tries back")
    s.verify("2468")
    s.power_cycle("power off and on: the PIN must be verified again")
    s.select()
    s.status("GET STATUS after the power cycle")
    s.send("BEGIN BACKUP without the PIN", apdu(0x80, C.Ins.BEGIN_BACKUP, data=bytes(28), le=0),
           SW.SECURITY_STATUS_NOT_SATISFIED)
    return s


def scenario_backup() -> Scenario:
    s = Scenario("backup", "A backup upload and read-back: BEGIN, QUERY, PUT CHUNK (short, chained, extended), "
                           "PUT MANIFEST, COMMIT, LIST, READ MANIFEST / CHUNK, DELETE; anti-rollback after delete")
    b = make_backup("backup-1", 5, [200, 1000, 3000])
    (a_id, a), (b_id, bb), (c_id, c) = b.chunks.items()
    s.select()
    s.send("QUERY CHUNKS without the PIN", apdu(0x80, C.Ins.QUERY_CHUNKS, data=a_id, le=0),
           SW.SECURITY_STATUS_NOT_SATISFIED)
    s.verify()
    s.send("PUT CHUNK before BEGIN BACKUP", apdu(0x80, C.Ins.PUT_CHUNK, data=a_id + a[:10]),
           SW.CONDITIONS_NOT_SATISFIED)
    s.begin(b)
    ids = a_id + b_id + c_id
    s.send("QUERY CHUNKS: none on the card", apdu(0x80, C.Ins.QUERY_CHUNKS, data=ids, le=0),
           response=K.QUERY_CHUNKS_RESPONSE.encode([False, False, False]))
    s.send("QUERY CHUNKS without an id", apdu(0x80, C.Ins.QUERY_CHUNKS, le=0), SW.WRONG_DATA)
    s.put_chunk(a_id, a, note="PUT CHUNK (short APDU)")
    s.put_chunk(a_id, a, SW.DATA_ALREADY_EXISTS, note="PUT CHUNK of an id already on the card")
    body = K.PUT_CHUNK_DATA.encode({"chunk_id": b_id, "data": bb})
    for off in range(0, len(body), 255):
        last = off + 255 >= len(body)
        s.send(f"PUT CHUNK by command chaining, part at {off}" + (" (last)" if last else ""),
               apdu(0x80 if last else 0x90, C.Ins.PUT_CHUNK, data=body[off:off + 255]))
    s.put_chunk(c_id, c, note="PUT CHUNK (extended APDU)")
    s.send("QUERY CHUNKS: all three received", apdu(0x80, C.Ins.QUERY_CHUNKS, data=ids, le=0),
           response=K.QUERY_CHUNKS_RESPONSE.encode([True, True, True]))
    body = K.PUT_MANIFEST_DATA.encode({"offset": len(b.manifest) - 4, "data": b"\x00" * 8})
    s.send("PUT MANIFEST past the announced length", apdu(0x80, C.Ins.PUT_MANIFEST, data=body), SW.WRONG_DATA)
    s.put_manifest(b, pieces=2)
    s.commit(b)
    s.status("GET STATUS: one backup, three chunks, sequence 5", pin_verified=True, backups=1, chunks=3,
             highest_sequence=5)
    s.send("LIST BACKUPS", apdu(0x80, C.Ins.LIST_BACKUPS, le=0),
           response=b"\x01" + entry_bytes(b), mask=b"\xff" + ENTRY_MASK)
    s.send("LIST BACKUPS from index 1: none", apdu(0x80, C.Ins.LIST_BACKUPS, 0x01, le=0), response=b"\x01")
    s.send("LIST BACKUPS with P2 01", apdu(0x80, C.Ins.LIST_BACKUPS, 0x00, 0x01, le=0), SW.INCORRECT_P1P2)
    rd = K.READ_MANIFEST_DATA.encode({"backup_id": b.backup_id, "offset": 0})
    s.send("READ MANIFEST, first 64 bytes", apdu(0x80, C.Ins.READ_MANIFEST, 0, data=rd, le=64),
           response=b.manifest[:64])
    rd = K.READ_MANIFEST_DATA.encode({"backup_id": b.backup_id, "offset": 64})
    s.send("READ MANIFEST from offset 64 (extended Le)", apdu(0x80, C.Ins.READ_MANIFEST, 0, data=rd, le=0,
                                                             extended=True), response=b.manifest[64:])
    rd = K.READ_MANIFEST_DATA.encode({"backup_id": b.backup_id, "offset": 0})
    s.send("READ MANIFEST P1 01: the signature", apdu(0x80, C.Ins.READ_MANIFEST, 1, data=rd, le=0),
           response=b.signature)
    s.send("READ MANIFEST P1 02", apdu(0x80, C.Ins.READ_MANIFEST, 2, data=rd, le=0), SW.INCORRECT_P1P2)
    rd = K.READ_MANIFEST_DATA.encode({"backup_id": b.backup_id, "offset": len(b.manifest) + 1})
    s.send("READ MANIFEST past the end", apdu(0x80, C.Ins.READ_MANIFEST, 0, data=rd, le=0), SW.WRONG_DATA)
    rd = K.READ_MANIFEST_DATA.encode({"backup_id": b"\x77" * 16, "offset": 0})
    s.send("READ MANIFEST of an unknown backup", apdu(0x80, C.Ins.READ_MANIFEST, 0, data=rd, le=0),
           SW.REFERENCED_DATA_NOT_FOUND)
    rc = K.READ_CHUNK_DATA.encode({"chunk_id": a_id, "offset": 0})
    s.send("READ CHUNK, short Le 00: 200 bytes", apdu(0x80, C.Ins.READ_CHUNK, data=rc, le=0), response=a)
    rc = K.READ_CHUNK_DATA.encode({"chunk_id": b_id, "offset": 0})
    s.send("READ CHUNK of 1000 bytes with short Le 00: the first 256", apdu(0x80, C.Ins.READ_CHUNK, data=rc, le=0),
           response=bb[:256])
    rc = K.READ_CHUNK_DATA.encode({"chunk_id": c_id, "offset": 1000})
    s.send("READ CHUNK from offset 1000, extended Le 0000", apdu(0x80, C.Ins.READ_CHUNK, data=rc, le=0,
                                                                extended=True), response=c[1000:])
    rc = K.READ_CHUNK_DATA.encode({"chunk_id": b"\x55" * 32, "offset": 0})
    s.send("READ CHUNK of an unknown id", apdu(0x80, C.Ins.READ_CHUNK, data=rc, le=0), SW.REFERENCED_DATA_NOT_FOUND)
    s.begin(b, sw=SW.SEQUENCE_ROLLBACK, note="BEGIN BACKUP with the committed sequence: rollback")
    dd = K.DELETE_BACKUP_DATA.encode({"backup_id": b.backup_id})
    s.send("DELETE BACKUP", apdu(0x80, C.Ins.DELETE_BACKUP, data=dd))
    s.send("DELETE BACKUP again: gone", apdu(0x80, C.Ins.DELETE_BACKUP, data=dd), SW.REFERENCED_DATA_NOT_FOUND)
    rd = K.READ_MANIFEST_DATA.encode({"backup_id": b.backup_id, "offset": 0})
    s.send("READ MANIFEST of the deleted backup", apdu(0x80, C.Ins.READ_MANIFEST, 0, data=rd, le=0),
           SW.REFERENCED_DATA_NOT_FOUND)
    s.status("GET STATUS: no backup, no chunk, the sequence kept", pin_verified=True, highest_sequence=5)
    s.begin(b, sw=SW.SEQUENCE_ROLLBACK, note="BEGIN BACKUP of sequence 5 after the delete: still a rollback")
    return s


def scenario_commit_checks() -> Scenario:
    s = Scenario("commit_checks", "COMMIT BACKUP's checks in the README's order, ABORT, and a resumed upload "
                                  "after a power loss")
    s.select()
    s.verify()
    good = make_backup("commit-good", 4, [300, 120])
    s.commit(good, SW.CONDITIONS_NOT_SATISFIED, note="COMMIT without BEGIN BACKUP")
    s.begin(good)
    for cid, data in good.chunks.items():
        s.put_chunk(cid, data)
    body = K.PUT_MANIFEST_DATA.encode({"offset": 0, "data": good.manifest[:40]})
    s.send("PUT MANIFEST, first 40 bytes only", apdu(0x80, C.Ins.PUT_MANIFEST, data=body))
    s.commit(good, SW.CONDITIONS_NOT_SATISFIED, note="COMMIT with the manifest incomplete")
    s.abort()
    s.status("GET STATUS after ABORT: no session", pin_verified=True)
    s.commit(good, SW.CONDITIONS_NOT_SATISFIED, note="COMMIT after ABORT")

    garbage = Backup(b"\x42" * 16, 6, {}, b"\x30" + b"\x00" * 99, b"\x00" * 64)
    s.begin(garbage, note="BEGIN BACKUP for a malformed manifest")
    s.put_manifest(garbage)
    s.commit(garbage, SW.WRONG_DATA, note="COMMIT: manifest syntax")
    s.abort()

    other_id = make_backup("commit-other-id", 6, [50], backup_id=b"\x01" * 16)
    announced = Backup(b"\x02" * 16, 6, other_id.chunks, other_id.manifest, other_id.signature)
    s.begin(announced, note="BEGIN BACKUP of id 0202..")
    s.put_manifest(announced)
    s.commit(announced, SW.WRONG_DATA, note="COMMIT: the manifest names another backup id")
    s.abort()

    stranger = make_backup("commit-stranger", 6, [50], signer=OTHER)
    s.begin(stranger, note="BEGIN BACKUP signed by a key that is not a trust anchor")
    s.put_manifest(stranger)
    s.commit(stranger, SW.REFERENCE_DATA_NOT_USABLE, note="COMMIT: signer is not a trust anchor")
    s.abort()

    forged = make_backup("commit-forged", 6, [50])
    s.begin(forged, note="BEGIN BACKUP with a forged signature")
    s.put_manifest(forged)
    bad = bytes([forged.signature[0] ^ 1]) + forged.signature[1:]
    s.commit(forged, SW.SIGNATURE_INVALID, signature=bad, note="COMMIT: signature invalid")

    s.send("ABORT BACKUP, then the good backup", apdu(0x80, C.Ins.ABORT_BACKUP))
    s.upload(good, "sequence 4, committed")
    stale = make_backup("commit-stale", 10, [60], manifest_sequence=3)
    s.begin(stale, note="BEGIN BACKUP announcing 10 for a manifest of sequence 3")
    s.put_manifest(stale)
    s.commit(stale, SW.SEQUENCE_ROLLBACK, note="COMMIT: manifest sequence 3 is not above 4")
    s.abort()

    missing = make_backup("commit-missing", 11, [70, 80])
    s.begin(missing, note="BEGIN BACKUP, one of two chunks sent")
    cid, data = next(iter(missing.chunks.items()))
    s.put_chunk(cid, data)
    s.put_manifest(missing)
    s.commit(missing, SW.REFERENCED_DATA_NOT_FOUND, note="COMMIT: a chunk is missing")
    s.abort()

    def wrong_hash(refs: list[ChunkRef]) -> None:
        refs[0] = ChunkRef(refs[0].chunk_id, hashlib.sha256(b"not these bytes").digest(), refs[0].size)
    tampered = make_backup("commit-hash", 12, [90], tamper=wrong_hash)
    s.begin(tampered, note="BEGIN BACKUP whose chunk does not match its manifest hash")
    for cid, data in tampered.chunks.items():
        s.put_chunk(cid, data)
    s.put_manifest(tampered)
    s.commit(tampered, SW.CHUNK_HASH_MISMATCH, note="COMMIT: chunk hash mismatch")
    s.abort()

    resumed = make_backup("commit-resume", 13, [400, 500])
    (r1, d1), (r2, d2) = resumed.chunks.items()
    s.begin(resumed, note="BEGIN BACKUP to be interrupted")
    s.put_chunk(r1, d1)
    body = K.PUT_MANIFEST_DATA.encode({"offset": 0, "data": resumed.manifest[:100]})
    s.send("PUT MANIFEST, first 100 bytes", apdu(0x80, C.Ins.PUT_MANIFEST, data=body))
    s.power_cycle("power lost in the middle of the upload")
    s.select()
    s.verify()
    s.status("GET STATUS: the interrupted upload is pending", pin_verified=True, backups=1, chunks=3,
             highest_sequence=4, session_active=True)
    s.begin(resumed, resumed=True, chunks=1, manifest=100, note="BEGIN BACKUP of the same id: resumed")
    s.send("QUERY CHUNKS: the first chunk is there", apdu(0x80, C.Ins.QUERY_CHUNKS, data=r1 + r2, le=0),
           response=K.QUERY_CHUNKS_RESPONSE.encode([True, False]))
    s.put_chunk(r2, d2)
    body = K.PUT_MANIFEST_DATA.encode({"offset": 100, "data": resumed.manifest[100:]})
    s.send("PUT MANIFEST, the rest", apdu(0x80, C.Ins.PUT_MANIFEST, data=body))
    s.commit(resumed)
    s.status("GET STATUS: two backups", pin_verified=True, backups=2, chunks=4, highest_sequence=13)
    return s


def scenario_admin_errors() -> Scenario:
    s = Scenario("admin_errors", "Administration without the secure channel (the channel itself: scp03.json)")
    s.select()
    point = public_point(OTHER.public_key())
    body = K.PUT_TRUST_ANCHOR_DATA.encode({"key_id": key_id(point), "public_key": point}) + b"\x00" * 8
    s.send("PUT TRUST ANCHOR without the admin channel", apdu(0x84, C.Ins.PUT_TRUST_ANCHOR, data=body),
           SW.SECURITY_STATUS_NOT_SATISFIED)
    body = K.DELETE_TRUST_ANCHOR_DATA.encode({"key_id": SIGNER_ID}) + b"\x00" * 8
    s.send("DELETE TRUST ANCHOR without the admin channel", apdu(0x84, C.Ins.DELETE_TRUST_ANCHOR, data=body),
           SW.SECURITY_STATUS_NOT_SATISFIED)
    s.send("ERASE BACKUPS without the admin channel", apdu(0x84, C.Ins.ERASE_BACKUPS, data=b"\x00" * 8),
           SW.SECURITY_STATUS_NOT_SATISFIED)
    s.send("EXTERNAL AUTHENTICATE without INITIALIZE UPDATE",
           apdu(0x84, C.Ins.EXTERNAL_AUTHENTICATE, 0x01, 0x00, b"\x00" * 16), SW.CONDITIONS_NOT_SATISFIED)
    s.send("LIST ANCHORS: unchanged", apdu(0x80, C.Ins.LIST_ANCHORS, le=0),
           response=K.LIST_ANCHORS_RESPONSE.encode({"key_ids": [SIGNER_ID]}))
    return s


def scenario_capacity() -> Scenario:
    s = Scenario("capacity", "A chunk table of 3 entries (install parameter 07): GET STATUS reports it, a fourth "
                             "chunk is refused with CHUNK_TABLE_FULL (668B, not 6A84: the bytes are free), shared "
                             "chunks take no entry", chunk_entries=3)
    s.select()
    s.verify()
    s.status("GET STATUS: 3 chunk entries, all free", pin_verified=True)
    four = make_backup("capacity-four", 2, [100, 100, 100, 100])
    s.begin(four, note="BEGIN BACKUP of 4 chunks")
    for n, (cid, data) in enumerate(four.chunks.items()):
        s.put_chunk(cid, data, SW.OK if n < 3 else SW.CHUNK_TABLE_FULL,
                    note="PUT CHUNK" if n < 3 else "PUT CHUNK of a fourth chunk: no free entry")
    s.status("GET STATUS: 3 pending chunks, no entry free", pin_verified=True, chunks=3, session_active=True)
    s.abort()
    s.status("GET STATUS after ABORT: the entries are free again", pin_verified=True)
    three = make_backup("capacity-three", 3, [100, 200, 300])
    s.upload(three, "3 chunks, every entry")
    shared = make_backup("capacity-three", 4, [100, 200, 300], backup_id=b"\x04" * 16)
    s.begin(shared, note="BEGIN BACKUP of the same 3 chunks under another id")
    ids = b"".join(shared.chunks)
    s.send("QUERY CHUNKS: all on the card", apdu(0x80, C.Ins.QUERY_CHUNKS, data=ids, le=0),
           response=K.QUERY_CHUNKS_RESPONSE.encode([True, True, True]))
    s.put_manifest(shared)
    s.commit(shared)
    s.status("GET STATUS: two backups over the same 3 entries", pin_verified=True, backups=2, chunks=3,
             highest_sequence=4)
    return s


SCENARIOS = (scenario_select, scenario_pin, scenario_backup, scenario_commit_checks, scenario_admin_errors,
             scenario_capacity)


def personalisation(chunk_entries: int | None = None) -> dict:
    from card.jcardsim import Personalisation
    perso = Personalisation(pin=PIN, puk=PUK, admin_key=ADMIN_KEY, trust_anchors=(SIGNER_POINT,), capacity=CAPACITY,
                            chunk_entries=chunk_entries)
    extra = {} if chunk_entries is None else {"chunk_entries": chunk_entries}
    return {"pin": PIN, "puk": PUK, "admin_key": ADMIN_KEY.hex().upper(),
            "trust_anchors": [SIGNER_POINT.hex().upper()], "capacity": CAPACITY, **extra,
            "install_params": perso.install_params().hex().upper()}


def document(s: Scenario) -> dict:
    return {"name": s.name, "description": s.description, "personalisation": personalisation(s.chunk_entries),
            "steps": s.steps}


def render(doc: dict) -> str:
    return json.dumps(doc, indent=1) + "\n"


# ---- replay (shared with tests/test_vectors.py) ----------------------------------------


def matches(expected: dict, answer: bytes) -> str | None:
    """None when ``answer`` (data + SW) fulfils the step, else what differs."""
    want = bytes.fromhex(expected["response"])
    sw = int(expected["sw"], 16)
    mask = bytes.fromhex(expected["mask"]) if "mask" in expected else b"\xff" * len(want)
    if len(answer) < 2:
        return f"no status word in {answer.hex()}"
    data, got_sw = answer[:-2], int.from_bytes(answer[-2:], "big")
    if got_sw != sw:
        return f"SW {got_sw:04X}, expected {sw:04X} (data {data.hex().upper()})"
    if len(data) != len(want):
        return f"{len(data)} data bytes, expected {len(want)}: {data.hex().upper()}"
    for i, (a, b, m) in enumerate(zip(data, want, mask)):
        if a & m != b & m:
            return f"data differs at byte {i}: {data.hex().upper()} vs {want.hex().upper()}"
    return None


def replay_on_emulator(doc: dict) -> list[str]:
    """Run a scenario on a fresh Python emulator card; the failures, one line each."""
    from card.emulator import VirtualCard, personalise
    perso = doc["personalisation"]
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "card.img"
        personalise(image, perso["capacity"], perso["pin"], perso["puk"], bytes.fromhex(perso["admin_key"]),
                    [bytes.fromhex(p) for p in perso["trust_anchors"]], chunk_entries=perso.get("chunk_entries"))
        with VirtualCard.open(image) as card:
            card.power_on()
            for n, step in enumerate(doc["steps"]):
                if step.get("power") == "cycle":
                    card.power_off()
                    card.power_on()
                    continue
                problem = matches(step, card.transmit(bytes.fromhex(step["command"])))
                if problem:
                    failures.append(f"{doc['name']} step {n} ({step['note']}): {problem}")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a file differs from what would be written")
    args = parser.parse_args(argv)
    stale, failures = [], []
    for make in SCENARIOS:
        doc = document(make())
        failures += replay_on_emulator(doc)
        path = HERE / f"{doc['name']}.json"
        text = render(doc)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        elif not failures:
            path.write_text(text)
    for line in failures:
        print(f"make_vectors: the emulator fails {line}", file=sys.stderr)
    if stale:
        print("make_vectors: stale: " + ", ".join(stale) + " (run apdu_specs/vectors/make_vectors.py)",
              file=sys.stderr)
    if failures or stale:
        return 1
    if not args.check:
        print(f"make_vectors: wrote {len(SCENARIOS)} files in {HERE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
