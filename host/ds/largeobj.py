"""Reassembly of large objects (MoreData chunks) as DS peers send them.

The assembler is host.syncml.packing.LargeObjectAssembler with both DS options:
``line_end_tolerant`` (SyncEvolution sends text items with raw CRLF, every XML
parser hands CRLF back as LF, so the received text is shorter than Size by one
byte per line; the archive inside carries its own length and SHA-256 anyway,
host.ds.payload) and ``abandon_interrupted`` (a new object before the last
chunk drops the old one, answered with Alert 223: ``no_end_of_data_alert``).
"""
from __future__ import annotations

from host.syncml import model as m
from host.syncml.packing import LargeObjectAssembler, text_size_matches
from host.syncml.status import AlertCode

__all__ = ["TolerantAssembler", "no_end_of_data_alert", "text_size_matches"]


class TolerantAssembler(LargeObjectAssembler):
    """Feed every incoming item; returns whole items (chunks -> None until the last one)."""

    def __init__(self, max_obj_size: int | None = None) -> None:
        super().__init__(max_obj_size, line_end_tolerant=True, abandon_interrupted=True)


def no_end_of_data_alert(first_chunk: m.Item) -> m.Alert:
    """Alert 223 for a large object whose last chunk never came (addressed as its sender named it)."""
    return m.Alert(cmd_id=0, data=AlertCode.NO_END_OF_DATA, items=[m.Item(
        target=m.Target(first_chunk.source.loc_uri) if first_chunk.source else None,
        source=m.Source(first_chunk.target.loc_uri) if first_chunk.target else None)])
