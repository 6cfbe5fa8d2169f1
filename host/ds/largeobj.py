"""Reassembly of large objects (MoreData chunks) that tolerates XML line-end normalisation.

A sender counts Meta Size on the bytes it put on the wire. SyncEvolution sends
text items with raw CRLF, and every XML parser hands CRLF back as LF, so the
received text is shorter than Size by one byte per line. This assembler
accepts a text object whose Size lies between its received length and that
length with every LF counted as CRLF; anything else is a size mismatch (424). The archive inside
carries its own length and SHA-256 anyway (host.ds.payload).
"""
from __future__ import annotations

import dataclasses

from host.syncml import model as m
from host.syncml.status import StatusCode, SyncMLStatusError


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

    @property
    def in_progress(self) -> bool:
        return self._first is not None

    @staticmethod
    def _key(item: m.Item) -> tuple[str | None, str | None]:
        return (item.target.loc_uri if item.target else None, item.source.loc_uri if item.source else None)

    def feed(self, item: m.Item) -> m.Item | None:
        if self._first is None:
            if not item.more_data:
                return item
            size = item.meta.size if item.meta else None
            if size is None:
                raise SyncMLStatusError("first chunk of a large object has no Meta Size", StatusCode.SIZE_REQUIRED)
            if self.max_obj_size is not None and size > self.max_obj_size:
                raise SyncMLStatusError(f"large object of {size} bytes exceeds MaxObjSize {self.max_obj_size}",
                                        StatusCode.REQUESTED_SIZE_TOO_BIG)
            self._first, self._size = item, size
        elif self._key(item) not in (self._key(self._first), (None, None)):
            self.reset()
            raise SyncMLStatusError("a new item arrived before the previous large object was complete",
                                    StatusCode.PARTIAL_ITEM_NOT_ACCEPTED)
        if not isinstance(item.data, (str, bytes)) or (self._parts and type(item.data) is not type(self._parts[0])):
            self.reset()
            raise SyncMLStatusError("a chunk of a large object has no data or mixes text and binary",
                                    StatusCode.BAD_REQUEST)
        self._parts.append(item.data)
        received = sum(len(p.encode("utf-8")) if isinstance(p, str) else len(p) for p in self._parts)
        if received > self._size:
            expected = self._size
            self.reset()
            raise SyncMLStatusError(f"large object larger than its Size {expected}", StatusCode.SIZE_MISMATCH)
        if item.more_data:
            return None
        first, expected = self._first, self._size
        data = self._parts[0][:0].join(self._parts)  # type: ignore[arg-type]
        self.reset()
        if not text_size_matches(data, expected):
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
