"""Property-based round trips of random and generated trees: TNDS and canonical bytes."""
from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from host.errors import TreeError
from host.tree import (
    FORMATS,
    DMNode,
    DMTree,
    canonical_bytes,
    from_canonical,
    read_tnds,
    write_tnds,
)
from host.tree.generate import generate_tree, mutate_leaves, phone_tree

# XML 1.0 can carry these: no surrogates, no C0 controls except TAB, LF, CR.
_xml_char = st.one_of(st.characters(exclude_categories=("Cs", "Cc"),
                                    exclude_characters="\ufffe\uffff"),
                      st.sampled_from("\t\n\r"))
xml_text = st.text(_xml_char, max_size=12)
any_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
names = st.text(st.characters(exclude_categories=("Cs", "Cc"), exclude_characters="/\ufffe\uffff"),
                min_size=1, max_size=8).filter(lambda n: n not in (".", ".."))
LEAF_FORMATS = [f for f in FORMATS if f != "node"]


def _props(draw, text, node: DMNode) -> DMNode:
    opt = st.none() | text
    node.acl, node.title, node.rt_name = draw(opt), draw(opt), draw(opt)
    node.size, node.tstamp, node.verno = draw(opt), draw(opt), draw(opt)
    node.type = draw(opt)
    node.type_is_ddf = node.type is not None and draw(st.booleans())
    return node


def tree_strategy(text: st.SearchStrategy[str]) -> st.SearchStrategy[DMTree]:
    @st.composite
    def leaf(draw) -> DMNode:
        fmt = draw(st.none() | st.sampled_from(LEAF_FORMATS))
        if fmt == "bin":
            value = draw(st.none() | st.binary(max_size=20))
        else:
            value = draw((st.none() if fmt else st.nothing()) | text)
        return _props(draw, text, DMNode("x", value=value, format=fmt))

    def interior(children: st.SearchStrategy[list[tuple[str, DMNode]]]) -> st.SearchStrategy[DMNode]:
        @st.composite
        def build(draw) -> DMNode:
            node = DMNode("x", interior=True, format=draw(st.sampled_from([None, "node"])))
            for name, child in draw(children):
                child.name = name
                node.children[name] = child
            return _props(draw, text, node)
        return build()

    def kids(inner: st.SearchStrategy[DMNode]) -> st.SearchStrategy[list[tuple[str, DMNode]]]:
        return st.lists(st.tuples(names, inner), max_size=4, unique_by=lambda p: p[0])

    node = st.recursive(leaf(), lambda inner: interior(kids(inner)), max_leaves=25)

    @st.composite
    def tree(draw) -> DMTree:
        root = draw(interior(kids(node)))
        root.name = "."
        root.format = None if draw(st.booleans()) else "node"
        return DMTree(root, draw(st.none() | text), draw(st.none() | text))
    return tree()


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(tree_strategy(xml_text))
def test_tnds_round_trip_random(tree: DMTree) -> None:
    tree.validate()
    data = write_tnds(tree)
    back = read_tnds(data)
    assert back == tree
    assert write_tnds(back) == data


@SETTINGS
@given(tree_strategy(any_text))
def test_canonical_round_trip_random(tree: DMTree) -> None:
    data = canonical_bytes(tree)
    back = from_canonical(data)
    assert back == tree
    assert canonical_bytes(back) == data


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**32), st.integers(6_000, 60_000))
def test_generated_trees_round_trip(seed: int, size: int) -> None:
    tree = generate_tree(size, seed)
    assert read_tnds(write_tnds(tree)) == tree
    assert from_canonical(canonical_bytes(tree)) == tree


def test_canonical_is_deterministic_and_keeps_sibling_order() -> None:
    a = phone_tree(0)
    assert canonical_bytes(a) == canonical_bytes(phone_tree(0))
    assert canonical_bytes(read_tnds(write_tnds(a))) == canonical_bytes(a)
    # siblings in another order: an equal DM tree, but the file a restore writes keeps the order it had
    b = phone_tree(0)
    for _, node in b.walk():
        node.children = dict(reversed(list(node.children.items())))
    assert a == b and canonical_bytes(a) != canonical_bytes(b)
    assert write_tnds(from_canonical(canonical_bytes(b))) == write_tnds(b)
    c = a.copy()
    mutate_leaves(c, 0.01, seed=1)
    assert canonical_bytes(c) != canonical_bytes(a)


def test_canonical_distinguishes_what_tnds_infers() -> None:
    t = DMTree()
    t.add("./Empty", "")
    t.add("./None", format="chr")
    t.add("./Ctl", "\x00\x01 control chars XML cannot carry")
    t.add("./Node", interior=True)
    back = from_canonical(canonical_bytes(t))
    assert back == t and back.get("./Empty").value == "" and back.get("./None").value is None


def test_canonical_refuses_corruption() -> None:
    data = canonical_bytes(phone_tree(0))
    for bad in (b"", b"XXXXX\x01", data[:-1], data + b"\x00", data[:40], data[:6] + b"\x04"):
        with pytest.raises(TreeError) as exc:
            from_canonical(bad)
        assert "\n" not in str(exc.value)
    rng = random.Random(7)
    refused = 0
    for _ in range(200):  # random byte flips: refused or decoded, never another exception
        buf = bytearray(data)
        buf[rng.randrange(6, len(buf))] ^= 1 << rng.randrange(8)
        try:
            from_canonical(bytes(buf))
        except TreeError:
            refused += 1
    assert refused > 0
