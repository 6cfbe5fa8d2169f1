"""The exit codes of every `simvault` command: one table, used by host.cli.run and
shown in each `--help` epilog and in docs/CLI.md.

    code_for(err)   the exit code of an exception a command raised
    EPILOG          the table as `--help` prints it
"""
from __future__ import annotations

from host.client_errors import (
    AdminAuthError,
    BackupRejectedError,
    NoAppletError,
    NotFoundOnCardError,
    PinError,
)
from card.jcardsim import JavaCardUnavailable
from host.ds.errors import DsNoBackupError, DsTransportError
from host.errors import (
    ArchiveError,
    AuthError,
    DeniedError,
    IntegrityError,
    KeyFileError,
    TransportError,
    TreeError,
    UsageError,
)

OK = 0
FAILED = 1          # the operation failed: the card or a server refused it for another reason, a job failed
USAGE = 2           # bad input: options, ids, files missing or malformed (argparse's code too)
UNFINISHED = 3      # not finished in time: `dm ... --wait` ran out, the job still runs
UNAVAILABLE = 4     # no reader, no card, no simvault applet, pcscd / the DM server / the agent not reachable
REFUSED = 5         # verification refused: signature, hash, MAC, untrusted signer, rollback
DENIED = 6          # credentials refused: wrong or blocked PIN/PUK, admin key, admin token
INTERRUPTED = 130   # Ctrl-C

TABLE = (
    (OK, "done"),
    (FAILED, "the operation failed (the card or server refused it, a job failed)"),
    (USAGE, "bad input: an option, id or file missing or malformed"),
    (UNFINISHED, "not finished in time (--wait ran out; the job goes on)"),
    (UNAVAILABLE, "no reader, card, applet, pcscd, DM server or agent to talk to"),
    (REFUSED, "verification refused: signature, hash, untrusted signer, rollback"),
    (DENIED, "credentials refused: wrong or blocked PIN/PUK, admin key or token"),
    (INTERRUPTED, "interrupted (Ctrl-C)"),
)

EPILOG = ("exit codes:\n" + "\n".join(f"  {code:<4} {meaning}" for code, meaning in TABLE)
          + "\n(docs/CLI.md)")

# Most specific first: NoAppletError is a NotFoundOnCardError, IntegrityError an ArchiveError.
_BY_TYPE: tuple[tuple[type[BaseException], int], ...] = (
    (NoAppletError, UNAVAILABLE),
    (TransportError, UNAVAILABLE),
    (DsTransportError, UNAVAILABLE),
    (JavaCardUnavailable, UNAVAILABLE),  # no Java or Maven, or the applet's jar does not build
    (NotFoundOnCardError, USAGE),       # the id, chunk or key named is not on the card
    (PinError, DENIED),
    (AdminAuthError, DENIED),
    (AuthError, DENIED),
    (DeniedError, DENIED),
    (IntegrityError, REFUSED),
    (BackupRejectedError, REFUSED),
    (UsageError, USAGE),
    (DsNoBackupError, USAGE),           # the DS datastore holds no such backup
    (TreeError, USAGE),
    (ArchiveError, USAGE),
    (KeyFileError, USAGE),
)


def code_for(err: BaseException) -> int:
    """The table's code for an error (FAILED for any other SimvaultError)."""
    if isinstance(err, KeyboardInterrupt):
        return INTERRUPTED
    for kind, code in _BY_TYPE:
        if isinstance(err, kind):
            return code
    return FAILED
