"""OMA DM URIs: './A/B' (absolute), 'A/B' (relative to the root, same node), '.'.

Rules (OMA DM 1.2 TND): segments are separated by '/', none is empty, '.'
only as the first segment, '..' never; a URI does not end with '/'. '%' and
'?' inside a node name are written as %25 and %3F (percent escapes are decoded
when a URI is split). A name cannot hold '/' (TNDS could not carry it): the
tree model refuses such a name even when a URI spells it %2F.
"""
from __future__ import annotations

from urllib.parse import unquote

from host.errors import TreeError

__all__ = [
    "InvalidUri",
    "escape_segment",
    "is_ancestor_or_self",
    "join_uri",
    "normalize_uri",
    "parent_uri",
    "split_query",
    "split_uri",
]


class InvalidUri(TreeError):
    """A URI that OMA DM does not allow."""

    dm_status = 400


def split_query(uri: str) -> tuple[str, str | None]:
    """'./A?list=TNDS+ACL' -> ('./A', 'list=TNDS+ACL')."""
    path, sep, query = uri.partition("?")
    return path, (query if sep else None)


def split_uri(uri: str, *, allow_trailing_slash: bool = False) -> list[str]:
    """URI -> decoded node names from the root ('.' -> [])."""
    if "?" in uri:
        raise InvalidUri(f"URI {uri!r} carries a query; split it off with split_query() first")
    if uri in (".", "./") or (uri == "" and allow_trailing_slash):
        return []
    if uri == "":
        raise InvalidUri("empty URI; use '.' for the root")
    if uri.endswith("/"):
        if not allow_trailing_slash:
            raise InvalidUri(f"URI {uri!r} ends with '/'; remove the trailing slash")
        uri = uri.rstrip("/")
    if uri.startswith("./"):
        uri = uri[2:]
    elif uri.startswith("/"):
        raise InvalidUri(f"URI {uri!r} starts with '/'; write './{uri.lstrip('/')}'")
    parts = uri.split("/")
    names: list[str] = []
    for part in parts:
        if part in ("", ".", ".."):
            raise InvalidUri(f"URI {uri!r} has an empty, '.' or '..' segment")
        names.append(unquote(part, errors="strict") if "%" in part else part)
    return names


def escape_segment(name: str) -> str:
    """Node name -> URI segment (escapes only '%', '/', '?')."""
    if not name:
        raise InvalidUri("empty node name")
    if "%" in name or "/" in name or "?" in name:
        return name.replace("%", "%25").replace("/", "%2F").replace("?", "%3F")
    return name


def join_uri(names: list[str] | tuple[str, ...]) -> str:
    """Decoded node names from the root -> canonical absolute URI './A/B'."""
    if not names:
        return "."
    return "./" + "/".join(escape_segment(n) for n in names)


def normalize_uri(uri: str) -> str:
    """Any accepted spelling -> canonical './A/B' (or '.')."""
    return join_uri(split_uri(uri))


def parent_uri(uri: str) -> str:
    """'./A/B' -> './A'; './A' -> '.'; the root has no parent (InvalidUri)."""
    names = split_uri(uri)
    if not names:
        raise InvalidUri("the root '.' has no parent")
    return join_uri(names[:-1])


def is_ancestor_or_self(ancestor: str, uri: str) -> bool:
    """True when ``uri`` is ``ancestor`` or lies below it."""
    a, u = split_uri(ancestor), split_uri(uri)
    return u[: len(a)] == a
