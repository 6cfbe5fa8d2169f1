"""DM tree model: URIs, commands, ACL inheritance."""
from __future__ import annotations

import pytest

from host.errors import TreeError
from host.tree import (
    Acl,
    DMNode,
    DMTree,
    InvalidUri,
    NodeExists,
    NodeNotFound,
    NotAllowed,
    join_uri,
    normalize_uri,
    parent_uri,
    split_query,
    split_uri,
)


def small_tree() -> DMTree:
    t = DMTree()
    t.root.acl = "Add=*&Get=*"
    t.add("./DMAcc", acl="Get=*&Add=srv1")
    t.add("./DMAcc/acc1", acl="Get=srv1&Replace=srv1&Delete=srv1")
    t.add("./DMAcc/acc1/Name", "Operator")
    t.add("./DMAcc/acc1/AppAuth/cli/AAuthSecret", "s3cret", create_parents=True)
    t.add("./DMAcc/acc1/Locked", "x", acl="Get=srv2")
    t.add("./DMAcc/acc1/Empty", "y", acl="")
    t.add("./DevInfo", acl="Get=*")
    t.add("./DevInfo/DevId", "IMEI:350000000000001")
    return t


@pytest.mark.parametrize("uri,names", [
    (".", []), ("./", []), ("./A", ["A"]), ("A/B", ["A", "B"]), ("./A/B%2FC", ["A", "B/C"]),
    ("./50%25", ["50%"]), ("./a%3Fb", ["a?b"]),
])
def test_split_uri(uri: str, names: list[str]) -> None:
    assert split_uri(uri) == names
    assert split_uri(join_uri(names)) == names


@pytest.mark.parametrize("uri", ["", "./A/", "/A", "./A//B", "./A/../B", "./A/./B", "./A?list=TNDS"])
def test_split_uri_refuses(uri: str) -> None:
    with pytest.raises(InvalidUri):
        split_uri(uri)


def test_uri_helpers() -> None:
    assert split_query("./A/B?list=TNDS+ACL") == ("./A/B", "list=TNDS+ACL")
    assert split_query("./A") == ("./A", None)
    assert normalize_uri("A/B") == "./A/B"
    assert parent_uri("./A/B") == "./A" and parent_uri("./A") == "."
    assert split_uri("./Vendor/MSFT/", allow_trailing_slash=True) == ["Vendor", "MSFT"]
    with pytest.raises(InvalidUri):
        parent_uri(".")


def test_add_get_replace_delete() -> None:
    t = small_tree()
    assert t.get("DMAcc/acc1/Name").value == "Operator"
    assert t.children("./DMAcc/acc1") == ["Name", "AppAuth", "Locked", "Empty"]
    assert t.get("./DMAcc/acc1/AppAuth").interior
    t.replace("./DMAcc/acc1/Name", "Other")
    assert t.get("./DMAcc/acc1/Name").value == "Other"
    t.replace("./DMAcc/acc1/Name", b"\x00\x01", format="bin")
    assert t.get("./DMAcc/acc1/Name").data == b"\x00\x01"
    with pytest.raises(NotAllowed):
        t.replace("./DMAcc", "x")
    with pytest.raises(TreeError):  # bin needs bytes; node unchanged on failure
        t.replace("./DMAcc/acc1/Name", "text", format="bin")
    assert t.get("./DMAcc/acc1/Name").value == b"\x00\x01"
    with pytest.raises(NodeExists):
        t.add("./DMAcc/acc1/Name", "again")
    with pytest.raises(NodeNotFound):
        t.add("./Nope/Leaf", "v")
    with pytest.raises(NotAllowed):
        t.add("./DMAcc/acc1/Name/Child", "v")
    removed = t.delete("./DMAcc/acc1")
    assert "Name" in removed.children and not t.exists("./DMAcc/acc1/Name")
    with pytest.raises(NodeNotFound):
        t.delete("./DMAcc/acc1")
    with pytest.raises(NotAllowed):
        t.delete(".")


def test_leaf_values_and_formats() -> None:
    t = DMTree()
    t.add("./B64", "AAEC\n", format="b64")
    assert t.get("./B64").data == b"\x00\x01\x02"
    assert t.get("./B64").value == "AAEC\n"  # kept exactly as given
    t.add("./Null", format="null")
    assert not t.get("./Null").interior and t.get("./Null").value is None
    with pytest.raises(TreeError):
        t.add("./Bad", "x", format="nosuch")
    with pytest.raises(TreeError):
        DMTree().add("./Leaf", b"bytes")  # bytes only with Format bin


