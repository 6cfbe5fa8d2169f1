"""The host section of the manifest (tag 88): archive metadata, signed with the rest.

Encoded as canonical JSON: UTF-8, keys sorted, no whitespace, ASCII only,
bytes as lower-case hex. Decoding is strict: unknown or missing keys, wrong
types, or any encoding that is not exactly what encode() produces are refused,
so one host section has one encoding (the signature covers exactly it).
Version 2 (written now) replaces v1's "tree_sha256" (a bare SHA-256 of the
plaintext, readable by anyone holding the archive) by "tree_mac", keyed by
the chain keys; v1 is still read. Hostile input only ever raises ArchiveError:
deep nesting, huge numbers, duplicate keys and non-canonical forms are refused.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from host.errors import ArchiveError

from .cdc import ChunkerParams
from .codec import CODECS

HOST_SECTION_VERSION = 2
READABLE_VERSIONS = (1, 2)
MAX_HOST_SECTION = 1 << 20
MAX_PLAIN_SIZE = 256 << 20  # canonical plaintext; a 10 MB TNDS tree is ~1.4 MB
SECRETS_POLICIES = ("included", "excluded")
_COMMON_KEYS = {"version", "codec", "plain_size", "scope", "secrets", "chain_id",
                "recipients", "chunker", "previous", "order", "dictionary"}
_DIGEST_KEY = {1: "tree_sha256", 2: "tree_mac"}


@dataclass(frozen=True)
class HostSection:
    codec: str
    plain_size: int
    tree_digest: bytes                      # v1: SHA-256 of the plaintext; v2: ChainKeys.tree_mac
    chain_id: bytes
    recipients: dict[bytes, bytes]          # recipient key id -> HPKE-wrapped chain secret
    chunker: ChunkerParams
    scope: tuple[str, ...] = (".",)
    secrets: str = "included"
    previous: bytes | None = None           # backup id this one was made incrementally from
    order: tuple[int, ...] | None = None    # chunk-table indices in plaintext order, when not the default
    dictionary: bytes | None = None         # chunk id of the chain's zstd dictionary (last in the table)
    version: int = field(default=HOST_SECTION_VERSION)

    @property
    def tree_sha256(self) -> bytes:
        """Backward-compatible name of tree_digest (a keyed MAC from version 2 on)."""
        return self.tree_digest

    def encode(self) -> bytes:
        doc = {
            "version": self.version, "codec": self.codec, "plain_size": self.plain_size,
            _DIGEST_KEY.get(self.version, "tree_mac"): self.tree_digest.hex(), "scope": list(self.scope),
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
            doc = json.loads(data.decode("ascii"), object_pairs_hook=_no_duplicates,
                             parse_constant=_no_constant, parse_float=_no_constant)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise ArchiveError("manifest host section is not canonical JSON: damaged archive") from None
        if not isinstance(doc, dict) or type(doc.get("version")) is not int:
            raise ArchiveError("manifest host section has no version: damaged archive")
        if doc["version"] not in READABLE_VERSIONS:
            raise ArchiveError("host section version not supported: upgrade simvault")
        digest_key = _DIGEST_KEY[doc["version"]]
        if set(doc) != _COMMON_KEYS | {digest_key}:
            raise ArchiveError("manifest host section has missing or unknown fields: damaged "
                               "archive or a newer simvault")
        try:
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
            if type(doc["plain_size"]) is not int or not 0 <= doc["plain_size"] <= MAX_PLAIN_SIZE:
                raise ArchiveError("archive plain size malformed or above 256 MiB")
            if not isinstance(doc["chunker"], dict) or not all(
                    type(doc["chunker"].get(k)) is int for k in ("min", "avg", "max")):
                raise ArchiveError("archive chunker malformed")
            section = cls(
                codec=doc["codec"], plain_size=doc["plain_size"], version=doc["version"],
                tree_digest=_hex(doc[digest_key], 32), chain_id=_hex(doc["chain_id"], 16),
                recipients={_hex(k, 8): _hex(v, None) for k, v in recips.items()},
                chunker=ChunkerParams.from_dict(doc["chunker"]),
                scope=tuple(scope), secrets=doc["secrets"],
                previous=_hex(doc["previous"], 16) if doc["previous"] is not None else None,
                order=tuple(order) if order is not None else None,
                dictionary=_hex(doc["dictionary"], 32) if doc["dictionary"] is not None else None)
        except (TypeError, KeyError, AttributeError, ValueError, OverflowError):
            raise ArchiveError("manifest host section fields have wrong types: damaged archive") from None
        if section.encode() != data:
            raise ArchiveError("manifest host section is not in canonical form: damaged archive")
        return section


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate key")
    return out


def _no_constant(text: str):  # type: ignore[no-untyped-def]
    raise ValueError(f"{text[:8]!r} has no place in a host section")


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
