"""host.tree.safexml: refuses entity attacks and oversized input, serialises losslessly."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from host.errors import XmlError
from host.tree import safexml
from host.tree.safexml import XmlLimits, parse, serialize

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<lolz>&lol3;</lolz>"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE foo [ <!ENTITY xxe SYSTEM "file:///etc/passwd"> ]>
<foo>&xxe;</foo>"""

PARAM_XXE = b"""<?xml version="1.0"?>
<!DOCTYPE foo [ <!ENTITY % ext SYSTEM "http://127.0.0.1:1/evil.dtd"> %ext; ]>
<foo/>"""


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg
    return msg


def test_billion_laughs_refused() -> None:
    with pytest.raises(XmlError) as exc:
        parse(BILLION_LAUGHS)
    assert "entity" in _one_line(exc)


@pytest.mark.parametrize("doc", [XXE, PARAM_XXE])
def test_external_entities_refused(doc: bytes) -> None:
    with pytest.raises(XmlError) as exc:
        parse(doc)
    _one_line(exc)


def test_undefined_entity_refused() -> None:
    with pytest.raises(XmlError):
        parse(b"<a>&nope;</a>")
    # with an external DTD subset expat cannot know the entity: it is refused, not skipped
    with pytest.raises(XmlError, match="undefined entity"):
        parse(b'<!DOCTYPE a SYSTEM "http://127.0.0.1:1/x.dtd"><a>&nope;</a>')


def test_doctype_without_entities_accepted() -> None:
    # Real SyncML / TNDS documents carry a DOCTYPE with an external id: it is never fetched.
    doc = (b'<?xml version="1.0"?>\n<!DOCTYPE SyncML PUBLIC "-//SYNCML//DTD SyncML 1.2//EN" '
           b'"http://www.openmobilealliance.org/tech/DTD/OMA-TS-SyncML_RepPro_DTD-V1_2.dtd">\n'
           b'<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr/></SyncML>')
    root = parse(doc)
    assert root.tag == "{SYNCML:SYNCML1.2}SyncML"
    assert safexml.local_name(root[0].tag) == "SyncHdr"


def test_deep_nesting_refused() -> None:
    doc = b"<a>" * 65 + b"</a>" * 65
    with pytest.raises(XmlError) as exc:
        parse(doc)
    assert "deeper than 64" in _one_line(exc)
    parse(b"<a>" * 64 + b"</a>" * 64)  # exactly at the limit is fine


def test_element_count_bounded() -> None:
    doc = b"<r>" + b"<x/>" * 100 + b"</r>"
    with pytest.raises(XmlError):
        parse(doc, XmlLimits(max_elements=100))
    assert len(parse(doc, XmlLimits(max_elements=101))) == 100


def test_oversized_input_refused() -> None:
    doc = b"<r>" + b"x" * 2000 + b"</r>"
    with pytest.raises(XmlError) as exc:
        parse(doc, XmlLimits(max_bytes=1000))
    assert "exceeds the limit of 1000" in _one_line(exc)


def test_default_size_limit_is_16_mib() -> None:
    assert safexml.DEFAULT_LIMITS.max_bytes == 16 * 1024 * 1024
    doc = b"<r>" + b"x" * (16 * 1024 * 1024) + b"</r>"
    with pytest.raises(XmlError):
        parse(doc)


@pytest.mark.parametrize("doc", [b"", b"<a>", b"<a></b>", b"not xml", b"<a/><b/>"])
def test_malformed_refused(doc: bytes) -> None:
    with pytest.raises(XmlError) as exc:
        parse(doc)
    _one_line(exc)


def test_text_tail_and_attributes_parsed() -> None:
    root = parse(b'<a x="1" xmlns:p="urn:p" p:y="2">t<b>in</b>tail<c/>end</a>')
    assert root.attrib == {"x": "1", "{urn:p}y": "2"}
    assert root.text == "t" and root[0].text == "in" and root[0].tail == "tail"
    assert root[1].tail == "end"


def _same(a: ET.Element, b: ET.Element) -> bool:
    return (a.tag == b.tag and a.attrib == b.attrib and (a.text or "") == (b.text or "")
            and (a.tail or "") == (b.tail or "") and len(a) == len(b)
            and all(_same(x, y) for x, y in zip(a, b)))


def test_serialize_round_trips_exactly() -> None:
    root = ET.Element("{SYNCML:SYNCML1.2}SyncML", {"b": "2\r\n\t\"<&", "a": "1"})
    hdr = ET.SubElement(root, "{SYNCML:SYNCML1.2}SyncHdr")
    hdr.text = "line1\r\nline2 & <3> ]]>"
    meta = ET.SubElement(hdr, "{syncml:metinf}Type", {"{urn:x}attr": "v"})
    meta.text = "application/vnd.syncml.dm+xml"
    meta.tail = " tail "
    ET.SubElement(root, "plain")  # no namespace inside a namespaced parent
    data = serialize(root)
    assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    assert b'a="1" b="' in data  # attributes sorted
    back = parse(data)
    assert _same(root, back)
    assert serialize(back) == data  # deterministic


def test_serialize_indent_keeps_leaf_text() -> None:
    root = parse(b"<r><a> spaced </a><b><c>x</c></b></r>")
    pretty = serialize(root, indent="  ", xml_declaration=False)
    assert pretty == b"<r>\n  <a> spaced </a>\n  <b>\n    <c>x</c>\n  </b>\n</r>\n"
    assert parse(pretty).find("a").text == " spaced "


def test_serialize_refuses_characters_xml_cannot_carry() -> None:
    root = ET.Element("a")
    root.text = "bad\x01"
    with pytest.raises(XmlError):
        serialize(root)
