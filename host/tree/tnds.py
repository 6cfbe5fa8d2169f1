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
import binascii
import xml.etree.ElementTree as ET
from collections.abc import Iterable

from host.errors import TreeError
from host.tree import safexml
from host.tree.model import FORMATS, PROP_NAMES, DMNode, DMTree, NodeExists
from host.tree.uri import join_uri, split_uri

__all__ = [
    "ALL_PROPS",
    "TNDS_MIME_XML",
    "TNDS_NS",
    "export_tnds",
    "import_tnds",
    "parse_list_query",
    "read_tnds",
    "write_tnds",
]

TNDS_NS = "syncml:dmddf1.2"
TNDS_MIME_XML = "application/vnd.syncml.dmtnds+xml"
ALL_PROPS = ("ACL", "Format", "Name", "Size", "Title", "TStamp", "Type", "VerNo")
_NODE_CHILDREN = {"NodeName", "Path", "RTProperties", "Value", "Node"}


def _text(el: ET.Element) -> str:
    if len(el):
        raise TreeError(f"TNDS element <{safexml.local_name(el.tag)}> must hold text only")
    return el.text or ""


# ---------------------------------------------------------------- reading
def read_tnds(data: bytes | str, *, limits: safexml.XmlLimits = safexml.DEFAULT_LIMITS) -> DMTree:
    """TNDS bytes -> DMTree. Raises XmlError/TreeError (one line) on bad input."""
    root_el = safexml.parse(data, limits)
    ns = safexml.namespace_of(root_el.tag)
    if safexml.local_name(root_el.tag) != "MgmtTree" or ns not in (None, TNDS_NS):
        raise TreeError(f"not a TNDS document: root is {root_el.tag!r}, expected MgmtTree "
                        f"in namespace {TNDS_NS}")
    tree = DMTree()
    for el in root_el:
        tag = safexml.local_name(el.tag)
        if tag == "VerDTD":
            ver = _text(el).strip()
            if not ver.startswith("1."):
                raise TreeError(f"TNDS VerDTD {ver!r} is not supported; expected 1.2")
        elif tag == "Man":
            tree.man = _text(el)
        elif tag == "Mod":
            tree.mod = _text(el)
        elif tag == "Node":
            _read_node(el, tree, [], top_level=True)
        else:
            raise TreeError(f"TNDS: unexpected element <{tag}> in MgmtTree")
    try:
        tree.validate()
    except TreeError as exc:
        raise TreeError(f"TNDS invalid: {exc}") from None
    return tree


def _read_props(el: ET.Element, node: DMNode) -> None:
    for prop in el:
        tag = safexml.local_name(prop.tag)
        if tag not in PROP_NAMES:
            raise TreeError(f"TNDS: unknown RT property <{tag}>")
        if tag == "Format":
            if len(prop):
                if len(prop) != 1:
                    raise TreeError("TNDS: <Format> must hold exactly one format element")
                fmt = safexml.local_name(prop[0].tag)
            else:
                fmt = (prop.text or "").strip()
            if fmt not in FORMATS:
                raise TreeError(f"TNDS: unknown Format {fmt!r}")
            _set_prop(node, "format", fmt)
        elif tag == "Type":
            if len(prop) == 0:
                _set_prop(node, "type", (prop.text or "").strip())
            elif len(prop) == 1 and safexml.local_name(prop[0].tag) in ("MIME", "DDFName"):
                _set_prop(node, "type", _text(prop[0]))
                _set_prop(node, "type_is_ddf", safexml.local_name(prop[0].tag) == "DDFName")
            else:
                raise TreeError("TNDS: <Type> must hold one <MIME> or <DDFName>")
        else:
            _set_prop(node, PROP_NAMES[tag], _text(prop))


def _set_prop(node: DMNode, attr: str, value: object) -> None:
    old = getattr(node, attr)
    if old not in (None, False) and old != value:
        raise TreeError(f"TNDS: node {node.name!r} states {attr} twice, differently")
    setattr(node, attr, value)


