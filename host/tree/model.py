"""The OMA DM management tree: nodes with run-time properties, and ACLs.

A node keeps exactly what was read: a property that a TNDS did not state is
None (not a default), an empty ACL stays "" (not None). Leaf values are ``str``
for every Format except ``bin``, whose value is raw ``bytes``; a ``b64`` value
is kept as the base64 text it was given (``DMNode.data`` decodes it).

Children are kept in insertion order (TNDS order); equality ignores order,
since OMA DM node names are a set.
"""
from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from dataclasses import dataclass, field

from host.errors import TreeError
from host.tree.uri import InvalidUri, join_uri, split_uri

__all__ = [
    "ACL_COMMANDS",
    "DEFAULT_ROOT_ACL",
    "FORMATS",
    "PROP_NAMES",
    "Acl",
    "DMNode",
    "DMTree",
    "InvalidUri",
    "NodeExists",
    "NodeNotFound",
    "NotAllowed",
]

FORMATS = ("b64", "bin", "bool", "chr", "int", "node", "null", "xml", "date", "time", "float")
ACL_COMMANDS = ("Add", "Delete", "Exec", "Get", "Replace")
# TNDS RTProperties element name -> DMNode attribute
PROP_NAMES = {"ACL": "acl", "Format": "format", "Name": "rt_name", "Size": "size",
              "Title": "title", "TStamp": "tstamp", "Type": "type", "VerNo": "verno"}
DEFAULT_ROOT_ACL = "Add=*&Get=*"  # OMA DM 1.2 TND: the root ACL when none is set


class NodeNotFound(TreeError):
    dm_status = 404


class NodeExists(TreeError):
    dm_status = 418


class NotAllowed(TreeError):
    """The command is not allowed on this node (interior vs leaf, root)."""

    dm_status = 405


@dataclass(eq=False, slots=True)
class DMNode:
    """One node. ``interior`` nodes have children and no value."""

    name: str
    interior: bool = False
    value: str | bytes | None = None
    format: str | None = None
    type: str | None = None
    type_is_ddf: bool = False   # Type given as <DDFName> (MO URN) rather than <MIME>
    acl: str | None = None
    title: str | None = None
    rt_name: str | None = None  # the RT property "Name"
    size: str | None = None
    tstamp: str | None = None
    verno: str | None = None
    children: dict[str, DMNode] = field(default_factory=dict)

    def validate(self, *, is_root: bool = False) -> None:
        """Raise TreeError when the node's own fields contradict each other."""
        if is_root:
            if self.name != "." or not self.interior:
                raise TreeError("a tree root must be the interior node '.'")
        elif not self.name or "/" in self.name or self.name in (".", ".."):
            raise TreeError(f"node name {self.name!r} is empty, '.', '..' or holds '/'")
        if self.type_is_ddf and self.type is None:
            raise TreeError(f"node {self.name!r}: a DDFName Type needs a value")
        if self.format is not None and self.format not in FORMATS:
            raise TreeError(f"node {self.name!r}: unknown Format {self.format!r}; "
                            f"use one of {', '.join(FORMATS)}")
        if self.interior:
            if self.value is not None:
                raise TreeError(f"interior node {self.name!r} cannot hold a value")
            if self.format not in (None, "node"):
                raise TreeError(f"interior node {self.name!r} has Format {self.format}")
            return
        if self.children:
            raise TreeError(f"leaf {self.name!r} cannot have children")
        if self.format == "node":
            raise TreeError(f"leaf {self.name!r} has Format node")
        if self.value is None and self.format is None:
            raise TreeError(f"leaf {self.name!r} has neither value nor Format; give one")
        if self.format == "bin":
            if self.value is not None and not isinstance(self.value, bytes):
                raise TreeError(f"leaf {self.name!r}: Format bin needs a bytes value")
        elif self.value is not None and not isinstance(self.value, str):
            raise TreeError(f"leaf {self.name!r}: Format {self.format or 'chr'} needs a str value")

    @property
    def effective_format(self) -> str:
        return self.format or ("node" if self.interior else "chr")

    @property
    def data(self) -> bytes:
        """The value as bytes: bin as is, b64 decoded, text UTF-8 encoded."""
        if self.value is None:
            return b""
        if isinstance(self.value, bytes):
            return self.value
        if self.format == "b64":
            try:
                return base64.b64decode("".join(self.value.split()), validate=True)
            except (binascii.Error, ValueError):
                raise TreeError(f"leaf {self.name!r}: b64 value is not valid base64") from None
        return self.value.encode("utf-8", "surrogatepass")

    def own_fields(self) -> tuple:
        """Everything but the children (used for equality and diff)."""
        return (self.name, self.interior, self.value, self.format, self.type,
                self.type_is_ddf, self.acl, self.title, self.rt_name, self.size,
                self.tstamp, self.verno)

    def props(self) -> dict[str, str | None]:
        """RT properties keyed by their TNDS names (Type carries 'DDFName:' when a URN)."""
        out: dict[str, str | None] = {k: getattr(self, a) for k, a in PROP_NAMES.items()}
        if self.type is not None and self.type_is_ddf:
            out["Type"] = "DDFName:" + self.type
        return out

    def copy(self) -> DMNode:
        """Deep copy."""
        clone = DMNode(self.name, self.interior, self.value, self.format, self.type,
                       self.type_is_ddf, self.acl, self.title, self.rt_name, self.size,
                       self.tstamp, self.verno)
        clone.children = {k: c.copy() for k, c in self.children.items()}
        return clone

    def shallow_copy(self) -> DMNode:
        """Copy of the node's own fields, without children."""
        return DMNode(self.name, self.interior, self.value, self.format, self.type,
                      self.type_is_ddf, self.acl, self.title, self.rt_name, self.size,
                      self.tstamp, self.verno)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DMNode):
            return NotImplemented
        if self.own_fields() != other.own_fields():
            return False
        if self.children.keys() != other.children.keys():
            return False
        return all(c == other.children[k] for k, c in self.children.items())

    __hash__ = None  # type: ignore[assignment]  # mutable


