"""Node-level deltas between two DM trees: what changed, keyed by node path.

A delta turns an old tree into a new one, exactly (sibling order, Man/Mod and
every node field included): `apply_delta(old, diff_trees(old, new))` equals
`new`. It is what an incremental backup (archive format 3) stores instead of
re-chunking the whole plaintext, so its size follows what changed, not how the
changes are spread over the tree.

Encoding (integers are unsigned LEB128 varints; str = varint length + UTF-8
with surrogatepass; optstr = varint (length + 1) then the bytes, 0 = None):

    b"SVDLT\\x01"  op*
    op   := kind(1)  path  body
    path := varint keep  varint n  name*n     (the first `keep` names of the
                                              previous op's path, then n more)
    kind 1 SET    varint mask  field*         the node's own fields in mask
    kind 2 DEL                                delete the subtree at path
    kind 3 ADD    optstr after  subtree       insert after sibling `after` (None: first)
    kind 4 ORDER  varint n  str*n             the interior node's children, in order
    kind 5 HEADER optstr man  optstr mod      the tree's Man/Mod
    subtree := str name  byte interior  varint mask  field*  varint count  subtree*count

Fields, in mask bit order: 0 value (byte 0 None | 1 str | 2 bytes, then the
data), 1 format (byte: 0 None, 1 + index in FORMATS), 2 type (optstr),
3 type_is_ddf (byte), 4 acl, 5 title, 6 rt_name, 7 size, 8 tstamp, 9 verno
(optstr). In a subtree a missing bit means the field's default.

Ops come in a deterministic order (per node: its SET, its children's DELs,
ADDs and ORDER, then its kept children depth first), so one pair of trees has
one delta.
Applying is strict: an op that does not fit the tree raises IntegrityError
(every delta is authenticated before it is applied; a misfit is damage).
"""
from __future__ import annotations

from host.errors import IntegrityError, TreeError
from host.tree.model import FORMATS, DMNode, DMTree

DELTA_MAGIC = b"SVDLT\x01"
SET, DEL, ADD, ORDER, HEADER = 1, 2, 3, 4, 5
_STR_FIELDS = ("type", "acl", "title", "rt_name", "size", "tstamp", "verno")
_FIELD_BIT = {"value": 0, "format": 1, "type": 2, "type_is_ddf": 3, "acl": 4, "title": 5,
              "rt_name": 6, "size": 7, "tstamp": 8, "verno": 9}
_ALL_FIELDS = tuple(_FIELD_BIT)
_MAX_MASK = (1 << len(_ALL_FIELDS)) - 1
_BITS = tuple((1 << _FIELD_BIT[name], name) for name in _ALL_FIELDS)
_FMT_CODE = {f: i + 1 for i, f in enumerate(FORMATS)}
_MAX_DEPTH = 512


# ---- encoding ------------------------------------------------------------------------


class _Writer:
    def __init__(self) -> None:
        self.out = bytearray(DELTA_MAGIC)
        self.path: list[str] = []

    def varint(self, n: int) -> None:
        out = self.out
        while n >= 0x80:
            out.append((n & 0x7F) | 0x80)
            n >>= 7
        out.append(n)

    def str(self, s: str) -> None:
        b = s.encode("utf-8", "surrogatepass")
        self.varint(len(b))
        self.out += b

    def optstr(self, s: str | None) -> None:
        if s is None:
            self.out.append(0)
            return
        b = s.encode("utf-8", "surrogatepass")
        self.varint(len(b) + 1)
        self.out += b

    def op(self, kind: int, path: list[str]) -> None:
        prev = self.path
        keep = 0
        limit = min(len(prev), len(path))
        while keep < limit and prev[keep] == path[keep]:
            keep += 1
        self.out.append(kind)
        self.varint(keep)
        self.varint(len(path) - keep)
        for name in path[keep:]:
            self.str(name)
        self.path = path

    def fields(self, node: DMNode, names: tuple[str, ...]) -> None:
        mask = 0
        for name in names:
            mask |= 1 << _FIELD_BIT[name]
        self.varint(mask)
        for name in _ALL_FIELDS:
            if not mask & (1 << _FIELD_BIT[name]):
                continue
            if name == "value":
                v = node.value
                if v is None:
                    self.out.append(0)
                elif isinstance(v, str):
                    self.out.append(1)
                    self.str(v)
                else:
                    self.out.append(2)
                    self.varint(len(v))
                    self.out += v
            elif name == "format":
                self.out.append(_FMT_CODE[node.format] if node.format is not None else 0)
            elif name == "type_is_ddf":
                self.out.append(int(node.type_is_ddf))
            else:
                self.optstr(getattr(node, name))

    def subtree(self, node: DMNode) -> None:
        stack = [node]
        while stack:
            n = stack.pop()
            self.str(n.name)
            self.out.append(int(n.interior))
            self.fields(n, tuple(f for f in _ALL_FIELDS if _non_default(n, f)))
            kids = list(n.children.values())
            self.varint(len(kids))
            stack.extend(reversed(kids))


