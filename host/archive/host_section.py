"""The host section of the manifest (tag 88): archive metadata, signed with the rest.

Encoded as canonical JSON: UTF-8, keys sorted, no whitespace, ASCII only,
bytes as lower-case hex. Decoding is strict: unknown or missing keys, wrong
types, or any encoding that is not exactly what encode() produces are refused,
so one host section has one encoding (the signature covers exactly it).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from host.errors import ArchiveError

from .cdc import ChunkerParams
from .codec import CODECS

HOST_SECTION_VERSION = 1
MAX_HOST_SECTION = 1 << 20
SECRETS_POLICIES = ("included", "excluded")
_KEYS = {"version", "codec", "plain_size", "tree_sha256", "scope", "secrets", "chain_id",
         "recipients", "chunker", "previous", "order", "dictionary"}


@dataclass(frozen=True)
class HostSection:
    codec: str
    plain_size: int
    tree_sha256: bytes
    chain_id: bytes
    recipients: dict[bytes, bytes]          # recipient key id -> HPKE-wrapped chain secret
    chunker: ChunkerParams
    scope: tuple[str, ...] = (".",)
    secrets: str = "included"
    previous: bytes | None = None           # backup id this one was made incrementally from
    order: tuple[int, ...] | None = None    # chunk-table indices in plaintext order, when not the default
    dictionary: bytes | None = None         # chunk id of the chain's zstd dictionary (last in the table)
    version: int = field(default=HOST_SECTION_VERSION)

    def encode(self) -> bytes:
        doc = {
            "version": self.version, "codec": self.codec, "plain_size": self.plain_size,
            "tree_sha256": self.tree_sha256.hex(), "scope": list(self.scope),
            "secrets": self.secrets, "chain_id": self.chain_id.hex(),
            "recipients": {k.hex(): v.hex() for k, v in sorted(self.recipients.items())},
            "chunker": self.chunker.as_dict(),
            "previous": self.previous.hex() if self.previous is not None else None,
            "order": list(self.order) if self.order is not None else None,
            "dictionary": self.dictionary.hex() if self.dictionary is not None else None,
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")

    @classmethod
    def decode(cls, data: bytes) -> HostSection:
        if len(data) > MAX_HOST_SECTION:
            raise ArchiveError("manifest host section too large: not a simvault archive")
        try:
            doc = json.loads(data.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise ArchiveError("manifest host section is not canonical JSON: damaged archive") from None
        if not isinstance(doc, dict) or set(doc) != _KEYS:
            raise ArchiveError("manifest host section has missing or unknown fields: damaged "
                               "archive or a newer simvault")
        try:
            if doc["version"] != HOST_SECTION_VERSION:
                raise ArchiveError(f"host section version {doc['version']} not supported; upgrade simvault")
            if doc["codec"] not in CODECS:
                raise ArchiveError(f"archive codec {doc['codec']!r} unknown; upgrade simvault")
            if doc["secrets"] not in SECRETS_POLICIES:
                raise ArchiveError("archive secrets policy unknown")
            scope = doc["scope"]
            if not isinstance(scope, list) or not all(isinstance(s, str) for s in scope):
                raise ArchiveError("archive scope malformed")
            recips = doc["recipients"]
            if not isinstance(recips, dict) or not recips:
                raise ArchiveError("archive lists no key recipients")
            order = doc["order"]
            if order is not None and not (isinstance(order, list)
                                          and all(type(i) is int and i >= 0 for i in order)):
                raise ArchiveError("archive chunk order malformed")
            if type(doc["plain_size"]) is not int or doc["plain_size"] < 0:
                raise ArchiveError("archive plain size malformed")
            section = cls(
                codec=doc["codec"], plain_size=doc["plain_size"],
                tree_sha256=_hex(doc["tree_sha256"], 32), chain_id=_hex(doc["chain_id"], 16),
                recipients={_hex(k, 8): _hex(v, None) for k, v in recips.items()},
                chunker=ChunkerParams.from_dict(doc["chunker"]) if isinstance(doc["chunker"], dict)
                else _fail("chunker"),
                scope=tuple(scope), secrets=doc["secrets"],
                previous=_hex(doc["previous"], 16) if doc["previous"] is not None else None,
                order=tuple(order) if order is not None else None,
                dictionary=_hex(doc["dictionary"], 32) if doc["dictionary"] is not None else None)
        except (TypeError, KeyError, AttributeError):
            raise ArchiveError("manifest host section fields have wrong types: damaged archive") from None
        if section.encode() != data:
            raise ArchiveError("manifest host section is not in canonical form: damaged archive")
        return section


def _fail(what: str):  # type: ignore[no-untyped-def]
    raise ArchiveError(f"archive {what} malformed")


def _hex(value: object, length: int | None) -> bytes:
    if not isinstance(value, str) or value != value.lower():
        raise ArchiveError("archive host section: hex field malformed")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise ArchiveError("archive host section: hex field malformed") from None
    if length is not None and len(raw) != length:
        raise ArchiveError("archive host section: hex field has the wrong length")
    return raw
