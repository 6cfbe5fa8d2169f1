"""Reading a device's management tree with standard OMA DM 1.2 Gets, paged across messages.

Strategies, tried in order; a strategy the client answers 400/405/406/501 is
dropped and the next one starts over (nothing of the first is kept):

``tnds``        Get <scope>?list=TNDS+Format+Type+Value: one object per scope (a large
                object when big). Answered 413/416 (too big for the client to send), the
                node's children are listed and read one TNDS each.
``structdata``  Get <scope>?list=StructData: one Results item per node (Source = its
                URI, Meta Format/Type, Data = a leaf's value).
``walk``        Get on every node: an interior node (Format node) gives its child names,
                a leaf its value; Get ?prop=Format when a client leaves Format out.

At most ``gets_per_message`` Gets are outstanding at a time (the Channel packs them
within the client's MaxMsgSize). Every answer is checked once the client's package
is complete (:meth:`TreeReader.end_of_package`): a Get answered without whole
Results, Results that do not parse, names that are not node names, a chr value that
is not UTF-8, a tree above the node or byte cap -> :class:`ReadError`, one line.
A node the client may not let us read (401/403/425) is skipped and listed in
``refused``.
"""
from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from collections import deque
from dataclasses import dataclass, field

from host.errors import SimvaultError, TreeError
from host.syncml import model as m
from host.syncml.codec import serialize_element
from host.syncml.status import status_name
from host.tree import safexml
from host.tree.model import FORMATS, DMNode, DMTree
from host.tree.tnds import read_tnds
from host.tree.uri import InvalidUri, join_uri, normalize_uri, split_uri

from .config import STRATEGIES

NOT_SUPPORTED = frozenset({400, 405, 406, 501})  # the query is not available: next strategy
TOO_BIG = frozenset({413, 416})                  # the client cannot send that object: split it
UNREADABLE = frozenset({401, 403, 425})          # a node we may not Get: reported, skipped
TNDS_QUERY = "?list=TNDS+Format+Type+Value"
STRUCT_QUERY = "?list=StructData"
FIRST_KIND = {"tnds": "tnds", "structdata": "struct", "walk": "get"}


class ReadError(SimvaultError):
    """The device's answers cannot make a faithful copy of its tree (the job fails)."""


@dataclass(frozen=True)
class Limits:
    max_nodes: int
    max_bytes: int
    gets_per_message: int


@dataclass
class _Pending:
    kind: str  # tnds | struct | get | fmt | children
    uri: str
    code: int | None = None
    items: list[tuple[m.Item, m.Meta | None]] = field(default_factory=list)


def disjoint_scope(scope: list[str] | None) -> list[str]:
    """Scope URIs, canonical, shallowest first, none inside another ([] or None: the root)."""
    out: list[list[str]] = []
    for names in sorted((split_uri(s) for s in (scope or ["."])), key=len):
        if not any(names[:len(o)] == o for o in out):
            out.append(names)
    return [join_uri(n) for n in out]


def item_text(data: object, what: str) -> str:
    """Item data as text: str as is, bytes as strict UTF-8, nested XML serialised."""
    if data is None:
        return ""
    if isinstance(data, ET.Element):
        return serialize_element(data)
    if isinstance(data, bytes):
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise ReadError(f"{what}: the device sent data that is not UTF-8") from None
    return str(data)


def leaf_from(name: str, uri: str, data: object, fmt: str | None, mime: str | None) -> DMNode:
    """A leaf as read: b64 kept as base64 text (bytes from the wire are encoded back)."""
    fmt = (fmt or "chr").strip()
    if fmt not in FORMATS or fmt == "node":
        raise ReadError(f"{uri}: the device gave Format {fmt[:20]!r}, not an OMA DM format")
    if fmt in ("b64", "bin") and isinstance(data, bytes):
        value: str | bytes = base64.b64encode(data).decode("ascii")
        fmt = "b64"
    elif fmt == "bin":  # binary as text (no b64 Format on the wire): its UTF-8 bytes, kept as b64
        value, fmt = base64.b64encode(item_text(data, uri).encode("utf-8")).decode("ascii"), "b64"
    else:
        value = item_text(data, uri)
    return DMNode(name, value=value, format=fmt, type=mime or None)


def child_names(data: object, uri: str) -> list[str]:
    """An interior node's child list 'a/b/c' ('' or none: no children). A trailing NUL is a C
    string's terminator sent along (libdmclient's memory plugin, in WBXML): dropped."""
    text = item_text(data, uri).rstrip("\x00").strip()
    if not text:
        return []
    names = text.split("/")
    for n in names:
        if n in ("", ".", "..") or len(n) > 255 or "\x00" in n:
            raise ReadError(f"{uri}: the device's child list {text[:60]!r} holds an invalid node name")
    if len(set(names)) != len(names):
        raise ReadError(f"{uri}: the device's child list names a node twice")
    return names


