"""Administration of the backup applet under GlobalPlatform SCP03 (apdu_specs/scp.py).

INITIALIZE UPDATE (CLA 80) starts a handshake with a fresh random card
challenge (i = 60: random challenge, R-MAC and R-ENC supported; the Java Card
applet uses i = 70, the pseudo-random challenge of a persistent sequence
counter). EXTERNAL AUTHENTICATE (CLA 84, P1 = security level 01/03/11/13/33)
checks the host cryptogram (6300) and its C-MAC (6988) in constant time; each
attempt is counted in NVM before the compare and a match clears the count:
after 10 failures the admin key set is locked for good (6983), as
GlobalPlatform cards lock theirs. Admin commands (CLA 84) then carry a chained
C-MAC (and C-DEC encrypted data at 03/13/33); their answers an R-MAC (11/13/33)
and R-ENC (33). A wrong or missing MAC, or bad padding, answers 6988 and closes
the channel. The channel lives in RAM only (AppletSession): SELECT, reset and
power loss close it.

The key set comes from the store: today's store keeps one 16-byte key, used as
K-ENC, K-MAC and K-DEK alike (the single-key form of a key set); a 48-byte
record is split into the three keys.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric import ec

from apdu_specs import commands as K
from apdu_specs import constants as C
from apdu_specs import scp as S
from apdu_specs.manifest import key_id
from apdu_specs.sw import SW
from card.runtime import Command, Handler, SwError

if TYPE_CHECKING:
    from card.applet_base import AppletCore as BackupApplet

SCP_I = S.I_RMAC | S.I_RENC         # random card challenge, R-MAC and R-ENC


class AdminCommands:
    def __init__(self, applet: BackupApplet) -> None:
        self.applet = applet

    def handlers(self) -> dict[tuple[int, int], Handler]:
        from card.applet_base import _guard
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

    def key_set(self) -> S.KeySet:
        version, keys = self.store.admin_key()
        return S.KeySet.from_bytes(keys, version)

    def initialize_update(self, cmd: Command) -> bytes:
        if cmd.p2 != 0:
            raise SwError(SW.INCORRECT_P1P2)
        self.applet._personalised()
        self._close()
        if self.store.admin_tries_left() == 0:
            raise SwError(SW.AUTH_METHOD_BLOCKED, "admin key locked")
        keys = self.key_set()
        if cmd.p1 not in (0, keys.version):
            raise SwError(SW.REFERENCED_DATA_NOT_FOUND, "no admin key of that version")
        if len(cmd.data) != S.CHALLENGE_LENGTH:
            raise SwError(SW.WRONG_LENGTH, "the host challenge is 8 bytes")
        card_challenge = os.urandom(S.CHALLENGE_LENGTH)
        channel = S.SecureChannel(keys, cmd.data, card_challenge)
        self.applet.session.scp = channel
        return S.INITIALIZE_UPDATE_RESPONSE_SCP03.encode({
            "key_diversification": bytes(10), "key_version": keys.version, "scp_id": S.SCP_ID, "scp_i": SCP_I,
            "card_challenge": card_challenge, "card_cryptogram": channel.card_cryptogram,
            "sequence_counter": None})

    def external_authenticate(self, cmd: Command) -> bytes:
        session = self.applet.session
        channel = session.scp
        if channel is None or session.admin:
            self._close()
            raise SwError(SW.CONDITIONS_NOT_SATISFIED, "INITIALIZE UPDATE first")
        if not S.level_supported(cmd.p1, SCP_I) or cmd.p2 != 0:
            self._close()
            raise SwError(SW.INCORRECT_P1P2, "security level 01, 03, 11, 13 or 33")
        if len(cmd.data) != S.CRYPTOGRAM_LENGTH + S.MAC_LENGTH:
            self._close()
            raise SwError(SW.WRONG_LENGTH)
        if self.store.admin_tries_left() == 0:
            self._close()
            raise SwError(SW.AUTH_METHOD_BLOCKED, "admin key locked")
        refused: list[S.ScpError] = []

        def matches() -> bool:
            try:
                channel.check_external_authenticate(cmd.cla, cmd.p1, cmd.p2, cmd.data)
            except S.ScpError as exc:
                refused.append(exc)
                return False
            return True

        ok, _left = self.store.try_admin(matches)
        if not ok:
            self._close()
            raise SwError(refused[0].sw if refused else SW.AUTH_METHOD_BLOCKED)
        session.admin = True
        return b""

    def _unwrap(self, cmd: Command) -> bytes:
        """Admin access, the C-MAC and C-DEC; the plain data."""
        session = self.applet.session
        if not session.admin or session.scp is None:
            raise SwError(SW.SECURITY_STATUS_NOT_SATISFIED, "open the admin channel first")
        try:
            data = session.scp.unwrap_command(cmd.cla, cmd.ins, cmd.p1, cmd.p2, cmd.data)
        except S.ScpError as exc:
            self._close()
            raise SwError(exc.sw) from None
        if cmd.p1 or cmd.p2:
            raise SwError(SW.INCORRECT_P1P2)
        return data

    def _answer(self, data: bytes = b"") -> bytes:
        """A successful answer with its R-MAC (and R-ENC) per the security level."""
        channel = self.applet.session.scp
        assert channel is not None
        return channel.wrap_response(data, SW.OK)

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
        return self._answer()

    def delete_trust_anchor(self, cmd: Command) -> bytes:
        fields = K.DELETE_TRUST_ANCHOR_DATA.decode(self._unwrap(cmd))
        self.store.remove_anchor(fields["key_id"])
        return self._answer()

    def erase_backups(self, cmd: Command) -> bytes:
        if self._unwrap(cmd):
            raise SwError(SW.WRONG_LENGTH, "ERASE BACKUPS carries only the C-MAC")
        self.store.erase_backups()
        self.applet.session.upload = None
        return self._answer()
