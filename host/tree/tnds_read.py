"""Reading TNDS at the speed of the C parser, in memory bounded by the tree.

The document goes through ElementTree's C parser (expat underneath) in 16 KiB
pieces (read_tnds_file reads them from the file as it goes), with "end" events only; each <Node> is turned into a DMNode when it
ends (post-order: its child nodes are the last ones built) and its elements are
freed at once, so the XML is never held as a whole element tree.

Safety, as host/tree/safexml.py: before the C parser sees a byte, a strict
expat pass over the prolog (everything up to the root element's start) refuses
entity declarations, external references and parameter entities; without
declared entities, any other entity reference is an error of the C parser. The
limits (TreeLimits: bytes, element depth, nodes) are checked while parsing:
the depth from an upper bound (start tags fed minus elements ended), exact when
that bound is over the limit (the document is then parsed again with start
events, which is rare: many '<' inside comments or CDATA).

Continuations (<Path>, or a node stated twice) are replayed top-down with the
rules of the TNDS reader (tnds_merge.py), so they mean exactly what they did.
"""
from __future__ import annotations

import base64
import binascii
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from xml.parsers import expat

from host.errors import TreeError, XmlError
from host.tree.bulk import gc_paused
from host.tree.model import FORMATS, PROP_NAMES, DMNode, DMTree
from host.tree.safexml import local_name, namespace_of
from host.tree.tnds_merge import finish, set_prop

__all__ = ["DEFAULT_TREE_LIMITS", "TNDS_NS", "TreeLimits", "read_tnds", "read_tnds_file"]

TNDS_NS = "syncml:dmddf1.2"
PIECE = 16 * 1024
_NODE_CHILDREN = frozenset({"NodeName", "Path", "RTProperties", "Value", "Node"})
_INTERNED_PROPS = ("acl", "type", "size", "verno", "title", "rt_name", "tstamp")


@dataclass(frozen=True)
class TreeLimits:
    """Bounds on a TNDS document; each is a library argument and a CLI option (named
    in the error): max_bytes --max-tree-bytes, max_depth --max-depth (XML element
    nesting: a node nested n deep sits at about n + 4), max_nodes --max-nodes."""

    max_bytes: int = 128 * 1024 * 1024
    max_depth: int = 64
    max_nodes: int = 1_000_000

    @property
    def max_elements(self) -> int:
        return 12 * self.max_nodes + 64      # a node is at most ~8 elements in TNDS


DEFAULT_TREE_LIMITS = TreeLimits()


def _limit_error(what: str, option: str, value: int) -> XmlError:
    return XmlError(f"TNDS refused: {what}; raise {option} (now {value}) if the tree is genuine")


class _Prolog:
    """Strict expat over the prolog: refuses entities, stops at the root start tag."""

    class Root(Exception):
        pass

    def __init__(self) -> None:
        self.root_tag = ""

    def start(self, name: str, attrs: object) -> None:
        self.root_tag = name
        raise self.Root

    @staticmethod
    def refuse(what: str):  # type: ignore[no-untyped-def]
        def handler(*args: object) -> None:
            raise XmlError(f"XML refused: {what} {args[0] if args and what != 'external reference' else args[2]!r} "
                           "(entities are not allowed)")
        return handler

    def check(self, pieces: Iterator[bytes]) -> str:
        """The root's tag ('{ns}Name'); XmlError for entities or a malformed prolog."""
        p = expat.ParserCreate(namespace_separator="}")
        p.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        p.StartElementHandler = self.start
        p.EntityDeclHandler = self.refuse("entity declaration")
        p.UnparsedEntityDeclHandler = self.refuse("unparsed entity")
        p.ExternalEntityRefHandler = self.refuse("external reference")
        p.SkippedEntityHandler = self.refuse("undefined entity")
        try:
            for piece in pieces:
                p.Parse(piece, False)
            p.Parse(b"", True)
        except self.Root:
            return self.root_tag if "}" not in self.root_tag else "{" + self.root_tag
        except expat.ExpatError as exc:
            raise XmlError(f"XML malformed: {expat.errors.messages[exc.code]} "
                           f"at line {exc.lineno}, column {exc.offset}") from None
        raise XmlError("XML malformed: no root element")


def _malformed(exc: ET.ParseError) -> XmlError:
    line, col = exc.position
    return XmlError(f"XML malformed: {expat.errors.messages[exc.code]} at line {line}, column {col}")


class _LocalNames(dict):
    """'{ns}Name' -> 'Name', looked up as names[tag] (C speed once a tag has been seen)."""

    def __missing__(self, tag: str) -> str:
        name = self[tag] = local_name(tag)
        return name


