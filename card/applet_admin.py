"""Administration of the backup applet under the SCP03-style secure channel.

INITIALIZE UPDATE (CLA 80) starts a handshake with a fresh card challenge;
EXTERNAL AUTHENTICATE (CLA 84) checks the host cryptogram (6300, in constant
time) and the first C-MAC (6988); each attempt is counted in NVM before the
compare and a match clears the count: after 10 failures the admin key is
locked for good (6983), as GlobalPlatform cards lock theirs. Admin commands (CLA 84) then carry a chained
C-MAC: a wrong or missing MAC answers 6988 and closes the channel. The channel
lives in RAM only (AppletSession): SELECT, reset and power loss close it.
"""
from __future__ import annotations

import hmac
import os
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric import ec

from apdu_specs import commands as K
from apdu_specs import constants as C
from apdu_specs.manifest import key_id
from apdu_specs.scp import SecureChannel
from apdu_specs.sw import SW
from card.runtime import Command, Handler, SwError

if TYPE_CHECKING:
    from card.applet import BackupApplet

SCP_ID = 0x03
SCP_I = 0x00


class AdminCommands:
    def __init__(self, applet: BackupApplet) -> None:
        self.applet = applet

    def handlers(self) -> dict[tuple[int, int], Handler]:
        from card.applet import _guard
        I, P, SEC = C.Ins, C.CLA_PROPRIETARY, C.CLA_SECURE
        bound = {name: _guard(getattr(type(self), name)).__get__(self)
                 for name in ("initialize_update", "external_authenticate", "put_trust_anchor",
                              "delete_trust_anchor", "erase_backups")}
        return {
            (P, I.INITIALIZE_UPDATE): bound["initialize_update"],
            (SEC, I.EXTERNAL_AUTHENTICATE): bound["external_authenticate"],
            (SEC, I.PUT_TRUST_ANCHOR): bound["put_trust_anchor"],
            (SEC, I.DELETE_TRUST_ANCHOR): bound["delete_trust_anchor"],
            (SEC, I.ERASE_BACKUPS): bound["erase_backups"],
        }

    @property
    def store(self):
        return self.applet.store

    def _close(self) -> None:
        session = self.applet.session
        session.scp, session.admin = None, False

    def initialize_update(self, cmd: Command) -> bytes:
        if cmd.p2 != 0:
            raise SwError(SW.INCORRECT_P1P2)
        self.applet._personalised()
        self._close()
        if self.store.admin_tries_left() == 0:
            raise SwError(SW.AUTH_METHOD_BLOCKED, "admin key locked")
        version, key = self.store.admin_key()
        if cmd.p1 not in (0, version):
            raise SwError(SW.REFERENCED_DATA_NOT_FOUND, "no admin key of that version")
        host_challenge = K.INITIALIZE_UPDATE_DATA.decode(cmd.data)["host_challenge"]
        card_challenge = os.urandom(C.SCP_CHALLENGE_LENGTH)
        channel = SecureChannel(key, host_challenge, card_challenge)
        self.applet.session.scp = channel
        return K.INITIALIZE_UPDATE_RESPONSE.encode({
            "key_diversification": bytes(10), "key_version": version, "scp_id": SCP_ID, "scp_i": SCP_I,
            "card_challenge": card_challenge, "card_cryptogram": channel.card_cryptogram})

    def external_authenticate(self, cmd: Command) -> bytes:
        session = self.applet.session
        channel = session.scp
        if channel is None or session.admin:
            self._close()
            raise SwError(SW.CONDITIONS_NOT_SATISFIED, "INITIALIZE UPDATE first")
        if cmd.p1 != C.SCP_SECURITY_LEVEL_CMAC or cmd.p2 != 0:
            self._close()
            raise SwError(SW.INCORRECT_P1P2)
        if len(cmd.data) != C.SCP_CRYPTOGRAM_LENGTH + C.SCP_MAC_LENGTH:
            self._close()
            raise SwError(SW.WRONG_LENGTH)
        if self.store.admin_tries_left() == 0:
            self._close()
            raise SwError(SW.AUTH_METHOD_BLOCKED, "admin key locked")
        cryptogram = cmd.data[:C.SCP_CRYPTOGRAM_LENGTH]
        checks: dict[str, bytes | bool | None] = {"cryptogram": False, "data": None}

        def matches() -> bool:
            checks["cryptogram"] = hmac.compare_digest(cryptogram, channel.host_cryptogram)
            if checks["cryptogram"]:
                checks["data"] = channel.unwrap(cmd.cla, cmd.ins, cmd.p1, cmd.p2, cmd.data)
            return checks["data"] is not None

        ok, _left = self.store.try_admin(matches)
        if not ok:
            self._close()
            raise SwError(SW.INCORRECT_SM_DATA if checks["cryptogram"] else SW.VERIFICATION_FAILED)
        data = checks["data"]
        assert isinstance(data, bytes)
        K.EXTERNAL_AUTHENTICATE_DATA.decode(data)
        session.admin = True
        return b""

    def _unwrap(self, cmd: Command) -> bytes:
        """Admin access and the C-MAC; the data without the MAC."""
        session = self.applet.session
        if not session.admin or session.scp is None:
            raise SwError(SW.SECURITY_STATUS_NOT_SATISFIED, "open the admin channel first")
        data = session.scp.unwrap(cmd.cla, cmd.ins, cmd.p1, cmd.p2, cmd.data)
        if data is None:
            self._close()
            raise SwError(SW.INCORRECT_SM_DATA)
        if cmd.p1 or cmd.p2:
            raise SwError(SW.INCORRECT_P1P2)
        return data

    def put_trust_anchor(self, cmd: Command) -> bytes:
        fields = K.PUT_TRUST_ANCHOR_DATA.decode(self._unwrap(cmd))
        point = fields["public_key"]
        try:
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        except ValueError as exc:
            raise SwError(SW.WRONG_DATA, "not a P-256 point") from exc
        if key_id(point) != fields["key_id"]:
            raise SwError(SW.WRONG_DATA, "key id is not the point's")
        self.store.add_anchor(fields["key_id"], point)
        return b""

    def delete_trust_anchor(self, cmd: Command) -> bytes:
        fields = K.DELETE_TRUST_ANCHOR_DATA.decode(self._unwrap(cmd))
        self.store.remove_anchor(fields["key_id"])
        return b""

    def erase_backups(self, cmd: Command) -> bytes:
        if self._unwrap(cmd):
            raise SwError(SW.WRONG_LENGTH, "ERASE BACKUPS carries only the C-MAC")
        self.store.erase_backups()
        self.applet.session.upload = None
        return b""
