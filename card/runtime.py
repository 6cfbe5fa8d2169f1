"""ISO 7816-4 card OS of the virtual card: APDU parsing, SELECT, GET RESPONSE,
command chaining, T=0 behaviour, and status words for everything else.

The card is ``transmit(apdu: bytes) -> bytes`` (``execute`` is an alias); it
never raises for any input: a malformed APDU answers its ISO status word, an
``SwError`` from the applet answers its SW, any other exception 6F00 (logged
without the data, which may be a PIN or key). Only ``PowerLoss`` (the NVM lost
power) goes through, to the emulator that powers the card off.

Volatile state (what a real card keeps in RAM) lives here and in the applet's
session object: the selection, the chain buffer, the pending response. Power
off and reset clear it.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from apdu_specs import constants as C
from apdu_specs.sw import SW
from card.nvm import PowerLoss

log = logging.getLogger(__name__)

SHORT_MAX_LC = 255
SHORT_MAX_LE = 256
EXTENDED_MAX_LE = 65536
INS_GET_RESPONSE = C.Ins.GET_RESPONSE
INS_SELECT = C.Ins.SELECT
INS_MANAGE_CHANNEL = 0x70     # ISO 7816-4 11.1.2: only the basic channel here
AID_MIN, AID_MAX = 5, 16

# ISO 7816-4 8.1.1.2.7 card capabilities, third software function table
CAPS_CHAINING = 0x80
CAPS_EXTENDED_LENGTH = 0x40
# first table: selection by full DF name; second: data coding byte (one-byte units)
CAPS_FIRST = 0x80
CAPS_SECOND = 0x21


class SwError(Exception):
    """Raised by an applet (or the runtime) to answer a status word."""

    def __init__(self, sw: int, reason: str = "") -> None:
        super().__init__(f"{sw:04X}{': ' + reason if reason else ''}")
        self.sw = int(sw)


@dataclass(frozen=True)
class CardLimits:
    """What the card accepts; announced in the ATR and the applet's FCI."""

    extended: bool = True
    t0: bool = False
    max_command_data: int = 16384 + 64
    max_response_data: int = 16384
    max_chunk_size: int = 16384
    chaining: bool = True

    @classmethod
    def short(cls, t0: bool = False, max_chunk_size: int = 16384) -> CardLimits:
        """Short APDUs only: chunks and manifests travel by command chaining."""
        return cls(extended=False, t0=t0, max_command_data=SHORT_MAX_LC, max_response_data=SHORT_MAX_LE,
                   max_chunk_size=max_chunk_size)

    def __post_init__(self) -> None:
        cap_cmd = 65535 if self.extended else SHORT_MAX_LC
        cap_resp = 65535 if self.extended else SHORT_MAX_LE   # the FCI codes it in 2 bytes
        if not 1 <= self.max_command_data <= cap_cmd or not 1 <= self.max_response_data <= cap_resp:
            raise ValueError("max command/response data outside what the length form allows")
        if not 1 <= self.max_chunk_size <= min(C.MAX_CHUNK_SIZE, 65535):
            raise ValueError("max chunk size must be 1..65535")

    @property
    def max_chain_data(self) -> int:
        """Largest data a chain may assemble: a whole chunk with its id and a C-MAC."""
        return max(self.max_command_data, self.max_chunk_size + C.CHUNK_ID_LENGTH + 64)


@dataclass
class Command:
    """A logical command as the applet sees it (a chain already reassembled)."""

    cla: int              # without the chaining bit
    ins: int
    p1: int
    p2: int
    data: bytes
    ne: int               # response bytes the host accepts: 0 when no Le field, capped to the card's max
    le_present: bool
    extended: bool

    @property
    def cla_class(self) -> int:
        """CLA without chaining and channel bits: 00, 80 or 84."""
        return self.cla & ~(C.CLA_CHAINING | 0x03) & 0xFF

    @property
    def header(self) -> tuple[int, int, int, int]:
        return (self.cla, self.ins, self.p1, self.p2)


Handler = Callable[[Command], bytes]


