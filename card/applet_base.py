"""What the backup applet (card/applet.py) and its admin half (card/applet_admin.py) share.

The RAM state of a card session, the mapping of store and codec errors to status
words (``_guard``), small command helpers, and :class:`AppletCore`: the applet as
the admin half sees it, so that applet_admin does not import the applet that
imports it.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from apdu_specs.codec import CodecError
from apdu_specs.scp import SecureChannel
from apdu_specs.sw import SW
from card import store as S
from card.nvm import JournalFull, NvmError
from card.runtime import CardLimits, Command, SwError

log = logging.getLogger("card.applet")


@dataclass
class Upload:
    """What BEGIN BACKUP announced in this card session."""

    backup_id: bytes
    sequence: int
    manifest_length: int


@dataclass
class AppletSession:
    """Volatile (RAM) state: cleared by SELECT, reset and power loss."""

    pin_verified: bool = False
    scp: SecureChannel | None = None      # after INITIALIZE UPDATE
    admin: bool = False                   # after EXTERNAL AUTHENTICATE
    upload: Upload | None = None


class AppletCore(Protocol):
    """The applet's state as card/applet_admin.py uses it."""

    store: S.BackupStore
    limits: CardLimits
    session: AppletSession

    def _personalised(self) -> None: ...


_A = TypeVar("_A")


def _guard(fn: Callable[[_A, Command], bytes]) -> Callable[[_A, Command], bytes]:
    """Map store and codec errors to their status words."""

    @functools.wraps(fn)
    def wrapper(self: _A, cmd: Command) -> bytes:
        try:
            return fn(self, cmd)
        except SwError:
            raise
        except S.SequenceRollback as exc:
            raise SwError(SW.SEQUENCE_ROLLBACK, str(exc)) from exc
        except (S.StoreError, JournalFull) as exc:
            raise SwError(exc.sw, str(exc)) from exc
        except CodecError as exc:
            raise SwError(SW.WRONG_DATA, str(exc)) from exc
        except NvmError as exc:
            log.error("NVM error: %s", exc)
            raise SwError(SW.MEMORY_FAILURE) from exc

    return wrapper


def decode(codec, data: bytes) -> dict:
    try:
        return codec.decode(data)
    except CodecError as exc:
        raise SwError(SW.WRONG_DATA, str(exc)) from exc


def require_p1p2(cmd: Command, p1: int = 0, p2: int = 0) -> None:
    if cmd.p1 != p1 or cmd.p2 != p2:
        raise SwError(SW.INCORRECT_P1P2)
