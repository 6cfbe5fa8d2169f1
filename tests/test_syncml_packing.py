"""pack() keeps every message within MaxMsgSize; large objects chunk and reassemble."""
from __future__ import annotations

import base64
import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from host.errors import SyncMLError
from host.syncml import codec
from host.syncml import model as m
from host.syncml.packing import LargeObjectAssembler, pack, wire_size
from host.syncml.status import StatusCode, SyncMLStatusError

HDR = m.SyncHdr("7", 1, m.Target("https://ds.example/sync"), m.Source("IMEI:1"), ver_proto=m.PROTO_DS,
                meta=m.Meta(max_msg_size=2000))

text = st.text(alphabet=st.characters(codec=None, exclude_categories=("Cs", "Cc", "Cn")), max_size=2500)
big_bytes = st.integers(0, 6000).map(lambda n: bytes(i % 251 for i in range(n)))
big_text = st.integers(0, 3000).map(lambda n: ("ab&<\u00e9\U0001F600 " * n)[:n])  # escapes, multi-byte
payload = st.one_of(text, st.binary(max_size=300), big_bytes, big_text)


@st.composite
def command_sets(draw) -> list[m.Command]:
    cmds: list[m.Command] = []
    for i in range(draw(st.integers(1, 8))):
        data = draw(payload)
        meta = m.Meta(format="b64") if isinstance(data, bytes) else None
        kind = draw(st.sampled_from(["Replace", "Add", "Status", "Sync", "Results"]))
        item = m.Item(target=m.Target(f"./n/{i}"), meta=meta, data=data)
        cid = 10 * (i + 1)
        if kind == "Status":
            cmds.append(m.Status(cmd_id=cid, msg_ref=1, cmd_ref=i + 1, cmd="Get", data=200))
        elif kind == "Results":
            cmds.append(m.Results(cmd_id=cid, cmd_ref=i + 1, items=[item]))
        elif kind == "Sync":
            kids = [m.Add(cmd_id=cid + k + 1, items=[dataclasses.replace(item, target=m.Target(f"./s/{i}/{k}"))])
                    for k in range(draw(st.integers(1, 3)))]
            cmds.append(m.Sync(cmd_id=cid, target=m.Target("./bk"), source=m.Source("./bk"), commands=kids))
        else:
            cls = m.Replace if kind == "Replace" else m.Add
            cmds.append(cls(cmd_id=cid, items=[item]))
    return cmds


def reassemble(messages: list[m.SyncMLMessage]) -> dict[str, str | bytes]:
    """What a receiver ends up with: every item's data by target, chunks joined."""
    asm = LargeObjectAssembler()
    out: dict[str, str | bytes] = {}
    for msg in messages:
        for cmd in codec.decode(codec.encode(msg)).iter_commands():
            for item in getattr(cmd, "items", []):
                whole = asm.feed(item)
                if whole is not None and whole.target is not None:
                    assert whole.target.loc_uri not in out
                    out[whole.target.loc_uri] = whole.data  # type: ignore[assignment]
    asm.finish()
    return out


def expected(cmds: list[m.Command]) -> dict[str, str | bytes]:
    msg = m.SyncMLMessage(HDR, cmds)
    return {i.target.loc_uri: i.data for c in msg.iter_commands() for i in getattr(c, "items", [])
            if i.target is not None}  # type: ignore[misc]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cmds=command_sets(), max_size=st.integers(1000, 4000))
def test_pack_respects_max_msg_size_and_loses_nothing(cmds: list[m.Command], max_size: int) -> None:
    messages = pack(HDR, cmds, max_size)
    sizes = [len(codec.encode(msg)) for msg in messages]
    assert max(sizes) <= max_size
    assert [msg.final for msg in messages] == [False] * (len(messages) - 1) + [True]
    assert [msg.header.msg_id for msg in messages] == list(range(1, len(messages) + 1))
    assert reassemble(messages) == expected(cmds)
    for msg in messages:  # a message in the middle of a large object never ends the package
        if any(i.more_data for c in msg.iter_commands() for i in getattr(c, "items", [])):
            assert not msg.final
    for msg in messages:  # CmdIDs stay unique per message
        ids = [c.cmd_id for c in msg.iter_commands()]
        assert len(ids) == len(set(ids))


def test_small_package_stays_in_one_message() -> None:
    cmds = [m.Alert(cmd_id=1, data=200, items=[m.Item(target=m.Target("./bk"), source=m.Source("./bk"))])]
    (only,) = pack(HDR, cmds, 10_000)
    assert only.final and only.commands == cmds


def test_large_object_chunks_carry_size_and_moredata() -> None:
    blob = bytes(range(256)) * 40  # 10240 bytes
    cmd = m.Replace(cmd_id=3, items=[m.Item(target=m.Target("./big"), meta=m.Meta(format="b64"), data=blob)])
    messages = pack(HDR, [cmd], 1500)
    items = [c.items[0] for msg in messages for c in msg.commands]  # type: ignore[attr-defined]
    assert len(items) > 5
    # Meta Size counts what travels: the base64 text of the whole object (libsynthesis AddNextChunk)
    assert items[0].meta.size == len(base64.b64encode(blob)) == wire_size(blob)
    assert all(i.more_data for i in items[:-1])
    assert sum(len(base64.b64encode(i.data)) for i in items) == items[0].meta.size
    assert not items[-1].more_data and all(i.meta.size is None for i in items[1:])
    assert all(isinstance(i.data, bytes) and len(i.data) % 3 == 0 for i in items[:-1])
    assert reassemble(messages) == {"./big": blob}