class Applet(Protocol):
    aid: bytes

    def handlers(self) -> dict[tuple[int, int], Handler]:
        """(CLA class, INS) -> handler returning the response data (raise SwError to fail)."""

    def select(self) -> bytes:
        """Selected (again): reset the session; return the FCI."""

    def deselect(self) -> None: ...

    def power_off(self) -> None:
        """Clear every volatile state (power loss, reset)."""


@dataclass
class _Parsed:
    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes
    le: int | None        # None: no Le field; else 1..65536
    extended: bool


def parse_command(raw: bytes, extended_allowed: bool) -> _Parsed:
    """ISO 7816-3 12.1.3 / 7816-4 5.1: cases 1-4, short and extended; SwError(6700) otherwise."""
    if len(raw) < 4:
        raise SwError(SW.WRONG_LENGTH, "shorter than a header")
    cla, ins, p1, p2 = raw[0], raw[1], raw[2], raw[3]
    body = raw[4:]
    n = len(body)
    if n == 0:
        return _Parsed(cla, ins, p1, p2, b"", None, False)
    if n == 1:
        return _Parsed(cla, ins, p1, p2, b"", body[0] or SHORT_MAX_LE, False)
    if body[0] != 0:
        lc = body[0]
        if n == 1 + lc:
            return _Parsed(cla, ins, p1, p2, bytes(body[1:]), None, False)
        if n == 2 + lc:
            return _Parsed(cla, ins, p1, p2, bytes(body[1:1 + lc]), body[-1] or SHORT_MAX_LE, False)
        raise SwError(SW.WRONG_LENGTH, "short Lc does not match the body")
    if n < 3:
        raise SwError(SW.WRONG_LENGTH, "extended length truncated")
    if not extended_allowed:
        raise SwError(SW.WRONG_LENGTH, "extended length not supported")
    if n == 3:
        return _Parsed(cla, ins, p1, p2, b"", int.from_bytes(body[1:3], "big") or EXTENDED_MAX_LE, True)
    lc = int.from_bytes(body[1:3], "big")
    if lc == 0:
        raise SwError(SW.WRONG_LENGTH, "extended Lc of zero")
    if n == 3 + lc:
        return _Parsed(cla, ins, p1, p2, bytes(body[3:]), None, True)
    if n == 5 + lc:
        return _Parsed(cla, ins, p1, p2, bytes(body[3:3 + lc]),
                       int.from_bytes(body[-2:], "big") or EXTENDED_MAX_LE, True)
    raise SwError(SW.WRONG_LENGTH, "extended Lc does not match the body")


def check_cla(cla: int) -> None:
    """Classes 00, 80, 84 (chaining bit allowed) on the basic channel."""
    if cla == 0xFF:
        raise SwError(SW.CLA_NOT_SUPPORTED)
    if cla & 0xE0 == 0x40 or cla & 0xE0 == 0x60:       # further interindustry class: channels 4-19
        raise SwError(SW.LOGICAL_CHANNEL_NOT_SUPPORTED)
    base = cla & ~(C.CLA_CHAINING | 0x03) & 0xFF
    if base in (C.CLA_ISO, C.CLA_PROPRIETARY, C.CLA_SECURE) or base in (0x04, 0x08, 0x0C):
        if cla & 0x03:
            raise SwError(SW.LOGICAL_CHANNEL_NOT_SUPPORTED)
        if base in (0x04, 0x08, 0x0C):
            raise SwError(SW.SECURE_MESSAGING_NOT_SUPPORTED)
        return
    raise SwError(SW.CLA_NOT_SUPPORTED)


def build_atr(limits: CardLimits) -> bytes:
    """3B, T=0 and T=1 offered (T=0 only in T=0 mode), historical bytes in
    category 80 with the card capabilities, and TCK."""
    third = (CAPS_CHAINING if limits.chaining else 0) | (CAPS_EXTENDED_LENGTH if limits.extended else 0)
    label = b"simvault"
    historical = bytes((0x80, 0x73, CAPS_FIRST, CAPS_SECOND, third, 0x50 | len(label))) + label
    if limits.t0:
        return bytes((0x3B, len(historical))) + historical        # T=0 only: no TD1, no TCK
    body = bytes((0x80 | len(historical), 0x80, 0x01)) + historical  # TD1: T=0, TD2 follows; TD2: T=1
    tck = 0
    for b in body:
        tck ^= b
    return b"\x3B" + body + bytes((tck,))


