"""Typed client of the simvault backup applet over a host.link.Link.

    card = BackupCard(link)
    card.select()                    # reads the FCI, sets the link's sizes
    card.verify_pin("1234")
    card.begin_backup(bid, seq, len(manifest)) ...

Every command and answer is built and parsed through apdu_specs codecs. An
error status word raises a host.errors.CardError subclass whose one-line
message says what went wrong and what to do (apdu_specs.sw.describe).
"""
from __future__ import annotations

import hmac
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from apdu_specs import commands as K
from apdu_specs import constants as C
from apdu_specs.codec import CodecError
from apdu_specs.fci import FCI, Fci
from apdu_specs.manifest import key_id as point_key_id
from apdu_specs import scp as S
from apdu_specs.scp import KeySet, SecureChannel
from apdu_specs.sw import SW, describe, pin_tries
from host.errors import CardError, UsageError
from host.client_errors import (  # noqa: F401 - the client's errors, importable from here as before
    AdminAuthError,
    AlreadyOnCardError,
    BackupRejectedError,
    CardFullError,
    CardProtocolError,
    CardStateError,
    NoAppletError,
    NotFoundOnCardError,
    PUK_BLOCKED_HINT,
    PinBlockedError,
    PinRequiredError,
    UNBLOCK_HINT,
    WrongPinError,
    _admin_locked,
    _blocked_message,
    card_error,
    tries_left,
)
from host.link.apdu import Apdu, Response
from host.link.link import Link
from host.link.transport import Transport

# ---- results ----------------------------------------------------------------------


@dataclass(frozen=True)
class CardStatus:
    applet_version: int
    life_cycle: int
    pin_verified: bool
    pin_tries: int
    pin_max_tries: int
    puk_tries: int
    admin_authenticated: bool
    capacity: int
    free: int
    backups: int
    max_backups: int
    chunks: int
    anchors: int
    highest_sequence: int
    session_active: bool
    chunk_entries: int | None = None      # None: a card before install parameter 07 was reported
    block_size: int | None = None
    max_manifest: int | None = None       # the longest manifest BEGIN BACKUP takes

    @property
    def free_entries(self) -> int | None:
        return None if self.chunk_entries is None else max(0, self.chunk_entries - self.chunks)

    @property
    def life_cycle_name(self) -> str:
        try:
            return C.LifeCycle(self.life_cycle).name
        except ValueError:
            return f"0x{self.life_cycle:02X}"


@dataclass(frozen=True)
class BackupEntry:
    backup_id: bytes
    sequence: int
    created: int
    manifest_length: int
    chunk_count: int
    stored_bytes: int


@dataclass(frozen=True)
class BeginResult:
    resumed: bool
    chunks_received: int
    manifest_received: int


# ---- the client ---------------------------------------------------------------------


