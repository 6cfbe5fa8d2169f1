"""Secret leaves of a DM tree: credentials a backup policy may exclude.

A leaf is secret when
- its name is a known credential name (AAuthSecret, AAuthData, AuthSecret,
  ClientPW, ServerPW, ClientNonce, ServerNonce, Password, PIN, PSK, ...), or
  ends with Secret/Password/Passwd (any case);
- it lies under an AppAuth node (./DMAcc/*/AppAuth/*/...) and has Format b64
  or bin (DM 1.2 keeps binary credentials there);
- or it matches one of the caller's extra URI patterns ('*' matches one
  segment: './Vendor/*/Keys/*').
Never log or render these values; diff() masks them.
"""
from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

from host.tree.model import DMTree
from host.tree.uri import join_uri, split_uri

__all__ = [
    "SECRET_LEAF_NAMES",
    "is_secret_leaf",
    "merge_keep_secrets",
    "secret_uris",
    "strip_secrets",
]

SECRET_LEAF_NAMES = frozenset(n.lower() for n in (
    "AAuthSecret", "AAuthData", "AuthSecret", "ClientPW", "ServerPW", "ClientNonce",
    "ServerNonce", "Password", "Passwd", "PW", "PWD", "PIN", "PUK", "PSK", "PreSharedKey",
    "WEPKey", "WPAKey", "PrivateKey", "SharedSecret", "Secret"))
_SUFFIXES = ("secret", "password", "passwd")


def is_secret_leaf(names: list[str], fmt: str | None,
                   patterns: Iterable[list[str]] = ()) -> bool:
    """names: the leaf's node names from the root; fmt: its Format."""
    leaf = names[-1].lower()
    if leaf in SECRET_LEAF_NAMES or leaf.endswith(_SUFFIXES):
        return True
    if fmt in ("b64", "bin") and "AppAuth" in names[:-1]:
        return True
    return any(len(p) == len(names) and all(fnmatchcase(n, s) for n, s in zip(names, p))
               for p in patterns)


def secret_uris(tree: DMTree, extra_patterns: Iterable[str] = ()) -> list[str]:
    """URIs of every secret leaf, in tree (pre-)order."""
    patterns = [split_uri(p) for p in extra_patterns]
    out: list[str] = []
    stack = [([], tree.root)]
    while stack:
        names, node = stack.pop()
        if not node.interior:
            if names and is_secret_leaf(names, node.format, patterns):
                out.append(join_uri(names))
            continue
        for child in reversed(list(node.children.values())):
            stack.append((names + [child.name], child))
    return out


def strip_secrets(tree: DMTree, extra_patterns: Iterable[str] = ()) -> DMTree:
    """A copy of tree without its secret leaves (for backups that exclude secrets)."""
    out = tree.copy()
    for uri in secret_uris(tree, extra_patterns):
        out.delete(uri)
    return out


def merge_keep_secrets(restored: DMTree, live: DMTree,
                       extra_patterns: Iterable[str] = ()) -> DMTree:
    """A copy of restored in which every live secret leaf wins.

    Each secret leaf of the live tree is put in (added or replacing the
    restored one) when its parent exists as an interior node in the result.
    Restored secrets where the live tree has none are kept, so nothing is lost:
    restoring a backup made without secrets keeps today's credentials, and
    restoring an account the device no longer has brings its credentials back.
    """
    out = restored.copy()
    for uri in secret_uris(live, extra_patterns):
        names = split_uri(uri)
        parent = out.find(join_uri(names[:-1]))
        if parent is not None and parent.interior:
            parent.children[names[-1]] = live.get(uri).copy()
    return out
