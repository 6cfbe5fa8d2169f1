"""The fast TNDS reader on bad input: hostile, malformed, truncated or oversized trees are
refused with one line naming the limit's option, in bounded memory, and nothing is written."""
from __future__ import annotations

import json
import sys
import tracemalloc
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from cards import run_cli

from host.cli import backup as cli_backup
from host.cli import card as cli_card
from host.errors import TreeError, XmlError
from host.tree.generate import generate_tree, phone_tree
from host.tree.tnds import DEFAULT_TREE_LIMITS, TreeLimits, export_tnds, iter_tnds, read_tnds, write_tnds

SAMPLE = Path(__file__).parent / "data" / "phone_tree.tnds.xml"
LEAF = b"<Node><NodeName>a</NodeName><RTProperties><Format><chr/></Format></RTProperties><Value>1</Value></Node>"


def _refused(doc: bytes, err: type = XmlError, limits: TreeLimits = DEFAULT_TREE_LIMITS) -> str:
    with pytest.raises(err) as exc:
        read_tnds(doc, limits=limits)
    msg = str(exc.value)
    assert msg and "\n" not in msg
    return msg


@pytest.mark.parametrize("doc", [
    b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "x"><!ENTITY b "&a;&a;&a;&a;">]><MgmtTree>&b;</MgmtTree>',
    b'<!DOCTYPE m [ <!ENTITY x SYSTEM "file:///etc/passwd"> ]><MgmtTree>&x;</MgmtTree>',
    b'<!DOCTYPE m [ <!ENTITY % e SYSTEM "http://127.0.0.1:1/e.dtd"> %e; ]><MgmtTree/>',
    b'<!DOCTYPE m [ <!ENTITY u SYSTEM "x" NDATA gif> ]><MgmtTree/>',
])
def test_entities_refused_before_the_tree_is_read(doc: bytes) -> None:
    assert "entit" in _refused(doc)


def test_undefined_entity_refused_with_position() -> None:
    assert _refused(b"<MgmtTree>\n  <Man>&nope;</Man></MgmtTree>") == \
        "XML malformed: undefined entity at line 2, column 7"
    _refused(b'<!DOCTYPE MgmtTree SYSTEM "http://127.0.0.1:1/x.dtd"><MgmtTree><Man>&nope;</Man></MgmtTree>')


def test_doctype_with_external_id_accepted_never_fetched() -> None:
    doc = (b'<?xml version="1.0"?>\n<!DOCTYPE MgmtTree PUBLIC "-//OMA//DTD-DM-DDF 1.2//EN" '
           b'"http://127.0.0.1:1/DM_DDF-V1_2.dtd">\n<MgmtTree xmlns="syncml:dmddf1.2">' + LEAF + b"</MgmtTree>")
    assert read_tnds(doc).get("./a").value == "1"


@pytest.mark.parametrize("doc,where", [
    (b"<MgmtTree>\n<Node>\n<NodeName>a</NodeName>\n</Nod>", "mismatched tag at line 4, column 2"),
    (b"<MgmtTree><Node><NodeName>a</NodeName>", "no element found at line 1, column 38"),
    (b"<MgmtTree><Node><NodeName>a</NodeName><Val", "unclosed token at line 1, column 38"),
    (b"<MgmtTree/><MgmtTree/>", "junk after document element at line 1, column 11"),
    (b"", "no element found at line 1, column 0"),
    (b"\xff\xfe<", "XML malformed"),
])
def test_malformed_and_truncated_name_line_and_column(doc: bytes, where: str) -> None:
    assert where in _refused(doc)


