"""OMA DM TNDS (Tree and Description Serialization, MgmtTree XML, syncml:dmddf1.2).

Reading keeps everything a TNDS states: Man/Mod, every RT property as written,
empty values (<Value/> is "", no <Value> is None), b64 values as their text,
bin values decoded to bytes. Nodes may be split across the document with a
<Path> giving the insertion point (TNDS "continuation"); the pieces are merged.

Writing is deterministic (children in tree order, RTProperties in DTD order)
and lossless for anything XML can carry: CR is written as &#13;, a bin value
as base64. A root node with properties (usually its ACL) is written as a
top-level <Node> named "." -- a simvault convention, read back the same way.
"""
from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator

from host.errors import TreeError
from host.tree import safexml
from host.tree.model import PROP_NAMES, DMNode, DMTree, NodeExists
from host.tree.tnds_read import DEFAULT_TREE_LIMITS, TNDS_NS, TreeLimits, read_tnds, read_tnds_file
from host.tree.uri import join_uri, split_uri

__all__ = [
    "ALL_PROPS",
    "DEFAULT_TREE_LIMITS",
    "TNDS_MIME_XML",
    "TNDS_NS",
    "TreeLimits",
    "export_tnds",
    "iter_tnds",
    "import_tnds",
    "parse_list_query",
    "parse_size",
    "read_tnds",
    "read_tnds_file",
    "write_tnds",
]

TNDS_MIME_XML = "application/vnd.syncml.dmtnds+xml"
ALL_PROPS = ("ACL", "Format", "Name", "Size", "Title", "TStamp", "Type", "VerNo")

# ---------------------------------------------------------------- writing
def _esc(text: str) -> str:
    return safexml.escape_text(text)


def _open_node(node: DMNode, out: list[str], pad: str, indent: str, values: bool,
               props: frozenset[str], path: str | None) -> None:
    """Everything of one <Node> before its children."""
    pad1 = pad + indent
    out.append(f"{pad}<Node>{pad1}<NodeName>{_esc(node.name)}</NodeName>")
    if path is not None:
        out.append(f"{pad1}<Path>{_esc(path)}</Path>")
    rt: list[str] = []
    pad2 = pad1 + indent
    if "ACL" in props and node.acl is not None:
        rt.append(f"{pad2}<ACL>{_esc(node.acl)}</ACL>")
    if "Format" in props and node.format is not None:
        rt.append(f"{pad2}<Format><{node.format}/></Format>")
    if "Name" in props and node.rt_name is not None:
        rt.append(f"{pad2}<Name>{_esc(node.rt_name)}</Name>")
    if "Size" in props and node.size is not None:
        rt.append(f"{pad2}<Size>{_esc(node.size)}</Size>")
    if "Title" in props and node.title is not None:
        rt.append(f"{pad2}<Title>{_esc(node.title)}</Title>")
    if "TStamp" in props and node.tstamp is not None:
        rt.append(f"{pad2}<TStamp>{_esc(node.tstamp)}</TStamp>")
    if "Type" in props and node.type is not None:
        kind = "DDFName" if node.type_is_ddf else "MIME"
        rt.append(f"{pad2}<Type><{kind}>{_esc(node.type)}</{kind}></Type>")
    if "VerNo" in props and node.verno is not None:
        rt.append(f"{pad2}<VerNo>{_esc(node.verno)}</VerNo>")
    if rt:
        out.append(f"{pad1}<RTProperties>{''.join(rt)}{pad1}</RTProperties>")
    if values and node.value is not None:
        if isinstance(node.value, bytes):
            out.append(f"{pad1}<Value>{base64.b64encode(node.value).decode('ascii')}</Value>")
        else:
            out.append(f"{pad1}<Value>{_esc(node.value)}</Value>")


_BATCH = 2048   # nodes between two hand-overs of the text written so far


def _nodes(node: DMNode, out: list[str], depth: int, indent: str, values: bool,
           props: frozenset[str], path: str | None) -> Iterator[None]:
    """Write node and its subtree into out (pre-order, no recursion), pausing every _BATCH nodes."""
    nl = "\n" if indent else ""
    stack: list[tuple[DMNode, int] | str] = [(node, depth)]
    n = 0
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        current, level = item
        pad = nl + indent * level
        _open_node(current, out, pad, indent, values, props, path if current is node else None)
        stack.append(f"{pad}</Node>")
        if current.children:
            stack.extend((child, level + 1) for child in reversed(current.children.values()))
        n += 1
        if n % _BATCH == 0:
            yield


def _write_node(node: DMNode, out: list[str], depth: int, indent: str, values: bool,
                props: frozenset[str], path: str | None) -> None:
    for _ in _nodes(node, out, depth, indent, values, props, path):
        pass


