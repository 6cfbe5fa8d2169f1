"""The last step of reading TNDS: the MgmtTree header, the root, continuations, errors.

A document without continuations is already a tree when the parser is done
(tnds_read builds it bottom-up); only its top-level nodes are attached here.
A continuation (a <Node> with <Path>, or one stated twice) is replayed
top-down over the parsed fragments with the rules TNDS readers follow: a
node stated again merges into the first (a property given twice differently
is refused), a <Path> puts its node under that URI, and a node with children
is interior. Errors found while building bottom-up name a node by its URI,
which is only known once the tree is whole: they are raised here.
"""
from __future__ import annotations

from host.errors import TreeError
from host.tree.model import DMNode, DMTree
from host.tree.uri import join_uri, split_uri

__all__ = ["finish", "set_prop"]

_STATED = ("acl", "format", "rt_name", "size", "title", "tstamp", "type", "verno")


def finish(b) -> DMTree:  # type: ignore[no-untyped-def]  # b: tnds_read._Builder (no import: a circle)
    """The DMTree of a parsed document (b holds its top-level fragments)."""
    tree = DMTree()
    root_el = b.root_el
    for el in root_el:
        tag = b.name_of(el.tag)
        if tag == "VerDTD":
            ver = b.text(el).strip()
            if not ver.startswith("1."):
                raise TreeError(f"TNDS VerDTD {ver!r} is not supported; expected 1.2")
        elif tag == "Man":
            tree.man = b.text(el)
        elif tag == "Mod":
            tree.mod = b.text(el)
        elif tag != "Node":
            raise TreeError(f"TNDS: unexpected element <{tag}> in MgmtTree")
    root_el.clear()
    tops, b.built = b.built, []
    if not b.replay:
        _attach_tops(b, tree, tops)
    if b.replay:            # set by a <Path>, or by a node stated twice (maybe at the top)
        tree = DMTree(man=tree.man, mod=tree.mod)
        for frag in tops:
            _apply(b, frag, tree, [], top_level=True)
        for _node, message in b.deferred:
            if message.startswith("TNDS: bin value"):
                raise TreeError(message.replace("{uri}", repr(_node.name)))
        try:
            tree.validate()
        except TreeError as exc:
            raise TreeError(f"TNDS invalid: {exc}") from None
        return tree
    if b.deferred:
        _raise_first(tree, b.deferred)
    try:
        tree.root.validate(is_root=True)
    except TreeError as exc:
        raise TreeError(f"TNDS invalid: .: {exc}") from None
    return tree


def _attach_tops(b, tree: DMTree, tops: list[DMNode]) -> None:  # type: ignore[no-untyped-def]
    root = tree.root
    table = root.children
    for frag in tops:
        name = frag.name
        if name in ("", "."):
            if frag.value is not None:
                raise TreeError("TNDS: the root node cannot hold a value")
            _merge_props(root, frag)
            children = list(frag.children.values())
        elif "/" in name:
            raise TreeError(f"TNDS: invalid NodeName {name!r} under .")
        else:
            children = [frag]
        for child in children:
            if child.name in table:
                b.replay = True
                return
            table[child.name] = child


def _raise_first(tree: DMTree, deferred: list[tuple[DMNode, str]]) -> None:
    wanted = {id(node) for node, _ in deferred}
    uris: dict[int, str] = {}
    for uri, node in tree.walk():
        if id(node) in wanted:
            uris[id(node)] = uri
    node, message = deferred[0]
    raise TreeError(message.replace("{uri}", uris.get(id(node), repr(node.name))))


def set_prop(node: DMNode, attr: str, value: object) -> None:
    old = getattr(node, attr)
    if old not in (None, False) and old != value:
        raise TreeError(f"TNDS: node {node.name!r} states {attr} twice, differently")
    setattr(node, attr, value)


def _merge_props(node: DMNode, frag: DMNode) -> None:
    """The RT properties frag states, onto node (refused when node states one otherwise)."""
    for attr in _STATED:
        value = getattr(frag, attr)
        if value is not None:
            set_prop(node, attr, value)
    if frag.type_is_ddf:
        set_prop(node, "type_is_ddf", True)


def _apply(b, frag: DMNode, tree: DMTree, context: list[str], *, top_level: bool) -> None:  # type: ignore[no-untyped-def]
    """One fragment onto tree, as a top-down TNDS reader reads its <Node>."""
    path = b.paths.get(id(frag))
    base = split_uri(path.strip(), allow_trailing_slash=True) if path is not None else context
    name = frag.name
    if name in ("", ".") and top_level and path is None:
        names: list[str] = []
    else:
        if name in ("", ".") or "/" in name:
            raise TreeError(f"TNDS: invalid NodeName {name!r} under {join_uri(base)}")
        names = base + [name]
    node = _ensure(tree, names)
    kids = b.lists.get(id(frag))
    if kids is None:
        kids = list(frag.children.values())
    _merge_props(node, frag)
    if node.format == "node" or kids:
        node.interior = True
    if frag.value is not None:
        if not names:
            raise TreeError("TNDS: the root node cannot hold a value")
        node.interior = False
        set_prop(node, "value", frag.value)
    elif not node.interior and node.format is None:
        node.interior = True  # no Value, no Format: an interior node (or a continuation)
    for kid in kids:
        _apply(b, kid, tree, names, top_level=False)


def _ensure(tree: DMTree, names: list[str]) -> DMNode:
    node = tree.root
    for i, name in enumerate(names):
        child = node.children.get(name)
        if child is None:
            if not node.interior:
                raise TreeError(f"TNDS: {join_uri(names[:i])} is a leaf but has children")
            child = DMNode(name, interior=i < len(names) - 1)
            node.children[name] = child
        elif i < len(names) - 1 and not child.interior:
            child.interior = True  # a node stated without Value/Format may get children
        node = child
    return node
