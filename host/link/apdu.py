"""Command and response APDUs as typed objects (ISO/IEC 7816-3 12.1, 7816-4 5.1).

Bytes in, bytes out: hex appears only at the CLI edge and in traces.

``Apdu.le`` is the number of response bytes expected, ``None`` when there is no
Le field. ``le=0`` means "as many as available" and encodes like 256 (short) or
65536 (extended), the ISO meaning of an all-zero Le field.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

SHORT_MAX_DATA = 255
SHORT_MAX_LE = 256
EXTENDED_MAX_DATA = 65535
EXTENDED_MAX_LE = 65536

CLA_CHAINING = 0x10  # ISO 7816-4 5.4.1: "command is not the last of a chain"
SW_OK = 0x9000


@dataclass(frozen=True)
class Apdu:
    """A command APDU.

    ``secret`` marks the command data as confidential (PIN, keys, plaintext):
    tracers print only its length. ``secret_response`` does the same for the
    data the card answers.
    """

    cla: int
    ins: int
    p1: int = 0
    p2: int = 0
    data: bytes = b""
    le: int | None = None
    extended: bool = False
    secret: bool = field(default=False, compare=False)
    secret_response: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("cla", "ins", "p1", "p2"):
            value = getattr(self, name)
            if not 0 <= value <= 0xFF:
                raise ValueError(f"{name} must be a byte, got {value!r}")
        if not isinstance(self.data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, got {type(self.data).__name__}")
        object.__setattr__(self, "data", bytes(self.data))
        if len(self.data) > EXTENDED_MAX_DATA:
            raise ValueError(f"data of {len(self.data)} bytes exceeds {EXTENDED_MAX_DATA}")
        if self.le is not None and not 0 <= self.le <= EXTENDED_MAX_LE:
            raise ValueError(f"le must be 0..{EXTENDED_MAX_LE} or None, got {self.le}")

    @property
    def case(self) -> int:
        """ISO 7816-3 case: 1 no data no Le, 2 Le only, 3 data only, 4 both."""
        if self.data:
            return 4 if self.le is not None else 3
        return 2 if self.le is not None else 1

    @property
    def needs_extended(self) -> bool:
        """True when the fields cannot be coded in short form."""
        return len(self.data) > SHORT_MAX_DATA or (self.le is not None and self.le > SHORT_MAX_LE)

    @property
    def is_extended(self) -> bool:
        """True when ``to_bytes`` uses the extended length form."""
        return self.extended or self.needs_extended

    @property
    def header(self) -> bytes:
        return bytes((self.cla, self.ins, self.p1, self.p2))

    def to_bytes(self) -> bytes:
        """Encode per ISO 7816-3 12.1.3: short form unless ``extended`` is set or
        the lengths need it. A case 1 APDU is always the four header bytes."""
        out = bytearray(self.header)
        lc = len(self.data)
        if not self.is_extended:
            if lc:
                out.append(lc)
                out += self.data
            if self.le is not None:
                out.append(self.le & 0xFF)  # 256 -> 00
            return bytes(out)
        if lc:
            out += b"\x00" + lc.to_bytes(2, "big")
            out += self.data
        if self.le is not None:
            if not lc:
                out.append(0x00)  # case 2E: 00 Le1 Le2; case 4E: Le1 Le2 only
            out += (self.le & 0xFFFF).to_bytes(2, "big")  # 65536 -> 0000
        return bytes(out)

    def with_(self, **changes: object) -> Apdu:
        """A copy with some fields changed (the secrecy flags are kept)."""
        return replace(self, **changes)

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    def __repr__(self) -> str:
        shown = f"<{len(self.data)} secret bytes>" if self.secret else self.data.hex()
        return (
            f"Apdu(cla=0x{self.cla:02X}, ins=0x{self.ins:02X}, p1=0x{self.p1:02X}, "
            f"p2=0x{self.p2:02X}, data={shown}, le={self.le}, extended={self.extended})"
        )


def parse_apdu(raw: bytes) -> Apdu:
    """Decode a C-APDU (short or extended, cases 1-4). Raises ValueError.

    Used by tests and tools to check what went on the wire; the card runtime
    has its own parser that answers malformed input with a status word.
    """
    raw = bytes(raw)
    if len(raw) < 4:
        raise ValueError(f"APDU of {len(raw)} bytes is shorter than its header")
    cla, ins, p1, p2 = raw[:4]
    body = raw[4:]
    n = len(body)
    if n == 0:
        return Apdu(cla, ins, p1, p2)
    if n == 1:
        return Apdu(cla, ins, p1, p2, le=body[0] or SHORT_MAX_LE)
    if body[0] != 0:  # short 3 or 4
        lc = body[0]
        if n == 1 + lc:
            return Apdu(cla, ins, p1, p2, body[1:])
        if n == 2 + lc:
            return Apdu(cla, ins, p1, p2, body[1 : 1 + lc], le=body[-1] or SHORT_MAX_LE)
        raise ValueError(f"short APDU: Lc={lc} does not match {n - 1} body bytes")
    if n == 3:  # case 2E
        le = int.from_bytes(body[1:3], "big") or EXTENDED_MAX_LE
        return Apdu(cla, ins, p1, p2, le=le, extended=True)
    if n < 3:
        raise ValueError("extended APDU truncated")
    lc = int.from_bytes(body[1:3], "big")
    if lc == 0:
        raise ValueError("extended APDU with Lc=0")
    if n == 3 + lc:
        return Apdu(cla, ins, p1, p2, body[3:], extended=True)
    if n == 5 + lc:
        le = int.from_bytes(body[-2:], "big") or EXTENDED_MAX_LE
        return Apdu(cla, ins, p1, p2, body[3 : 3 + lc], le=le, extended=True)
    raise ValueError(f"extended APDU: Lc={lc} does not match {n - 3} body bytes")


@dataclass(frozen=True)
class Response:
    """A response APDU: data and the status word as one int (0x9000)."""

    data: bytes
    sw: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", bytes(self.data))
        if not 0 <= self.sw <= 0xFFFF:
            raise ValueError(f"sw must be 16 bits, got {self.sw!r}")

    @classmethod
    def from_bytes(cls, raw: bytes) -> Response:
        if len(raw) < 2:
            raise ValueError(f"response of {len(raw)} bytes has no status word")
        return cls(bytes(raw[:-2]), (raw[-2] << 8) | raw[-1])

    @property
    def sw1(self) -> int:
        return self.sw >> 8

    @property
    def sw2(self) -> int:
        return self.sw & 0xFF

    @property
    def ok(self) -> bool:
        return self.sw == SW_OK

    def to_bytes(self) -> bytes:
        return self.data + self.sw.to_bytes(2, "big")

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    def __repr__(self) -> str:
        return f"Response(data=<{len(self.data)} bytes>, sw=0x{self.sw:04X})"
