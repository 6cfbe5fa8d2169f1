"""The typed errors of host.client.BackupCard: one class per kind of card refusal, built
from the status word with a one-line message saying what went wrong and what to do
(host.client re-exports every name).
"""
from __future__ import annotations

from apdu_specs.sw import SW, describe, pin_tries
from host.errors import CardError, CardFullError, PinError

class WrongPinError(PinError):
    """Wrong PIN or PUK; ``tries_left`` tries remain."""

    def __init__(self, message: str, sw: int, tries_left: int) -> None:
        super().__init__(message, sw)
        self.tries_left = tries_left


class PinBlockedError(PinError):
    """PIN (or PUK) blocked (6983)."""


class PinRequiredError(PinError):
    """The command needs the PIN (or the admin channel) first (6982)."""


class AdminAuthError(CardError):
    """Secure channel refused: wrong admin key, wrong cryptogram or C-MAC."""


class CardStateError(CardError):
    """Conditions not satisfied (no session, manifest incomplete) or applet not selected."""


class NotFoundOnCardError(CardError):
    """No such backup, chunk or trust anchor (6A88) or the applet is missing (6A82)."""


class NoAppletError(NotFoundOnCardError):
    """The card has no simvault applet (SELECT refused, or not a simvault FCI)."""


class AlreadyOnCardError(CardError):
    """The chunk (or backup id) is already on the card (6A89)."""


class BackupRejectedError(CardError):
    """COMMIT refused: signature, untrusted signer, rollback, chunk hash (6688/6984/668A/6689)."""


class CardProtocolError(CardError):
    """Malformed command or answer: a bug in the client, the link or the card."""


_ERRORS: dict[int, type[CardError]] = {
    SW.AUTH_METHOD_BLOCKED: PinBlockedError,
    SW.SECURITY_STATUS_NOT_SATISFIED: PinRequiredError,
    SW.VERIFICATION_FAILED: AdminAuthError,
    SW.INCORRECT_SM_DATA: AdminAuthError,
    SW.CONDITIONS_NOT_SATISFIED: CardStateError,
    SW.COMMAND_NOT_ALLOWED: CardStateError,
    SW.REFERENCED_DATA_NOT_FOUND: NotFoundOnCardError,
    SW.FILE_NOT_FOUND: NotFoundOnCardError,
    SW.DATA_ALREADY_EXISTS: AlreadyOnCardError,
    SW.NOT_ENOUGH_MEMORY: CardFullError,
    SW.CHUNK_TABLE_FULL: CardFullError,
    SW.SIGNATURE_INVALID: BackupRejectedError,
    SW.REFERENCE_DATA_NOT_USABLE: BackupRejectedError,
    SW.SEQUENCE_ROLLBACK: BackupRejectedError,
    SW.CHUNK_HASH_MISMATCH: BackupRejectedError,
}


# What to do after a refusal whose meaning (apdu_specs.sw) does not say it already.
_NEXT: dict[int, str] = {
    SW.REFERENCE_DATA_NOT_USABLE: "trust the signer on the card first ('simvault card trust add KEYFILE')",
    SW.SIGNATURE_INVALID: "make a new backup: this one was altered or signed by another key",
    SW.CHUNK_HASH_MISMATCH: "make a new full backup (simvault backup --full)",
    SW.SEQUENCE_ROLLBACK: "a card takes only backups newer than its newest: make a new backup",
    SW.CONDITIONS_NOT_SATISFIED: "'simvault card status' shows the card's state ('simvault card abort-upload' drops "
                                 "a stuck upload)",
    SW.DATA_ALREADY_EXISTS: "it is on the card already ('simvault list')",
    SW.WRONG_DATA: "a bug in the client, the link or the card: run again with --trace and report it",
    SW.WRONG_LENGTH: "a bug in the client, the link or the card: run again with --trace and report it",
    SW.NO_PRECISE_DIAGNOSIS: "retry; if it persists, run again with --trace and report it",
    SW.INS_NOT_SUPPORTED: "the applet does not know this command: 'simvault card status' shows its version",
}


def tries_left(n: int) -> str:
    """"1 try left", "2 tries left"."""
    return f"{n} {'try' if n == 1 else 'tries'} left"


UNBLOCK_HINT = ("unblock it with 'simvault card pin unblock' "
                "(PUK from $SIMVAULT_PUK, new PIN from $SIMVAULT_NEW_PIN)")
PUK_BLOCKED_HINT = "the PIN can no longer be unblocked"


def _blocked_message(operation: str, sw: int) -> str:
    if operation == "RESET RETRY COUNTER":
        return f"{operation}: card answered {sw:04X}: the PUK is blocked; {PUK_BLOCKED_HINT}"
    return f"{operation}: card answered {sw:04X}: the PIN is blocked: {UNBLOCK_HINT}"


def card_error(operation: str, sw: int) -> CardError:
    """The typed error for an error status word, with a one-line message."""
    info = describe(sw)
    message = f"{operation}: card answered {sw:04X} {info.name}: {info.meaning}" + (f": {_NEXT[sw]}" if sw in _NEXT
                                                                                  else "")
    tries = pin_tries(sw)
    if tries is not None:
        puk = operation == "RESET RETRY COUNTER"
        what = "wrong PUK" if puk else "wrong PIN"
        if tries == 0:
            return PinBlockedError(f"{operation}: {what}, no tries left: the "
                                   + ("PUK is now blocked" if puk else f"PIN is now blocked: {UNBLOCK_HINT}"), sw)
        check = ("check the PUK ($SIMVAULT_PUK or the prompt)" if puk
                 else "check the PIN ($SIMVAULT_PIN, --pin-env or the prompt)")
        return WrongPinError(f"{operation}: {what}, {tries_left(tries)}: {check}; "
                             f"{'it blocks' if puk else 'the PIN blocks'} when none is left", sw, tries)
    if sw == SW.AUTH_METHOD_BLOCKED:
        return PinBlockedError(_blocked_message(operation, sw), sw)
    return _ERRORS.get(sw, CardProtocolError if sw in (SW.WRONG_DATA, SW.WRONG_LENGTH) else CardError)(message, sw)


def _admin_locked(operation: str) -> AdminAuthError:
    return AdminAuthError(f"{operation}: card answered 6983: the admin key is locked after too many failed "
                          "authentications; the card can no longer be administered (backups stay readable)",
                          SW.AUTH_METHOD_BLOCKED)
