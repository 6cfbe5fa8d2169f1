"""Whole-tree operations: scope selection, diff (+ text rendering), restore apply."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from host.errors import TreeError
from host.tree.model import DMNode, DMTree, NodeNotFound
from host.tree.secrets import is_secret_leaf, merge_keep_secrets
from host.tree.uri import join_uri, split_uri

__all__ = ["DIFF_FIELDS", "Change", "apply_restore", "diff", "render_diff", "select"]

# DMNode fields compared by diff, with the names render_diff shows
DIFF_FIELDS = {"value": "value", "format": "Format", "type": "Type", "type_is_ddf": "Type kind",
               "acl": "ACL", "title": "Title", "rt_name": "Name", "size": "Size",
               "tstamp": "TStamp", "verno": "VerNo"}


def _disjoint_scopes(scopes: Iterable[str]) -> list[list[str]]:
    """Scopes as name lists, shallowest first, dropping those inside another."""
    out: list[list[str]] = []
    for names in sorted((split_uri(s) for s in scopes), key=len):
        if not any(names[: len(o)] == o for o in out):
            out.append(names)
    return out


def _graft(dst: DMTree, src: DMTree, names: list[str]) -> None:
    """Put a deep copy of src's node at names into dst, creating ancestors from src."""
    if not names:
        dst.root = src.root.copy()
        return
    node, s = dst.root, src.root
    for name in names[:-1]:
        s = s.children[name]
        child = node.children.get(name)
        if child is None or not child.interior:
            child = s.shallow_copy()
            node.children[name] = child
        node = child
    node.children[names[-1]] = s.children[names[-1]].copy()


def select(tree: DMTree, uris: Iterable[str], *, missing_ok: bool = False) -> DMTree:
    """A tree holding only the subtrees at uris and their ancestors (with their props).

    A URI that does not exist raises NodeNotFound, or is skipped with missing_ok.
    """
    out = DMTree(tree.root.shallow_copy(), tree.man, tree.mod)
    for names in _disjoint_scopes(uris):
        uri = join_uri(names)
        if tree.find(uri) is None:
            if missing_ok:
                continue
            raise NodeNotFound(f"scope {uri} does not exist in the tree")
        _graft(out, tree, names)
    return out


@dataclass(frozen=True)
class Change:
    """One node that differs. before/after are the node's own fields (no children)."""

    kind: str                 # "added" | "removed" | "changed"
    uri: str
    before: DMNode | None
    after: DMNode | None
    fields: tuple[str, ...]   # for "changed": DMNode attribute names that differ
    secret: bool              # a secret leaf: never show its value


def _secret(names: list[str], node: DMNode) -> bool:
    return not node.interior and bool(names) and is_secret_leaf(names, node.format)


def _subtree_changes(kind: str, names: list[str], node: DMNode, out: list[Change]) -> None:
    stack = [(names, node)]
    while stack:
        n, nd = stack.pop()
        shallow = nd.shallow_copy()
        out.append(Change(kind, join_uri(n), None if kind == "added" else shallow,
                          shallow if kind == "added" else None, (), _secret(n, nd)))
        for name in sorted(nd.children, reverse=True):
            stack.append((n + [name], nd.children[name]))


def diff(a: DMTree, b: DMTree) -> list[Change]:
    """Changes that turn tree a into tree b, in pre-order of sorted names."""
    out: list[Change] = []
    _diff_node([], a.root, b.root, out)
    return out


def _diff_node(names: list[str], x: DMNode, y: DMNode, out: list[Change]) -> None:
    if x.interior != y.interior:
        _subtree_changes("removed", names, x, out)
        _subtree_changes("added", names, y, out)
        return
    fields = tuple(f for f in DIFF_FIELDS if getattr(x, f) != getattr(y, f))
    if fields:
        out.append(Change("changed", join_uri(names), x.shallow_copy(), y.shallow_copy(),
                          fields, _secret(names, x) or _secret(names, y)))
    for name in sorted(x.children.keys() | y.children.keys()):
        cx, cy = x.children.get(name), y.children.get(name)
        if cx is None:
            _subtree_changes("added", names + [name], cy, out)  # type: ignore[arg-type]
        elif cy is None:
            _subtree_changes("removed", names + [name], cx, out)
        else:
            _diff_node(names + [name], cx, cy, out)


def _show(node: DMNode | None, secret: bool) -> str:
    if node is None:
        return ""
    if node.interior:
        return "(interior)"
    if secret:
        return "= <secret>"
    v = node.value
    if v is None:
        shown = "(no value)"
    elif isinstance(v, bytes):
        shown = f"<{len(v)} bytes>"
    else:
        shown = repr(v if len(v) <= 60 else v[:57] + "...")
    return f"= {shown} ({node.effective_format})"


def _field(node: DMNode, f: str, secret: bool) -> str:
    if f == "value" and secret:
        return "<secret>"
    v = getattr(node, f)
    if isinstance(v, bytes):
        return f"<{len(v)} bytes>"
    if isinstance(v, str) and len(v) > 60:
        v = v[:57] + "..."
    return repr(v)


def render_diff(changes: list[Change]) -> str:
    """Readable preview for restore --dry-run. Secret values are always masked."""
    if not changes:
        return "no changes\n"
    lines = []
    for c in changes:
        if c.kind == "added":
            lines.append(f"+ {c.uri} {_show(c.after, c.secret)}")
        elif c.kind == "removed":
            lines.append(f"- {c.uri} {_show(c.before, c.secret)}")
        else:
            assert c.before is not None and c.after is not None
            parts = [f"{DIFF_FIELDS[f]} {_field(c.before, f, c.secret)} -> "
                     f"{_field(c.after, f, c.secret)}" for f in c.fields]
            lines.append(f"~ {c.uri}: " + "; ".join(parts))
    counts = {k: sum(1 for c in changes if c.kind == k) for k in ("added", "removed", "changed")}
    lines.append(f"{counts['added']} added, {counts['removed']} removed, "
                 f"{counts['changed']} changed")
    return "\n".join(lines) + "\n"


def apply_restore(live: DMTree, restored: DMTree, scopes: Iterable[str] | None = None, *,
                  keep_live_secrets: bool = False,
                  check: Callable[[DMTree], None] | None = None,
                  dry_run: bool = False) -> list[Change]:
    """Replace each scope of live with the restored subtree, all-or-nothing.

    Works on a copy of live; the copy is validated, then ``check`` (e.g. an
    agent's policy) may raise to refuse it; only then is it swapped into
    ``live`` (same object, new contents). On any error live is unchanged.
    Missing ancestors are created from the restored tree. With
    keep_live_secrets, secret leaves keep their live values. With dry_run,
    nothing is swapped. Returns diff(live_before, live_after).
    """
    scope_list = list(scopes) if scopes is not None else ["."]
    work = live.copy()
    for names in _disjoint_scopes(scope_list):
        uri = join_uri(names)
        if restored.find(uri) is None:
            raise NodeNotFound(f"the backup holds no node {uri}; restore a scope it contains")
        _graft(work, restored, names)
        if not names:
            work.man, work.mod = restored.man, restored.mod
    if keep_live_secrets:
        work = merge_keep_secrets(work, live)
    try:
        work.validate()
    except TreeError as exc:
        raise TreeError(f"restored tree is invalid, nothing applied: {exc}") from None
    if check is not None:
        check(work)
    changes = diff(live, work)
    if not dry_run:
        live.replace_contents(work)
    return changes
