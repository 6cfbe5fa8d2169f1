"""The realistic tree generator: size accuracy, determinism, speed, mutation."""
from __future__ import annotations

import time
import zlib

import pytest

from host.tree import canonical_bytes, diff, secret_uris, write_tnds
from host.tree.generate import generate_tree, mutate_leaves, phone_tree


@pytest.mark.parametrize("target", [10_000, 25_000, 100_000, 1_000_000])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_size_within_ten_percent(target: int, seed: int) -> None:
    size = len(write_tnds(generate_tree(target, seed)))
    assert 0.9 * target <= size <= 1.1 * target


def test_deterministic_per_seed() -> None:
    a, b = generate_tree(200_000, seed=5), generate_tree(200_000, seed=5)
    assert a == b and canonical_bytes(a) == canonical_bytes(b)
    assert canonical_bytes(generate_tree(200_000, seed=6)) != canonical_bytes(a)
    assert phone_tree(1) == phone_tree(1) and phone_tree(1) != phone_tree(0)


def test_ten_megabytes_in_a_few_seconds() -> None:
    start = time.perf_counter()
    tree = generate_tree(10_000_000, seed=3)
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0, f"generate_tree(10 MB) took {elapsed:.1f} s"
    size = len(write_tnds(tree))
    assert 9_000_000 <= size <= 11_000_000


def test_realistic_content() -> None:
    tree = generate_tree(300_000, seed=0)
    tops = set(tree.root.children)
    assert {"DevInfo", "DevDetail", "DMAcc", "SCOMO", "Con", "Vendor"} <= tops
    formats = {n.format for _, n in tree.walk()}
    assert {"chr", "int", "bool", "b64", "node", "date"} <= formats
    assert len(tree.get("./DMAcc").children) > 3 and secret_uris(tree)
    # neither constant nor random: TNDS compresses well, canonical bytes still compress
    tnds = write_tnds(tree)
    canon = canonical_bytes(tree)
    assert 4 < len(tnds) / len(zlib.compress(tnds, 6)) < 60
    assert 1.5 < len(canon) / len(zlib.compress(canon, 6)) < 20


def test_mutate_leaves() -> None:
    base = generate_tree(100_000, seed=2)
    leaves = sum(1 for _, n in base.walk() if not n.interior and n.format != "null")
    a, b = base.copy(), base.copy()
    changed = mutate_leaves(a, 0.05, seed=9)
    assert changed == mutate_leaves(b, 0.05, seed=9) and a == b
    assert len(changed) == round(0.05 * leaves)
    d = diff(base, a)
    assert {c.uri for c in d} == set(changed)
    assert all(c.kind == "changed" and c.fields == ("value",) for c in d)
    a.validate()
    assert mutate_leaves(base.copy(), 0.0, seed=1) == []