def test_truncated_large_tree_refused() -> None:
    data = write_tnds(generate_tree(300_000, seed=4))
    for cut in (len(data) // 3, len(data) - 20):
        assert "XML malformed" in _refused(data[:cut])


def test_depth_limit_is_exact_and_names_its_option() -> None:
    def nested(n: int) -> bytes:     # element depth: MgmtTree + n Nodes + RTProperties/Format/chr
        return (b"<MgmtTree>" + b"<Node><NodeName>n</NodeName>" * n
                + b"<RTProperties><Format><chr/></Format></RTProperties><Value>1</Value>" + b"</Node>" * n
                + b"</MgmtTree>")
    assert read_tnds(nested(60)).node_count() == 61          # depth 64: the default limit
    msg = _refused(nested(61))
    assert "deeper than 64" in msg and "--max-depth" in msg
    read_tnds(nested(61), limits=TreeLimits(max_depth=65))


def test_unclosed_nesting_refused_in_bounded_memory() -> None:
    doc = b"<MgmtTree>" + b"<Node>" * 1_000_000
    tracemalloc.start()
    try:
        assert "--max-depth" in _refused(doc)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 << 20, peak


def test_many_lt_in_cdata_parsed_exactly() -> None:
    # '<' inside CDATA and comments raise the cheap depth bound: the exact pass must accept
    value = b"<a><b>" * 400
    doc = (b"<MgmtTree><!-- " + b"<x " * 300 + b"--><Node><NodeName>X</NodeName><Value><![CDATA["
           + value + b"]]></Value></Node></MgmtTree>")
    assert read_tnds(doc).get("./X").value == value.decode()


def test_sibling_flood_refused_in_bounded_memory() -> None:
    doc = b"<MgmtTree>" + b"<Node><NodeName>a</NodeName></Node>" * 1_000_000 + b"</MgmtTree>"
    limits = TreeLimits(max_bytes=len(doc), max_nodes=100_000)
    tracemalloc.start()
    try:
        msg = _refused(doc, limits=limits)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "more than 100000 nodes" in msg and "--max-nodes" in msg
    assert peak < 120 << 20, peak


def test_element_flood_inside_one_node_refused() -> None:
    doc = b"<MgmtTree><Node><NodeName>a</NodeName><Value>" + b"<x/>" * 200_000 + b"</Value></Node></MgmtTree>"
    assert "--max-nodes" in _refused(doc, limits=TreeLimits(max_nodes=1000))


def test_size_limit_names_its_option() -> None:
    big = b"<MgmtTree><Node><NodeName>a</NodeName><Value>" + b"x" * 3000 + b"</Value></Node></MgmtTree>"
    msg = _refused(big, limits=TreeLimits(max_bytes=1000))
    assert "exceeds the limit of 1000" in msg and "--max-tree-bytes" in msg
    assert read_tnds(big, limits=TreeLimits(max_bytes=len(big))).get("./a").value == "x" * 3000


def test_structure_errors_name_the_node_uri() -> None:
    bad_bin = (b"<MgmtTree><Node><NodeName>A</NodeName><Node><NodeName>B</NodeName><RTProperties><Format>"
               b"<bin/></Format></RTProperties><Value>!!</Value></Node></Node></MgmtTree>")
    assert _refused(bad_bin, TreeError) == "TNDS: bin value of ./A/B is not base64"
    slash = b"<MgmtTree><Node><NodeName>A</NodeName><Node><NodeName>x/y</NodeName></Node></Node></MgmtTree>"
    assert _refused(slash, TreeError) == "TNDS: invalid NodeName 'x/y' under ./A"
    leaf = (b"<MgmtTree><Node><NodeName>A</NodeName><Node><NodeName>B</NodeName><RTProperties><Format><node/>"
            b"</Format></RTProperties><Value>v</Value></Node></Node></MgmtTree>")
    assert _refused(leaf, TreeError).startswith("TNDS invalid: ./A/B: ")


def test_continuations_merge_as_before() -> None:
    tree = phone_tree(2)
    pieces = [export_tnds(tree, "./DevInfo"), export_tnds(tree, "./DevDetail/URI")]
    merged = b"<MgmtTree>" + b"".join(p.split(b'<VerDTD>1.2</VerDTD>', 1)[1].split(b"</MgmtTree>")[0]
                                      .split(b"</Mod>", 1)[-1] for p in pieces) + b"</MgmtTree>"
    back = read_tnds(merged)
    assert back.get("./DevInfo") == tree.get("./DevInfo")
    assert back.get("./DevDetail/URI") == tree.get("./DevDetail/URI")
    assert back.get("./DevDetail").interior
    twice = (b"<MgmtTree><Node><NodeName>A</NodeName><Node><NodeName>B</NodeName><Value>1</Value></Node></Node>"
             b"<Node><NodeName>A</NodeName><RTProperties><ACL>Get=*</ACL></RTProperties>"
             b"<Node><NodeName>C</NodeName><Value>2</Value></Node></Node></MgmtTree>")
    t = read_tnds(twice)
    assert list(t.get("./A").children) == ["B", "C"] and t.get("./A").acl == "Get=*"


def test_round_trip_and_streamed_writer_agree() -> None:
    tree = generate_tree(1_200_000, seed=11)
    data = write_tnds(tree)
    assert read_tnds(data) == tree
    pieces = list(iter_tnds(tree))
    assert len(pieces) > 1 and b"".join(pieces) == data
    assert read_tnds(SAMPLE.read_bytes()) == read_tnds(write_tnds(read_tnds(SAMPLE.read_bytes())))


# ---- the CLI: the limits are options, and a refusal writes nothing --------------------------


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    return run_cli(argv, capsys, cli_card, cli_backup)


@pytest.fixture
def home(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SIMVAULT_HOME", str(tmp_path / "home"))
    assert run(["keys", "gen"], capsys)[0] == 0
    return tmp_path


def test_cli_size_limit_is_an_option(home, capsys):
    tree = home / "live.xml"
    tree.write_bytes(SAMPLE.read_bytes())
    store = home / "backups"
    size = tree.stat().st_size
    code, _, err = run(["backup", "--tree", str(tree), "--to", f"{store}/", "--max-tree-bytes", "8K"], capsys)
    assert code != 0 and f"{size} bytes exceeds the limit of 8192" in err and "--max-tree-bytes" in err
    assert len(err.strip().splitlines()) == 1 and not store.exists()
    code, out, err = run(["backup", "--tree", str(tree), "--to", f"{store}/", "--max-tree-bytes", "1M",
                          "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["backup_id"]


def test_cli_refused_live_tree_is_left_as_it_was(home, capsys):
    tree = home / "live.xml"
    tree.write_bytes(SAMPLE.read_bytes())
    store = home / "backups"
    assert run(["backup", "--tree", str(tree), "--to", f"{store}/"], capsys)[0] == 0
    hostile = b"<MgmtTree>" + b"<Node><NodeName>n</NodeName>" * 40 + b"</Node>" * 40 + b"</MgmtTree>"
    tree.write_bytes(hostile)
    code, _, err = run(["restore", "--tree", str(tree), "--from", str(store), "--max-depth", "32"], capsys)
    assert code != 0 and "--max-depth" in err and tree.read_bytes() == hostile
    assert [p.name for p in home.iterdir() if p.name.startswith(".live")] == []


def test_cli_oversized_file_refused_before_it_is_read(home, capsys):
    tree = home / "huge.xml"
    with open(tree, "wb") as f:          # sparse: 200 MB that are never read
        f.truncate(200 * 1000 * 1000)
    code, _, err = run(["backup", "--tree", str(tree), "--to", f"{home}/b/"], capsys)
    assert code != 0 and "200000000 bytes exceeds the limit of" in err and "--max-tree-bytes" in err
