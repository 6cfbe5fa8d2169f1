"""Errors of the DS client and server: every one a SyncMLError with one line
that says what went wrong and what to do."""
from __future__ import annotations

from host.errors import AuthError, SyncMLError


class DsError(SyncMLError):
    """Base of every Data Sync failure. ``status`` is the SyncML status to report (500 if unknown)."""

    def __init__(self, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.status = status


class DsAuthError(AuthError, DsError):
    """The DS server refused our credentials (401/407), or asked for a scheme we cannot do."""

    def __init__(self, message: str, status: int = 401) -> None:
        DsError.__init__(self, message, status)


class DsProtocolError(DsError):
    """The peer sent malformed SyncML or broke the DS 1.2 session flow."""


class DsStatusError(DsError):
    """The peer answered one of our commands with a failure status."""


class DsTransportError(DsError):
    """The HTTP exchange failed: connection refused or lost, timeout, HTTP error."""

    def __init__(self, message: str, status: int = 503) -> None:
        super().__init__(message, status)


class DsPayloadError(DsError):
    """A datastore item is not a complete, well-formed simvault archive (truncated, altered)."""

    def __init__(self, message: str, status: int = 424) -> None:
        super().__init__(message, status)


class DsNoBackupError(DsError):
    """The datastore holds no backup (or not the one asked for)."""

    def __init__(self, message: str, status: int = 404) -> None:
        super().__init__(message, status)
