"""Format 3 (base + node-level delta layers): deltas, chains, re-base policy, tampering, v1 archives."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apdu_specs.manifest import MANIFEST, ChunkRef
from host.backup import ops
from host.archive import Archive, LayeredHost, RebasePolicy, make_layered_archive, verify_archive
from host.archive.delta import apply_delta, diff_trees
from host.errors import ArchiveError, IntegrityError, UsageError
from host.backup.keys import load_identity
from host.tree.canonical import canonical_bytes
from host.tree.generate import generate_tree, mutate_leaves
from host.tree.model import DMNode, DMTree

V1_DATA = Path(__file__).parent / "data" / "v1_archive"
FEW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
CHAINS = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# ---- edits a device makes to its tree ---------------------------------------------------


def _nodes(tree: DMTree) -> list[tuple[str, DMNode]]:
    return list(tree.walk())


def edit(tree: DMTree, kind: int, pick: int, n: int) -> None:
    """One edit chosen by (kind, pick, n): value, property, add, delete, reorder, retype, header."""
    nodes = _nodes(tree)
    uri, node = nodes[pick % len(nodes)]
    interiors = [(u, x) for u, x in nodes if x.interior]
    kind %= 8
    if kind == 0 and not node.interior:
        node.value = f"v{n}" if not isinstance(node.value, bytes) else os.urandom(n % 9)
        if node.format == "bin" and not isinstance(node.value, bytes):
            node.value = node.value.encode()
    elif kind == 1:
        node.acl = None if n % 3 == 0 else f"Get=srv{n}"
        node.title = f"t{n}" if n % 2 else None
    elif kind == 2:
        puri, parent = interiors[n % len(interiors)]
        leaf = DMNode(f"N{n}x{pick}", value=str(n), format="int")
        if leaf.name not in parent.children:
            items = list(parent.children.items())
            items.insert(n % (len(items) + 1), (leaf.name, leaf))
            parent.children = dict(items)
    elif kind == 3 and uri != ".":
        tree.delete(uri)
    elif kind == 4 and len(node.children) > 1:
        items = list(node.children.items())
        k = n % len(items)
        node.children = dict(items[k:] + items[:k][::-1])
    elif kind == 5 and uri != "." and not node.interior:   # a leaf becomes an interior node
        parent = tree.find(uri.rsplit("/", 1)[0])
        fresh = DMNode(node.name, interior=True, format="node")
        fresh.children = {"Sub": DMNode("Sub", value="1", format="int")}
        parent.children = {k: (fresh if k == node.name else v) for k, v in parent.children.items()}
    elif kind == 6:
        tree.man, tree.mod = (f"M{n}", None) if n % 2 else (tree.man, f"X{n}")
    elif kind == 7 and interiors:
        puri, parent = interiors[n % len(interiors)]
        sub = DMNode(f"T{n}", interior=True, format="node", type="urn:x", type_is_ddf=True)
        sub.children = {"a": DMNode("a", value=b"\x00\x01", format="bin"), "b": DMNode("b", format="null")}
        parent.children.setdefault(sub.name, sub)


edits = st.lists(st.tuples(st.integers(0, 7), st.integers(0, 10_000), st.integers(0, 10_000)),
                 min_size=0, max_size=12)


@pytest.fixture(scope="module")
def small_tree() -> DMTree:
    return generate_tree(8_000, 21)


@FEW
@given(steps=edits)
def test_delta_turns_the_old_tree_into_the_new_exactly(small_tree, steps):
    new = small_tree.copy()
    for step in steps:
        edit(new, *step)
    delta = diff_trees(small_tree, new)
    rebuilt = small_tree.copy()
    apply_delta(rebuilt, delta)
    assert canonical_bytes(rebuilt) == canonical_bytes(new)     # order, Man/Mod, every field
    assert diff_trees(new, new) == diff_trees(small_tree, small_tree)   # no change: an empty delta


def test_a_delta_that_does_not_fit_is_refused(small_tree):
    new = small_tree.copy()
    new.delete("./DevDetail")
    delta = diff_trees(small_tree, new)
    with pytest.raises(IntegrityError, match="does not apply"):
        apply_delta(new.copy(), delta)                          # DevDetail is not there to delete
    for cut in (len(delta) - 1, 7, 8):
        with pytest.raises(IntegrityError):
            apply_delta(small_tree.copy(), delta[:cut] + b"\x09")


@CHAINS
@given(rounds=st.lists(edits, min_size=1, max_size=5))
def test_chains_of_incrementals_restore_every_backup(ident, rounds):
    tree = generate_tree(12_000, 5)
    chain = [ops.backup_tree(tree, ident)]
    trees = [tree.copy()]
    for steps in rounds:
        for step in steps:
            edit(tree, *step)
        chain.append(ops.backup_tree(tree, ident, previous=chain[-1], device_id=chain[0].device_id))
        trees.append(tree.copy())
    for archive, expected in zip(chain, trees):
        again = Archive.from_bytes(archive.to_bytes())
        assert again.to_bytes() == archive.to_bytes() and again.format == 3
        assert canonical_bytes(verify_archive(again, ident.trust, ident.decryptor).tree) == canonical_bytes(expected)


def test_an_incremental_sends_a_small_layer_and_reuses_the_rest(ident):
    tree = generate_tree(1_000_000, 8)
    full = ops.backup_tree(tree, ident)
    mutate_leaves(tree, 0.01, seed=3)
    tree.replace("./DevInfo/DevId", full.device_id)
    inc = ops.backup_tree(tree, ident, previous=full)
    old = {c.chunk_id for c in full.manifest.chunks}
    new = [c for c in inc.manifest.chunks if c.chunk_id not in old]
    assert inc.host.previous == full.backup_id and inc.host.chain_id == full.host.chain_id
    assert len(new) == 1 and len(inc.host.segments) == 2
    sent = sum(c.size for c in new) + len(inc.manifest_bytes) + 64
    assert sent < 0.06 * len(full.to_bytes())     # 1% of the leaves: ~5% (bench/bench_backup.py)
    same = ops.backup_tree(tree, ident, previous=inc)              # nothing changed: nothing new
    assert same.manifest.chunks == inc.manifest.chunks and same.backup_id != inc.backup_id
    assert verify_archive(same, ident.trust, ident.decryptor).tree == tree


def _chain(ident, tree, n, policy, fraction=0.01):
    archives = [make_layered_archive(tree, ident.signer, ident.recipients(), policy=policy)]
    for i in range(n):
        mutate_leaves(tree, fraction, seed=100 + i)
        tree.replace("./DevInfo/DevId", archives[0].device_id)
        archives.append(make_layered_archive(tree, ident.signer, ident.recipients(), previous=archives[-1],
                                             decryptor=ident.decryptor, policy=policy))
    return archives


def test_small_layers_are_merged_so_the_table_does_not_grow(ident):
    tree = generate_tree(60_000, 2)
    chain = [ops.backup_tree(tree, ident)]
    for i in range(6):      # one leaf per backup: a layer of a few dozen bytes
        tree.replace("./DevDetail/FwV", f"FW-{i}")
        chain.append(ops.backup_tree(tree, ident, previous=chain[-1]))
    assert [len(a.host.segments) for a in chain] == [1, 2, 2, 2, 2, 2, 2]
    assert chain[-1].host.generation == 7
    assert verify_archive(chain[-1], ident.trust, ident.decryptor).tree == tree


def test_rebase_policy_bounds_layers_and_their_bytes(ident):
    tree = generate_tree(60_000, 3)
    capped = _chain(ident, tree.copy(), 5, RebasePolicy(merge_below=0, max_layers=3, amortize=False))
    assert [len(a.host.segments) for a in capped] == [1, 2, 3, 4, 1, 2]
    assert capped[4].host.previous is None and capped[4].host.chain_id != capped[3].host.chain_id
    heavy = _chain(ident, tree.copy(), 3, RebasePolicy(merge_below=0, max_layer_fraction=0.1, amortize=False),
                   fraction=0.05)
    assert any(a.host.previous is None for a in heavy[1:])
    for archive in capped + heavy:
        verify_archive(archive, ident.trust, ident.decryptor)


def test_amortized_rebase_when_an_incremental_costs_more_than_the_average(ident):
    tree = generate_tree(60_000, 4)
    chain = _chain(ident, tree.copy(), 2, RebasePolicy())
    assert [a.host.previous is None for a in chain] == [True, False, False]
    mutate_leaves(tree, 0.9, seed=7)                    # most of the tree: a layer near a full's size
    tree.replace("./DevInfo/DevId", chain[0].device_id)
    big = ops.backup_tree(tree, ident, previous=chain[-1])
    assert big.host.previous is None and len(big.host.segments) == 1


def test_previous_must_be_complete_ours_and_format_3(ident, small_tree, tmp_path):
    full = make_layered_archive(small_tree, ident.signer, ident.recipients())
    partial = Archive(full.manifest_bytes, full.signature, {})
    with pytest.raises(UsageError, match="every chunk"):
        make_layered_archive(small_tree, ident.signer, ident.recipients(), previous=partial,
                             decryptor=ident.decryptor)
    assert ops.backup_tree(small_tree, ident, previous=partial).host.previous is None   # a new chain
    v1 = ops.backup_tree(small_tree, ident, archive_format=1)
    assert v1.format == 1 and ops.backup_tree(small_tree, ident, previous=v1).host.previous is None
    from host.backup.keys import generate_identity
    mallory = generate_identity(tmp_path / "m", "m")
    planted = make_layered_archive(small_tree, mallory.signer, [ident.recipient, mallory.recipient])
    with pytest.raises(IntegrityError, match="not signed by this device"):
        make_layered_archive(small_tree, ident.signer, ident.recipients(), previous=planted,
                             decryptor=ident.decryptor)


# ---- tampering ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def layered(ident) -> Archive:
    tree = generate_tree(40_000, 9)
    return _chain(ident, tree, 3, RebasePolicy(merge_below=0, amortize=False))[-1]


def _resigned(a: Archive, signer, *, host: LayeredHost | None = None, chunks=None) -> Archive:
    m = a.manifest
    fields = {**m.__dict__, "total_size": -1}
    if host is not None:
        fields["host_section"] = host.encode()
    if chunks is not None:
        fields["chunks"] = tuple(chunks)
    raw = MANIFEST.build(type(m)(**fields))
    return Archive(raw, signer.sign(raw), dict(a.chunks))


def test_every_piece_is_checked(ident, layered):
    assert len(layered.host.segments) == 4
    for ref in layered.manifest.chunks:
        flipped = bytearray(layered.chunks[ref.chunk_id])
        flipped[len(flipped) // 2] ^= 1
        bad = Archive(layered.manifest_bytes, layered.signature, {**layered.chunks, ref.chunk_id: bytes(flipped)})
        with pytest.raises(IntegrityError, match="signed hash"):
            verify_archive(bad, ident.trust, ident.decryptor)
        missing = {k: v for k, v in layered.chunks.items() if k != ref.chunk_id}
        with pytest.raises(IntegrityError, match="lacks"):
            verify_archive(Archive(layered.manifest_bytes, layered.signature, missing), ident.trust, ident.decryptor)


def test_reordered_dropped_or_foreign_layers_are_refused_even_when_signed(ident, layered, tmp_path):
    refs = list(layered.manifest.chunks)
    swapped = refs[:-2] + [refs[-1], refs[-2]]            # two layers change places
    with pytest.raises(IntegrityError, match="reordered"):
        verify_archive(_resigned(layered, ident.signer, chunks=swapped), ident.trust, ident.decryptor)
    host = layered.host
    shorter = dataclasses.replace(host, segments=host.segments[:-1])    # the newest layer dropped
    with pytest.raises(IntegrityError, match="does not match its hash|not its signed size"):
        verify_archive(_resigned(layered, ident.signer, host=shorter, chunks=refs[:-1]),
                       ident.trust, ident.decryptor)
    # a piece of another chain under this id: the GCM tag (AAD binds chain and chunk id) refuses it
    other = make_layered_archive(generate_tree(40_000, 9), ident.signer, ident.recipients())
    alien = other.chunks[other.manifest.chunks[0].chunk_id]
    for at, refused in ((len(refs) - 1, "GCM tag"),              # in a layer's place
                        (0, "do not open with this device key")):  # the base's: its key block is the other chain's
        cid = refs[at].chunk_id
        table = list(refs)
        table[at] = ChunkRef(cid, hashlib.sha256(alien).digest(), len(alien))
        forged = _resigned(layered, ident.signer, chunks=table)
        forged.chunks[cid] = alien
        with pytest.raises(IntegrityError, match=refused):
            verify_archive(forged, ident.trust, ident.decryptor)
    with pytest.raises(IntegrityError, match="signature invalid"):
        raw = bytearray(layered.manifest_bytes)
        raw[-3] ^= 1                                        # inside the host section
        verify_archive(Archive(bytes(raw), layered.signature, dict(layered.chunks)), ident.trust, ident.decryptor)


@FEW
@given(pos=st.integers(0, 10_000), value=st.integers(0, 255), cut=st.booleans())
def test_fuzzed_layered_host_sections_only_raise_archive_errors(layered, pos, value, cut):
    raw = bytearray(layered.host.encode())
    pos %= len(raw)
    if cut:
        raw = raw[:pos]
    else:
        raw[pos] = value
    try:
        decoded = LayeredHost.decode(bytes(raw))
    except ArchiveError as exc:
        assert "\n" not in str(exc)
    else:
        assert decoded.encode() == bytes(raw)


# ---- archives made by the earlier code (format 1) --------------------------------------


@pytest.fixture
def v1_identity(tmp_path):
    keys = tmp_path / "keys"
    shutil.copytree(V1_DATA / "keys", keys)
    os.chmod(keys, 0o700)
    for pem in keys.glob("*.pem"):
        os.chmod(pem, 0o600)
    return load_identity(keys)


def test_version_1_archives_still_restore(v1_identity, tmp_path):
    info = json.loads((V1_DATA / "README.json").read_text())
    for name in ("full", "incremental"):
        archive = ops.read_archive_file(V1_DATA / f"{name}.svarch")
        assert archive.format == 1 and archive.host.version == 2
        assert archive.to_bytes() == (V1_DATA / f"{name}.svarch").read_bytes()
        verified = verify_archive(archive, v1_identity.trust, v1_identity.decryptor)
        assert hashlib.sha256(canonical_bytes(verified.tree)).hexdigest() == info[name]["canonical_sha256"]
        target = tmp_path / f"{name}.xml"
        report = ops.restore_tree_file(target, archive, v1_identity, create=True)
        assert report.applied and target.exists()
        assert canonical_bytes(ops.read_tree_file(target)) == canonical_bytes(verified.tree)
    # the next backup of a format-1 chain starts a format-3 one
    tree = verify_archive(archive, v1_identity.trust, v1_identity.decryptor).tree
    mutate_leaves(tree, 0.01, seed=1)
    nxt = ops.backup_tree(tree, v1_identity, previous=archive, device_id=archive.device_id)
    assert nxt.format == 3 and nxt.host.previous is None
    assert verify_archive(nxt, v1_identity.trust, v1_identity.decryptor).tree == tree
