"""The FCI the applet returns on SELECT: what the host may use.

    6F { 84 AID, A5 { 80 applet version (1), 81 max command data (2),
                      82 max response data (2), 83 features (1),
                      84 max chunk size (2) } }

features: bit 0x01 extended length, bit 0x02 command chaining,
          bit 0x04 T=0 GET RESPONSE behaviour active.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import tlv
from .codec import Codec, CodecError, register

FEATURE_EXTENDED_LENGTH = 0x01
FEATURE_CHAINING = 0x02
FEATURE_T0 = 0x04


@dataclass(frozen=True)
class Fci:
    aid: bytes
    applet_version: int
    max_command_data: int
    max_response_data: int
    features: int
    max_chunk_size: int

    @property
    def extended_length(self) -> bool:
        return bool(self.features & FEATURE_EXTENDED_LENGTH)

    @property
    def chaining(self) -> bool:
        return bool(self.features & FEATURE_CHAINING)


def _build(fci: Fci) -> bytes:
    proprietary = (tlv.encode(0x80, bytes([fci.applet_version]))
                   + tlv.encode(0x81, fci.max_command_data.to_bytes(2, "big"))
                   + tlv.encode(0x82, fci.max_response_data.to_bytes(2, "big"))
                   + tlv.encode(0x83, bytes([fci.features]))
                   + tlv.encode(0x84, fci.max_chunk_size.to_bytes(2, "big")))
    return tlv.encode(0x6F, tlv.encode(0x84, fci.aid) + tlv.encode(0xA5, proprietary))


def _parse(data: bytes) -> Fci:
    try:
        outer = tlv.to_dict(tlv.decode_single(data, 0x6F).children())
        prop = tlv.to_dict(tlv.decode_all(outer[0xA5]))
        return Fci(aid=outer[0x84], applet_version=prop[0x80][0],
                   max_command_data=int.from_bytes(prop[0x81], "big"),
                   max_response_data=int.from_bytes(prop[0x82], "big"),
                   features=prop[0x83][0], max_chunk_size=int.from_bytes(prop[0x84], "big"))
    except (tlv.TlvError, KeyError, IndexError) as exc:
        raise CodecError(f"FCI malformed: {exc}") from exc


FCI = register(Codec("FCI", _build, _parse, [
    ("6F20840AF053494D5641554C5401A512800101810210008202100083010384023FE0",
     Fci(aid=bytes.fromhex("F053494D5641554C5401"), applet_version=1, max_command_data=0x1000,
         max_response_data=0x1000, features=3, max_chunk_size=0x3FE0)),
]))
