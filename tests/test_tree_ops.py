"""Scope selection, diff and its rendering, all-or-nothing restore, secrets."""
from __future__ import annotations

import pytest

from host.errors import TreeError
from host.tree import (
    DMTree,
    NodeNotFound,
    apply_restore,
    diff,
    merge_keep_secrets,
    render_diff,
    secret_uris,
    select,
    strip_secrets,
)
from host.tree.generate import phone_tree

ACC = "./DMAcc/unitel1"


def test_select_keeps_subtrees_and_ancestors() -> None:
    tree = phone_tree(0)
    part = select(tree, ["./DevInfo", f"{ACC}/AppAddr", f"{ACC}/AppAddr/SrvAddr/Addr"])
    assert part.get("./DevInfo") == tree.get("./DevInfo")
    assert part.get(f"{ACC}/AppAddr") == tree.get(f"{ACC}/AppAddr")
    assert list(part.get(ACC).children) == ["AppAddr"]  # ancestor without its other children
    assert part.get(ACC).acl == tree.get(ACC).acl  # but with its own properties
    assert list(part.root.children) == ["DevInfo", "DMAcc"]
    assert part.root.acl == tree.root.acl and part.man == tree.man
    assert select(tree, ["."]) == tree
    with pytest.raises(NodeNotFound):
        select(tree, ["./Nope"])
    assert list(select(tree, ["./Nope", "./FUMO"], missing_ok=True).root.children) == ["FUMO"]


def test_diff_reports_added_removed_changed() -> None:
    a = phone_tree(0)
    b = a.copy()
    b.replace("./DevDetail/FwV", "FW-9.9.9")
    b.get("./DevInfo").acl = "Get=*&Replace=srv1"
    b.delete("./FUMO")
    b.add("./Vendor/NH/Settings/Display/NewKey", "42", format="int")
    b.add("./Ext", interior=True)
    b.add("./Ext/Leaf", "v")
    b.replace(f"{ACC}/AppAuth/ClientSide/AAuthSecret", "new-secret-value")
    changes = diff(a, b)
    by_uri = {c.uri: c for c in changes}
    assert by_uri["./DevDetail/FwV"].kind == "changed"
    assert by_uri["./DevDetail/FwV"].fields == ("value",)
    assert by_uri["./DevInfo"].fields == ("acl",)
    removed = [c.uri for c in changes if c.kind == "removed"]
    assert removed[0] == "./FUMO" and "./FUMO/FwUpdate/Download/PkgURL" in removed
    assert len(removed) == sum(1 for _ in a.walk("./FUMO"))
    added = [c.uri for c in changes if c.kind == "added"]
    assert added == ["./Ext", "./Ext/Leaf", "./Vendor/NH/Settings/Display/NewKey"]
    assert by_uri[f"{ACC}/AppAuth/ClientSide/AAuthSecret"].secret
    assert diff(a, a.copy()) == []
    # applying the diff's direction: diff(b, a) is the mirror image
    back = diff(b, a)
    assert {c.uri for c in back if c.kind == "added"} == set(removed)


def test_diff_leaf_to_interior_is_remove_then_add() -> None:
    a = DMTree()
    a.add("./X", "leaf")
    b = DMTree()
    b.add("./X/Y", "v", create_parents=True)
    assert [(c.kind, c.uri) for c in diff(a, b)] == [("removed", "./X"), ("added", "./X"),
                                                     ("added", "./X/Y")]


def test_render_diff_is_readable_and_masks_secrets() -> None:
    a = phone_tree(0)
    b = a.copy()
    b.replace("./DevDetail/FwV", "FW-9.9.9")
    old_secret = a.get(f"{ACC}/AppAuth/ClientSide/AAuthSecret").value
    b.replace(f"{ACC}/AppAuth/ClientSide/AAuthSecret", "brand-new-secret")
    b.delete("./DevInfo/Lang")
    b.add("./Vendor/NH/Blob", b"\x00" * 40, format="bin")
    text = render_diff(diff(a, b))
    assert f"~ ./DevDetail/FwV: value {a.get('./DevDetail/FwV').value!r} -> 'FW-9.9.9'" in text
    assert f"~ {ACC}/AppAuth/ClientSide/AAuthSecret: value <secret> -> <secret>" in text
    assert "brand-new-secret" not in text and old_secret not in text
    assert "- ./DevInfo/Lang = " in text
    assert "+ ./Vendor/NH/Blob = <40 bytes> (bin)" in text
    assert text.endswith("1 added, 1 removed, 2 changed\n")
    assert render_diff([]) == "no changes\n"


