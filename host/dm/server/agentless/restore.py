"""Putting a tree back with standard commands: plan, apply (Atomic when honoured), read back.

:func:`plan` turns the diff between the live tree (as read) and the backup into
Add / Replace / Delete operations; what standard commands cannot write (an ACL,
a Title, a changed Type on an interior node...) is listed, not dropped.

:class:`Applier` sends them inside one Atomic when it fits a message and the
client honours it, and learns from the answer: Atomic refused (400/405/406/501)
-> the same operations one by one; Atomic ignored (no Status for it, only for its
commands: libdmclient does so) -> taken as applied one by one; Atomic failed
(507, the client rolled back) -> nothing applied, every refusal reported.

:class:`ReadBack` Gets every changed node again and compares it with the backup.
Every refusal and mismatch is a per-node entry: (uri, command, code, why).
"""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from host.backup.ops import IDENTITY_URIS
from host.dm.session import command_size
from host.syncml import model as m
from host.syncml.status import status_name
from host.tree.model import DMNode, DMTree
from host.tree.ops import Change
from host.tree.uri import split_uri

from .reader import NOT_SUPPORTED, ReadError, item_text

ROLLED_BACK = 216
ATOMIC_FAILED = 507
WRITABLE = frozenset({"value", "format", "type"})  # what Replace of a leaf can set
ATOMIC_MARGIN = 1024  # room for the Status block beside an Atomic in one message


@dataclass(frozen=True)
class Op:
    command: str  # Add | Replace | Delete
    uri: str
    node: DMNode | None = None  # the node as the backup has it (Add/Replace)


def keep_live(live: DMTree, restored: DMTree, server_id: str) -> list[str]:
    """Put the live device's identity (./DevInfo, ./DevDetail: read-only on a real device, and
    changed by a firmware update) and this server's own DM account (the ./DMAcc/<x> whose
    ServerID is ours: its credentials and nonces are the session's) into ``restored``, in
    place; the URIs kept. Restoring them would break the device's identity or our access."""
    uris = list(IDENTITY_URIS)
    for tree in (live, restored):
        acc = tree.find("./DMAcc")
        for name, node in (acc.children.items() if acc is not None and acc.interior else ()):
            sid = node.children.get("ServerID")
            if sid is not None and sid.value == server_id and f"./DMAcc/{name}" not in uris:
                uris.append(f"./DMAcc/{name}")
    kept = []
    for uri in uris:
        mine, theirs = live.find(uri), restored.find(uri)
        if theirs is not None:
            restored.delete(uri)
        if mine is not None:
            restored.add_subtree(uri, mine.copy(), create_parents=True)
        if mine is not None or theirs is not None:
            kept.append(uri)
    return kept


def plan(changes: list[Change]) -> tuple[list[Op], list[dict]]:
    """(operations in order, what standard commands cannot put back)."""
    ops: list[Op] = []
    skipped: list[dict] = []
    deleted: list[list[str]] = []
    for c in changes:
        names = split_uri(c.uri)
        if c.kind == "removed":
            if not any(names[:len(d)] == d for d in deleted):
                deleted.append(names)
                ops.append(Op("Delete", c.uri))
        elif c.kind == "added":
            ops.append(Op("Add", c.uri, c.after))
        else:
            assert c.before is not None and c.after is not None
            rest = [f for f in c.fields if f not in WRITABLE or c.after.interior]
            if c.after.interior or not names:
                skipped.append(_entry(c.uri, "Replace", None, f"{', '.join(rest)} of an interior node: "
                                      "no standard command sets it"))
                continue
            if rest:
                skipped.append(_entry(c.uri, "Replace", None, f"{', '.join(rest)}: no standard command sets it"))
            if set(c.fields) & WRITABLE:
                ops.append(Op("Replace", c.uri, c.after))
    return ops, skipped


def _entry(uri: str, command: str, code: int | None, why: str) -> dict:
    return {"uri": uri, "command": command, "code": code, "why": why}


def _wire_value(node: DMNode) -> tuple[str | bytes, str]:
    """(Data, Format) for a leaf: b64 travels as bytes (the codec base64-encodes them)."""
    if node.format in ("b64", "bin"):
        return node.data, "b64"
    return (node.value if isinstance(node.value, str) else ""), node.effective_format


def to_command(op: Op) -> m.Command:
    target = m.Target(op.uri)
    if op.command == "Delete":
        return m.Delete(cmd_id=1, items=[m.Item(target=target)])
    assert op.node is not None
    if op.node.interior:
        item = m.Item(target=target, meta=m.Meta(format="node"), data="")  # <Data/>: libdmclient reads its length
    else:
        data, fmt = _wire_value(op.node)
        item = m.Item(target=target, meta=m.Meta(format=fmt, type=op.node.type), data=data)
    cls = m.Add if op.command == "Add" else m.Replace
    return cls(cmd_id=1, items=[item])


def _size_of(op: Op) -> int:
    if op.node is None or op.node.interior:
        return 0
    return len(_wire_value(op.node)[0])


