"""Everything between a host program and a card: APDUs, transports, the link
(T=0, chaining, extended length), the tracer and ATR parsing."""
from .apdu import Apdu, Response, parse_apdu
from .atr import AtrError, AtrInfo, build_atr, parse_atr
from .link import Link, LinkStats
from .pcsc import PcscTransport, card_present, list_readers, select_reader
from .tracer import ApduTracer, Tracer, default_sw_name
from .transport import EmulatorTransport, Transport, VirtualCard

__all__ = [
    "Apdu", "Response", "parse_apdu",
    "AtrError", "AtrInfo", "build_atr", "parse_atr",
    "Link", "LinkStats",
    "PcscTransport", "card_present", "list_readers", "select_reader",
    "ApduTracer", "Tracer", "default_sw_name",
    "EmulatorTransport", "Transport", "VirtualCard",
]
