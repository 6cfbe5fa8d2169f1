"""Everything between a host program and a card: APDUs, transports, the link
(T=0, chaining, extended length), the tracer and ATR parsing."""
from .apdu import Apdu, Response, parse_apdu
from .atr import AtrError, AtrInfo, build_atr, parse_atr
from .link import Link, LinkStats
from .pcsc import (
    PcscTransport,
    card_present,
    list_readers,
    reader_state,
    select_reader,
    wait_for_card,
)
from .tracer import ApduTracer, Tracer, default_sw_name
from .transport import EmulatorTransport, Transport, VirtualCard

__all__ = [
    "Apdu",
    "ApduTracer",
    "AtrError",
    "AtrInfo",
    "EmulatorTransport",
    "Link",
    "LinkStats",
    "PcscTransport",
    "Response",
    "Tracer",
    "Transport",
    "VirtualCard",
    "build_atr",
    "card_present",
    "default_sw_name",
    "list_readers",
    "parse_apdu",
    "parse_atr",
    "reader_state",
    "select_reader",
    "wait_for_card",
]