def test_apply_restore_replaces_scopes() -> None:
    backup = phone_tree(0)
    live = backup.copy()
    live.replace("./DevDetail/FwV", "drifted")
    live.add("./DevDetail/Extra", "new")
    live.delete("./FUMO")
    live.replace("./DevInfo/Lang", "xx")
    same_object = live
    changes = apply_restore(live, backup, ["./DevDetail", "./FUMO"])
    assert live is same_object
    assert live.get("./DevDetail") == backup.get("./DevDetail")
    assert live.get("./FUMO") == backup.get("./FUMO")
    assert live.get("./DevInfo/Lang").value == "xx"  # outside the scopes: untouched
    kinds = {(c.kind, c.uri) for c in changes}
    assert ("removed", "./DevDetail/Extra") in kinds and ("added", "./FUMO") in kinds
    apply_restore(live, backup)  # whole tree
    assert live == backup


def test_apply_restore_is_all_or_nothing() -> None:
    backup = phone_tree(0)
    live = backup.copy()
    live.replace("./DevDetail/FwV", "drifted")
    before = live.copy()
    with pytest.raises(NodeNotFound):  # second scope missing from the backup
        apply_restore(live, backup, ["./DevDetail", "./NotInBackup"])
    assert live == before

    def refuse(candidate: DMTree) -> None:
        assert candidate.get("./DevDetail/FwV").value != "drifted"
        raise TreeError("policy refuses this restore")
    with pytest.raises(TreeError, match="policy"):
        apply_restore(live, backup, ["./DevDetail"], check=refuse)
    assert live == before
    broken = backup.copy()
    broken.get("./DevDetail/FwV").value = b"bytes in a chr leaf"  # invalid tree
    with pytest.raises(TreeError, match="nothing applied"):
        apply_restore(live, broken, ["./DevDetail"])
    assert live == before
    preview = apply_restore(live, backup, ["./DevDetail"], dry_run=True)
    assert [c.uri for c in preview] == ["./DevDetail/FwV"] and live == before


def test_secret_uris() -> None:
    tree = phone_tree(0)
    secrets = secret_uris(tree)
    assert f"{ACC}/AppAuth/ClientSide/AAuthSecret" in secrets
    assert f"{ACC}/AppAuth/ServerSide/AAuthData" in secrets
    assert any(s.endswith("/NAP/AuthInfo/AuthSecret") for s in secrets)
    assert any(s.endswith("/PX/Proxy1/AuthInfo/AuthSecret") for s in secrets)
    assert f"{ACC}/AppAuth/ClientSide/AAuthName" not in secrets
    assert "./DevInfo/DevId" not in secrets
    t = DMTree()
    t.add("./DMAcc/a/AppAuth/x/Blob", "QUJD", format="b64", create_parents=True)
    t.add("./SyncML/DMAcc/old/ClientPW", "pw", create_parents=True)
    t.add("./Vendor/K/Keys/k1", "key", create_parents=True)
    assert secret_uris(t) == ["./DMAcc/a/AppAuth/x/Blob", "./SyncML/DMAcc/old/ClientPW"]
    assert "./Vendor/K/Keys/k1" in secret_uris(t, ["./Vendor/*/Keys/*"])


def test_strip_and_merge_keep_live_secrets() -> None:
    live = phone_tree(0)
    backup = strip_secrets(live)
    assert secret_uris(backup) == [] and secret_uris(live)
    assert not backup.exists(f"{ACC}/AppAuth/ClientSide/AAuthSecret")
    assert backup.exists(f"{ACC}/AppAuth/ClientSide/AAuthName")
    # the device changed its credentials and a setting since the backup
    live.replace(f"{ACC}/AppAuth/ClientSide/AAuthSecret", "rotated-secret")
    live.replace("./DevInfo/Lang", "xx")
    merged = merge_keep_secrets(backup, live)
    assert merged.get(f"{ACC}/AppAuth/ClientSide/AAuthSecret").value == "rotated-secret"
    assert merged.get("./DevInfo/Lang").value != "xx"
    # restore of a secret-less backup keeps the live secrets, all of them
    apply_restore(live, backup, keep_live_secrets=True)
    assert live.get(f"{ACC}/AppAuth/ClientSide/AAuthSecret").value == "rotated-secret"
    assert set(secret_uris(live)) == set(secret_uris(phone_tree(0)))
    # a backup with (old) secrets: keep_live_secrets still wins
    old = phone_tree(0)
    apply_restore(live, old, keep_live_secrets=True)
    assert live.get(f"{ACC}/AppAuth/ClientSide/AAuthSecret").value == "rotated-secret"
    apply_restore(live, old)
    assert live == old
    # an account the device lost comes back with the backup's credentials
    live.delete(ACC)
    apply_restore(live, old, keep_live_secrets=True)
    assert live == old