def _non_default(node: DMNode, name: str) -> bool:
    return bool(node.type_is_ddf) if name == "type_is_ddf" else getattr(node, name) is not None


def _changed_fields(old: DMNode, new: DMNode) -> tuple[str, ...]:
    return tuple(f for f in _ALL_FIELDS if getattr(old, f) != getattr(new, f)
                 or type(getattr(old, f)) is not type(getattr(new, f)))


def diff_trees(old: DMTree, new: DMTree) -> bytes:
    """The delta that turns old into new (see the module doc)."""
    w = _Writer()
    if (old.man, old.mod) != (new.man, new.mod):
        w.op(HEADER, [])
        w.optstr(new.man)
        w.optstr(new.mod)
    _diff_node(w, old.root, new.root, [])
    return bytes(w.out)


def _diff_node(w: _Writer, old: DMNode, new: DMNode, path: list[str]) -> None:
    # an explicit stack, no recursion: DM trees may be deeper than Python's recursion limit.
    # Per node: its SET, then its children's DELs, ADDs (new order) and ORDER, then the
    # kept children, depth first in order.
    stack: list[tuple[DMNode, DMNode, list[str]]] = [(old, new, path)]
    while stack:
        o, n, p = stack.pop()
        changed = _changed_fields(o, n)
        if changed:
            w.op(SET, p)
            w.fields(n, changed)
        ok, nk = o.children, n.children
        if not ok and not nk:
            continue
        same = [name for name in ok if name in nk and ok[name].interior == nk[name].interior]
        same_set = set(same)
        for name in ok:
            if name not in same_set:
                w.op(DEL, p + [name])
        after: str | None = None
        kept_order = []
        for name, child in nk.items():
            if name in same_set:
                kept_order.append(name)
            else:
                w.op(ADD, p + [name])
                w.optstr(after)
                w.subtree(child)
            after = name
        if kept_order != same:
            w.op(ORDER, p)
            w.varint(len(nk))
            for name in nk:
                w.str(name)
        stack.extend((ok[name], nk[name], p + [name]) for name in reversed(kept_order))


