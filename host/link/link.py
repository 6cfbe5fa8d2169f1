"""The link: one place for T=0 handling, command chaining and extended length.

A transport only moves bytes. The link turns one logical ``Apdu`` into the
APDUs the card can take (chained segments, short or extended form), collects
long answers (61xx GET RESPONSE loop, 6Cxx re-issue), counts and traces every
exchange on the wire.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from host.errors import CardError, TransportError

from .apdu import (
    CLA_CHAINING,
    EXTENDED_MAX_DATA,
    EXTENDED_MAX_LE,
    SHORT_MAX_DATA,
    SHORT_MAX_LE,
    Apdu,
    Response,
)
from .atr import AtrError, AtrInfo, parse_atr
from .tracer import SwNamer, Tracer, default_sw_name
from .transport import Transport

log = logging.getLogger(__name__)

INS_GET_RESPONSE = 0xC0
# A card that keeps answering 61xx must not keep us looping for ever.
MAX_RESPONSE_BYTES = 1 << 20


@dataclass
class LinkStats:
    """Counters over every APDU on the wire (GET RESPONSE and segments too)."""

    apdus: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    seconds: float = 0.0

    def reset(self) -> None:
        self.apdus = self.bytes_sent = self.bytes_received = 0
        self.seconds = 0.0

    @property
    def us_per_apdu(self) -> float:
        return self.seconds * 1e6 / self.apdus if self.apdus else 0.0


class Link:
    """Sends logical APDUs over a transport.

    Capabilities (what the card accepts) start short-only and are raised from
    the ATR card capabilities on connect/reset; the applet client may refine
    them from its FCI by setting ``extended``, ``max_command_data`` and
    ``max_response_data``.
    """

    def __init__(
        self,
        transport: Transport,
        tracer: Tracer | None = None,
        t0_auto_get_response: bool = True,
        t0_auto_reissue: bool = True,
        chaining: bool = True,
        sw_namer: SwNamer | None = None,
    ) -> None:
        self.transport = transport
        self.tracer = tracer
        self.t0_auto_get_response = t0_auto_get_response
        self.t0_auto_reissue = t0_auto_reissue
        self.chaining = chaining
        self.sw_namer: SwNamer = sw_namer or default_sw_name
        self.extended = False
        self.max_command_data = SHORT_MAX_DATA
        self.max_response_data = SHORT_MAX_LE
        self.atr_info: AtrInfo | None = None
        self.stats = LinkStats()
        if transport.connected and transport.atr:
            self.apply_atr(transport.atr)

    # -- session -----------------------------------------------------------

    def connect(self) -> AtrInfo | None:
        """Connect the transport and take the card's capabilities from its ATR."""
        return self.apply_atr(self.transport.connect())

    def reset(self) -> AtrInfo | None:
        """Warm reset; capabilities are read again from the new ATR."""
        return self.apply_atr(self.transport.reset())

    def disconnect(self) -> None:
        self.transport.disconnect()

    def __enter__(self) -> Link:
        if not self.transport.connected:
            self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()

    def apply_atr(self, atr: bytes) -> AtrInfo | None:
        """Set the capabilities the ATR announces. A malformed ATR leaves the
        link short-only (logged), it does not stop the session."""
        try:
            info = parse_atr(atr)
        except AtrError as exc:
            log.warning("ATR not understood (%s): using short APDUs only", exc)
            self.atr_info = None
            self.set_extended(False)
            return None
        self.atr_info = info
        self.set_extended(info.extended_length)
        return info

    def set_extended(self, extended: bool, max_command_data: int | None = None,
                     max_response_data: int | None = None) -> None:
        """Switch extended length on/off, with optional limits (e.g. from the FCI)."""
        self.extended = extended
        default_cmd, default_resp = (
            (EXTENDED_MAX_DATA, EXTENDED_MAX_LE) if extended else (SHORT_MAX_DATA, SHORT_MAX_LE)
        )
        self.max_command_data = max_command_data or default_cmd
        self.max_response_data = max_response_data or default_resp

    # -- exchanges ---------------------------------------------------------

    def transmit(self, apdu: Apdu) -> Response:
        """Send one logical APDU; return the complete response.

        Data longer than the card takes is sent as a command chain (CLA bit
        0x10 on all but the last segment; a segment not answered 9000 ends the
        chain and is returned). Le beyond what the card takes is lowered; the
        rest comes through 61xx GET RESPONSE when the card offers it.
        """
        limit = self._command_limit()
        data = apdu.data
        if len(data) <= limit:
            return self._send_with_t0(self._fit(apdu))
        if not self.chaining:
            raise TransportError(
                f"{len(data)} bytes of command data exceed the card's {limit}: enable chaining or extended length"
            )
        if apdu.cla & CLA_CHAINING:
            raise ValueError("an APDU to be chained must not have the chaining bit set already")
        segments = [data[i : i + limit] for i in range(0, len(data), limit)]
        for segment in segments[:-1]:
            part = apdu.with_(cla=apdu.cla | CLA_CHAINING, data=segment, le=None)
            response = self._exchange(self._fit(part))
            if response.sw != 0x9000:
                return response
        return self._send_with_t0(self._fit(apdu.with_(data=segments[-1])))

    def transmit_ok(self, apdu: Apdu) -> bytes:
        """transmit, and raise CardError unless the card answered 9000."""
        response = self.transmit(apdu)
        if not response.ok:
            raise CardError(
                f"card answered {response.sw:04X} ({self.sw_namer(response.sw)}) to INS {apdu.ins:02X}",
                sw=response.sw,
            )
        return response.data

    def transmit_raw(self, command: bytes) -> bytes:
        """One exchange exactly as given: no T=0 handling, no chaining."""
        start = time.perf_counter()
        out = self.transport.transmit_raw(bytes(command))
        self._count(len(command), len(out), time.perf_counter() - start)
        return out

    # -- internals ---------------------------------------------------------

    def _command_limit(self) -> int:
        if self.extended:
            return max(1, min(self.max_command_data, EXTENDED_MAX_DATA))
        return max(1, min(self.max_command_data, SHORT_MAX_DATA))

    def _fit(self, apdu: Apdu) -> Apdu:
        """Lower Le to what the card takes; an explicit extended flag is kept."""
        le = apdu.le
        if le is not None:
            cap = self.max_response_data if self.extended else SHORT_MAX_LE
            if le == 0 or le > cap:
                le = min(cap, EXTENDED_MAX_LE if self.extended else SHORT_MAX_LE)
        if le != apdu.le:
            apdu = apdu.with_(le=le)
        return apdu

    def _send_with_t0(self, apdu: Apdu) -> Response:
        response = self._exchange(apdu)
        if self.t0_auto_reissue and response.sw1 == 0x6C:
            response = self._exchange(apdu.with_(le=response.sw2 or SHORT_MAX_LE, extended=False))
        if not (self.t0_auto_get_response and response.sw1 == 0x61):
            return response
        chunks = [response.data]
        total = len(response.data)
        cla = _get_response_cla(apdu.cla)
        while response.sw1 == 0x61:
            get = Apdu(cla, INS_GET_RESPONSE, 0, 0, le=response.sw2 or SHORT_MAX_LE,
                       secret_response=apdu.secret_response)
            response = self._exchange(get)
            if self.t0_auto_reissue and response.sw1 == 0x6C:
                response = self._exchange(get.with_(le=response.sw2 or SHORT_MAX_LE))
            chunks.append(response.data)
            total += len(response.data)
            if total > MAX_RESPONSE_BYTES:
                raise TransportError(
                    f"{self.transport.name}: the card keeps answering 61xx beyond {MAX_RESPONSE_BYTES} bytes: "
                    "reset the card"
                )
        return Response(b"".join(chunks), response.sw)

    def _exchange(self, apdu: Apdu) -> Response:
        raw = apdu.to_bytes()
        start = time.perf_counter()
        out = self.transport.transmit_raw(raw)
        elapsed = time.perf_counter() - start
        self._count(len(raw), len(out), elapsed)
        if len(out) < 2:
            raise TransportError(f"the card in {self.transport.name} is mute (answer without a status word): "
                                 "reinsert or reset it, then retry")
        response = Response(out[:-2], (out[-2] << 8) | out[-1])
        if self.tracer is not None:
            self.tracer.trace(apdu, response, elapsed, self.transport.protocol)
        return response

    def _count(self, sent: int, received: int, seconds: float) -> None:
        stats = self.stats
        stats.apdus += 1
        stats.bytes_sent += sent
        stats.bytes_received += received
        stats.seconds += seconds


def _get_response_cla(cla: int) -> int:
    """GET RESPONSE in the interindustry class on the command's logical channel
    (GSM class A0 stays A0)."""
    if cla == 0xA0:
        return 0xA0
    if cla & 0x40:  # further interindustry class: channels 4-19
        return 0x40 | (cla & 0x0F)
    return cla & 0x03