class BackupCard:
    """The simvault applet on one card, through a Link (already connected)."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self.fci: Fci | None = None
        self._scp: SecureChannel | None = None

    @classmethod
    def connect(cls, transport: Transport, pin: str | None = None) -> BackupCard:
        """The applet on ``transport`` through a plain Link: connected, selected, and
        the PIN verified when one is given."""
        link = Link(transport)
        link.connect()
        card = cls(link)
        card.select()
        if pin is not None:
            card.verify_pin(pin)
        return card

    # -- plumbing --------------------------------------------------------------

    def _send(self, operation: str, apdu: Apdu) -> bytes:
        response: Response = self.link.transmit(apdu)
        if response.sw != SW.OK:
            raise card_error(operation, response.sw)
        return response.data

    @staticmethod
    def _parse(operation: str, codec, data: bytes):
        try:
            return codec.decode(data)
        except CodecError as exc:
            raise CardProtocolError(f"{operation}: the card's answer is malformed ({exc}): "
                                    "is this a simvault card?") from exc

    @property
    def max_command_data(self) -> int:
        return self.link.max_command_data if self.link.extended else min(self.link.max_command_data, 255)

    @property
    def _read_le(self) -> int:
        return self.link.max_response_data if self.link.extended else min(self.link.max_response_data, 256)

    # -- selection and status --------------------------------------------------

    def select(self) -> Fci:
        """SELECT the applet by AID; the FCI's limits configure the link.
        NoAppletError when the card answers anything but a simvault FCI."""
        where = self.link.transport.name
        # Short form whatever the ATR says: a Java Card applet that does not
        # implement ExtendedLength refuses extended APDUs, SELECT included.
        response = self.link.transmit(Apdu(C.CLA_ISO, C.Ins.SELECT, C.SELECT_BY_DF_NAME, C.SELECT_FIRST_OR_ONLY,
                                           C.AID, le=256))
        if response.sw != SW.OK:
            info = describe(response.sw)
            raise NoAppletError(f"no simvault applet on the card in {where}: SELECT {C.AID.hex().upper()} answered "
                                f"{response.sw:04X} {info.name}: use a simvault card, or another reader "
                                "(--reader; 'simvault readers' lists them)", response.sw)
        try:
            fci = FCI.decode(response.data)
        except CodecError:
            raise NoAppletError(f"no simvault applet on the card in {where}: its answer to SELECT is not a "
                                "simvault FCI: use a simvault card, or another reader (--reader)",
                                response.sw) from None
        self.fci = fci
        self._scp = None
        self.link.set_extended(fci.extended_length, fci.max_command_data, fci.max_response_data)
        self.link.chaining = fci.chaining
        return fci

    def status(self) -> CardStatus:
        data = self._send("GET STATUS", Apdu(C.CLA_PROPRIETARY, C.Ins.GET_STATUS, le=0))
        return CardStatus(**self._parse("GET STATUS", K.GET_STATUS_RESPONSE, data))

    # -- PIN -------------------------------------------------------------------

    @staticmethod
    def _pin_block(pin: str, what: str = "PIN") -> bytes:
        try:
            return K.pin_block(pin)
        except CodecError:
            raise UsageError(f"a {what} is {C.PIN_MIN_DIGITS} to {C.PIN_MAX_DIGITS} digits: check it") from None

    def verify_pin(self, pin: str) -> None:
        """VERIFY; WrongPinError (tries_left) or PinBlockedError on refusal."""
        data = K.VERIFY_DATA.encode({"pin": self._pin_block(pin)})
        self._send("VERIFY", Apdu(C.CLA_ISO, C.Ins.VERIFY, 0x00, C.PIN_REFERENCE, data, secret=True))

    def pin_tries_left(self) -> int | None:
        """VERIFY without data: None when the PIN is verified, else the tries left (0 = blocked)."""
        response = self.link.transmit(Apdu(C.CLA_ISO, C.Ins.VERIFY, 0x00, C.PIN_REFERENCE))
        if response.sw == SW.OK:
            return None
        if response.sw == SW.AUTH_METHOD_BLOCKED:
            return 0
        tries = pin_tries(response.sw)
        if tries is None:
            raise card_error("VERIFY", response.sw)
        return tries

    def change_pin(self, old: str, new: str) -> None:
        data = K.CHANGE_REFERENCE_DATA_DATA.encode({"old": self._pin_block(old), "new": self._pin_block(new, "new PIN")})
        self._send("CHANGE REFERENCE DATA",
                   Apdu(C.CLA_ISO, C.Ins.CHANGE_REFERENCE_DATA, 0x00, C.PIN_REFERENCE, data, secret=True))

    def unblock_pin(self, puk: str, new_pin: str) -> None:
        if len(puk) != C.PUK_DIGITS or not puk.isdigit():
            raise UsageError("the PUK is 8 digits: check it")
        data = K.RESET_RETRY_COUNTER_DATA.encode({"puk": self._pin_block(puk, "PUK"),
                                                  "new": self._pin_block(new_pin, "new PIN")})
        self._send("RESET RETRY COUNTER",
                   Apdu(C.CLA_ISO, C.Ins.RESET_RETRY_COUNTER, 0x00, C.PIN_REFERENCE, data, secret=True))

    # -- upload ----------------------------------------------------------------

    def begin_backup(self, backup_id: bytes, sequence: int, manifest_length: int) -> BeginResult:
        data = K.BEGIN_BACKUP_DATA.encode({"backup_id": backup_id, "sequence": sequence,
                                           "manifest_length": manifest_length})
        answer = self._send("BEGIN BACKUP", Apdu(C.CLA_PROPRIETARY, C.Ins.BEGIN_BACKUP, data=data, le=0))
        return BeginResult(**self._parse("BEGIN BACKUP", K.BEGIN_BACKUP_RESPONSE, answer))

    def query_chunks(self, chunk_ids: Sequence[bytes]) -> list[bool]:
        """Which chunks are on the card, in batches that fit one command."""
        batch = max(1, self.max_command_data // C.CHUNK_ID_LENGTH)
        out: list[bool] = []
        for start in range(0, len(chunk_ids), batch):
            ids = list(chunk_ids[start:start + batch])
            data = K.QUERY_CHUNKS_DATA.encode({"chunk_ids": ids})
            answer = self._send("QUERY CHUNKS", Apdu(C.CLA_PROPRIETARY, C.Ins.QUERY_CHUNKS, data=data, le=0))
            bits = self._parse("QUERY CHUNKS", K.QUERY_CHUNKS_RESPONSE, answer)
            if len(bits) < len(ids):
                raise CardProtocolError("QUERY CHUNKS: the card answered fewer bits than ids asked")
            out += bits[:len(ids)]
        return out

    def put_chunk(self, chunk_id: bytes, data: bytes) -> None:
        """PUT CHUNK; the link chains it when it exceeds one command."""
        if self.fci is not None and len(data) > self.fci.max_chunk_size:
            raise UsageError(f"a chunk of {len(data)} bytes exceeds the card's {self.fci.max_chunk_size}: "
                             "use smaller chunks")
        body = K.PUT_CHUNK_DATA.encode({"chunk_id": chunk_id, "data": data})
        self._send("PUT CHUNK", Apdu(C.CLA_PROPRIETARY, C.Ins.PUT_CHUNK, data=body))

    def put_manifest(self, manifest: bytes, offset: int = 0) -> None:
        """PUT MANIFEST in pieces that fit one command each."""
        piece = max(1, self.max_command_data - 4)
        for start in range(0, len(manifest), piece):
            body = K.PUT_MANIFEST_DATA.encode({"offset": offset + start, "data": manifest[start:start + piece]})
            self._send("PUT MANIFEST", Apdu(C.CLA_PROPRIETARY, C.Ins.PUT_MANIFEST, data=body))

    def commit(self, signature: bytes) -> BackupEntry:
        body = K.COMMIT_BACKUP_DATA.encode({"signature": signature})
        answer = self._send("COMMIT BACKUP", Apdu(C.CLA_PROPRIETARY, C.Ins.COMMIT_BACKUP, data=body, le=0))
        return BackupEntry(**self._parse("COMMIT BACKUP", K.COMMIT_BACKUP_RESPONSE, answer))

    def abort(self) -> None:
        self._send("ABORT BACKUP", Apdu(C.CLA_PROPRIETARY, C.Ins.ABORT_BACKUP))

    # -- reading ---------------------------------------------------------------

    def list_backups(self) -> list[BackupEntry]:
        """Every committed backup, all pages (oldest sequence first)."""
        entries: list[BackupEntry] = []
        while True:
            if len(entries) > 0xFF:
                raise CardProtocolError("LIST BACKUPS: more than 255 entries: the card is not a simvault card")
            answer = self._send("LIST BACKUPS", Apdu(C.CLA_PROPRIETARY, C.Ins.LIST_BACKUPS, len(entries), 0,
                                                     le=self._read_le))
            page = self._parse("LIST BACKUPS", K.LIST_BACKUPS_RESPONSE, answer)
            entries += [BackupEntry(**e) for e in page["entries"]]
            if not page["entries"] or len(entries) >= page["total"]:
                return entries

    def _read_loop(self, operation: str, ins: int, p1: int, codec, key: str, ident: bytes,
                   length: int | None) -> bytes:
        out = bytearray()
        le = self._read_le
        while length is None or len(out) < length:
            body = codec.encode({key: ident, "offset": len(out)})
            piece = self._send(operation, Apdu(C.CLA_PROPRIETARY, ins, p1, 0, body, le=le))
            out += piece
            if not piece or (length is None and len(piece) < le):
                break
        if length is not None and len(out) != length:
            raise CardProtocolError(f"{operation}: {len(out)} bytes read, {length} expected")
        return bytes(out)

    def read_manifest(self, backup_id: bytes, length: int | None = None) -> bytes:
        """The whole manifest of a committed backup."""
        return self._read_loop("READ MANIFEST", C.Ins.READ_MANIFEST, C.READ_MANIFEST_BODY, K.READ_MANIFEST_DATA,
                               "backup_id", backup_id, length)

    def read_signature(self, backup_id: bytes) -> bytes:
        return self._read_loop("READ MANIFEST", C.Ins.READ_MANIFEST, C.READ_MANIFEST_SIGNATURE,
                               K.READ_MANIFEST_DATA, "backup_id", backup_id, C.SIGNATURE_LENGTH)

    def read_chunk(self, chunk_id: bytes, size: int) -> bytes:
        """The whole chunk (``size`` from the manifest's chunk table)."""
        return self._read_loop("READ CHUNK", C.Ins.READ_CHUNK, 0, K.READ_CHUNK_DATA, "chunk_id", chunk_id, size)

    def delete_backup(self, backup_id: bytes) -> None:
        body = K.DELETE_BACKUP_DATA.encode({"backup_id": backup_id})
        self._send("DELETE BACKUP", Apdu(C.CLA_PROPRIETARY, C.Ins.DELETE_BACKUP, data=body))

    def list_anchors(self) -> list[bytes]:
        answer = self._send("LIST ANCHORS", Apdu(C.CLA_PROPRIETARY, C.Ins.LIST_ANCHORS, le=0))
        return list(self._parse("LIST ANCHORS", K.LIST_ANCHORS_RESPONSE, answer)["key_ids"])

    # -- administration (secure channel) ---------------------------------------

    def open_admin(self, keys: KeySet | bytes, security_level: int | None = None) -> int:
        """GlobalPlatform SCP03 handshake (INITIALIZE UPDATE, EXTERNAL AUTHENTICATE)
        with the admin key set; returns the security level opened. ``keys``: a
        KeySet (version 0: whatever version the card has), or bytes: 48 (K-ENC|
        K-MAC|K-DEK) or 16 (one key used as all three). The card cryptogram (and,
        in i=1x mode, the pseudo-random card challenge) is checked in constant
        time before the host proves itself. ``security_level`` None: the strongest
        the card announces (33 with R-ENC, 13 with R-MAC, else 03)."""
        self._scp = None
        if not isinstance(keys, KeySet):
            try:
                keys = KeySet.from_bytes(bytes(keys))
            except ValueError as exc:
                raise UsageError(f"admin key set: {exc}: check the key file") from None
        host_challenge = os.urandom(S.CHALLENGE_LENGTH)
        try:
            answer = self._send("INITIALIZE UPDATE", Apdu(C.CLA_PROPRIETARY, C.Ins.INITIALIZE_UPDATE, keys.version,
                                                           0, host_challenge, le=0))
        except PinBlockedError as exc:
            raise _admin_locked("INITIALIZE UPDATE") from exc
        except NotFoundOnCardError as exc:
            raise AdminAuthError(f"INITIALIZE UPDATE: the card has no admin key set of version {keys.version:02X}: "
                                 "check the key file's key version (0 accepts any)", exc.sw) from exc
        init = self._parse("INITIALIZE UPDATE", S.INITIALIZE_UPDATE_RESPONSE_SCP03, answer)
        scp_i = init["scp_i"]
        if init["scp_id"] != S.SCP_ID or scp_i & ~S.I_KNOWN:
            raise CardProtocolError(f"INITIALIZE UPDATE: the card offers SCP{init['scp_id']:02X} i={scp_i:02X}, "
                                    "not SCP03 as simvault speaks it")
        wrong_key = AdminAuthError("INITIALIZE UPDATE: the card cryptogram is wrong: wrong admin key set "
                                   "(or not this card); check the key file")
        if init["sequence_counter"] is not None:
            expected = S.pseudo_random_challenge(keys.enc, init["sequence_counter"], C.AID)
            if not hmac.compare_digest(expected, init["card_challenge"]):
                raise wrong_key
        channel = SecureChannel(keys, host_challenge, init["card_challenge"])
        if not hmac.compare_digest(channel.card_cryptogram, init["card_cryptogram"]):
            raise wrong_key
        level = S.strongest_level(scp_i) if security_level is None else security_level
        if not S.level_supported(level, scp_i):
            raise UsageError(f"security level {level:02X}: the card (i={scp_i:02X}) supports "
                             + ", ".join(f"{v:02X}" for v in S.LEVELS if S.level_supported(v, scp_i)))
        data = channel.external_authenticate(level)
        try:
            self._send("EXTERNAL AUTHENTICATE", Apdu(C.CLA_SECURE, C.Ins.EXTERNAL_AUTHENTICATE, level, 0, data,
                                                     secret=True))
        except PinBlockedError as exc:
            raise _admin_locked("EXTERNAL AUTHENTICATE") from exc
        self._scp = channel
        return level

    @property
    def admin_level(self) -> int | None:
        """The security level of the open admin channel (None: not open)."""
        return self._scp.level if self._scp is not None else None

    def _admin(self, operation: str, ins: int, payload: bytes) -> bytes:
        channel = self._scp
        if channel is None:
            raise UsageError(f"{operation} needs the admin channel: call open_admin(keys) first")
        data = channel.wrap_command(C.CLA_SECURE, ins, 0, 0, payload)
        rmac = bool(channel.level and channel.level & S.SL_RMAC)
        try:
            answer = self._send(operation, Apdu(C.CLA_SECURE, ins, 0, 0, data, le=0 if rmac else None))
        except CardError as exc:
            if exc.sw in (SW.INCORRECT_SM_DATA, SW.SECURITY_STATUS_NOT_SATISFIED):
                self._scp = None        # the card closed the channel
            raise
        try:
            return channel.unwrap_response(answer, SW.OK)
        except S.ScpError as exc:
            self._scp = None
            raise AdminAuthError(f"{operation}: the card's answer fails its secure-channel check ({exc}): "
                                 "not the card the channel was opened with, or tampered on the way; "
                                 "open the channel again", SW.INCORRECT_SM_DATA) from None

    def put_trust_anchor(self, point: bytes) -> bytes:
        """Provision a P-256 public key (uncompressed point); returns its key id."""
        kid = point_key_id(point)
        self._admin("PUT TRUST ANCHOR", C.Ins.PUT_TRUST_ANCHOR,
                    K.PUT_TRUST_ANCHOR_DATA.encode({"key_id": kid, "public_key": point}))
        return kid

    def delete_trust_anchor(self, key_id: bytes) -> None:
        self._admin("DELETE TRUST ANCHOR", C.Ins.DELETE_TRUST_ANCHOR,
                    K.DELETE_TRUST_ANCHOR_DATA.encode({"key_id": key_id}))

    def erase_backups(self) -> None:
        self._admin("ERASE BACKUPS", C.Ins.ERASE_BACKUPS, b"")

    # -- convenience -----------------------------------------------------------

    def missing_chunks(self, chunk_ids: Iterable[bytes]) -> list[bytes]:
        ids = list(chunk_ids)
        return [cid for cid, present in zip(ids, self.query_chunks(ids)) if not present]
