"""The persistent memory's exceptions and its fault injector (card/nvm.py imports both).

Apart from nvm.py so that a test or the store can name a power loss or a full journal
without the memory model, and nvm.py stays about the image and its journal.
"""
from __future__ import annotations

from dataclasses import dataclass

from host.errors import SimvaultError


class PowerLoss(BaseException):
    """The card lost power (fault injection).  Derives from BaseException on
    purpose: no ``except Exception`` in a runtime or applet may swallow it; the
    caller must call ``power_up()`` before the memory can be used again."""


class NvmError(SimvaultError):
    """Persistent memory misuse or a damaged image."""


class ImageFormatError(NvmError):
    """The image file is not a simvault NVM image or is damaged."""


class ImageBusy(NvmError):
    """Another process (or object) holds the image open with exclusive=True."""


class NvmRangeError(NvmError):
    """A read or write outside the data region."""


class TransactionError(NvmError):
    """begin() inside a transaction, or commit()/abort() outside one."""


class JournalFull(NvmError):
    """The transaction needs more journal than the image has (applet: SW 6A84).

    The offending write did not happen; the transaction is still open and
    must be aborted by the caller."""

    sw = 0x6A84


@dataclass
class FaultInjector:
    """Cut power at the ``cut_after``-th physical NVM write counted from attachment.

    With ``tear`` the cut write is torn: the first ``int(len * tear_fraction)``
    bytes reach the image, the rest keeps its old value.  Without ``tear`` the
    cut write leaves no trace (power died just before it).  ``writes`` counts the
    writes seen so far; ``fired`` tells whether the cut happened.
    ``cut_after=None`` only counts."""

    cut_after: int | None = None
    tear: bool = True
    tear_fraction: float = 0.5
    writes: int = 0
    fired: bool = False

    def on_write(self, length: int) -> int | None:
        """Called before each physical write: None = write it all, else the
        number of bytes that reach the image before power is cut."""
        self.writes += 1
        if self.fired or self.cut_after is None or self.writes != self.cut_after:
            return None
        self.fired = True
        return int(length * self.tear_fraction) if self.tear else 0
