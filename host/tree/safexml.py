"""The one safe XML parser of simvault, and a deterministic serialiser.

Every XML document simvault reads (TNDS, SyncML DM/DS, DDF) goes through
:func:`parse`. It drives expat directly so that it can refuse, before any
expansion happens: entity declarations (billion laughs, quadratic blowup),
external entities and external DTD subsets (XXE), and it bounds the input
size, the element depth and the element count. A ``<!DOCTYPE ...>`` line with
a public/system id but no entity declarations is accepted (real SyncML and
TNDS documents carry one) and never fetched.

:func:`serialize` writes an Element back to bytes deterministically: sorted
attributes, default namespaces declared only where they change, and character
references for the characters a parser would otherwise normalise (CR, TAB and
LF in attributes, CR in text), so parse(serialize(e)) gives e back exactly.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from xml.parsers import expat

from host.errors import XmlError

__all__ = [
    "DEFAULT_LIMITS",
    "XmlLimits",
    "check_xml_chars",
    "escape_attr",
    "escape_text",
    "local_name",
    "namespace_of",
    "parse",
    "serialize",
]


@dataclass(frozen=True)
class XmlLimits:
    """Bounds checked while parsing; a document over any of them is refused."""

    max_bytes: int = 16 * 1024 * 1024
    max_depth: int = 64
    max_elements: int = 1_000_000


DEFAULT_LIMITS = XmlLimits()


class _Refused(Exception):
    """Raised inside expat callbacks; turned into XmlError by parse()."""


class _Builder:
    """expat callbacks that build Elements while enforcing the limits."""

    def __init__(self, limits: XmlLimits) -> None:
        self.limits = limits
        self.stack: list[ET.Element] = []
        self.root: ET.Element | None = None
        self.count = 0
        self.text_parts: list[str] = []
        self.last: ET.Element | None = None  # element whose text/tail receives data
        self.last_is_tail = False

    def _flush(self) -> None:
        if self.text_parts and self.last is not None:
            text = "".join(self.text_parts)
            if self.last_is_tail:
                self.last.tail = (self.last.tail or "") + text
            else:
                self.last.text = (self.last.text or "") + text
        self.text_parts = []

    @staticmethod
    def _qname(name: str) -> str:
        # expat with namespace_separator=" " gives "uri local"
        if " " in name:
            uri, local = name.split(" ", 1)
            return f"{{{uri}}}{local}"
        return name

    def start(self, name: str, attrs: list[str]) -> None:
        self._flush()
        self.count += 1
        if self.count > self.limits.max_elements:
            raise _Refused(f"more than {self.limits.max_elements} elements")
        if len(self.stack) >= self.limits.max_depth:
            raise _Refused(f"elements nested deeper than {self.limits.max_depth}")
        attrib = {self._qname(attrs[i]): attrs[i + 1] for i in range(0, len(attrs), 2)}
        if self.stack:
            elem = ET.SubElement(self.stack[-1], self._qname(name), attrib)
        else:
            elem = ET.Element(self._qname(name), attrib)
            self.root = elem
        self.stack.append(elem)
        self.last, self.last_is_tail = elem, False

    def end(self, name: str) -> None:
        self._flush()
        elem = self.stack.pop()
        self.last, self.last_is_tail = elem, True

    def data(self, text: str) -> None:
        if self.last is not None:
            self.text_parts.append(text)

    # Anything that declares or references entities is refused outright.
    def entity_decl(self, name, *args) -> None:
        raise _Refused(f"entity declaration {name!r} (entities are not allowed)")

    def unparsed_entity_decl(self, name, *args) -> None:
        raise _Refused(f"unparsed entity {name!r} (entities are not allowed)")

    def external_entity_ref(self, context, base, system_id, public_id) -> int:
        raise _Refused(f"external reference {system_id or public_id!r}")

    def skipped_entity(self, name, is_param) -> None:
        raise _Refused(f"undefined entity {name!r}")


def parse(data: bytes | str, limits: XmlLimits = DEFAULT_LIMITS) -> ET.Element:
    """Parse one XML document into an Element, refusing anything unsafe.

    Raises XmlError (one line) for malformed XML, entity declarations, external
    references, more than limits.max_bytes of input, elements deeper than
    limits.max_depth, or more than limits.max_elements elements.
    """
    size = len(data.encode("utf-8")) if isinstance(data, str) else len(data)
    if size > limits.max_bytes:
        raise XmlError(f"XML refused: {size} bytes exceeds the limit of {limits.max_bytes}; "
                       "send a smaller document or raise the limit")
    builder = _Builder(limits)
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.buffer_text = True
    parser.ordered_attributes = True
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    parser.EntityDeclHandler = builder.entity_decl
    parser.UnparsedEntityDeclHandler = builder.unparsed_entity_decl
    parser.ExternalEntityRefHandler = builder.external_entity_ref
    parser.SkippedEntityHandler = builder.skipped_entity
    try:
        parser.Parse(data, True)
    except _Refused as exc:
        raise XmlError(f"XML refused: {exc}") from None
    except expat.ExpatError as exc:
        raise XmlError(f"XML malformed: {expat.errors.messages[exc.code]} "
                       f"at line {exc.lineno}, column {exc.offset}") from None
    except RecursionError:  # pragma: no cover - depth limit fires first
        raise XmlError("XML refused: nesting too deep") from None
    if builder.root is None:
        raise XmlError("XML malformed: no root element")
    return builder.root


def local_name(tag: str) -> str:
    """'{ns}Name' -> 'Name'."""
    return tag.rsplit("}", 1)[1] if tag.startswith("{") else tag


def namespace_of(tag: str) -> str | None:
    """'{ns}Name' -> 'ns'; None when the tag has no namespace."""
    return tag[1:].split("}", 1)[0] if tag.startswith("{") else None


def _is_xml_char(c: int) -> bool:
    return (c in (0x9, 0xA, 0xD) or 0x20 <= c <= 0xD7FF or 0xE000 <= c <= 0xFFFD
            or 0x10000 <= c <= 0x10FFFF)


def check_xml_chars(text: str, what: str = "text") -> None:
    """Raise XmlError if text holds a character XML 1.0 cannot carry."""
    if text.isprintable() and text.isascii():
        return
    for ch in text:
        if not _is_xml_char(ord(ch)):
            raise XmlError(f"XML cannot carry character U+{ord(ch):04X} in {what}; "
                           "use Format b64 or bin for such values")


_TEXT_ESC = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
_ATTR_ESC = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;",
                           "\r": "&#13;", "\n": "&#10;", "\t": "&#9;"})


def escape_text(text: str) -> str:
    """Escape element content so that a parser gives back exactly ``text``."""
    check_xml_chars(text)
    return text.translate(_TEXT_ESC)


def escape_attr(text: str) -> str:
    """Escape an attribute value (double-quoted) losslessly."""
    check_xml_chars(text, "an attribute")
    return text.translate(_ATTR_ESC)


def serialize(elem: ET.Element, *, xml_declaration: bool = True,
              indent: str | None = None) -> bytes:
    """Element -> UTF-8 bytes, deterministically.

    Namespaced tags ('{ns}X') are written with a default xmlns declared where
    the namespace changes; namespaced attributes get prefixes ns0, ns1...
    in order of first use. With ``indent`` (e.g. "  "), whitespace is added
    only inside elements that hold child elements and no non-blank text, so
    leaf text is never altered.
    """
    out: list[str] = []
    if xml_declaration:
        out.append('<?xml version="1.0" encoding="UTF-8"?>')
        if indent is not None:
            out.append("\n")
    prefixes: dict[str, str] = {}
    _write(elem, out, None, prefixes, indent, 0)
    if indent is not None:
        out.append("\n")
    return "".join(out).encode("utf-8")


def _write(elem: ET.Element, out: list[str], parent_ns: str | None,
           prefixes: dict[str, str], indent: str | None, level: int) -> None:
    tag = elem.tag
    if not isinstance(tag, str):
        raise XmlError("XML serialise: comments and processing instructions are not supported")
    ns = namespace_of(tag)
    name = local_name(tag)
    head = ["<", name]
    if ns != parent_ns:
        head.append(f' xmlns="{escape_attr(ns or "")}"')
    new_prefixes: list[tuple[str, str]] = []
    attrs: list[tuple[str, str]] = []
    for key, value in elem.attrib.items():
        ans = namespace_of(key)
        if ans is None:
            attrs.append((key, value))
            continue
        if ans == "http://www.w3.org/XML/1998/namespace":
            attrs.append(("xml:" + local_name(key), value))
            continue
        if ans not in prefixes:
            prefixes[ans] = f"ns{len(prefixes)}"
            new_prefixes.append((prefixes[ans], ans))
        attrs.append((prefixes[ans] + ":" + local_name(key), value))
    for prefix, uri in new_prefixes:
        head.append(f' xmlns:{prefix}="{escape_attr(uri)}"')
    for key, value in sorted(attrs):
        head.append(f' {key}="{escape_attr(value)}"')
    out.append("".join(head))
    children = list(elem)
    text = elem.text or ""
    if not children and not text:
        out.append("/>")
    else:
        out.append(">")
        pretty = indent is not None and children and not text.strip() \
            and all(not (c.tail or "").strip() for c in children)
        if pretty:
            for child in children:
                out.append("\n" + indent * (level + 1))  # type: ignore[operator]
                _write(child, out, ns, prefixes, indent, level + 1)
            out.append("\n" + indent * level)  # type: ignore[operator]
        else:
            out.append(escape_text(text))
            for child in children:
                _write(child, out, ns, prefixes, indent, level + 1)
                if child.tail:
                    out.append(escape_text(child.tail))
        out.append(f"</{name}>")
    for prefix, uri in new_prefixes:  # prefixes are scoped to this element
        del prefixes[uri]
