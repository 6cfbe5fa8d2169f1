"""APDU trace readable at a glance (after GlobalPlatformPro's): one line per
command/response pair, with lengths, status word name and elapsed time.

Data marked secret (``Apdu.secret`` / ``Apdu.secret_response``) is never
formatted: the line shows ``<redacted N bytes>`` instead.

    >> T=1 80 10 00 00 Lc=5 Le=256 0102030405 | << 9000 OK [5] 0102030405 | 0.21 ms
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Protocol, TextIO

from .apdu import Apdu, Response

SwNamer = Callable[[int], str]


class Tracer(Protocol):
    """What a Link calls after each exchange on the wire."""

    def trace(self, apdu: Apdu, response: Response, seconds: float, protocol: str = "") -> None: ...


# A fallback for when apdu_specs' table is not injected: the common ISO words.
_ISO_SW: dict[int, str] = {
    0x9000: "OK",
    0x6281: "part of returned data may be corrupted",
    0x6282: "end of file reached before Le bytes",
    0x6283: "selected file deactivated",
    0x6581: "memory failure",
    0x6700: "wrong length",
    0x6881: "logical channel not supported",
    0x6882: "secure messaging not supported",
    0x6883: "last command of the chain expected",
    0x6884: "command chaining not supported",
    0x6982: "security status not satisfied",
    0x6983: "authentication method blocked",
    0x6984: "reference data not usable",
    0x6985: "conditions of use not satisfied",
    0x6986: "command not allowed (no current EF)",
    0x6A80: "incorrect parameters in the data field",
    0x6A82: "file or application not found",
    0x6A84: "not enough memory space",
    0x6A86: "incorrect P1 P2",
    0x6A88: "referenced data not found",
    0x6B00: "wrong parameters P1-P2",
    0x6D00: "instruction not supported",
    0x6E00: "class not supported",
    0x6F00: "no precise diagnosis",
}


def default_sw_name(sw: int) -> str:
    """Name of a status word from the ISO 7816-4 basics (fallback namer)."""
    if sw in _ISO_SW:
        return _ISO_SW[sw]
    sw1, sw2 = sw >> 8, sw & 0xFF
    if sw1 == 0x61:
        return f"{sw2 or 256} bytes still available"
    if sw1 == 0x6C:
        return f"wrong Le, exact length {sw2 or 256}"
    if sw1 == 0x63 and sw2 & 0xF0 == 0xC0:
        return f"verification failed, {sw2 & 0x0F} {'try' if sw2 & 0x0F == 1 else 'tries'} left"
    return "unknown status"


def format_data(data: bytes, secret: bool, max_bytes: int) -> str:
    if not data:
        return ""
    if secret:
        return f"<redacted {len(data)} bytes>"
    if len(data) <= max_bytes:
        return data.hex().upper()
    return f"{data[:max_bytes].hex().upper()}...(+{len(data) - max_bytes})"


class ApduTracer:
    """Writes one line per APDU pair to a text stream or a logger.

    ``sw_namer`` names status words (inject apdu_specs' table); ``max_bytes``
    truncates long data fields.
    """

    def __init__(
        self,
        out: TextIO | None = None,
        *,
        logger: logging.Logger | None = None,
        sw_namer: SwNamer | None = None,
        max_bytes: int = 32,
    ) -> None:
        self._out = out if out is not None or logger is not None else sys.stderr
        self._logger = logger
        self.sw_namer: SwNamer = sw_namer or default_sw_name
        self.max_bytes = max_bytes

    def format(self, apdu: Apdu, response: Response, seconds: float, protocol: str = "") -> str:
        head = f"{apdu.cla:02X} {apdu.ins:02X} {apdu.p1:02X} {apdu.p2:02X}"
        parts = [f">> {protocol} {head}" if protocol else f">> {head}"]
        if apdu.data:
            parts.append(f"Lc={len(apdu.data)}")
        if apdu.le is not None:
            parts.append(f"Le={apdu.le or (65536 if apdu.is_extended else 256)}")
        if apdu.is_extended:
            parts.append("(ext)")
        cmd_data = format_data(apdu.data, apdu.secret, self.max_bytes)
        if cmd_data:
            parts.append(cmd_data)
        resp_parts = [f"<< {response.sw:04X} {self.sw_namer(response.sw)}"]
        if response.data:
            resp_parts.append(f"[{len(response.data)}]")
            resp_parts.append(format_data(response.data, apdu.secret_response, self.max_bytes))
        return f"{' '.join(parts)} | {' '.join(resp_parts)} | {seconds * 1000:.2f} ms"

    def trace(self, apdu: Apdu, response: Response, seconds: float, protocol: str = "") -> None:
        line = self.format(apdu, response, seconds, protocol)
        if self._logger is not None:
            self._logger.debug("%s", line)
        if self._out is not None:
            self._out.write(line + "\n")
            self._out.flush()