# ---- decoding and applying -------------------------------------------------------------


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = len(DELTA_MAGIC)

    def fail(self, what: str) -> IntegrityError:
        return IntegrityError(f"backup delta does not apply at offset {self.pos}: {what}; damaged backup")

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise self.fail("truncated")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def varint(self) -> int:
        pos, data = self.pos, self.data
        if pos < len(data) and data[pos] < 0x80:    # the common case: one byte
            self.pos = pos + 1
            return data[pos]
        n = shift = 0
        while True:
            b = self.byte()
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7
            if shift > 63:
                raise self.fail("integer too large")

    def raw(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise self.fail("truncated")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def str(self) -> str:
        pos, data = self.pos, self.data
        if pos < len(data) and data[pos] < 0x80:    # a name or value under 128 bytes
            end = pos + 1 + data[pos]
            if end <= len(data):
                self.pos = end
                try:
                    return data[pos + 1:end].decode("utf-8", "surrogatepass")
                except UnicodeDecodeError:
                    raise self.fail("invalid UTF-8") from None
        try:
            return self.raw(self.varint()).decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise self.fail("invalid UTF-8") from None

    def optstr(self) -> str | None:
        n = self.varint()
        if n == 0:
            return None
        try:
            return self.raw(n - 1).decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise self.fail("invalid UTF-8") from None

    def fields(self, node: DMNode) -> None:
        mask = self.varint()
        if mask > _MAX_MASK:
            raise self.fail("unknown field")
        for bit, name in _BITS:
            if not mask & bit:
                continue
            if name == "value":
                tag = self.byte()
                if tag > 2:
                    raise self.fail("unknown value kind")
                node.value = None if tag == 0 else self.str() if tag == 1 else self.raw(self.varint())
            elif name == "format":
                code = self.byte()
                if code > len(FORMATS):
                    raise self.fail("unknown format code")
                node.format = FORMATS[code - 1] if code else None
            elif name == "type_is_ddf":
                node.type_is_ddf = bool(self.byte())
            else:
                setattr(node, name, self.optstr())

    def subtree(self) -> DMNode:
        root: DMNode | None = None
        stack: list[list] = []      # [parent, children still to read]
        while True:
            name = self.str()
            node = DMNode(name, interior=bool(self.byte()))
            self.fields(node)
            if stack:
                parent = stack[-1]
                if name in parent[0].children:
                    raise self.fail("duplicate child name")
                parent[0].children[name] = node
                parent[1] -= 1
            else:
                root = node
            count = self.varint()
            if count:
                if not node.interior or len(stack) >= _MAX_DEPTH:
                    raise self.fail("children under a leaf or a tree too deep")
                stack.append([node, count])
            while stack and stack[-1][1] == 0:
                stack.pop()
            if not stack:
                assert root is not None
                return root


def apply_delta(tree: DMTree, delta: bytes) -> None:
    """Apply delta to tree in place (IntegrityError, tree undefined, if it does not fit:
    callers apply onto a tree of their own, never onto the live one)."""
    if not delta.startswith(DELTA_MAGIC):
        raise IntegrityError("backup delta has a bad magic: damaged backup")
    r = _Reader(delta)
    names: list[str] = []            # the previous op's path
    nodes: list[DMNode] = [tree.root]  # nodes[i]: the node at names[:i], for a valid prefix
    n = len(delta)
    while r.pos < n:
        kind = r.byte()
        keep, more = r.varint(), r.varint()
        if keep > len(names) or keep + more > _MAX_DEPTH:
            raise r.fail("path prefix longer than the previous path")
        names = names[:keep] + [r.str() for _ in range(more)]
        del nodes[keep + 1:]
        edit = kind in (DEL, ADD)
        if edit and not names:
            raise r.fail("the root cannot be added or deleted")
        depth = len(names) - 1 if edit else len(names)
        while len(nodes) <= depth:
            nodes.append(_child(r, nodes[-1], names[len(nodes) - 1]))
        del nodes[depth + 1:]
        node = nodes[depth]
        if kind == DEL:
            if node.children.pop(names[-1], None) is None:
                raise r.fail("deleting a node that does not exist")
        elif kind == ADD:
            after = r.optstr()
            new = r.subtree()
            if new.name != names[-1] or new.name in node.children or not node.interior:
                raise r.fail("adding a node that exists or under a leaf")
            _insert(r, node, new, after)
            nodes.append(new)
            _validate(r, new, False)
        elif kind == SET:
            r.fields(node)
            _validate(r, node, node is tree.root, deep=False)
        elif kind == ORDER:
            order = [r.str() for _ in range(r.varint())]
            if len(order) != len(node.children) or set(order) != node.children.keys():
                raise r.fail("child order does not list the children")
            node.children = {name: node.children[name] for name in order}
        elif kind == HEADER and not names:
            tree.man, tree.mod = r.optstr(), r.optstr()
        else:
            raise r.fail(f"unknown op {kind}")


def _validate(r: _Reader, node: DMNode, is_root: bool, deep: bool = True) -> None:
    """What from_canonical checks of a node, for the nodes a delta adds or changes."""
    stack = [node]
    try:
        while stack:
            n = stack.pop()
            n.validate(is_root=is_root and n is node)
            if deep:
                stack.extend(n.children.values())
    except TreeError as exc:
        raise r.fail(f"it makes an invalid node ({exc})") from None


def _child(r: _Reader, node: DMNode, name: str) -> DMNode:
    child = node.children.get(name)
    if child is None:
        raise r.fail(f"no node {name!r} on the path")
    return child


def _insert(r: _Reader, parent: DMNode, node: DMNode, after: str | None) -> None:
    kids = parent.children
    if after is not None and after not in kids:
        raise r.fail(f"sibling {after!r} to insert after does not exist")
    if kids and after == next(reversed(kids)):
        kids[node.name] = node           # appending: the common case, O(1)
        return
    items = list(kids.items())
    at = 0 if after is None else [k for k, _ in items].index(after) + 1
    items.insert(at, (node.name, node))
    parent.children = dict(items)
