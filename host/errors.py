"""The one exception hierarchy a user of simvault sees.

Every error carries a one-line message that says what went wrong and what to do.
The CLI prints ``str(err)`` and exits with the code host/cli/exitcodes.py gives its
kind; it never shows a traceback for these.
"""
from __future__ import annotations


class SimvaultError(Exception):
    """Base of every error a user can act on."""


class UsageError(SimvaultError):
    """Bad command-line or API arguments."""


class CardError(SimvaultError):
    """The card answered with an error status word."""

    def __init__(self, message: str, sw: int | None = None) -> None:
        super().__init__(message)
        self.sw = sw


class TransportError(SimvaultError):
    """The reader, pcscd or the emulator link failed (no card, connection lost)."""


class ReaderNotFound(TransportError):
    """No reader matched, or the match was ambiguous."""


class PinError(CardError):
    """Wrong PIN, PIN blocked, or PIN required."""


class CardFullError(CardError):
    """Not enough free bytes (6A84) or chunk entries (668B) on the card, answered by the
    card or foreseen by the host before an upload (host.backup.card_fit)."""


class TreeError(SimvaultError):
    """A DM tree or TNDS document is malformed or an operation on it is invalid."""


class XmlError(TreeError):
    """XML refused: malformed, entities, too deep, too large."""


class ArchiveError(SimvaultError):
    """A backup archive is malformed."""


class IntegrityError(ArchiveError):
    """A signature, tag or hash did not verify: tampered or foreign backup."""


class KeyFileError(SimvaultError):
    """A key file is missing, malformed, or the wrong kind."""


class SyncMLError(SimvaultError):
    """A SyncML (DM or DS) message is malformed or violates the protocol."""


class AuthError(SyncMLError):
    """Credentials missing or wrong in a SyncML session."""


class DeniedError(SimvaultError):
    """Credentials refused by a server: an admin token, a password (a card's PIN: PinError)."""
