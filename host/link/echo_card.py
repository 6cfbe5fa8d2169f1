"""A loopback card for link tests and benchmarks (not the simvault applet).

It implements the virtual card contract (atr, power_on, power_off, reset,
transmit) with a few proprietary commands, CLA 80:

    80 10 00 00 Lc data [Le]   ECHO: answers the data (chaining: the whole chain)
    80 12 P1 P2 [Le]           GENERATE: answers P1P2 bytes (i & 0xFF)
    80 14 00 P2 Le             EXACT: answers P2 bytes only when Le == P2, else 6C P2
    00 20 00 81 Lc pin         VERIFY: 9000 for PIN "1234", else 63Cx
    00 A4 04 00 Lc aid         SELECT: 9000
    00 84 00 00 Le             GET CHALLENGE: Le random bytes (at most 256)
    00 C0 00 00 Le             GET RESPONSE (T=0 mode: answers over 256 bytes, or
                               all answers when ``t0=True``, go through 61xx)

``log`` keeps every received C-APDU, so tests can check what was on the wire.
Malformed APDUs answer 6700, never raise.
"""
from __future__ import annotations

import os

from host.link.atr import CAPS_CHAINING, CAPS_EXTENDED_LENGTH, build_atr

PIN = b"1234"


def _sw(sw: int) -> bytes:
    return sw.to_bytes(2, "big")


class EchoCard:
    def __init__(self, extended: bool = True, t0: bool = False, name: bytes = b"echo") -> None:
        caps = CAPS_CHAINING | (CAPS_EXTENDED_LENGTH if extended else 0)
        # Category 80, card capabilities (7x: selection by full DF name, data
        # coding 21, third table), then a short label (tag 5: issuer data).
        historical = bytes((0x80, 0x73, 0x80, 0x21, caps, 0x50 | len(name))) + name
        self._atr = build_atr(historical, protocols=(0,) if t0 else (1,))
        self.extended = extended
        self.t0 = t0
        self.powered = False
        self.log: list[bytes] = []
        self.resets = 0
        self._pending = b""
        self._chain = b""
        self._tries = 3

    @property
    def atr(self) -> bytes:
        return self._atr

    def power_on(self) -> bytes:
        self.powered = True
        self._pending = self._chain = b""
        return self._atr

    def power_off(self) -> None:
        self.powered = False
        self._pending = self._chain = b""

    def reset(self) -> bytes:
        self.resets += 1
        return self.power_on()

    def transmit(self, apdu: bytes) -> bytes:
        self.log.append(bytes(apdu))
        try:
            parsed = self._parse(bytes(apdu))
        except ValueError:
            return _sw(0x6700)
        if parsed is None:
            return _sw(0x6700)
        cla, ins, p1, p2, data, le = parsed
        if ins == 0xC0:
            return self._get_response(le)
        self._pending = b""
        if cla & 0x10:
            self._chain += data
            return _sw(0x9000)
        data, self._chain = self._chain + data, b""
        if cla & 0x80 and ins == 0x10:
            return self._answer(data, le)
        if cla & 0x80 and ins == 0x12:
            return self._answer(bytes(i & 0xFF for i in range((p1 << 8) | p2)), le)
        if cla & 0x80 and ins == 0x14:
            if le != p2:
                return _sw(0x6C00 | p2)
            return bytes(i & 0xFF for i in range(p2)) + _sw(0x9000)
        if ins == 0x20:
            if self._tries == 0:
                return _sw(0x6983)
            if data == PIN:
                self._tries = 3
                return _sw(0x9000)
            self._tries -= 1
            return _sw(0x63C0 | self._tries)
        if ins == 0xA4:
            return _sw(0x9000)
        if ins == 0x84 and le is not None:  # GET CHALLENGE, as vsmartcard's vicc answers it
            return os.urandom(min(le, 256)) + _sw(0x9000)
        if cla & 0x80 or cla == 0x00:
            return _sw(0x6D00)
        return _sw(0x6E00)

    def _answer(self, data: bytes, le: int | None) -> bytes:
        """T=0 mode: data always through 61xx. Otherwise at most Le bytes at
        once, the rest announced with 61xx (ISO 7816-4 allows it in T=1)."""
        if self.t0 and data:
            self._pending = data
            return _sw(0x6100 | (min(len(data), 256) & 0xFF))
        if le is None:
            return _sw(0x9000)
        if len(data) <= le:
            return data + _sw(0x9000)
        self._pending = data[le:]
        return data[:le] + _sw(0x6100 | (min(len(self._pending), 256) & 0xFF))

    def _get_response(self, le: int | None) -> bytes:
        if not self._pending:
            return _sw(0x6985)
        n = min(le or 256, 256)
        out, self._pending = self._pending[:n], self._pending[n:]
        if self._pending:
            return out + _sw(0x6100 | (min(len(self._pending), 256) & 0xFF))
        return out + _sw(0x9000)

    @staticmethod
    def _parse(raw: bytes) -> tuple[int, int, int, int, bytes, int | None] | None:
        """Cases 1-4 short and extended; None for a malformed APDU."""
        if len(raw) < 4:
            return None
        cla, ins, p1, p2 = raw[:4]
        body = raw[4:]
        n = len(body)
        if n == 0:
            return cla, ins, p1, p2, b"", None
        if n == 1:
            return cla, ins, p1, p2, b"", body[0] or 256
        if body[0]:
            lc = body[0]
            if n == 1 + lc:
                return cla, ins, p1, p2, body[1:], None
            if n == 2 + lc:
                return cla, ins, p1, p2, body[1:-1], body[-1] or 256
            return None
        if n == 3:
            return cla, ins, p1, p2, b"", int.from_bytes(body[1:], "big") or 65536
        lc = int.from_bytes(body[1:3], "big")
        if lc == 0:
            return None
        if n == 3 + lc:
            return cla, ins, p1, p2, body[3:], None
        if n == 5 + lc:
            return cla, ins, p1, p2, body[3:-2], int.from_bytes(body[-2:], "big") or 65536
        return None
