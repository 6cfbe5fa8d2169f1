"""The simvault backup applet: every command of apdu_specs/README.md.

Persistent state is the BackupStore's; this object keeps only what a real card
keeps in RAM (``AppletSession``): the PIN-verified flag, the secure channel,
and the upload announced by BEGIN BACKUP in this card session (its declared
manifest length and sequence; the upload itself -- chunks, manifest bytes --
is the store's resumable session, so BEGIN after a power loss resumes it).

Bytes are built and parsed only through apdu_specs codecs. Handlers raise
``SwError``; store errors carry their SW and are mapped in ``_guard``.
The admin commands (secure channel) are in card/applet_admin.py.
"""
from __future__ import annotations

import logging

from apdu_specs import commands as K
from apdu_specs import constants as C
from apdu_specs import fci as F
from apdu_specs.codec import CodecError
from apdu_specs.manifest import MANIFEST, verify_raw
from apdu_specs.sw import SW
from card import store as S
from card.applet_admin import AdminCommands
from card.applet_base import AppletSession, Upload, _guard, decode, require_p1p2  # noqa: F401 - Upload: API
from card.runtime import CardLimits, Command, Handler, SwError

log = logging.getLogger(__name__)

ENTRY_SIZE = K.BACKUP_ENTRY.sizeof()