def test_unsplittable_command_too_big_is_an_error() -> None:
    big = m.Status(cmd_id=1, msg_ref=1, cmd_ref=1, cmd="Get", data=200, target_refs=["x" * 3000])
    with pytest.raises(SyncMLError, match="cannot fit"):
        pack(HDR, [big], 1000)
    with pytest.raises(SyncMLError):
        pack(HDR, [big], 100)  # smaller than an empty message


def chunks(data: str | bytes, n: int, size: int | None) -> list[m.Item]:
    parts = [data[i:i + n] for i in range(0, len(data), n)]
    fmt = "b64" if isinstance(data, bytes) else None
    out = []
    for k, part in enumerate(parts):
        meta = m.Meta(format=fmt, size=size if k == 0 else None)
        out.append(m.Item(target=m.Target("./obj"), meta=meta, data=part, more_data=k < len(parts) - 1))
    return out


def test_assembler_joins_text_by_utf8_size() -> None:
    data = "h\u00e9llo w\u00f6rld " * 20
    asm = LargeObjectAssembler()
    results = [asm.feed(i) for i in chunks(data, 7, len(data.encode()))]
    assert results[:-1] == [None] * (len(results) - 1)
    assert results[-1] == m.Item(target=m.Target("./obj"), data=data)
    assert asm.feed(m.Item(data="small")) == m.Item(data="small")


@pytest.mark.parametrize("size,status", [(99, StatusCode.SIZE_MISMATCH), (101, StatusCode.SIZE_MISMATCH),
                                         (None, StatusCode.SIZE_REQUIRED)])
def test_assembler_size_errors(size: int | None, status: int) -> None:
    asm = LargeObjectAssembler()
    with pytest.raises(SyncMLStatusError) as info:
        for item in chunks(b"x" * 100, 30, size):
            asm.feed(item)
    assert info.value.status == status
    assert not asm.in_progress


def test_assembler_detects_truncation_and_interleaving() -> None:
    items = chunks(b"y" * 100, 30, 100)
    asm = LargeObjectAssembler()
    for item in items[:-1]:
        assert asm.feed(item) is None
    with pytest.raises(SyncMLStatusError) as info:
        asm.finish()
    assert info.value.status == StatusCode.SIZE_MISMATCH
    asm = LargeObjectAssembler()
    asm.feed(items[0])
    with pytest.raises(SyncMLStatusError) as info:
        asm.feed(m.Item(target=m.Target("./other"), data="z"))
    assert info.value.status == StatusCode.PARTIAL_ITEM_NOT_ACCEPTED


def test_assembler_enforces_max_obj_size() -> None:
    asm = LargeObjectAssembler(max_obj_size=50)
    with pytest.raises(SyncMLStatusError) as info:
        asm.feed(chunks(b"x" * 100, 30, 100)[0])
    assert info.value.status == StatusCode.REQUESTED_SIZE_TOO_BIG


def test_assembler_takes_size_from_command_meta() -> None:
    items = [dataclasses.replace(i, meta=m.Meta(format="b64")) for i in chunks(b"q" * 90, 40, None)]
    asm = LargeObjectAssembler()
    cmd_meta = m.Meta(size=90)
    results = [asm.feed(i, cmd_meta) for i in items]
    assert results[-1] is not None and results[-1].data == b"q" * 90
    assert results[-1].meta == m.Meta(format="b64")


@pytest.mark.parametrize("size", [100, 136])  # decoded bytes, or base64 characters as pack() counts them
def test_assembler_accepts_decoded_or_b64_size(size: int) -> None:
    asm = LargeObjectAssembler()
    results = [asm.feed(i) for i in chunks(b"z" * 100, 30, size)]
    assert results[-1] is not None and results[-1].data == b"z" * 100


def test_assembler_rejects_size_between_decoded_and_b64() -> None:
    asm = LargeObjectAssembler()
    with pytest.raises(SyncMLStatusError) as info:
        for item in chunks(b"z" * 100, 30, 120):
            asm.feed(item)
    assert info.value.status == StatusCode.SIZE_MISMATCH


def test_splitting_a_large_sync_is_not_quadratic() -> None:
    """Sizes of a Sync's children add up; re-encoding the growing part per child took ~8 s here."""
    import time

    kids: list[m.Command] = [m.Add(cmd_id=i + 2, items=[m.Item(source=m.Source(f"id{i}"), data="x" * 50)])
                             for i in range(6000)]
    sync = m.Sync(cmd_id=1, target=m.Target("./c"), source=m.Source("./c"), commands=kids)
    start = time.perf_counter()
    messages = pack(HDR, [sync], 64 * 1024)
    assert time.perf_counter() - start < 3.0
    assert max(len(codec.encode(msg)) for msg in messages) <= 64 * 1024
    got = [c for msg in messages for s in msg.commands for c in s.commands]  # type: ignore[attr-defined]
    assert got == kids
