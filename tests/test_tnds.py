"""TNDS read/write: the sample handset, continuations, export/import, bad input."""
from __future__ import annotations

from pathlib import Path

import pytest

from host.errors import TreeError, XmlError
from host.tree import (
    DMTree,
    NodeExists,
    export_tnds,
    import_tnds,
    parse_list_query,
    read_tnds,
    write_tnds,
)
from host.tree.generate import phone_tree

SAMPLE = Path(__file__).parent / "data" / "phone_tree.tnds.xml"


def test_sample_round_trip() -> None:
    data = SAMPLE.read_bytes()
    tree = read_tnds(data)
    assert tree.man == "Nordhavn Mobile" and tree.mod.startswith("NH-")
    assert tree.get("./DevInfo/DmV").value == "1.2"
    assert tree.get("./DevInfo/DevId").value.startswith("IMEI:35")
    assert tree.get("./DevInfo").type == "urn:oma:mo:oma-dm-devinfo:1.0"
    assert tree.get("./DevInfo").type_is_ddf
    assert tree.get("./DevDetail/URI/MaxDepth").format == "int"
    assert tree.get("./DevDetail/LrgObj").format == "bool"
    acc = next(iter(tree.get("./DMAcc").children.values()))
    assert acc.children["AppID"].value == "w7"
    assert acc.children["AppAuth"].children["ClientSide"].children["AAuthData"].format == "b64"
    assert tree.root.acl == "Add=*&Get=*"
    pkg = tree.get("./FUMO/FwUpdate/Update/PkgData")
    assert pkg.format == "bin" and pkg.value == b""
    assert tree.get("./SCOMO/Inventory/Deployed/Pkg1/Operations/Activate").format == "null"
    assert tree.node_count() > 150
    again = read_tnds(write_tnds(tree))
    assert again == tree
    assert write_tnds(again) == write_tnds(tree)
    assert tree == phone_tree(0)  # the file is what the generator's sample builds


def test_values_kept_exactly() -> None:
    t = DMTree(man="M & Co", mod=None)
    t.add("./Text", "  lead and trail  \r\n\tline2 <&> ]]>")
    t.add("./Empty", "")
    t.add("./NoValue", format="chr")
    t.add("./B64", " QUJD\nREVG ", format="b64")  # odd whitespace survives
    t.add("./Bin", b"\x00\xff\r\n", format="bin")
    t.add("./Uni", "Grüße 日本 \U0001F4F1")
    t.get("./Text").title = ""
    back = read_tnds(write_tnds(t))
    assert back == t
    assert back.get("./Empty").value == "" and back.get("./NoValue").value is None
    assert back.get("./Bin").value == b"\x00\xff\r\n"
    assert back.get("./Text").title == ""
    assert read_tnds(write_tnds(t, indent="")) == t


def test_continuation_path_and_doctype() -> None:
    doc = b"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE MgmtTree PUBLIC "-//OMA//DTD-DM-DDF 1.2//EN"
  "http://www.openmobilealliance.org/tech/DTD/DM_DDF-V1_2.dtd">
<MgmtTree xmlns="syncml:dmddf1.2">
  <VerDTD>1.2</VerDTD>
  <Node><NodeName>Vendor</NodeName>
    <Node><NodeName>ISP</NodeName>
      <RTProperties><ACL>Get=*</ACL></RTProperties>
    </Node>
  </Node>
  <Node><NodeName>GWName</NodeName><Path>./Vendor/ISP/GWInfo/</Path>
    <RTProperties><Format><chr/></Format><Type><MIME>text/plain</MIME></Type></RTProperties>
    <Value>gw.yyy.se</Value>
  </Node>
  <Node><NodeName>Other</NodeName><Path>Vendor</Path><Value>1</Value></Node>
