"""A named codec with its test vectors declared beside it.

Every command-data and response layout in apdu_specs is a ``Codec``; the
registry ``CODECS`` lets one parametrised test round-trip every vector, and the
README test check that each codec is documented.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import construct

CODECS: dict[str, Codec] = {}


class CodecError(ValueError):
    """Bytes that do not fit the layout (the card answers 6A80 or 6700)."""


@dataclass
class Codec:
    name: str
    build: Callable[[Any], bytes]
    parse: Callable[[bytes], Any]
    vectors: list[tuple[str, Any]] = field(default_factory=list)

    def encode(self, value: Any) -> bytes:
        try:
            return self.build(value)
        except (construct.ConstructError, ValueError, TypeError, KeyError) as exc:
            raise CodecError(f"{self.name}: cannot encode: {exc}") from exc

    def decode(self, data: bytes) -> Any:
        try:
            return self.parse(bytes(data))
        except CodecError:
            raise
        except (construct.ConstructError, ValueError, TypeError, KeyError, IndexError) as exc:
            raise CodecError(f"{self.name}: malformed: {exc}") from exc


def register(codec: Codec) -> Codec:
    if codec.name in CODECS:
        raise RuntimeError(f"codec {codec.name} registered twice")
    CODECS[codec.name] = codec
    return codec


def struct_codec(name: str, layout: construct.Construct, vectors: list[tuple[str, dict]] | None = None) -> Codec:
    """A codec over a construct layout whose parse must consume every byte."""
    strict = construct.Struct("v" / layout, construct.Terminated)

    def build(value: Any) -> bytes:
        return strict.build({"v": value})

    def parse(data: bytes) -> Any:
        parsed = strict.parse(data).v
        return _plain(parsed)

    return register(Codec(name, build, parse, vectors or []))


def _plain(value: Any) -> Any:
    """construct Containers/ListContainers -> dict/list, dropping private '_' keys."""
    if isinstance(value, construct.ListContainer) or isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if not k.startswith("_")}
    return value