def test_walk_copy_and_equality() -> None:
    t = small_tree()
    uris = [u for u, _ in t.walk()]
    assert uris[0] == "." and uris[1] == "./DMAcc" and "./DevInfo/DevId" in uris
    assert [u for u, _ in t.walk("./DevInfo")] == ["./DevInfo", "./DevInfo/DevId"]
    c = t.copy()
    assert c == t
    c.replace("./DevInfo/DevId", "IMEI:0")
    assert c != t and t.get("./DevInfo/DevId").value == "IMEI:350000000000001"


def test_copy_node_and_properties() -> None:
    t = small_tree()
    t.copy_node("./DevInfo", "./DevInfoCopy")
    assert t.get("./DevInfoCopy/DevId").value == "IMEI:350000000000001"
    with pytest.raises(NotAllowed):
        t.copy_node("./DevInfo", "./DevInfo/Inner")
    assert t.get_property("./DevInfo/DevId", "Format") == "chr"
    assert t.get_property("./DevInfo", "Format") == "node"
    assert t.get_property("./DevInfo/DevId", "Size") == "20"
    t.set_property("./DevInfo", "ACL", "Get=*&Replace=srv1")
    assert t.get("./DevInfo").acl == "Get=*&Replace=srv1"
    with pytest.raises(TreeError):
        t.set_property("./DevInfo", "ACL", "Fetch=*")
    t.set_property("./DevInfoCopy", "Name", "Renamed")
    assert t.exists("./Renamed/DevId") and not t.exists("./DevInfoCopy")
    with pytest.raises(NotAllowed):
        t.set_property("./DevInfo", "Format", "chr")


def test_acl_parse_and_render() -> None:
    acl = Acl.parse("Add=*&Get=srv1+srv2&Replace=srv1")
    assert acl.allows("anyone", "Add")
    assert acl.allows("srv2", "Get") and not acl.allows("srv3", "Get")
    assert not acl.allows("srv1", "Delete")
    assert str(acl) == "Add=*&Get=srv1+srv2&Replace=srv1"
    for bad in ("Get", "Get=", "Fetch=*", "Get=a++b", "Get=*&"):
        with pytest.raises(TreeError):
            Acl.parse(bad)


def test_acl_inheritance() -> None:
    t = small_tree()
    # own ACL
    assert t.acl_allows("./DMAcc/acc1", "srv1", "Replace")
    assert not t.acl_allows("./DMAcc/acc1", "srv2", "Get")
    # no ACL: inherited from acc1 (whole ACL)
    assert t.acl_allows("./DMAcc/acc1/Name", "srv1", "Get")
    assert not t.acl_allows("./DMAcc/acc1/Name", "srv2", "Get")
    assert t.acl_allows("./DMAcc/acc1/AppAuth/cli/AAuthSecret", "srv1", "Delete")
    # empty ACL inherits too
    assert t.acl_allows("./DMAcc/acc1/Empty", "srv1", "Replace")
    # a non-empty ACL does not inherit per command: Locked grants only Get=srv2
    assert t.acl_allows("./DMAcc/acc1/Locked", "srv2", "Get")
    assert not t.acl_allows("./DMAcc/acc1/Locked", "srv1", "Replace")
    # from the root
    assert t.acl_allows("./DevInfo/DevId", "any", "Get")
    assert not t.acl_allows("./DevInfo/DevId", "any", "Replace")
    # root default when the root has no ACL
    bare = DMTree()
    bare.add("./X", "1")
    assert bare.acl_allows("./X", "s", "Get") and bare.acl_allows(".", "s", "Add")
    assert not bare.acl_allows("./X", "s", "Delete")
    with pytest.raises(NodeNotFound):
        t.acl_allows("./Nope", "srv1", "Get")
    with pytest.raises(TreeError):
        t.acl_allows("./DevInfo", "srv1", "Fetch")


def test_node_validation() -> None:
    with pytest.raises(TreeError):
        DMNode("a/b", value="x").validate()
    with pytest.raises(TreeError):
        DMNode("leaf").validate()  # neither value nor Format
    with pytest.raises(TreeError):
        DMNode("i", interior=True, value="x").validate()
    with pytest.raises(TreeError):
        DMNode("t", value="x", type_is_ddf=True).validate()
    with pytest.raises(TreeError):
        DMTree(DMNode("notroot", interior=True))