class TreeReader:
    """See module doc. Drive it with next_gets / on_status / on_item / end_of_package."""

    def __init__(self, scope: list[str] | None, limits: Limits, strategies: tuple[str, ...] = STRATEGIES) -> None:
        unknown = [s for s in strategies if s not in STRATEGIES]
        if unknown or not strategies:
            raise ReadError(f"unknown read strategy {unknown[:1]}: use {', '.join(STRATEGIES)}")
        self.scope = disjoint_scope(scope)
        self.limits = limits
        self.strategies = list(strategies)
        self.fallbacks: list[str] = []  # "tnds: 406" for each strategy the client refused
        self.refused: list[tuple[str, int]] = []
        self.gets = 0
        self._next_key = 0
        self._restart(self.strategies.pop(0))

    def _restart(self, strategy: str) -> None:
        self.strategy = strategy
        self.tree = DMTree()
        self.nodes = 1
        self.bytes = 0
        self.todo: deque[tuple[str, str]] = deque((FIRST_KIND[strategy], u) for u in self.scope)
        self.outstanding: dict[int, _Pending] = {}
        self.refused = []
        self._fmt_data: dict[str, tuple[object, str | None]] = {}  # walk answers waiting for ?prop=Format

    @property
    def done(self) -> bool:
        return not self.todo and not self.outstanding

    # ------------------------------------------------------------ sending
    def next_gets(self) -> list[tuple[int, str]]:
        """(key, Target LocURI) of the Gets to send now; the answers come back under key."""
        out = []
        while self.todo and len(self.outstanding) < self.limits.gets_per_message:
            kind, uri = self.todo.popleft()
            self._next_key += 1
            self.outstanding[self._next_key] = _Pending(kind, uri)
            query = {"tnds": TNDS_QUERY, "struct": STRUCT_QUERY, "fmt": "?prop=Format"}.get(kind, "")
            out.append((self._next_key, uri + query))
        self.gets += len(out)
        return out

    # ------------------------------------------------------------ answers
    def on_status(self, key: int, code: int) -> None:
        pending = self.outstanding.get(key)
        if pending is not None and pending.code is None:
            pending.code = code

    def on_item(self, key: int, item: m.Item, cmd_meta: m.Meta | None = None) -> None:
        pending = self.outstanding.get(key)
        if pending is None:
            return
        self._count_bytes(item.data, pending.uri)
        pending.items.append((item, cmd_meta))

    def _count_bytes(self, data: object, uri: str) -> None:
        size = len(data) if isinstance(data, (str, bytes)) else len(item_text(data, uri))
        self.bytes += size
        if self.bytes > self.limits.max_bytes:
            raise ReadError(f"the tree holds more than {self.limits.max_bytes} bytes of data (at {uri}): "
                            "raise dm server --agentless-max-bytes or narrow the job's --scope")

    def end_of_package(self) -> None:
        """The client's package is complete: handle every answered Get (ReadError on bad input)."""
        answered = sorted(self.outstanding.items())
        self.outstanding = {}
        for _, pending in answered:
            strategy = self.strategy
            self._handle(pending)
            if self.strategy != strategy:
                return  # a fallback started over: the rest of the batch belongs to the old strategy

    def _handle(self, p: _Pending) -> None:
        code = p.code
        if code is None:
            raise ReadError(f"the device did not answer Get {p.uri} (no Status): it stopped mid-read")
        if code in NOT_SUPPORTED and p.kind in ("tnds", "struct"):
            self.fallbacks.append(f"{self.strategy}: {code}")
            if not self.strategies:
                raise ReadError(f"the device answered {code} to every read strategy")
            self._restart(self.strategies.pop(0))
            return
        if code in TOO_BIG and p.kind in ("tnds", "struct"):
            self.todo.append(("children", p.uri))
            return
        if code == 404:
            if p.uri in self.scope:
                raise ReadError(f"scope {p.uri} does not exist on the device (404): fix the job's --scope")
            self.refused.append((p.uri, code))  # listed by its parent, gone since
            return
        if code in UNREADABLE:
            self.refused.append((p.uri, code))
            return
        if not 200 <= code < 300:
            asked = p.uri + ("?prop=Format (it sent a value without Format)" if p.kind == "fmt" else "")
            raise ReadError(f"the device answered Get {asked} with {code} ({status_name(code)})")
        if not p.items:
            raise ReadError(f"the device answered Get {p.uri} with {code} but no whole Results arrived "
                            "(malformed or partial Results, or a large object whose Size was wrong)")
        try:
            getattr(self, "_on_" + p.kind)(p)
        except (TreeError, InvalidUri, safexml.XmlError) as exc:
            raise ReadError(f"the device's answer for {p.uri} is malformed: {exc}") from None

    # ------------------------------------------------------------ per kind
    def _one(self, p: _Pending) -> tuple[m.Item, m.Meta | None]:
        if len(p.items) != 1:
            raise ReadError(f"the device sent {len(p.items)} Results items for Get {p.uri}; expected one")
        return p.items[0]

    def _on_tnds(self, p: _Pending) -> None:
        item, _ = self._one(p)
        text = item_text(item.data, p.uri)
        limits = safexml.XmlLimits(max_bytes=self.limits.max_bytes,
                                   max_elements=8 * self.limits.max_nodes + 64)
        fragment = read_tnds(text, limits=limits)
        node = fragment.find(p.uri)
        names = split_uri(p.uri)
        if node is None and names and list(fragment.root.children) == [names[-1]]:
            node = fragment.root.children[names[-1]]  # a TNDS without <Path>: the node itself
        if node is None:
            raise ReadError(f"the device's TNDS for {p.uri} does not hold that node")
        self._put(p.uri, node)

    def _on_struct(self, p: _Pending) -> None:
        base = split_uri(p.uri)
        seen: set[str] = set()
        for item, cmd_meta in p.items:
            loc = (item.source or item.target).loc_uri if (item.source or item.target) else ""
            uri = normalize_uri(loc)
            names = split_uri(uri)
            if names[:len(base)] != base or uri in seen:
                raise ReadError(f"StructData for {p.uri} names {uri[:80]} (outside the asked node, or twice)")
            seen.add(uri)
            fmt, mime = _meta_of(item, cmd_meta)
            if fmt == "node":
                self._put(uri, DMNode(names[-1] if names else ".", interior=True, type=mime), keep_children=True)
            else:
                if not names:
                    raise ReadError("StructData gives the root a value")
                self._put(uri, leaf_from(names[-1], uri, item.data, fmt, mime))
        if not seen or self.tree.find(p.uri) is None:
            raise ReadError(f"StructData for {p.uri} does not hold that node")

    def _on_get(self, p: _Pending) -> None:
        item, cmd_meta = self._one(p)
        fmt, mime = _meta_of(item, cmd_meta)
        self._walk_answer(p.uri, item.data, fmt, mime, then="get")

    def _on_children(self, p: _Pending) -> None:
        item, cmd_meta = self._one(p)
        fmt, mime = _meta_of(item, cmd_meta)
        self._walk_answer(p.uri, item.data, fmt, mime, then=FIRST_KIND[self.strategy])

    def _on_fmt(self, p: _Pending) -> None:
        item, _ = self._one(p)
        fmt = item_text(item.data, p.uri).strip().strip("\x00")  # libdmclient counts the C string's NUL
        value, mime = self._fmt_data.pop(p.uri, (None, None))
        self._walk_answer(p.uri, value, fmt or "chr", mime, then="get")

    def _walk_answer(self, uri: str, data: object, fmt: str | None, mime: str | None, then: str) -> None:
        names = split_uri(uri)
        if fmt is None:  # Format left out: ask for it, keep the data
            self.todo.appendleft(("fmt", uri))
            self._fmt_data[uri] = (data, mime)
            return
        if fmt == "node":  # (Meta Type here is the child list's, text/plain: not the node's Type)
            children = child_names(data, uri)
            self._put(uri, DMNode(names[-1] if names else ".", interior=True), keep_children=True)
            self._count_nodes(len(children), uri)
            for child in children:
                self.todo.append((then, join_uri(names + [child])))
            return
        if not names:
            raise ReadError("the device says the root '.' is a leaf")
        self._put(uri, leaf_from(names[-1], uri, data, fmt, mime))

    # ------------------------------------------------------------ the tree
    def _count_nodes(self, extra: int, uri: str) -> None:
        self.nodes += extra
        if self.nodes > self.limits.max_nodes:
            raise ReadError(f"the tree has more than {self.limits.max_nodes} nodes (at {uri}): raise "
                            "dm server --agentless-max-nodes or narrow the job's --scope")

    def _put(self, uri: str, node: DMNode, keep_children: bool = False) -> None:
        """Place node at uri, creating interior ancestors; keep_children: an interior node met
        again (StructData/walk) keeps what is already below it."""
        names = split_uri(uri)
        if not names:
            if node.interior:
                if not keep_children:
                    self._count_nodes(sum(1 for _ in DMTree(node).walk()) - 1, uri)
                    self.tree.root = node
                return
            raise ReadError("the device says the root '.' is a leaf")
        parent = self.tree.root
        for i, name in enumerate(names[:-1]):
            child = parent.children.get(name)
            if child is None:
                child = DMNode(name, interior=True)
                parent.children[name] = child
                self._count_nodes(1, uri)
            elif not child.interior:
                raise ReadError(f"{join_uri(names[:i + 1])} is a leaf but the device lists nodes below it")
            parent = child
        old = parent.children.get(names[-1])
        node.name = names[-1]
        if old is not None and keep_children and old.interior and node.interior:
            old.type = node.type or old.type
            return
        if old is not None and not (old.interior and not old.children):
            raise ReadError(f"the device gave {uri} twice")
        added = sum(1 for _ in DMTree(DMNode(".", interior=True, children={node.name: node})).walk()) - 1
        self._count_nodes(added - (1 if old is not None else 0), uri)
        node.validate()
        parent.children[names[-1]] = node


def _meta_of(item: m.Item, cmd_meta: m.Meta | None) -> tuple[str | None, str | None]:
    fmt = item.meta.format if item.meta and item.meta.format else (cmd_meta.format if cmd_meta else None)
    mime = item.meta.type if item.meta and item.meta.type else (cmd_meta.type if cmd_meta else None)
    return fmt, mime
