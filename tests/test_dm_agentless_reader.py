"""The agentless tree reader (host.dm.server.agentless.reader) on its own: answers a client
could give, fed directly (the HTTP paths are in test_dm_agentless.py)."""
from __future__ import annotations

import pytest

from host.dm.server.agentless.reader import Limits, ReadError, TreeReader, child_names, leaf_from
from host.syncml import model as m


def test_interior_leaf_helpers() -> None:
    assert child_names("a/b", "./X") == ["a", "b"] and child_names("", "./X") == []
    assert child_names(b"leaf\x00", "./X") == ["leaf"]  # libdmclient's memory plugin, in WBXML
    with pytest.raises(ReadError):
        child_names(b"a\x00b", "./X")
    with pytest.raises(ReadError):
        child_names("a/a", "./X")
    assert leaf_from("K", "./K", b"\x01", "b64", None).value == "AQ=="
    with pytest.raises(ReadError):
        leaf_from("K", "./K", "x", "weird", None)


def _answer(reader, code: int, items: list[m.Item]) -> None:  # type: ignore[no-untyped-def]
    [(key, _uri)] = reader.next_gets()
    reader.on_status(key, code)
    for item in items:
        reader.on_item(key, item)
    reader.end_of_package()


@pytest.mark.parametrize("strategy,items,message", [
    ("structdata", [m.Item(source=m.Source("./Other/X"), meta=m.Meta(format="chr"), data="1")], "outside"),
    ("tnds", [m.Item(meta=m.Meta(format="xml"), data='<MgmtTree xmlns="syncml:dmddf1.2"><VerDTD>1.2</VerDTD>'
                                                     '<Node><NodeName>Else</NodeName></Node></MgmtTree>')],
     "does not hold"),
    ("tnds", [m.Item(meta=m.Meta(format="xml"), data="<MgmtTree><Node>")], "malformed"),
    ("walk", [m.Item(meta=m.Meta(format="weird"), data="1")], "not an OMA DM format"),
    ("walk", [m.Item(meta=m.Meta(format="chr"), data="1"), m.Item(meta=m.Meta(format="chr"), data="2")],
     "expected one"),
])
def test_reader_refuses_malformed_answers(strategy, items, message) -> None:
    reader = TreeReader(["./Settings/S1"], Limits(100, 10_000, 8), (strategy,))
    with pytest.raises(ReadError, match=message):
        _answer(reader, 200, items)


def test_reader_every_strategy_refused_and_the_byte_cap() -> None:
    reader = TreeReader(None, Limits(100, 10_000, 8), ("tnds", "structdata"))
    _answer(reader, 406, [])
    assert reader.strategy == "structdata" and reader.fallbacks == ["tnds: 406"]
    with pytest.raises(ReadError, match="every read strategy"):
        _answer(reader, 406, [])
    reader = TreeReader(None, Limits(100, 1024, 8), ("walk",))
    with pytest.raises(ReadError, match="--agentless-max-bytes"):
        _answer(reader, 200, [m.Item(meta=m.Meta(format="node"), data="a" * 2000)])
