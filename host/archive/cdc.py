"""Content-defined chunking: FastCDC-style gear hash with normalised chunking.

Boundaries depend only on the bytes (and the gear table), so an edit moves at
most the chunks around it; the chunks before and after keep their bytes and
therefore their ids. The gear table is derived from the chain's chunk-id key
(as restic keys its Rabin polynomial): boundaries, and so chunk sizes, do not
fingerprint a known tree to someone without the key.
"""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from host.errors import ArchiveError

_MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class ChunkerParams:
    """min/avg/max chunk sizes in bytes of canonical plaintext; avg a power of two."""

    min_size: int = 512
    avg_size: int = 2048
    max_size: int = 8192
    algorithm: str = "fastcdc-gear64-v1"

    def validate(self) -> None:
        if self.algorithm != "fastcdc-gear64-v1":
            raise ArchiveError(f"unknown chunker {self.algorithm!r}; this simvault cannot read it")
        avg = self.avg_size
        if avg < 64 or avg & (avg - 1):
            raise ArchiveError(f"chunker avg size {avg} must be a power of two >= 64")
        if not 16 <= self.min_size <= avg <= self.max_size <= 1 << 20:
            raise ArchiveError("chunker sizes must satisfy 16 <= min <= avg <= max <= 1 MiB")

    def as_dict(self) -> dict:
        return {"algorithm": self.algorithm, "min": self.min_size, "avg": self.avg_size,
                "max": self.max_size}

    @classmethod
    def from_dict(cls, d: dict) -> ChunkerParams:
        try:
            p = cls(min_size=int(d["min"]), avg_size=int(d["avg"]), max_size=int(d["max"]),
                    algorithm=str(d["algorithm"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ArchiveError(f"chunker parameters malformed: {exc}") from None
        p.validate()
        return p

    def fitted(self, max_size: int) -> ChunkerParams:
        """These parameters with max (and min/avg if needed) no larger than max_size."""
        if self.max_size <= max_size:
            return self
        avg = self.avg_size
        while avg > max_size // 2 and avg > 64:
            avg //= 2
        return ChunkerParams(min(self.min_size, avg // 4 or 16), avg, max_size, self.algorithm)


def gear_table(key: bytes) -> list[int]:
    """256 pseudo-random 64-bit values derived from key."""
    out: list[int] = []
    for block in range(32):  # 32 blocks x 8 values of 8 bytes
        digest = hmac.new(key, b"simvault/gear/v1" + bytes([block]), hashlib.sha512).digest()
        out.extend(int.from_bytes(digest[i:i + 8], "big") for i in range(0, 64, 8))
    return out


def _mask(bits: int) -> int:
    # FastCDC spreads the mask bits over the high part of the hash: the gear hash's
    # high bits depend on more (up to 64) input bytes than its low bits.
    mask = 0
    for i in range(bits):
        mask |= 1 << (63 - 2 * i) if 2 * i < 64 else 1 << (63 - i)
    return mask & _MASK64


def cut_points(data: bytes, params: ChunkerParams, gear: list[int]) -> list[int]:
    """End offsets of the chunks of data (the last one is len(data))."""
    params.validate()
    bits = params.avg_size.bit_length() - 1
    mask_s, mask_l = _mask(bits + 1), _mask(bits - 1)  # harder before avg, easier after
    n = len(data)
    cuts: list[int] = []
    start = 0
    mn, avg, mx = params.min_size, params.avg_size, params.max_size
    while start < n:
        remaining = n - start
        if remaining <= mn:
            cuts.append(n)
            break
        end = start + min(remaining, mx)
        normal = min(start + avg, end)
        h = 0
        i = start + mn
        cut = end
        while i < normal:
            h = ((h << 1) + gear[data[i]]) & _MASK64
            if not h & mask_s:
                cut = i + 1
                break
            i += 1
        else:
            while i < end:
                h = ((h << 1) + gear[data[i]]) & _MASK64
                if not h & mask_l:
                    cut = i + 1
                    break
                i += 1
        cuts.append(cut)
        start = cut
    return cuts


def split(data: bytes, params: ChunkerParams, gear: list[int]) -> list[bytes]:
    out: list[bytes] = []
    start = 0
    for end in cut_points(data, params, gear):
        out.append(data[start:end])
        start = end
    return out
