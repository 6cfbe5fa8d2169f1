"""Canonical bytes of a DM tree: the plaintext a backup compresses, signs and chunks.

Why a compact binary encoding rather than a canonical TNDS:
- exact for every value: XML cannot carry control characters and normalises
  CR, so a canonical TNDS would either refuse some trees or alter them;
- unambiguous: interior vs leaf, None vs "" and b64 text vs bin bytes are
  explicit, not inferred from which elements are present;
- no XML parser on the restore path, and 3-4x fewer bytes before compression
  (no tags), while the repeated names, ACLs and Types still compress well;
- one record per node in pre-order, so a changed leaf changes one record
  only (good for chunk-level dedup between incremental backups);
- children keep their order (the TNDS document order): a restored tree is
  written back byte for byte as the original was. DM does not order siblings,
  but users diff their files, and a backup must not reshuffle them.
TNDS stays the interchange format (Get ?list=TNDS, files); this is storage.

Layout (all integers are unsigned LEB128 varints, strings are varint length +
UTF-8 with surrogatepass):
    b"SVDMT" version(1)=1  flags(varint: bit0 Man, bit1 Mod)  [Man] [Mod]
    node := name  flags  format-code(1 byte: 0 none, 1+index in FORMATS)
            [ACL] [Name] [Size] [Title] [TStamp] [Type] [VerNo] [value]
            child-count  child...   (children in the tree's order; names unique)
Node flags: bit0 interior, bits1-7 ACL, Name, Size, Title, TStamp, Type,
VerNo present, bit8 Type is DDFName, bit9 value is str, bit10 value is bytes.
No timestamps or anything else outside the tree are added. Decoding refuses
anything that is not exactly what canonical_bytes would produce, so the
encoding of a tree is unique.
"""
from __future__ import annotations

from host.errors import TreeError
from host.tree.model import FORMATS, DMNode, DMTree

__all__ = ["CANONICAL_MAGIC", "canonical_bytes", "from_canonical"]

CANONICAL_MAGIC = b"SVDMT\x01"
_OPT_FIELDS = ("acl", "rt_name", "size", "title", "tstamp", "type", "verno")
_MAX_DEPTH = 512
_FMT_CODE = {f: i + 1 for i, f in enumerate(FORMATS)}


def _varint(n: int, out: bytearray) -> None:
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _str(s: str, out: bytearray) -> None:
    b = s.encode("utf-8", "surrogatepass")
    _varint(len(b), out)
    out += b


def _sort_key(name: str) -> bytes:
    return name.encode("utf-8", "surrogatepass")


def canonical_bytes(tree: DMTree) -> bytes:
    """The tree's unique byte encoding (see module doc); same tree, same bytes."""
    out = bytearray(CANONICAL_MAGIC)
    _varint((tree.man is not None) | ((tree.mod is not None) << 1), out)
    if tree.man is not None:
        _str(tree.man, out)
    if tree.mod is not None:
        _str(tree.mod, out)
    stack = [tree.root]
    while stack:
        node = stack.pop()
        _str(node.name, out)
        flags = int(node.interior)
        for bit, attr in enumerate(_OPT_FIELDS, start=1):
            if getattr(node, attr) is not None:
                flags |= 1 << bit
        if node.type_is_ddf:
            flags |= 1 << 8
        if isinstance(node.value, str):
            flags |= 1 << 9
        elif isinstance(node.value, bytes):
            flags |= 1 << 10
        _varint(flags, out)
        out.append(_FMT_CODE[node.format] if node.format is not None else 0)
        for attr in _OPT_FIELDS:
            v = getattr(node, attr)
            if v is not None:
                _str(v, out)
        if isinstance(node.value, str):
            _str(node.value, out)
        elif isinstance(node.value, bytes):
            _varint(len(node.value), out)
            out += node.value
        children = list(node.children.values())
        _varint(len(children), out)
        stack.extend(reversed(children))
    return bytes(out)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def fail(self, what: str) -> TreeError:
        return TreeError(f"canonical tree bytes corrupt at offset {self.pos}: {what}; "
                         "the backup is damaged or not a simvault tree")

    def varint(self) -> int:
        n = shift = 0
        while True:
            if self.pos >= len(self.data):
                raise self.fail("truncated")
            b = self.data[self.pos]
            self.pos += 1
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                if b == 0 and shift:
                    raise self.fail("non-minimal integer")
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
        try:
            return self.raw(self.varint()).decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise self.fail("invalid UTF-8") from None


def from_canonical(data: bytes) -> DMTree:
    """Exactly reverses canonical_bytes; TreeError on anything else."""
    if not data.startswith(CANONICAL_MAGIC):
        raise TreeError("not canonical simvault tree bytes (bad magic or version)")
    r = _Reader(data)
    r.pos = len(CANONICAL_MAGIC)
    hflags = r.varint()
    if hflags & ~3:
        raise r.fail("unknown header flags")
    man = r.str() if hflags & 1 else None
    mod = r.str() if hflags & 2 else None
    # stack of (parent, children still to read, previous child name key)
    root: DMNode | None = None
    stack: list[list] = []
    while True:
        node = _read_node(r)
        if stack:
            frame = stack[-1]
            if node.name in frame[0].children:
                raise r.fail("duplicate child name")
            frame[0].children[node.name] = node
            frame[1] -= 1
        else:
            root = node
        count = r.varint()
        if count:
            if not node.interior:
                raise r.fail("leaf with children")
            if len(stack) >= _MAX_DEPTH:
                raise r.fail("tree too deep")
            stack.append([node, count, None])
        while stack and stack[-1][1] == 0:
            stack.pop()
        if not stack:
            break
    if r.pos != len(data):
        raise r.fail("trailing bytes")
    assert root is not None
    if root.name != "." or not root.interior:
        raise r.fail("root is not '.'")
    tree = DMTree(root, man, mod)
    try:
        tree.validate()
    except TreeError as exc:
        raise r.fail(str(exc)) from None
    return tree


def _read_node(r: _Reader) -> DMNode:
    name = r.str()
    flags = r.varint()
    if flags >> 11 or (flags >> 9) & 3 == 3:
        raise r.fail("unknown node flags")
    code = r.raw(1)[0]
    if code > len(FORMATS):
        raise r.fail("unknown format code")
    node = DMNode(name, interior=bool(flags & 1))
    node.format = FORMATS[code - 1] if code else None
    for bit, attr in enumerate(_OPT_FIELDS, start=1):
        if flags & (1 << bit):
            setattr(node, attr, r.str())
    node.type_is_ddf = bool(flags & (1 << 8))
    if flags & (1 << 9):
        node.value = r.str()
    elif flags & (1 << 10):
        node.value = r.raw(r.varint())
    return node