@dataclass
class _Chain:
    header: tuple[int, int, int, int]
    data: bytearray = field(default_factory=bytearray)
    extended: bool = False


class CardRuntime:
    """The card OS: one applet (simvault's), selected by AID on the basic channel."""

    def __init__(self, applet: Applet, limits: CardLimits | None = None) -> None:
        self.applet = applet
        self.limits = limits or CardLimits()
        self._atr = build_atr(self.limits)
        self._table = applet.handlers()
        self._known_ins = {ins for _cla, ins in self._table}
        self.powered = False
        self._selected = False
        self._chain: _Chain | None = None
        self._pending: bytes | None = None
        self.apdus = 0

    # ---- virtual card interface --------------------------------------------

    @property
    def atr(self) -> bytes:
        return self._atr

    @property
    def selected(self) -> bool:
        return self._selected

    def power_on(self) -> bytes:
        self._clear_volatile()
        self.powered = True
        return self._atr

    def power_off(self) -> None:
        self._clear_volatile()
        self.powered = False

    def reset(self) -> bytes:
        return self.power_on()

    def transmit(self, apdu: bytes) -> bytes:
        """One C-APDU in, the R-APDU out; never raises except PowerLoss."""
        self.apdus += 1
        try:
            data, sw = self._process(bytes(apdu))
        except PowerLoss:
            self.power_off()
            raise
        except SwError as err:
            data, sw = b"", err.sw
        except Exception:
            log.exception("internal error on APDU %s (%d bytes)", bytes(apdu[:4]).hex(), len(apdu))
            data, sw = b"", SW.NO_PRECISE_DIAGNOSIS
        return data + int(sw).to_bytes(2, "big")

    execute = transmit

    # ---- internals ----------------------------------------------------------

    def _clear_volatile(self) -> None:
        if self._selected:
            self.applet.deselect()
        self._selected = False
        self._chain = None
        self._pending = None
        self.applet.power_off()

    def _process(self, raw: bytes) -> tuple[bytes, int]:
        pending, self._pending = self._pending, None   # any command but GET RESPONSE drops it
        p = parse_command(raw, self.limits.extended)
        check_cla(p.cla)
        chained = bool(p.cla & C.CLA_CHAINING)
        cla = p.cla & ~C.CLA_CHAINING
        header = (cla, p.ins, p.p1, p.p2)
        if len(p.data) > self.limits.max_command_data:
            self._chain = None
            raise SwError(SW.WRONG_LENGTH, "Lc above the card's maximum")
        if self._chain is not None and self._chain.header != header:
            self._chain = None
            raise SwError(SW.LAST_COMMAND_OF_CHAIN_EXPECTED)
        if p.ins == INS_MANAGE_CHANNEL and cla == C.CLA_ISO:
            self._chain = None
            raise SwError(SW.LOGICAL_CHANNEL_NOT_SUPPORTED, "only the basic channel")
        if p.ins == INS_GET_RESPONSE and cla == C.CLA_ISO:
            if chained:
                raise SwError(SW.CHAINING_NOT_SUPPORTED)
            return self._get_response(p, pending)
        if chained or self._chain is not None:
            if not self.limits.chaining:
                raise SwError(SW.CHAINING_NOT_SUPPORTED)
            chain = self._chain or _Chain(header)
            if len(chain.data) + len(p.data) > self.limits.max_chain_data:
                self._chain = None
                raise SwError(SW.NOT_ENOUGH_MEMORY, "chain longer than the card's buffer")
            chain.data += p.data
            chain.extended |= p.extended
            if chained:
                self._chain = chain
                return b"", SW.OK
            self._chain = None
            data = bytes(chain.data)
        else:
            data = p.data
        ne = min(p.le, self.limits.max_response_data) if p.le is not None else 0
        cmd = Command(cla, p.ins, p.p1, p.p2, data, ne, p.le is not None, p.extended)
        response = self._dispatch(cmd)
        return self._deliver(response, p)

    def _dispatch(self, cmd: Command) -> bytes:
        cla_class = cmd.cla_class
        if cmd.ins == INS_SELECT and cla_class == C.CLA_ISO:
            return self._select(cmd)
        if not self._selected:
            raise SwError(SW.COMMAND_NOT_ALLOWED)
        handler = self._table.get((cla_class, cmd.ins))
        if handler is None:
            raise SwError(SW.CLA_NOT_SUPPORTED if cmd.ins in self._known_ins else SW.INS_NOT_SUPPORTED)
        return handler(cmd)

    def _select(self, cmd: Command) -> bytes:
        if cmd.p1 != C.SELECT_BY_DF_NAME:
            raise SwError(SW.INCORRECT_P1P2, "only selection by DF name (AID)")
        occurrence, answer = cmd.p2 & 0x03, cmd.p2 & 0xFC
        if occurrence != 0 or answer not in (0x00, 0x0C):   # next/previous occurrence; FCP/FMD
            raise SwError(SW.INCORRECT_P1P2, "only first occurrence, FCI or no answer")
        if not AID_MIN <= len(cmd.data) <= AID_MAX:
            raise SwError(SW.WRONG_LENGTH if cmd.data else SW.FILE_NOT_FOUND, "AID length")
        if cmd.data != self.applet.aid:                       # no partial-AID selection
            raise SwError(SW.FILE_NOT_FOUND)
        if self._selected:
            self.applet.deselect()
        fci = self.applet.select()
        self._selected = True
        return b"" if answer == 0x0C else fci

    def _deliver(self, response: bytes, p: _Parsed) -> tuple[bytes, int]:
        """T=1: up to Le now, the rest by 61xx. T=0: a case 2 command must be
        answered with exactly Le bytes, so an Le above what is available gets
        6Cxx (re-issue with that Le) and one below gets Le bytes and 61xx; the
        answer of a case 4 command (no Le on the T=0 wire) all waits behind 61xx."""
        if not response:
            return b"", SW.OK
        if self.limits.t0:
            if p.le is not None and not p.data and not p.extended:     # case 2 short
                return self._t0_case2(response, p.le)
            return self._partial(response, 0)
        if p.le is None:
            return self._partial(response, 0)
        return self._partial(response, min(p.le, self.limits.max_response_data))

    def _t0_case2(self, response: bytes, le: int) -> tuple[bytes, int]:
        if le > len(response):
            return b"", 0x6C00 | (len(response) & 0xFF)
        return self._partial(response, le)

    def _partial(self, response: bytes, ne: int) -> tuple[bytes, int]:
        """Answer the first ne bytes; keep the rest for GET RESPONSE (61xx)."""
        if len(response) <= ne:
            return response, SW.OK
        head, rest = response[:ne], response[ne:]
        self._pending = rest
        return head, 0x6100 | (min(len(rest), SHORT_MAX_LE) & 0xFF)

    def _get_response(self, p: _Parsed, pending: bytes | None) -> tuple[bytes, int]:
        if pending is None:
            raise SwError(SW.CONDITIONS_NOT_SATISFIED, "no response pending")
        if p.p1 or p.p2:
            self._pending = pending
            raise SwError(SW.INCORRECT_P1P2)
        if p.data:
            self._pending = pending
            raise SwError(SW.WRONG_LENGTH)
        if p.le is None:
            self._pending = pending
            raise SwError(SW.WRONG_LENGTH, "GET RESPONSE without Le")
        if self.limits.t0 and not p.extended:
            if p.le > len(pending):
                self._pending = pending          # the answer waits for the right Le
                return b"", 0x6C00 | (len(pending) & 0xFF)
            return self._partial(pending, p.le)
        return self._partial(pending, min(p.le, self.limits.max_response_data))