class _Builder:
    """Turns the end events of one TNDS document into DMNodes (see the module doc)."""

    def __init__(self, limits: TreeLimits, root_tag: str) -> None:
        self.limits = limits
        self.root_tag = root_tag                                   # '{ns}MgmtTree' or 'MgmtTree'
        self.node_tag = root_tag[:-len("MgmtTree")] + "Node"
        self.depth = 0                                             # counted with start events only
        self.built: list[DMNode] = []     # post-order: finished nodes not yet attached
        self.heights: list[int] = []      # beside built: the height of each one's XML subtree
        self.names = _LocalNames()
        self.strings: dict[str, str] = {}
        self.nodes = 0
        self.elements = 0
        self.deferred: list[tuple[DMNode, str]] = []   # (node, message): needs the node's URI
        self.paths: dict[int, str] = {}                # id(fragment) -> its <Path>
        self.lists: dict[int, list[DMNode]] = {}       # id(fragment) -> children, stated twice
        self.replay = False
        self.root_el: ET.Element | None = None

    def name_of(self, tag: str) -> str:
        return self.names[tag]

    def events(self, queue: list, depth_exact: bool) -> None:
        node_tag, names = self.node_tag, self.names
        for ev, el in queue:
            if depth_exact:
                if ev == "start":
                    self.depth += 1
                    if self.depth > self.limits.max_depth:
                        raise self.too_deep()
                    continue
                self.depth -= 1
            self.elements += 1
            tag = el.tag
            if tag == node_tag or names[tag] == "Node":
                self.node(el)
            elif tag == self.root_tag and (not depth_exact or self.depth == 0):
                self.root_el = el
        queue.clear()
        if self.elements > self.limits.max_elements:
            raise _limit_error(f"more than {self.limits.max_elements} XML elements", "--max-nodes",
                               self.limits.max_nodes)

    def too_deep(self) -> XmlError:
        return _limit_error(f"elements nested deeper than {self.limits.max_depth}", "--max-depth",
                            self.limits.max_depth)

    def text(self, el: ET.Element) -> str:
        if len(el):
            raise TreeError(f"TNDS element <{self.name_of(el.tag)}> must hold text only")
        return el.text or ""

    def intern(self, value: str) -> str:
        return self.strings.setdefault(value, value)

    def node(self, el: ET.Element) -> None:
        self.nodes += 1
        if self.nodes > self.limits.max_nodes:
            raise _limit_error(f"more than {self.limits.max_nodes} nodes", "--max-nodes", self.limits.max_nodes)
        name_el = path_el = props_el = value_el = None
        kids = 0
        names = self.names
        for sub in el:
            tag = names[sub.tag]
            if tag == "Node":
                kids += 1
                continue
            if tag not in _NODE_CHILDREN:
                raise TreeError(f"TNDS: unexpected element <{tag}> in Node"
                                + (" (DDF, not TNDS)" if tag == "DFProperties" else ""))
            if tag == "NodeName":
                if name_el is not None:
                    raise TreeError("TNDS: <NodeName> given twice in one Node")
                name_el = sub
            elif tag == "RTProperties":
                if props_el is not None:
                    raise TreeError("TNDS: <RTProperties> given twice in one Node")
                props_el = sub
            elif tag == "Value":
                if value_el is not None:
                    raise TreeError("TNDS: <Value> given twice in one Node")
                value_el = sub
            else:
                if path_el is not None:
                    raise TreeError("TNDS: <Path> given twice in one Node")
                path_el = sub
        if name_el is None:
            raise TreeError("TNDS: a Node has no <NodeName>")
        node = DMNode(self.text(name_el))
        height = 2           # <Node><NodeName>: every other element is text only, but these
        if props_el is not None:
            height = self.props(props_el, node)
        if node.format == "node" or kids:
            node.interior = True
        if value_el is not None:
            node.interior = False
            text = self.text(value_el)
            if node.format == "bin":
                try:
                    node.value = base64.b64decode("".join(text.split()), validate=True)
                except (binascii.Error, ValueError):
                    self.deferred.append((node, "TNDS: bin value of {uri} is not base64"))
                    node.value = b""
            else:
                node.value = text
        elif not node.interior and node.format is None:
            node.interior = True
        if kids:
            height = max(height, 1 + self.attach(node, kids))
        if height >= self.limits.max_depth:     # and MgmtTree above it
            raise self.too_deep()
        self.heights.append(height)
        try:
            if node.name not in ("", ".") and "/" not in node.name:   # else the parent says so
                node.validate()
        except TreeError as exc:
            self.deferred.append((node, f"TNDS invalid: {{uri}}: {exc}"))
        if path_el is not None:
            self.paths[id(node)] = self.text(path_el)
            self.replay = True
        el.clear()
        self.built.append(node)

    def attach(self, node: DMNode, kids: int) -> int:
        """Make the last kids nodes built the children of node; their greatest height."""
        children = self.built[-kids:]
        del self.built[-kids:]
        height = max(self.heights[-kids:])
        del self.heights[-kids:]
        table = node.children
        for child in children:
            name = child.name
            if name in ("", ".") or "/" in name:
                self.deferred.append((node, f"TNDS: invalid NodeName {name!r} under {{uri}}"))
            if name in table or id(child) in self.paths:
                self.replay = True
            table[name] = child
        if self.replay:
            self.lists[id(node)] = children
        return height

    def props(self, el: ET.Element, node: DMNode) -> int:
        """Set node's RT properties from <RTProperties>; the height of that element in its Node."""
        height = 3
        names = self.names
        for prop in el:
            tag = names[prop.tag]
            attr = PROP_NAMES.get(tag)
            if attr is None:
                raise TreeError(f"TNDS: unknown RT property <{tag}>")
            if tag == "Format":
                if len(prop):
                    if len(prop) != 1 or len(prop[0]):
                        raise TreeError("TNDS: <Format> must hold exactly one empty format element")
                    value = names[prop[0].tag]
                    height = 4
                else:
                    value = (prop.text or "").strip()
                if value not in FORMATS:
                    raise TreeError(f"TNDS: unknown Format {value!r}")
                value = FORMATS[FORMATS.index(value)]
            elif tag == "Type":
                if len(prop) == 0:
                    value = (prop.text or "").strip()
                elif len(prop) == 1 and names[prop[0].tag] in ("MIME", "DDFName"):
                    value = self.text(prop[0])
                    set_prop(node, "type_is_ddf", names[prop[0].tag] == "DDFName")
                    height = 4
                else:
                    raise TreeError("TNDS: <Type> must hold one <MIME> or <DDFName>")
                value = self.intern(value)
            else:
                value = self.intern(self.text(prop))
            if getattr(node, attr) is None:
                setattr(node, attr, value)
            else:
                set_prop(node, attr, value)     # stated twice in one <RTProperties>
        return height if len(el) else 2