class BackupApplet:
    aid = C.AID

    def __init__(self, store: S.BackupStore, limits: CardLimits | None = None) -> None:
        self.store = store
        self.limits = limits or CardLimits()
        self.session = AppletSession()
        self.admin = AdminCommands(self)  # the admin half shares this object's state

    # ---- runtime interface --------------------------------------------------

    def handlers(self) -> dict[tuple[int, int], Handler]:
        I, P, ISO = C.Ins, C.CLA_PROPRIETARY, C.CLA_ISO
        table: dict[tuple[int, int], Handler] = {
            (ISO, I.VERIFY): self.verify,
            (ISO, I.CHANGE_REFERENCE_DATA): self.change_reference_data,
            (ISO, I.RESET_RETRY_COUNTER): self.reset_retry_counter,
            (P, I.GET_STATUS): self.get_status,
            (P, I.BEGIN_BACKUP): self.begin_backup,
            (P, I.QUERY_CHUNKS): self.query_chunks,
            (P, I.PUT_CHUNK): self.put_chunk,
            (P, I.PUT_MANIFEST): self.put_manifest,
            (P, I.COMMIT_BACKUP): self.commit_backup,
            (P, I.ABORT_BACKUP): self.abort_backup,
            (P, I.LIST_BACKUPS): self.list_backups,
            (P, I.READ_MANIFEST): self.read_manifest,
            (P, I.READ_CHUNK): self.read_chunk,
            (P, I.DELETE_BACKUP): self.delete_backup,
            (P, I.LIST_ANCHORS): self.list_anchors,
        }
        table.update(self.admin.handlers())
        return table

    def fci(self) -> bytes:
        lim = self.limits
        features = (F.FEATURE_EXTENDED_LENGTH if lim.extended else 0) | (F.FEATURE_CHAINING if lim.chaining else 0) \
            | (F.FEATURE_T0 if lim.t0 else 0)
        return F.FCI.encode(F.Fci(aid=C.AID, applet_version=C.APPLET_VERSION,
                                  max_command_data=lim.max_command_data,
                                  max_response_data=min(lim.max_response_data, 0xFFFF),
                                  features=features, max_chunk_size=lim.max_chunk_size))

    def select(self) -> bytes:
        upload = self.session.upload
        self.session = AppletSession(upload=upload)      # PIN and secure channel close on SELECT
        return self.fci()

    def deselect(self) -> None:
        self.session = AppletSession(upload=self.session.upload)

    def power_off(self) -> None:
        self.session = AppletSession()

    # ---- access helpers -----------------------------------------------------

    def _personalised(self) -> None:
        if self.store.lifecycle != S.LifeCycle.PERSONALISED:
            raise SwError(SW.CONDITIONS_NOT_SATISFIED, "applet not personalised")

    def _require_pin(self) -> None:
        self._personalised()
        if not self.session.pin_verified:
            raise SwError(SW.SECURITY_STATUS_NOT_SATISFIED)

    def _room(self, cmd: Command) -> int:
        """Response bytes this command may answer (the runtime sends the rest with 61xx)."""
        return cmd.ne or self.limits.max_response_data

    # ---- PIN -------------------------------------------------------------------

    @staticmethod
    def _pin_ref(cmd: Command) -> None:
        require_p1p2(cmd, 0x00, C.PIN_REFERENCE)

    def _pin_result(self, ok: bool, left: int) -> bytes:
        if ok:
            self.session.pin_verified = True
            return b""
        self.session.pin_verified = False
        raise SwError(0x63C0 | (left & 0x0F))        # 63C0: that was the last try

    @_guard
    def verify(self, cmd: Command) -> bytes:
        self._pin_ref(cmd)
        self._personalised()
        tries = self.store.pin_tries_left()
        if not cmd.data:
            if self.session.pin_verified:
                return b""
            raise SwError(SW.AUTH_METHOD_BLOCKED if tries == 0 else 0x63C0 | (tries & 0x0F))
        pin = K.parse_pin_block(decode(K.VERIFY_DATA, cmd.data)["pin"])
        if tries == 0:
            self.session.pin_verified = False
            raise SwError(SW.AUTH_METHOD_BLOCKED)
        ok, left = self.store.verify_pin(pin)
        return self._pin_result(ok, left)

    @_guard
    def change_reference_data(self, cmd: Command) -> bytes:
        self._pin_ref(cmd)
        self._personalised()
        fields = decode(K.CHANGE_REFERENCE_DATA_DATA, cmd.data)
        old, new = K.parse_pin_block(fields["old"]), K.parse_pin_block(fields["new"])
        if self.store.pin_tries_left() == 0:
            self.session.pin_verified = False
            raise SwError(SW.AUTH_METHOD_BLOCKED)
        ok, left = self.store.change_pin(old, new)
        return self._pin_result(ok, left)

    @_guard
    def reset_retry_counter(self, cmd: Command) -> bytes:
        self._pin_ref(cmd)
        self._personalised()
        fields = decode(K.RESET_RETRY_COUNTER_DATA, cmd.data)
        puk, new = K.parse_pin_block(fields["puk"]), K.parse_pin_block(fields["new"])
        if len(puk) != C.PUK_DIGITS:
            raise SwError(SW.WRONG_DATA, "the PUK is 8 digits")
        if self.store.puk_tries_left() == 0:
            raise SwError(SW.AUTH_METHOD_BLOCKED)
        ok, left = self.store.unblock_pin(puk, new)
        self.session.pin_verified = False
        if not ok:
            raise SwError(0x63C0 | (left & 0x0F))
        return b""

    # ---- status ----------------------------------------------------------------

    @_guard
    def get_status(self, cmd: Command) -> bytes:
        require_p1p2(cmd)
        store = self.store
        stats = store.stats()
        pin_tries = store.pin_tries_left()
        if store.lifecycle != S.LifeCycle.PERSONALISED:
            life = C.LifeCycle.BLANK
        else:
            life = C.LifeCycle.PIN_BLOCKED if pin_tries == 0 else C.LifeCycle.PERSONALISED
        committed = sum(1 for _ in store.list_backups())
        return K.GET_STATUS_RESPONSE.encode({
            "applet_version": C.APPLET_VERSION, "life_cycle": int(life),
            "pin_verified": self.session.pin_verified, "pin_tries": pin_tries,
            "pin_max_tries": C.PIN_MAX_TRIES, "puk_tries": store.puk_tries_left(),
            "admin_authenticated": self.session.admin,
            "capacity": min(stats.capacity, 0xFFFFFFFF), "free": min(stats.free, 0xFFFFFFFF),
            "backups": committed, "max_backups": stats.max_backups, "chunks": stats.chunks,
            "anchors": len(store.list_anchors()), "highest_sequence": store.high_water_mark,
            "session_active": store.session() is not None,
            "chunk_entries": stats.max_chunks, "block_size": stats.block_size,
            "max_manifest": min(S.MAX_MANIFEST, C.MAX_MANIFEST_SIZE),
        })

    # ---- upload ----------------------------------------------------------------

    @_guard
    def begin_backup(self, cmd: Command) -> bytes:
        require_p1p2(cmd)
        self._require_pin()
        fields = decode(K.BEGIN_BACKUP_DATA, cmd.data)
        length = fields["manifest_length"]
        if length == 0 or length > min(S.MAX_MANIFEST, C.MAX_MANIFEST_SIZE):
            raise SwError(SW.NOT_ENOUGH_MEMORY if length else SW.WRONG_DATA, "manifest length")
        if fields["sequence"] <= self.store.high_water_mark:
            raise SwError(SW.SEQUENCE_ROLLBACK)
        info = self.store.begin_session(fields["backup_id"])
        if info.manifest_length > length:        # a resumed upload announced longer before
            self.store.abort_session()
            info = self.store.begin_session(fields["backup_id"])
        self.session.upload = Upload(fields["backup_id"], fields["sequence"], length)
        return K.BEGIN_BACKUP_RESPONSE.encode({"resumed": info.resumed,
                                               "chunks_received": info.pending_chunks,
                                               "manifest_received": info.manifest_length})

    def _require_upload(self) -> Upload:
        """PIN, a BEGIN in this card session, and the store's session of that id."""
        self._require_pin()
        upload = self.session.upload
        current = self.store.session()
        if upload is None or current is None or current.backup_id != upload.backup_id:
            raise SwError(SW.CONDITIONS_NOT_SATISFIED, "no backup session: BEGIN BACKUP first")
        return upload

    @_guard
    def query_chunks(self, cmd: Command) -> bytes:
        require_p1p2(cmd)
        self._require_pin()
        ids = decode(K.QUERY_CHUNKS_DATA, cmd.data)["chunk_ids"]
        if not ids:
            raise SwError(SW.WRONG_DATA, "no chunk id")
        present = self.store.has_chunks(ids)
        return K.QUERY_CHUNKS_RESPONSE.encode(present)

    @_guard
    def put_chunk(self, cmd: Command) -> bytes:
        require_p1p2(cmd)
        fields = decode(K.PUT_CHUNK_DATA, cmd.data)
        self._require_upload()
        if len(fields["data"]) > self.limits.max_chunk_size:
            raise SwError(SW.WRONG_DATA, "chunk above the card's max chunk size")
        self.store.put_chunk(fields["chunk_id"], fields["data"])
        return b""

    @_guard
    def put_manifest(self, cmd: Command) -> bytes:
        require_p1p2(cmd)
        fields = decode(K.PUT_MANIFEST_DATA, cmd.data)
        upload = self._require_upload()
        if not fields["data"] or fields["offset"] + len(fields["data"]) > upload.manifest_length:
            raise SwError(SW.WRONG_DATA, "manifest bytes outside the announced length")
        self.store.put_manifest(fields["offset"], fields["data"])
        return b""

    @_guard
    def commit_backup(self, cmd: Command) -> bytes:
        """The checks of README "A backup upload", in its order."""
        require_p1p2(cmd)
        signature = decode(K.COMMIT_BACKUP_DATA, cmd.data)["signature"]
        upload = self._require_upload()
        session = self.store.session()
        assert session is not None
        if session.manifest_length != upload.manifest_length:
            raise SwError(SW.CONDITIONS_NOT_SATISFIED, "manifest incomplete")
        raw = self.store.read_session_manifest(0, session.manifest_length)
        try:
            manifest = MANIFEST.decode(raw)
        except CodecError as exc:
            raise SwError(SW.WRONG_DATA, "manifest malformed") from exc
        if manifest.backup_id != session.backup_id:
            raise SwError(SW.WRONG_DATA, "manifest of another backup")
        anchor = self.store.get_anchor(manifest.signer_key_id)
        if anchor is None:
            raise SwError(SW.REFERENCE_DATA_NOT_USABLE)
        if not verify_raw(anchor, raw, signature):
            raise SwError(SW.SIGNATURE_INVALID)
        if manifest.sequence <= self.store.high_water_mark:
            raise SwError(SW.SEQUENCE_ROLLBACK)
        for ref in manifest.chunks:
            try:
                info = self.store.chunk_info(ref.chunk_id)
            except S.ChunkNotFound as exc:
                raise SwError(SW.REFERENCED_DATA_NOT_FOUND, "chunk missing") from exc
            if info.length != ref.size or info.sha256 != ref.sha256:
                raise SwError(SW.CHUNK_HASH_MISMATCH)
        entry = self.store.commit_session(signature, [c.chunk_id for c in manifest.chunks],
                                          manifest.sequence, manifest.created, manifest.total_size)
        self.session.upload = None
        return K.COMMIT_BACKUP_RESPONSE.encode(self._entry(entry))

    @_guard
    def abort_backup(self, cmd: Command) -> bytes:
        require_p1p2(cmd)
        self._require_pin()
        self.store.abort_session()
        self.session.upload = None
        return b""

    # ---- reading ---------------------------------------------------------------

    @staticmethod
    def _entry(info: S.BackupInfo) -> dict:
        return {"backup_id": info.backup_id, "sequence": info.sequence, "created": info.created,
                "manifest_length": info.manifest_length, "chunk_count": info.chunk_count,
                "stored_bytes": min(info.size, 0xFFFFFFFF)}

    @_guard
    def list_backups(self, cmd: Command) -> bytes:
        if cmd.p2 != 0:
            raise SwError(SW.INCORRECT_P1P2)
        self._require_pin()
        backups = self.store.list_backups()
        fit = max(1, (self._room(cmd) - 1) // ENTRY_SIZE)
        page = backups[cmd.p1:cmd.p1 + fit]
        return K.LIST_BACKUPS_RESPONSE.encode({"total": len(backups),
                                               "entries": [self._entry(b) for b in page]})

    @_guard
    def read_manifest(self, cmd: Command) -> bytes:
        if cmd.p1 not in (C.READ_MANIFEST_BODY, C.READ_MANIFEST_SIGNATURE) or cmd.p2 != 0:
            raise SwError(SW.INCORRECT_P1P2)
        self._require_pin()
        fields = decode(K.READ_MANIFEST_DATA, cmd.data)
        info = self.store.get_backup(fields["backup_id"])
        offset, room = fields["offset"], self._room(cmd)
        if cmd.p1 == C.READ_MANIFEST_SIGNATURE:
            if offset > len(info.signature):
                raise SwError(SW.WRONG_DATA, "offset past the end")
            return info.signature[offset:offset + room]
        if offset > info.manifest_length:
            raise SwError(SW.WRONG_DATA, "offset past the end")
        return self.store.read_manifest(fields["backup_id"], offset, room)

    @_guard
    def read_chunk(self, cmd: Command) -> bytes:
        require_p1p2(cmd)
        self._require_pin()
        fields = decode(K.READ_CHUNK_DATA, cmd.data)
        info = self.store.chunk_info(fields["chunk_id"])
        if info.state != S.ChunkState.COMMITTED:
            raise SwError(SW.REFERENCED_DATA_NOT_FOUND, "chunk not committed")
        if fields["offset"] > info.length:
            raise SwError(SW.WRONG_DATA, "offset past the end")
        return self.store.read_chunk(fields["chunk_id"], fields["offset"], self._room(cmd))

    @_guard
    def delete_backup(self, cmd: Command) -> bytes:
        require_p1p2(cmd)
        self._require_pin()
        self.store.delete_backup(decode(K.DELETE_BACKUP_DATA, cmd.data)["backup_id"])
        return b""

    @_guard
    def list_anchors(self, cmd: Command) -> bytes:
        require_p1p2(cmd)
        return K.LIST_ANCHORS_RESPONSE.encode({"key_ids": [a.key_id for a in self.store.list_anchors()]})
