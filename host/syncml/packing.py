"""Fit a package into the peer's MaxMsgSize, and large objects (MoreData).

:func:`pack` spreads a package's commands over as many messages as needed so
that each encoded message is at most ``max_msg_size`` bytes. A command that
cannot fit in an otherwise empty message is split when that is allowed:

* a Sync is repeated in several messages, each with part of its changes;
* an item command (Add, Replace, Put, Results...) with one data item becomes a
  large object: chunks with MoreData, the first chunk's item Meta carrying Size.

Continuation commands get fresh CmdIDs above every CmdID of the package. Only
the last message has Final. The session layer sends the messages in order,
waiting for the peer's reply (Status 213 + Alert 222/1222) between them.

Meta Size counts the object as it travels (:func:`wire_size`): the UTF-8
length for ``str`` data, the base64 text length for ``bytes`` data (Format b64),
as libsynthesis checks it (synccommand.cpp AddNextChunk compares the reassembled
PCDATA length with Size) and as the DM TND note on the Size property implies
(the node's Size property is the unencoded length, Meta Size the transmitted
one). ``bytes`` chunks are cut on 3-byte boundaries so each chunk is a valid
base64 string on its own and the chunks' base64 lengths add up to Size.
The assembler also accepts a Size equal to the decoded length (peers differ).

The receiving side feeds every incoming item to a :class:`LargeObjectAssembler`.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Sequence

from host.errors import SyncMLError
from host.syncml import codec
from host.syncml import model as m
from host.syncml.status import StatusCode, SyncMLStatusError


def _message_overhead(header: m.SyncHdr, msg_id: int) -> int:
    hdr = dataclasses.replace(header, msg_id=msg_id)
    return len(codec.encode(m.SyncMLMessage(hdr, [], final=True)))


def _size(cmd: m.Command) -> int:
    return len(codec.encode_command(cmd).encode("utf-8"))


class _Ids:
    def __init__(self, commands: Sequence[m.Command]) -> None:
        msg = m.SyncMLMessage(m.SyncHdr("0", 1, m.Target("x"), m.Source("x")), list(commands))
        self.next = max((c.cmd_id for c in msg.iter_commands()), default=0) + 1

    def take(self) -> int:
        self.next += 1
        return self.next - 1


def _unit_len(data: str | bytes) -> int:
    return len(data.encode("utf-8")) if isinstance(data, str) else len(data)


def wire_size(data: str | bytes) -> int:
    """Meta Size of a large object: UTF-8 bytes of text, base64 characters of binary (b64)."""
    return len(data.encode("utf-8")) if isinstance(data, str) else -(-len(data) // 3) * 4


def _chunk_cmd(cmd: m.Command, item: m.Item, data: str | bytes, first: bool, more: bool,
               total: int, cmd_id: int) -> m.Command:
    meta = dataclasses.replace(item.meta or m.Meta(), size=total if first and more else None)
    new_item = dataclasses.replace(item, meta=None if meta.is_empty() else meta, data=data, more_data=more)
    return dataclasses.replace(cmd, cmd_id=cmd_id, items=[new_item])  # type: ignore[call-arg]


def _fit_chunk(cmd: m.Command, item: m.Item, rest: str | bytes, first: bool, total: int,
               cmd_id: int, room: int) -> tuple[m.Command, str | bytes] | None:
    """The largest chunk of ``rest`` whose command fits in ``room`` bytes, or None."""
    binary = isinstance(rest, bytes)
    step = 3 if binary else 1  # 3 bytes -> 4 base64 characters: chunks stay valid base64
    shell = _size(_chunk_cmd(cmd, item, rest[:0], first, True, total, cmd_id))
    budget = room - shell
    # encoded data is at least 4/3 of the bytes, or one byte per character
    if not first and (-(-len(rest) // 3) * 4 if binary else len(rest)) <= budget:
        whole = _chunk_cmd(cmd, item, rest, first, False, total, cmd_id)
        if _size(whole) <= room:
            return whole, rest[:0]
    hi = min(len(rest) - 1, budget * 3 // 4 if binary else budget)
    hi -= hi % step
    guess: int | None = None
    if hi >= step:  # the estimate is exact for base64 and plain ASCII text: try it first
        chunk = _chunk_cmd(cmd, item, rest[:hi], first, True, total, cmd_id)
        size = _size(chunk)
        if size <= room:
            return chunk, rest[hi:]
        guess = hi * budget // max(size - shell, 1)
    lo, best = 1, None
    slack = max(16, room // 64)  # a chunk this close to full is good enough
    # search for the largest chunk that fits: escaping and UTF-8 make size non-linear, but
    # nearly proportional, so probe where proportionality points, else bisect
    while lo <= hi:
        n = guess if guess is not None and lo <= guess <= hi else (lo + hi) // 2
        n -= n % step
        if n < step:
            break
        chunk = _chunk_cmd(cmd, item, rest[:n], first, True, total, cmd_id)
        size = _size(chunk)
        guess = n * budget // max(size - shell, 1)
        if size <= room:
            best, lo = (chunk, rest[n:]), n + step
            if room - size <= slack:
                break
            guess = min(guess, hi)
        else:
            hi = n - 1
            if guess >= n:
                guess = None
    return best


def _splittable_object(cmd: m.Command) -> m.Item | None:
    if isinstance(cmd, (m.ItemCommand, m.Results)) and len(cmd.items) == 1:
        item = cmd.items[0]
        if isinstance(item.data, (str, bytes)) and item.data and not item.more_data:
            return item
    return None


def pack(header: m.SyncHdr, commands: Sequence[m.Command], max_msg_size: int) -> list[m.SyncMLMessage]:
    """Spread ``commands`` over messages of at most ``max_msg_size`` encoded bytes.

    Message ids count up from ``header.msg_id``. Raises SyncMLError when a
    command can neither fit nor be split.
    """
    ids = _Ids(commands)
    messages: list[m.SyncMLMessage] = []
    current: list[m.Command] = []
    used = 0
    msg_id = header.msg_id

    def limit() -> int:
        return max_msg_size - _message_overhead(header, msg_id)

    def flush() -> None:
        nonlocal current, used, msg_id
        messages.append(m.SyncMLMessage(dataclasses.replace(header, msg_id=msg_id), current, final=False))
        current, used, msg_id = [], 0, msg_id + 1

    if limit() <= 0:
        raise SyncMLError(f"MaxMsgSize {max_msg_size} is smaller than an empty message")

    def place(cmd: m.Command) -> None:
        nonlocal used
        size = _size(cmd)
        if used + size <= limit():
            current.append(cmd)
            used += size
            return
        if isinstance(cmd, m.Sync) and cmd.commands:
            place_sync(cmd)
            return
        item = _splittable_object(cmd)
        if size > limit() and item is not None:
            place_large(cmd, item)
            return
        if current:
            flush()
            place(cmd)
            return
        raise SyncMLError(f"{cmd.name} {cmd.cmd_id} of {size} bytes cannot fit MaxMsgSize {max_msg_size}")

    def place_sync(sync: m.Sync) -> None:
        nonlocal used
        shell = dataclasses.replace(sync, commands=[])
        first = True
        part: list[m.Command] = []
        # a Sync encodes as its empty shell plus its children, so sizes add up: no re-encoding
        # of the growing part for every child (that made a large Sync quadratic)
        shell_size, part_size = _size(shell), 0
        for child in sync.commands:
            child_size = _size(child)
            if used + shell_size + part_size + child_size <= limit():
                part.append(child)
                part_size += child_size
                continue
            if part:
                current.append(dataclasses.replace(shell, commands=part))
                first = False
                shell = dataclasses.replace(shell, cmd_id=ids.take())
                shell_size, part, part_size = _size(shell), [], 0
            if current:
                flush()
            if shell_size + child_size <= limit():
                part, part_size = [child], child_size
                continue
            item = _splittable_object(child)
            if item is None:
                raise SyncMLError(f"{child.name} {child.cmd_id} cannot fit MaxMsgSize {max_msg_size}")
            # continuation Syncs get later (possibly longer) CmdIDs: reserve room for the longest
            widest_shell = _size(dataclasses.replace(shell, cmd_id=10**10 - 1))
            for chunk in large_chunks(child, item, lambda w=widest_shell: limit() - w):
                current.append(dataclasses.replace(shell, commands=[chunk]))
                shell = dataclasses.replace(shell, cmd_id=ids.take())
                shell_size = _size(shell)
                first = False
                flush()
        if part or first:
            current.append(dataclasses.replace(shell, commands=part))
        used = sum(_size(c) for c in current)

    def large_chunks(cmd: m.Command, item: m.Item, room_fn) -> list[m.Command]:
        data = item.data
        assert isinstance(data, (str, bytes))
        total, rest, first, out = wire_size(data), data, True, []
        cmd_id = cmd.cmd_id
        while True:
            got = _fit_chunk(cmd, item, rest, first, total, cmd_id, room_fn())
            if got is None:
                raise SyncMLError(f"MaxMsgSize {max_msg_size} leaves no room for a chunk of {cmd.name} {cmd.cmd_id}")
            chunk, rest = got
            out.append(chunk)
            if not rest:
                return out
            first, cmd_id = False, ids.take()

    def place_large(cmd: m.Command, item: m.Item) -> None:
        nonlocal used
        if current:
            flush()
        chunks = large_chunks(cmd, item, limit)
        for chunk in chunks[:-1]:
            current.append(chunk)
            flush()
        current.append(chunks[-1])
        used = _size(chunks[-1])

    for cmd in commands:
        place(cmd)
    messages.append(m.SyncMLMessage(dataclasses.replace(header, msg_id=msg_id), current, final=True))
    return messages


def text_size_matches(data: str | bytes, size: int) -> bool:
    """Size check that tolerates XML line-end normalisation (see LargeObjectAssembler)."""
    if isinstance(data, bytes):
        return len(data) == size
    # A CRLF split across two chunks comes back as two LFs, so the exact count is
    # unknowable: accept Size between the received length and that length with
    # every LF counted as CRLF (a payload's own size and hash must be exact).
    n = len(data.encode("utf-8"))
    return n <= size <= n + data.count("\n")


class LargeObjectAssembler:
    """Receiver side of large objects: feed every item, get whole items back.

    ``feed`` returns the item unchanged when it is not chunked, None while a
    chunked object is in progress, and the reassembled item (Size removed,
    MoreData cleared) after its last chunk. Size may count binary data as
    base64 characters (as :func:`pack` sends it) or as decoded bytes: both are
    accepted. Errors are SyncMLStatusError with
    the status to answer: 411 first chunk without Size, 416 Size above
    ``max_obj_size``, 424 size mismatch, 223-style interruption reported as
    426 (partial item not accepted) when a different object arrives mid-way.

    Options for DS peers (host.ds uses both):

    * ``line_end_tolerant``: a sender counts Size on the bytes it put on the wire,
      and an XML parser hands CRLF back as LF, so a text object may be shorter than
      Size by one byte per line: accept Size between its received length and that
      length with every LF counted as CRLF (binary must then match exactly).
    * ``abandon_interrupted``: a new object before the last chunk drops the old one
      (kept in ``abandoned``: answer Alert 223, see host.ds.largeobj) and is processed
      normally (RepPro 1.2) instead of raising 426; a chunk naming neither Target nor
      Source continues the object in progress.

    b64 items left undecoded by the codec (:class:`m.B64Text`, decode option
    ``b64_chunks_as_text``) are joined as text and decoded once whole; their Size
    may count the data or its base64.
    """

    def __init__(self, max_obj_size: int | None = None, *, line_end_tolerant: bool = False,
                 abandon_interrupted: bool = False) -> None:
        self.max_obj_size = max_obj_size
        self.line_end_tolerant = line_end_tolerant
        self.abandon_interrupted = abandon_interrupted
        self._first: m.Item | None = None
        self._parts: list[str | bytes] = []
        self._received = 0  # decoded bytes (UTF-8 bytes of text, characters of b64 text)
        self._received_wire = 0  # the same counted as sent (base64 characters of binary)
        self.abandoned: list[m.Item] = []  # first chunks of objects cut off by a new object

    def take_abandoned(self) -> list[m.Item]:
        out, self.abandoned = self.abandoned, []
        return out

    @property
    def in_progress(self) -> bool:
        return self._first is not None

    @staticmethod
    def _key(item: m.Item) -> tuple[str | None, str | None]:
        return (item.target.loc_uri if item.target else None, item.source.loc_uri if item.source else None)

    def _continues(self, item: m.Item) -> bool:
        key = self._key(item)
        assert self._first is not None
        return key == self._key(self._first) or (self.abandon_interrupted and key == (None, None))

    def feed(self, item: m.Item, cmd_meta: m.Meta | None = None) -> m.Item | None:
        """``cmd_meta`` is the enclosing command's Meta: Size may be given there instead."""
        if self._first is None:
            if not item.more_data:
                return _decoded_whole(item) if isinstance(item.data, m.B64Text) else item
            size = item.meta.size if item.meta and item.meta.size is not None else \
                cmd_meta.size if cmd_meta else None
            if size is not None and (item.meta is None or item.meta.size is None):
                item = dataclasses.replace(item, meta=dataclasses.replace(item.meta or m.Meta(), size=size))
            if size is None:
                raise SyncMLStatusError("first chunk of a large object has no Meta Size",
                                        StatusCode.SIZE_REQUIRED)
            if self.max_obj_size is not None and size > self.max_obj_size:
                raise SyncMLStatusError(f"large object of {size} bytes exceeds MaxObjSize {self.max_obj_size}",
                                        StatusCode.REQUESTED_SIZE_TOO_BIG)
            self._first = item
        elif not self._continues(item):
            if self.abandon_interrupted:
                self.abandoned.append(self._first)
                self.reset()
                return self.feed(item, cmd_meta)
            self.reset()
            raise SyncMLStatusError("a new object arrived before the previous large object was complete",
                                    StatusCode.PARTIAL_ITEM_NOT_ACCEPTED)
        b64 = isinstance(self._parts[0] if self._parts else item.data, m.B64Text)
        if b64 and isinstance(item.data, bytes) and not item.more_data:
            part: object = base64.b64encode(item.data).decode("ascii")  # an aligned last chunk
        else:
            part = item.data
        if not isinstance(part, (str, bytes)):
            self.reset()
            raise SyncMLStatusError("a chunk of a large object has no text or binary data",
                                    StatusCode.BAD_REQUEST)
        if (self._parts and type(part) is not type(self._parts[0]) and not b64) \
                or (b64 and not isinstance(part, str)) or (not b64 and isinstance(part, m.B64Text)):
            self.reset()
            raise SyncMLStatusError("chunks of one large object mix text, base64 and binary data",
                                    StatusCode.BAD_REQUEST)
        self._parts.append(part)
        self._received += _unit_len(part)
        self._received_wire += wire_size(part)
        first = self._first
        assert first is not None and first.meta is not None and first.meta.size is not None
        expected = first.meta.size
        if self._received > (expected * 4 // 3 + 4 if b64 else expected):  # b64: Size may count decoded bytes
            self.reset()
            raise SyncMLStatusError(f"large object larger than its Size {expected}", StatusCode.SIZE_MISMATCH)
        if item.more_data:
            return None
        data = self._parts[0][:0].join(self._parts)  # type: ignore[arg-type]
        wire = self._received_wire
        self.reset()
        if b64:
            text = str(data)
            data = _b64decode(text)
            if expected not in (len(data), len(text)):  # peers differ: Size of the data or of its base64
                raise SyncMLStatusError(f"large object of {len(data)} bytes (b64), Size said {expected}",
                                        StatusCode.SIZE_MISMATCH)
        elif self.line_end_tolerant:
            if not text_size_matches(data, expected):
                raise SyncMLStatusError(f"large object of {len(data)} bytes, Size said {expected}",
                                        StatusCode.SIZE_MISMATCH)
        elif expected not in (_unit_len(data), wire):
            raise SyncMLStatusError(f"large object of {_unit_len(data)} bytes ({wire} as sent), Size said "
                                    f"{expected}", StatusCode.SIZE_MISMATCH)
        meta = dataclasses.replace(first.meta, size=None)
        return dataclasses.replace(first, data=data, more_data=False, meta=None if meta.is_empty() else meta)

    def finish(self) -> None:
        """Call at the end of the package: a pending object means the sequence was truncated."""
        if self._first is not None:
            got, want = self._received, self._first.meta.size if self._first.meta else None
            self.reset()
            raise SyncMLStatusError(f"large object truncated: {got} of {want} bytes received",
                                    StatusCode.SIZE_MISMATCH)

    def reset(self) -> None:
        self._first, self._parts, self._received, self._received_wire = None, [], 0, 0


def _b64decode(text: str) -> bytes:
    if len(text) % 4:
        raise SyncMLStatusError("b64 item is not whole base64 quanta once its chunks are joined",
                                StatusCode.BAD_REQUEST)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SyncMLStatusError("b64 item is not valid base64 once its chunks are joined",
                                StatusCode.BAD_REQUEST) from None


def _decoded_whole(item: m.Item) -> m.Item:
    return dataclasses.replace(item, data=_b64decode(str(item.data)))