@dataclass
class Applier:
    """Send the operations; see module doc. Keys: 'atomic' or the op's index."""

    ops: list[Op]
    peer_max_msg_size: int
    peer_max_obj_size: int | None = None
    atomic: bool = True
    codes: dict[int, int] = field(default_factory=dict)
    refused: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rolled_back: bool = False
    _atomic_code: int | None = None
    _child_ids: dict[int, int] = field(default_factory=dict)  # Atomic child CmdID -> op index
    _sent: bool = False
    _todo: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        for i, op in enumerate(self.ops):
            if self.peer_max_obj_size and _size_of(op) > self.peer_max_obj_size:
                self.refused.append(_entry(op.uri, op.command, None, f"value of {_size_of(op)} bytes exceeds "
                                           f"the device's MaxObjSize {self.peer_max_obj_size}"))
            else:
                self._todo.append(i)

    @property
    def done(self) -> bool:
        return self._sent and not self._todo

    def next_commands(self) -> list[tuple[object, m.Command]]:
        if not self._todo:
            self._sent = True
            return []
        commands = [(i, to_command(self.ops[i])) for i in self._todo]
        self._sent = True
        if self.atomic and len(commands) > 1:
            whole = m.Atomic(cmd_id=1, commands=[c for _, c in commands])
            if command_size(whole) + ATOMIC_MARGIN <= self.peer_max_msg_size:
                return [("atomic", whole)]
            self.notes.append("too many changes for one Atomic within the device's MaxMsgSize: "
                              "applied one by one")
        self.atomic = False
        return commands

    def sent(self, key: object, cmd: m.Command) -> None:
        """The command as the Channel numbered it (an Atomic's children get their own CmdIDs)."""
        if key == "atomic" and isinstance(cmd, m.Atomic):
            self._child_ids = {c.cmd_id: self._todo[i] for i, c in enumerate(cmd.commands)}

    def on_status(self, key: object, status: m.Status) -> None:
        if key == "atomic":
            if status.cmd == "Atomic":
                self._atomic_code = status.data
            elif status.cmd_ref in self._child_ids:
                self.codes.setdefault(self._child_ids[status.cmd_ref], status.data)
        elif isinstance(key, int):
            self.codes.setdefault(key, status.data)

    def end_of_package(self) -> None:
        todo, self._todo = self._todo, []
        if self.atomic:
            code = self._atomic_code
            if code in NOT_SUPPORTED and not any(200 <= self.codes.get(i, 0) < 300 for i in todo):
                self.notes.append(f"the device refused Atomic ({code}): applied one by one")
                self.atomic, self._todo, self.codes = False, todo, {}
                return
            if code is None and not self.codes:
                raise ReadError("the device did not answer the restore's Atomic (no Status)")
            if code is None:
                self.atomic = False
                self.notes.append("the device sent no Status for Atomic: its commands were applied one by one")
            elif not 200 <= code < 300:
                self.rolled_back = True
                self.notes.append(f"the device rolled the Atomic back ({code}): nothing was applied")
        for i in todo:
            op, code = self.ops[i], self.codes.get(i)
            if code is None:
                if self.rolled_back:
                    continue
                raise ReadError(f"the device did not answer {op.command} {op.uri} (no Status)")
            if 200 <= code < 300 or (op.command == "Delete" and code == 404):
                continue
            if code == ROLLED_BACK:
                continue  # rolled back because another command failed: that one is reported
            self.refused.append(_entry(op.uri, op.command, code, status_name(code)))

    def applied(self) -> list[Op]:
        """The operations the device took (nothing after a rollback)."""
        if self.rolled_back:
            return []
        refused = {(r["uri"], r["command"]) for r in self.refused}
        return [op for op in self.ops if (op.uri, op.command) not in refused]


@dataclass
class ReadBack:
    """Get every applied node again (at most ``per_message`` at a time) and compare."""

    ops: list[Op]
    per_message: int
    mismatches: list[dict] = field(default_factory=list)
    _todo: list[int] = field(default_factory=list)
    _out: dict[int, list] = field(default_factory=dict)  # index -> [code, item]

    def __post_init__(self) -> None:
        self._todo = list(range(len(self.ops)))

    @property
    def done(self) -> bool:
        return not self._todo and not self._out

    def next_gets(self) -> list[tuple[int, str]]:
        take, self._todo = self._todo[:self.per_message], self._todo[self.per_message:]
        for i in take:
            self._out[i] = [None, None]
        return [(i, self.ops[i].uri) for i in take]

    def on_status(self, key: int, code: int) -> None:
        if key in self._out and self._out[key][0] is None:
            self._out[key][0] = code

    def on_item(self, key: int, item: m.Item, cmd_meta: m.Meta | None = None) -> None:
        if key in self._out:
            self._out[key][1] = (item, cmd_meta)

    def end_of_package(self) -> None:
        out, self._out = self._out, {}
        for i, (code, got) in sorted(out.items()):
            why = self._compare(self.ops[i], code, got)
            if why:
                self.mismatches.append(_entry(self.ops[i].uri, "Get", code, why))

    @staticmethod
    def _compare(op: Op, code: int | None, got) -> str | None:  # type: ignore[no-untyped-def]
        if code is None:
            return "no answer to the read-back Get"
        if op.command == "Delete":
            return None if code == 404 else f"still there after Delete (Get answered {code})"
        if not 200 <= code < 300 or got is None:
            return f"not readable after {op.command} ({code} {status_name(code)})"
        assert op.node is not None
        item, cmd_meta = got
        fmt = item.meta.format if item.meta and item.meta.format else (cmd_meta.format if cmd_meta else None)
        if op.node.interior:
            return None if fmt in (None, "node") else f"reads back as a leaf (Format {fmt})"
        want = op.node.effective_format
        if fmt and fmt != want and not ({fmt, want} <= {"b64", "bin"}):
            return f"reads back with Format {fmt}, the backup has {want}"
        try:
            if want in ("b64", "bin"):
                same = _bytes_of(item.data) == op.node.data
            else:
                same = item_text(item.data, op.uri) == (op.node.value or "")
        except (ReadError, binascii.Error, ValueError):
            same = False
        return None if same else "reads back with another value"  # values never go in a report


def _bytes_of(data: object) -> bytes:
    if isinstance(data, bytes):
        return data
    return base64.b64decode("".join(str(data or "").split()), validate=True)