def _header(man: str | None, mod: str | None, indent: str) -> list[str]:
    nl = "\n" if indent else ""
    out = [f'<?xml version="1.0" encoding="UTF-8"?>{nl}<MgmtTree xmlns="{TNDS_NS}">',
           f"{nl}{indent}<VerDTD>1.2</VerDTD>"]
    if man is not None:
        out.append(f"{nl}{indent}<Man>{_esc(man)}</Man>")
    if mod is not None:
        out.append(f"{nl}{indent}<Mod>{_esc(mod)}</Mod>")
    return out


def iter_tnds(tree: DMTree, *, values: bool = True, props: Iterable[str] = ALL_PROPS,
              indent: str = "  ", top: tuple[DMNode, str | None] | None = None) -> Iterator[bytes]:
    """The tree as TNDS, in UTF-8 pieces of a few hundred KiB (write them to a file as
    they come: the document is never whole in memory). top: (node, path) writes that
    subtree only, its <Node> carrying <Path>."""
    prop_set = frozenset(props)
    out = _header(tree.man, tree.mod, indent)
    if top is not None:
        tops = [top]
    else:
        root = tree.root
        tops = [(child, None) for child in root.children.values()]
        if any(getattr(root, PROP_NAMES[p]) is not None for p in prop_set):
            tops.insert(0, (root.shallow_copy(), None))
    for node, path in tops:
        for _ in _nodes(node, out, 1, indent, values, prop_set, path):
            yield "".join(out).encode("utf-8")
            out.clear()
    out.append(("\n" if indent else "") + "</MgmtTree>" + ("\n" if indent else ""))
    yield "".join(out).encode("utf-8")


def write_tnds(tree: DMTree, *, values: bool = True, props: Iterable[str] = ALL_PROPS,
               indent: str = "  ") -> bytes:
    """The whole tree as TNDS bytes (deterministic). indent="" gives compact output."""
    return b"".join(iter_tnds(tree, values=values, props=props, indent=indent))


def export_tnds(tree: DMTree, uri: str = ".", *, values: bool = True,
                props: Iterable[str] = ALL_PROPS, indent: str = "  ") -> bytes:
    """Get <uri>?list=TNDS: the subtree at uri, its top Node carrying <Path> of its parent."""
    names = split_uri(uri)
    if not names:
        return write_tnds(tree, values=values, props=props, indent=indent)
    top = (tree.get(uri), join_uri(names[:-1]))
    return b"".join(iter_tnds(tree, values=values, props=props, indent=indent, top=top))


def parse_size(text: str) -> int:
    """'134217728', '128M', '64k', '1G' (K, M, G: powers of 1024) -> bytes; ValueError otherwise."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(t[-1:], 1)
    number = int(t[:-1] if scale > 1 else t)
    if number <= 0:
        raise ValueError(f"size {text!r} must be positive")
    return number * scale


def parse_list_query(query: str) -> tuple[frozenset[str], bool]:
    """'list=TNDS+ACL+Format+Value' (or 'TNDS+ACL') -> (props, include_values)."""
    q = query.removeprefix("list=")
    parts = q.split("+")
    if not parts or parts[0] != "TNDS":
        raise TreeError(f"list query {query!r} is not a TNDS request; write list=TNDS+ACL+Value")
    props: set[str] = set()
    values = False
    for p in parts[1:]:
        if p == "Value":
            values = True
        elif p in ALL_PROPS:
            props.add(p)
        else:
            raise TreeError(f"list query {query!r}: unknown item {p!r}")
    return frozenset(props), values


def import_tnds(tree: DMTree, parent_uri: str, data: bytes | str, *, mode: str = "add",
                limits: TreeLimits = DEFAULT_TREE_LIMITS) -> list[str]:
    """Add or Replace the subtrees of a TNDS fragment under parent_uri (all-or-nothing).

    The fragment's paths are read relative to its own root, and its top-level
    nodes are grafted under parent_uri: an export of ./DevDetail imported at
    '.' recreates ./DevDetail. mode "add" refuses (NodeExists) if any top
    node exists; "replace" replaces existing subtrees whole. Returns the URIs
    of the grafted top nodes.
    """
    if mode not in ("add", "replace"):
        raise TreeError(f"import mode {mode!r}: use 'add' or 'replace'")
    fragment = read_tnds(data, limits=limits)
    if fragment.root.shallow_copy() != DMNode(".", interior=True):
        raise TreeError("TNDS fragment sets properties of its root; import it at its parent")
    base = split_uri(parent_uri)
    parent = tree.get(parent_uri)
    if not parent.interior:
        raise TreeError(f"cannot import under {parent_uri}: it is a leaf")
    uris = [join_uri(base + [name]) for name in fragment.root.children]
    if mode == "add":
        clash = [u for u, n in zip(uris, fragment.root.children) if n in parent.children]
        if clash:
            raise NodeExists(f"node {clash[0]} already exists; use Replace")
    for name, node in fragment.root.children.items():
        parent.children[name] = node
    return uris
