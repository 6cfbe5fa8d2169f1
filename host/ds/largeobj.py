"""Reassembly of large objects (MoreData chunks) that tolerates XML line-end normalisation.

A sender counts Meta Size on the bytes it put on the wire. SyncEvolution sends
text items with raw CRLF, and every XML parser hands CRLF back as LF, so the
received text is shorter than Size by one byte per line. This assembler
accepts a text object whose Size lies between its received length and that
length with every LF counted as CRLF; anything else is a size mismatch (424). The archive inside
carries its own length and SHA-256 anyway (host.ds.payload).
"""
from __future__ import annotations

import base64
import binascii
import dataclasses

from host.syncml import model as m
from host.syncml.status import AlertCode, StatusCode, SyncMLStatusError


def text_size_matches(data: str | bytes, size: int) -> bool:
    if isinstance(data, bytes):
        return len(data) == size
    # A CRLF split across two chunks comes back as two LFs, so the exact count is
    # unknowable: accept Size between the received length and that length with
    # every LF counted as CRLF (the payload's own size and SHA-256 are exact).
    n = len(data.encode("utf-8"))
    return n <= size <= n + data.count("\n")


class TolerantAssembler:
    """Feed every incoming item; returns whole items (chunks -> None until the last one)."""

    def __init__(self, max_obj_size: int | None = None) -> None:
        self.max_obj_size = max_obj_size
        self._first: m.Item | None = None
        self._parts: list[str | bytes] = []
        self._size = 0
        self.abandoned: list[m.Item] = []  # first chunks of objects cut off by a new object: answer Alert 223

    def take_abandoned(self) -> list[m.Item]:
        out, self.abandoned = self.abandoned, []
        return out

    @property
    def in_progress(self) -> bool:
        return self._first is not None

    @staticmethod
    def _key(item: m.Item) -> tuple[str | None, str | None]:
        return (item.target.loc_uri if item.target else None, item.source.loc_uri if item.source else None)

    def feed(self, item: m.Item) -> m.Item | None:
        if self._first is None:
            if not item.more_data:
                return _decoded_whole(item) if isinstance(item.data, m.B64Text) else item
            size = item.meta.size if item.meta else None
            if size is None:
                raise SyncMLStatusError("first chunk of a large object has no Meta Size", StatusCode.SIZE_REQUIRED)
            if self.max_obj_size is not None and size > self.max_obj_size:
                raise SyncMLStatusError(f"large object of {size} bytes exceeds MaxObjSize {self.max_obj_size}",
                                        StatusCode.REQUESTED_SIZE_TOO_BIG)
            self._first, self._size = item, size
        elif self._key(item) not in (self._key(self._first), (None, None)):
            # a new object before the last chunk: the old one is dropped, the sender gets
            # Alert 223 (No End of Data) for it, the new object is processed normally (RepPro 1.2)
            self.abandoned.append(self._first)
            self.reset()
            return self.feed(item)
        b64 = isinstance(self._parts[0] if self._parts else item.data, m.B64Text)
        if b64 and isinstance(item.data, bytes) and not item.more_data:
            part: str | bytes = base64.b64encode(item.data).decode("ascii")  # an aligned last chunk
        else:
            part = item.data if isinstance(item.data, (str, bytes)) else None  # type: ignore[assignment]
        if part is None or (self._parts and type(part) is not type(self._parts[0]) and not b64) \
                or (b64 and not isinstance(part, str)) or (not b64 and isinstance(part, m.B64Text)):
            self.reset()
            raise SyncMLStatusError("a chunk of a large object has no data or mixes text, base64 and binary",
                                    StatusCode.BAD_REQUEST)
        self._parts.append(part)
        received = sum(len(p.encode("utf-8")) if isinstance(p, str) else len(p) for p in self._parts)
        if received > (self._size * 4 // 3 + 4 if b64 else self._size):  # b64: Size may count decoded bytes
            expected = self._size
            self.reset()
            raise SyncMLStatusError(f"large object larger than its Size {expected}", StatusCode.SIZE_MISMATCH)
        if item.more_data:
            return None
        first, expected = self._first, self._size
        data = self._parts[0][:0].join(self._parts)  # type: ignore[arg-type]
        self.reset()
        if b64:
            text = str(data)
            data = _b64decode(text)
            if expected not in (len(data), len(text)):  # peers differ: Size of the data or of its base64
                raise SyncMLStatusError(f"large object of {len(data)} bytes (b64), Size said {expected}",
                                        StatusCode.SIZE_MISMATCH)
        elif not text_size_matches(data, expected):
            raise SyncMLStatusError(f"large object of {len(data)} bytes, Size said {expected}",
                                    StatusCode.SIZE_MISMATCH)
        meta = dataclasses.replace(first.meta, size=None) if first.meta else m.Meta()
        return dataclasses.replace(first, data=data, more_data=False, meta=None if meta.is_empty() else meta)

    def finish(self) -> None:
        """End of a package: an object still in progress was truncated (424)."""
        if self._first is not None:
            expected = self._size
            self.reset()
            raise SyncMLStatusError(f"large object truncated: package ended before its {expected} bytes",
                                    StatusCode.SIZE_MISMATCH)

    def reset(self) -> None:
        self._first, self._parts, self._size = None, [], 0


def no_end_of_data_alert(first_chunk: m.Item) -> m.Alert:
    """Alert 223 for a large object whose last chunk never came (addressed as its sender named it)."""
    return m.Alert(cmd_id=0, data=AlertCode.NO_END_OF_DATA, items=[m.Item(
        target=m.Target(first_chunk.source.loc_uri) if first_chunk.source else None,
        source=m.Source(first_chunk.target.loc_uri) if first_chunk.target else None)])


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