</MgmtTree>"""
    t = read_tnds(doc)
    assert t.get("./Vendor/ISP").acl == "Get=*"
    assert t.get("./Vendor/ISP/GWInfo").interior
    assert t.get("./Vendor/ISP/GWInfo/GWName").value == "gw.yyy.se"
    assert t.get("./Vendor/Other").value == "1" and t.get("./Vendor/Other").format is None
    assert read_tnds(write_tnds(t)) == t


@pytest.mark.parametrize("doc,err", [
    (b"<Other/>", TreeError),
    (b'<MgmtTree xmlns="urn:wrong"/>', TreeError),
    (b"<MgmtTree><VerDTD>2.0</VerDTD></MgmtTree>", TreeError),
    (b"<MgmtTree><Node><Value>x</Value></Node></MgmtTree>", TreeError),  # no NodeName
    ((b"<MgmtTree><Node><NodeName>A</NodeName><Value>x</Value>"
     b"<Node><NodeName>B</NodeName></Node></Node></MgmtTree>"), TreeError),  # leaf with child
    ((b"<MgmtTree><Node><NodeName>A</NodeName><RTProperties><Format><bogus/></Format>"
     b"</RTProperties></Node></MgmtTree>"), TreeError),
    ((b"<MgmtTree><Node><NodeName>A</NodeName><RTProperties><Format><bin/></Format>"
     b"</RTProperties><Value>!!notbase64</Value></Node></MgmtTree>"), TreeError),
    (b"<MgmtTree><Node><NodeName>A</NodeName><DFProperties/></Node></MgmtTree>", TreeError),
    ((b"<MgmtTree><Node><NodeName>A</NodeName><RTProperties><ACL>Get=*</ACL></RTProperties>"
     b"</Node><Node><NodeName>A</NodeName><RTProperties><ACL>Get=x</ACL></RTProperties>"
     b"</Node></MgmtTree>"), TreeError),  # conflicting continuation
    ((b"<MgmtTree><Node><NodeName>A</NodeName><Value>x</Value><Value>y</Value></Node>"
     b"</MgmtTree>"), TreeError),
    (b"<MgmtTree><Node><NodeName>a/b</NodeName><Value>x</Value></Node></MgmtTree>", TreeError),
    (b'<!DOCTYPE m [<!ENTITY e "x">]><MgmtTree>&e;</MgmtTree>', XmlError),
])
def test_bad_tnds_refused(doc: bytes, err: type) -> None:
    with pytest.raises(err) as exc:
        read_tnds(doc)
    assert "\n" not in str(exc.value)


def test_export_subtree_with_options() -> None:
    tree = phone_tree(0)
    full = export_tnds(tree, "./DevDetail")
    assert b"<Path>.</Path>" in full and b"<NodeName>DevDetail</NodeName>" in full
    assert read_tnds(full).get("./DevDetail") == tree.get("./DevDetail")
    deep = export_tnds(tree, "./DevDetail/URI")
    assert b"<Path>./DevDetail</Path>" in deep
    assert read_tnds(deep).get("./DevDetail/URI") == tree.get("./DevDetail/URI")
    props, values = parse_list_query("list=TNDS+ACL+Format")
    bare = export_tnds(tree, "./DevInfo", values=values, props=props)
    assert b"<Value>" not in bare and b"<ACL>Get=*</ACL>" in bare and b"<MIME>" not in bare
    t2 = read_tnds(bare)
    assert t2.get("./DevInfo/DevId").value is None and t2.get("./DevInfo/DevId").format == "chr"
    assert parse_list_query("TNDS+Value") == (frozenset(), True)
    with pytest.raises(TreeError):
        parse_list_query("list=Struct")
    with pytest.raises(TreeError):
        parse_list_query("list=TNDS+Bogus")
    assert export_tnds(tree, ".") == write_tnds(tree)


def test_import_add_and_replace() -> None:
    tree = phone_tree(0)
    fragment = export_tnds(tree, "./DevDetail")
    live = tree.copy()
    with pytest.raises(NodeExists):
        import_tnds(live, ".", fragment, mode="add")
    assert live == tree  # nothing touched
    assert import_tnds(live, "./Vendor", fragment, mode="add") == ["./Vendor/DevDetail"]
    assert live.get("./Vendor/DevDetail") == tree.get("./DevDetail")
    live.replace("./DevDetail/FwV", "changed")
    assert import_tnds(live, ".", fragment, mode="replace") == ["./DevDetail"]
    assert live.get("./DevDetail") == tree.get("./DevDetail")
    with pytest.raises(TreeError):
        import_tnds(live, "./DevDetail/FwV", fragment)  # under a leaf
    with pytest.raises(TreeError):
        import_tnds(live, ".", write_tnds(tree))  # fragment sets the root's ACL
    with pytest.raises(TreeError):
        import_tnds(live, ".", fragment, mode="merge")
