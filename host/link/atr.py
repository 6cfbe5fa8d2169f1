"""Answer-to-Reset parsing: enough to find the protocols, the historical bytes
and the card capabilities (ISO/IEC 7816-3 8.2, 7816-4 8.1.1).

The card capabilities (COMPACT-TLV tag 7, ISO 7816-4 8.1.1.2.7) tell the host
whether it may use command chaining and extended Lc/Le fields: third software
function table, b8 = command chaining, b7 = extended Lc and Le fields.
"""
from __future__ import annotations

from dataclasses import dataclass, field

CAPS_CHAINING = 0x80
CAPS_EXTENDED_LENGTH = 0x40
CAPS_EXTENDED_INFO = 0x20  # extended length information in EF.ATR/INFO


class AtrError(ValueError):
    """The ATR is malformed (truncated, wrong TS)."""


@dataclass(frozen=True)
class AtrInfo:
    raw: bytes
    convention: str  # "direct" (3B) or "inverse" (3F)
    protocols: tuple[int, ...]  # offered T=, in order; (0,) when none indicated
    interface_bytes: dict[str, int]  # "TA1", "TB1", "TD1", "TA2", ...
    historical: bytes
    tck_ok: bool | None  # None when no TCK is present
    category: int | None  # first historical byte
    compact_tlv: dict[int, bytes] = field(default_factory=dict)  # tag -> value
    card_capabilities: bytes | None = None  # value of tag 7x
    status_indicator: bytes | None = None

    @property
    def extended_length(self) -> bool:
        caps = self.card_capabilities
        return caps is not None and len(caps) >= 3 and bool(caps[2] & CAPS_EXTENDED_LENGTH)

    @property
    def chaining(self) -> bool:
        caps = self.card_capabilities
        return caps is not None and len(caps) >= 3 and bool(caps[2] & CAPS_CHAINING)

    @property
    def max_logical_channels(self) -> int:
        caps = self.card_capabilities
        if caps is None or len(caps) < 3:
            return 1
        return (caps[2] & 0x07) + 1 if caps[2] & 0x18 else 1


def parse_atr(atr: bytes) -> AtrInfo:
    """Parse an ATR; raises AtrError when it is truncated or TS is invalid."""
    atr = bytes(atr)
    if len(atr) < 2:
        raise AtrError(f"ATR of {len(atr)} bytes is too short")
    ts = atr[0]
    if ts == 0x3B:
        convention = "direct"
    elif ts == 0x3F:
        convention = "inverse"
    else:
        raise AtrError(f"ATR TS byte 0x{ts:02X} is neither 3B nor 3F")
    t0 = atr[1]
    k = t0 & 0x0F
    y = t0 >> 4
    pos = 2
    level = 1
    protocols: list[int] = []
    iface: dict[str, int] = {}
    while True:
        for bit, letter in ((0x1, "A"), (0x2, "B"), (0x4, "C"), (0x8, "D")):
            if y & bit:
                if pos >= len(atr):
                    raise AtrError(f"ATR truncated in T{letter}{level}")
                iface[f"T{letter}{level}"] = atr[pos]
                pos += 1
        td = iface.get(f"TD{level}")
        if not y & 0x8 or td is None:
            break
        if (td & 0x0F) not in protocols:
            protocols.append(td & 0x0F)
        y = td >> 4
        level += 1
    if pos + k > len(atr):
        raise AtrError(f"ATR truncated in the historical bytes ({k} announced)")
    historical = atr[pos : pos + k]
    pos += k
    # TCK is present unless only T=0 is indicated (ISO 7816-3 8.2.5).
    needs_tck = any(p != 0 for p in protocols)
    tck_ok: bool | None = None
    if pos < len(atr):
        check = 0
        for b in atr[1:]:
            check ^= b
        tck_ok = check == 0
    elif needs_tck:
        raise AtrError("ATR lacks its TCK byte")
    category, tlv, status = _parse_historical(historical)
    caps = next((v for t, v in tlv.items() if t == 0x7), None)
    return AtrInfo(
        raw=atr,
        convention=convention,
        protocols=tuple(protocols) or (0,),
        interface_bytes=iface,
        historical=historical,
        tck_ok=tck_ok,
        category=category,
        compact_tlv=tlv,
        card_capabilities=caps,
        status_indicator=status,
    )


def _parse_historical(hist: bytes) -> tuple[int | None, dict[int, bytes], bytes | None]:
    """Category indicator 00 or 80: COMPACT-TLV objects (ISO 7816-4 8.1.1.1).

    Other categories are proprietary: no TLV read, no capabilities assumed.
    A malformed TLV list stops the parse; the objects before it are kept.
    """
    if not hist:
        return None, {}, None
    category = hist[0]
    if category == 0x00:  # status indicator in the last three bytes, outside TLV
        body, status = hist[1:-3], hist[-3:] if len(hist) >= 4 else None
        return category, _compact_tlv(body), status
    if category == 0x80:
        tlv = _compact_tlv(hist[1:])
        return category, tlv, tlv.get(0x8)
    return category, {}, None


def _compact_tlv(body: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    i = 0
    while i < len(body):
        tag, length = body[i] >> 4, body[i] & 0x0F
        if i + 1 + length > len(body):
            break
        out.setdefault(tag, body[i + 1 : i + 1 + length])
        i += 1 + length
    return out


def build_atr(historical: bytes, protocols: tuple[int, ...] = (1,)) -> bytes:
    """A minimal direct-convention ATR offering ``protocols`` (with TCK when
    anything but T=0 is offered). For test cards and emulators."""
    if len(historical) > 15:
        raise ValueError("at most 15 historical bytes")
    if not protocols:
        raise ValueError("offer at least one protocol")
    tds = [p & 0x0F for p in protocols]
    if tds == [0]:
        return bytes((0x3B, len(historical))) + historical
    body = bytearray((0x80 | len(historical),))  # T0: TD1 follows
    for i, p in enumerate(tds):
        body.append((0x80 if i + 1 < len(tds) else 0x00) | p)
    body += historical
    tck = 0
    for b in body:
        tck ^= b
    return bytes((0x3B,)) + bytes(body) + bytes((tck,))
