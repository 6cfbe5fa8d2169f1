"""BER-TLV (ISO 7816-4 / X.690 subset) used by the FCI and the on-card manifest.

Tags of one or two bytes, definite lengths up to 4 length bytes. Parsing is
strict: a truncated or over-long value raises ``TlvError`` (the card answers
6A80, the host raises ArchiveError), never IndexError.
"""
from __future__ import annotations

from dataclasses import dataclass


class TlvError(ValueError):
    """Malformed BER-TLV."""


@dataclass(frozen=True)
class Tlv:
    tag: int
    value: bytes

    @property
    def constructed(self) -> bool:
        first = self.tag >> 8 if self.tag > 0xFF else self.tag
        return bool(first & 0x20)

    def children(self) -> list[Tlv]:
        return decode_all(self.value)


def encode_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    if len(raw) > 4:
        raise TlvError("TLV value longer than 4 GiB")
    return bytes([0x80 | len(raw)]) + raw


def encode(tag: int, value: bytes) -> bytes:
    tag_bytes = tag.to_bytes(2, "big") if tag > 0xFF else bytes([tag])
    return tag_bytes + encode_length(len(value)) + value


def _read_tag(buf: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(buf):
        raise TlvError("truncated TLV tag")
    tag = buf[pos]
    pos += 1
    if tag & 0x1F == 0x1F:  # multi-byte tag; we support two bytes
        if pos >= len(buf):
            raise TlvError("truncated TLV tag")
        if buf[pos] & 0x80:
            raise TlvError("TLV tags longer than two bytes are not supported")
        tag = (tag << 8) | buf[pos]
        pos += 1
    return tag, pos


def _read_length(buf: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(buf):
        raise TlvError("truncated TLV length")
    first = buf[pos]
    pos += 1
    if first < 0x80:
        return first, pos
    count = first & 0x7F
    if count == 0 or count > 4:
        raise TlvError("unsupported TLV length form")
    if pos + count > len(buf):
        raise TlvError("truncated TLV length")
    return int.from_bytes(buf[pos:pos + count], "big"), pos + count


def decode_one(buf: bytes, pos: int = 0) -> tuple[Tlv, int]:
    tag, pos = _read_tag(buf, pos)
    length, pos = _read_length(buf, pos)
    end = pos + length
    if end > len(buf):
        raise TlvError(f"TLV {tag:X} value truncated: {length} bytes announced, {len(buf) - pos} present")
    return Tlv(tag, bytes(buf[pos:end])), end


def decode_all(buf: bytes) -> list[Tlv]:
    items: list[Tlv] = []
    pos = 0
    while pos < len(buf):
        item, pos = decode_one(buf, pos)
        items.append(item)
    return items


def decode_single(buf: bytes, tag: int) -> Tlv:
    """Exactly one TLV with ``tag`` and nothing after it."""
    item, end = decode_one(buf)
    if item.tag != tag:
        raise TlvError(f"expected TLV tag {tag:X}, found {item.tag:X}")
    if end != len(buf):
        raise TlvError(f"{len(buf) - end} trailing bytes after TLV {tag:X}")
    return item


def to_dict(items: list[Tlv], allowed: set[int] | None = None) -> dict[int, bytes]:
    """Map tag -> value, refusing duplicates (and unknown tags when ``allowed`` is given)."""
    out: dict[int, bytes] = {}
    for item in items:
        if item.tag in out:
            raise TlvError(f"duplicate TLV tag {item.tag:X}")
        if allowed is not None and item.tag not in allowed:
            raise TlvError(f"unexpected TLV tag {item.tag:X}")
        out[item.tag] = item.value
    return out