def _read_node(el: ET.Element, tree: DMTree, context: list[str], *, top_level: bool) -> None:
    name_el = path_el = props_el = value_el = None
    child_nodes: list[ET.Element] = []
    for sub in el:
        tag = safexml.local_name(sub.tag)
        if tag not in _NODE_CHILDREN:
            raise TreeError(f"TNDS: unexpected element <{tag}> in Node"
                            + (" (DDF, not TNDS)" if tag == "DFProperties" else ""))
        if tag == "Node":
            child_nodes.append(sub)
        elif {"NodeName": name_el, "Path": path_el, "RTProperties": props_el,
              "Value": value_el}[tag] is not None:
            raise TreeError(f"TNDS: <{tag}> given twice in one Node")
        elif tag == "NodeName":
            name_el = sub
        elif tag == "Path":
            path_el = sub
        elif tag == "RTProperties":
            props_el = sub
        else:
            value_el = sub
    if name_el is None:
        raise TreeError("TNDS: a Node has no <NodeName>")
    name = _text(name_el)
    if path_el is not None:
        base = split_uri(_text(path_el).strip(), allow_trailing_slash=True)
    else:
        base = context
    if name in ("", ".") and top_level and path_el is None:
        names: list[str] = []
    else:
        if name in ("", ".") or "/" in name:
            raise TreeError(f"TNDS: invalid NodeName {name!r} under {join_uri(base)}")
        names = base + [name]
    node = _ensure(tree, names)
    if props_el is not None:
        _read_props(props_el, node)
    if node.format == "node" or child_nodes:
        node.interior = True
    if value_el is not None:
        if not names:
            raise TreeError("TNDS: the root node cannot hold a value")
        node.interior = False
        text = _text(value_el)
        value: str | bytes = text
        if node.format == "bin":
            try:
                value = base64.b64decode("".join(text.split()), validate=True)
            except (binascii.Error, ValueError):
                raise TreeError(f"TNDS: bin value of {join_uri(names)} is not base64") from None
        _set_prop(node, "value", value)
    elif not node.interior and node.format is None:
        node.interior = True  # no Value, no Format: an interior node (or a continuation)
    for sub in child_nodes:
        _read_node(sub, tree, names, top_level=False)


def _ensure(tree: DMTree, names: list[str]) -> DMNode:
    node = tree.root
    for i, name in enumerate(names):
        child = node.children.get(name)
        if child is None:
            if not node.interior:
                raise TreeError(f"TNDS: {join_uri(names[:i])} is a leaf but has children")
            interior = i < len(names) - 1
            child = DMNode(name, interior=interior)
            node.children[name] = child
        elif i < len(names) - 1 and not child.interior:
            child.interior = True  # a node stated without Value/Format may get children
        node = child
    return node


# ---------------------------------------------------------------- writing
def _esc(text: str) -> str:
    return safexml.escape_text(text)


def _write_node(node: DMNode, out: list[str], depth: int, indent: str, values: bool,
                props: frozenset[str], path: str | None) -> None:
    nl = "\n" if indent else ""
    pad = nl + indent * depth
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
    for child in node.children.values():
        _write_node(child, out, depth + 1, indent, values, props, None)
    out.append(f"{pad}</Node>")


def _header(man: str | None, mod: str | None, indent: str) -> list[str]:
    nl = "\n" if indent else ""
    out = [f'<?xml version="1.0" encoding="UTF-8"?>{nl}<MgmtTree xmlns="{TNDS_NS}">',
           f"{nl}{indent}<VerDTD>1.2</VerDTD>"]
    if man is not None:
        out.append(f"{nl}{indent}<Man>{_esc(man)}</Man>")
    if mod is not None:
        out.append(f"{nl}{indent}<Mod>{_esc(mod)}</Mod>")
    return out


def write_tnds(tree: DMTree, *, values: bool = True, props: Iterable[str] = ALL_PROPS,
               indent: str = "  ") -> bytes:
    """The whole tree as TNDS bytes (deterministic). indent="" gives compact output."""
    prop_set = frozenset(props)
    out = _header(tree.man, tree.mod, indent)
    root = tree.root
    if any(getattr(root, PROP_NAMES[p]) is not None for p in prop_set):
        _write_node(root.shallow_copy(), out, 1, indent, values, prop_set, None)
    for child in root.children.values():
        _write_node(child, out, 1, indent, values, prop_set, None)
    out.append(("\n" if indent else "") + "</MgmtTree>" + ("\n" if indent else ""))
    return "".join(out).encode("utf-8")


def export_tnds(tree: DMTree, uri: str = ".", *, values: bool = True,
                props: Iterable[str] = ALL_PROPS, indent: str = "  ") -> bytes:
    """Get <uri>?list=TNDS: the subtree at uri, its top Node carrying <Path> of its parent."""
    names = split_uri(uri)
    if not names:
        return write_tnds(tree, values=values, props=props, indent=indent)
    node = tree.get(uri)
    out = _header(tree.man, tree.mod, indent)
    _write_node(node, out, 1, indent, values, frozenset(props), join_uri(names[:-1]))
    out.append(("\n" if indent else "") + "</MgmtTree>" + ("\n" if indent else ""))
    return "".join(out).encode("utf-8")


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
                limits: safexml.XmlLimits = safexml.DEFAULT_LIMITS) -> list[str]:
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