@dataclass(frozen=True)
class Acl:
    """A parsed ACL: 'Add=*&Get=srv1+srv2'. Empty grants means "inherit"."""

    grants: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def parse(cls, text: str) -> Acl:
        if text == "":
            return cls(())
        grants: list[tuple[str, tuple[str, ...]]] = []
        for entry in text.split("&"):
            cmd, sep, servers = entry.partition("=")
            if not sep or cmd not in ACL_COMMANDS or servers == "":
                raise TreeError(f"ACL {text!r} is malformed at {entry!r}; "
                                "write e.g. 'Add=*&Get=srv1+srv2'")
            ids = tuple(servers.split("+"))
            if "" in ids:
                raise TreeError(f"ACL {text!r} has an empty server id")
            grants.append((cmd, ids))
        return cls(tuple(grants))

    def servers(self, command: str) -> frozenset[str]:
        return frozenset(s for cmd, ids in self.grants if cmd == command for s in ids)

    def allows(self, server_id: str, command: str) -> bool:
        ids = self.servers(command)
        return "*" in ids or server_id in ids

    def __str__(self) -> str:
        return "&".join(cmd + "=" + "+".join(ids) for cmd, ids in self.grants)


class DMTree:
    """A management tree rooted at '.'. Man/Mod are the TNDS header fields."""

    def __init__(self, root: DMNode | None = None, man: str | None = None,
                 mod: str | None = None) -> None:
        self.root = root if root is not None else DMNode(".", interior=True)
        if self.root.name != "." or not self.root.interior:
            raise TreeError("a tree root must be the interior node '.'")
        self.man = man
        self.mod = mod

    # ---- lookup -------------------------------------------------------
    def find(self, uri: str) -> DMNode | None:
        node = self.root
        for name in split_uri(uri):
            node = node.children.get(name)  # type: ignore[assignment]
            if node is None:
                return None
        return node

    def get(self, uri: str) -> DMNode:
        node = self.find(uri)
        if node is None:
            raise NodeNotFound(f"node {uri} does not exist")
        return node

    def exists(self, uri: str) -> bool:
        return self.find(uri) is not None

    def children(self, uri: str) -> list[str]:
        node = self.get(uri)
        if not node.interior:
            raise NotAllowed(f"{uri} is a leaf; it has no children")
        return list(node.children)

    def walk(self, uri: str = ".") -> Iterator[tuple[str, DMNode]]:
        """(uri, node) for the node at uri and everything below it, pre-order."""
        start = self.get(uri)
        stack: list[tuple[list[str], DMNode]] = [(split_uri(uri), start)]
        while stack:
            names, node = stack.pop()
            yield join_uri(names), node
            for child in reversed(list(node.children.values())):
                stack.append((names + [child.name], child))

    def node_count(self) -> int:
        return sum(1 for _ in self.walk())

    def _parent_for_new(self, uri: str, create_parents: bool) -> tuple[DMNode, str]:
        names = split_uri(uri)
        if not names:
            raise NodeExists("the root '.' always exists")
        node = self.root
        for i, name in enumerate(names[:-1]):
            child = node.children.get(name)
            if child is None:
                if not create_parents:
                    raise NodeNotFound(f"parent {join_uri(names[:i + 1])} of {uri} does not exist")
                child = DMNode(name, interior=True)
                node.children[name] = child
            node = child
        if not node.interior:
            raise NotAllowed(f"cannot add {uri}: its parent is a leaf")
        if names[-1] in node.children:
            raise NodeExists(f"node {uri} already exists")
        return node, names[-1]

    # ---- commands -----------------------------------------------------
    def add(self, uri: str, value: str | bytes | None = None, *, format: str | None = None,
            type: str | None = None, type_is_ddf: bool = False, acl: str | None = None,
            interior: bool | None = None, create_parents: bool = False) -> DMNode:
        """OMA DM Add of one node. Interior when Format is node, or no value and no Format."""
        if interior is None:
            interior = format == "node" or (value is None and format is None)
        names = split_uri(uri)
        node = DMNode(names[-1] if names else ".", interior=interior, value=value,
                      format=format, type=type, type_is_ddf=type_is_ddf, acl=acl)
        node.validate()
        parent, name = self._parent_for_new(uri, create_parents)
        parent.children[name] = node
        return node

    def add_subtree(self, uri: str, node: DMNode, *, create_parents: bool = False) -> None:
        """Add a whole node (with children) at uri; its name becomes the last segment."""
        parent, name = self._parent_for_new(uri, create_parents)
        if node.name != name:
            node = node.copy()
            node.name = name
        for _, n in DMTree(DMNode(".", interior=True, children={name: node})).walk():
            if n.name != ".":
                n.validate()
        parent.children[name] = node

    def replace(self, uri: str, value: str | bytes | None, *, format: str | None = None,
                type: str | None = None, type_is_ddf: bool | None = None) -> DMNode:
        """OMA DM Replace of a leaf value (and Format/Type when given)."""
        node = self.get(uri)
        if node.interior:
            raise NotAllowed(f"{uri} is an interior node; Replace needs a leaf")
        trial = node.shallow_copy()
        trial.value = value
        if format is not None:
            trial.format = format
        if type is not None:
            trial.type = type
        if type_is_ddf is not None:
            trial.type_is_ddf = type_is_ddf
        trial.validate()
        node.value, node.format = trial.value, trial.format
        node.type, node.type_is_ddf = trial.type, trial.type_is_ddf
        return node

    def delete(self, uri: str) -> DMNode:
        """OMA DM Delete of a node and its subtree; returns the removed node."""
        names = split_uri(uri)
        if not names:
            raise NotAllowed("the root '.' cannot be deleted")
        parent = self.get(join_uri(names[:-1]))
        node = parent.children.pop(names[-1], None)
        if node is None:
            raise NodeNotFound(f"node {uri} does not exist")
        return node

    def copy_node(self, source_uri: str, target_uri: str) -> DMNode:
        """OMA DM Copy: deep-copy source to target (an existing leaf target is replaced)."""
        source = self.get(source_uri)
        if split_uri(target_uri)[: len(split_uri(source_uri))] == split_uri(source_uri):
            raise NotAllowed(f"cannot copy {source_uri} into itself")
        existing = self.find(target_uri)
        if existing is not None:
            if existing.interior or source.interior:
                raise NodeExists(f"node {target_uri} already exists")
            self.delete(target_uri)
        self.add_subtree(target_uri, source.copy())
        return self.get(target_uri)

    def get_property(self, uri: str, prop: str) -> str | None:
        """Get ?prop=X. Format and Size are computed when not stored."""
        node = self.get(uri)
        if prop not in PROP_NAMES:
            raise TreeError(f"unknown property {prop!r}; use one of {', '.join(PROP_NAMES)}")
        if prop == "Format":
            return node.effective_format
        if prop == "Size" and node.size is None and not node.interior:
            return str(len(node.data))
        if prop == "Name" and node.rt_name is None:
            return node.name
        return getattr(node, PROP_NAMES[prop])

    def set_property(self, uri: str, prop: str, value: str) -> None:
        """Replace ?prop=X for the properties OMA DM lets a server replace (ACL, Title, Name)."""
        node = self.get(uri)
        if prop == "ACL":
            Acl.parse(value)
            node.acl = value
        elif prop == "Title":
            node.title = value
        elif prop == "Name":
            self.rename(uri, value)
        else:
            raise NotAllowed(f"property {prop} of {uri} cannot be replaced")

    def rename(self, uri: str, new_name: str) -> None:
        names = split_uri(uri)
        if not names:
            raise NotAllowed("the root cannot be renamed")
        parent = self.get(join_uri(names[:-1]))
        if new_name in parent.children:
            raise NodeExists(f"a sibling named {new_name!r} already exists")
        node = parent.children[names[-1]]
        trial = node.shallow_copy()
        trial.name = new_name
        trial.children = node.children
        trial.validate()
        parent.children = {(new_name if k == names[-1] else k): v
                           for k, v in parent.children.items()}
        node.name = new_name

    # ---- ACL ------------------------------------------------------------
    def effective_acl(self, uri: str) -> Acl:
        """The ACL in force at uri: its own, or the nearest ancestor's non-empty one.

        OMA DM inherits the whole ACL, not per command: a node whose ACL grants
        only Get=srv1 denies Replace even when its parent grants Replace=*.
        """
        names = split_uri(uri)
        chain = [self.root]
        node = self.root
        for i, name in enumerate(names):
            node = node.children.get(name)  # type: ignore[assignment]
            if node is None:
                raise NodeNotFound(f"node {join_uri(names[:i + 1])} does not exist")
            chain.append(node)
        for n in reversed(chain):
            if n.acl:
                return Acl.parse(n.acl)
        return Acl.parse(DEFAULT_ROOT_ACL)

    def acl_allows(self, uri: str, server_id: str, command: str) -> bool:
        """May server_id run command on the node at uri? For Add of a new node,
        ask about its parent; for Replace of an ACL, the agent asks about the parent."""
        if command not in ACL_COMMANDS:
            raise TreeError(f"unknown ACL command {command!r}")
        return self.effective_acl(uri).allows(server_id, command)

    # ---- whole tree -------------------------------------------------------
    def copy(self) -> DMTree:
        return DMTree(self.root.copy(), self.man, self.mod)

    def replace_contents(self, other: DMTree) -> None:
        """Swap in another tree's contents (the last step of an all-or-nothing apply)."""
        self.root, self.man, self.mod = other.root, other.man, other.mod

    def validate(self) -> None:
        for uri, node in self.walk():
            try:
                node.validate(is_root=node is self.root)
            except TreeError as exc:
                raise TreeError(f"{uri}: {exc}") from None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DMTree):
            return NotImplemented
        return (self.man, self.mod) == (other.man, other.mod) and self.root == other.root

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"DMTree({self.node_count()} nodes, man={self.man!r}, mod={self.mod!r})"