Pieces = Callable[[], Iterator[bytes]]      # a fresh pass over the document, PIECE bytes at a time


def _feed(pieces: Pieces, builder: _Builder, depth_exact: bool) -> None:
    parser = ET.XMLParser(target=ET.TreeBuilder())
    queue: list = []
    parser._setevents(queue, ("start", "end") if depth_exact else ("end",))  # type: ignore[attr-defined]
    limits = builder.limits
    opened = total = 0          # opened: an upper bound of the start tags parsed so far
    after_lt = False            # the previous piece ended in '<'
    try:
        for piece in pieces():
            total += len(piece)
            if total > limits.max_bytes:        # a file that grew since it was measured
                raise _too_big(f"more than {limits.max_bytes}", limits)
            parser.feed(piece)
            builder.events(queue, depth_exact)
            if not depth_exact:
                count = piece.count
                opened += count(b"<") - count(b"</") - count(b"<!") - count(b"<?")
                if after_lt and piece[:1] in (b"/", b"!", b"?"):
                    opened -= 1
                after_lt = piece.endswith(b"<")
                if opened - builder.elements > limits.max_depth:
                    raise _Exact
        parser.close()
        builder.events(queue, depth_exact)
    except ET.ParseError as exc:
        raise _malformed(exc) from None


def _too_big(size: str, limits: TreeLimits) -> XmlError:
    return _limit_error(f"{size} bytes exceeds the limit of {limits.max_bytes}", "--max-tree-bytes",
                        limits.max_bytes)


class _Exact(Exception):
    """The depth bound went over the limit: parse again, counting exactly."""


def read_tnds(data: bytes | str, *, limits: TreeLimits = DEFAULT_TREE_LIMITS) -> DMTree:
    """TNDS bytes -> DMTree. Raises XmlError/TreeError (one line) on bad input."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if len(data) > limits.max_bytes:
        raise _too_big(str(len(data)), limits)
    view = data
    with gc_paused():
        return _read(lambda: (view[i:i + PIECE] for i in range(0, len(view), PIECE)), limits)


def read_tnds_file(path: str | os.PathLike[str], *, limits: TreeLimits = DEFAULT_TREE_LIMITS) -> DMTree:
    """The TNDS tree in a file, read as it is parsed (the file is never whole in memory).
    OSError when it cannot be read; XmlError/TreeError as read_tnds."""
    size = os.stat(path).st_size
    if size > limits.max_bytes:
        raise _too_big(str(size), limits)

    def pieces() -> Iterator[bytes]:
        with open(path, "rb") as f:
            while piece := f.read(PIECE):
                yield piece
    with gc_paused():
        return _read(pieces, limits)


def _read(pieces: Pieces, limits: TreeLimits) -> DMTree:
    root_tag = _Prolog().check(pieces())
    if local_name(root_tag) != "MgmtTree" or namespace_of(root_tag) not in (None, TNDS_NS):
        raise TreeError(f"not a TNDS document: root is {root_tag!r}, expected MgmtTree in namespace {TNDS_NS}")
    builder = _Builder(limits, root_tag)
    try:
        _feed(pieces, builder, False)
    except _Exact:
        builder = _Builder(limits, root_tag)
        _feed(pieces, builder, True)
    return finish(builder)
