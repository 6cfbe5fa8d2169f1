"""OMA DS 1.2 Device Information (namespace syncml:devinf) as a nested document.

DevInf travels in a Put (client) or Results (server) Item whose Meta Type is
``application/vnd.syncml-devinf+xml`` and whose Source/Target LocURI is
``./devinf12``; the Item's data is the DevInf Element::

    item = Item(source=Source(DEVINF_URI), data=devinf_to_element(info))
    put = Put(cmd_id=2, meta=Meta(type=DEVINF_TYPE), items=[item])
    info = devinf_from_element(results.items[0].data)
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from host.errors import SyncMLError
from host.syncml._xmlparse import parse_xml

NS = "syncml:devinf"
DEVINF_URI = "./devinf12"
DEVINF_TYPE = "application/vnd.syncml-devinf+xml"


@dataclass
class ContentType:
    ct_type: str
    ver_ct: str


@dataclass
class DataStore:
    source_ref: str
    rx_pref: ContentType
    tx_pref: ContentType
    sync_types: list[int] = field(default_factory=lambda: [1, 2])  # SyncCap/SyncType values 1..7
    display_name: str | None = None
    max_guid_size: int | None = None
    rx: list[ContentType] = field(default_factory=list)
    tx: list[ContentType] = field(default_factory=list)


@dataclass
class DevInf:
    dev_id: str
    dev_typ: str  # "phone", "pda", "server", "workstation", "smartphone"...
    data_stores: list[DataStore]
    man: str | None = None
    mod: str | None = None
    oem: str | None = None
    fw_v: str | None = None
    sw_v: str | None = None
    hw_v: str | None = None
    utc: bool = False
    support_large_objs: bool = False
    support_number_of_changes: bool = False
    ver_dtd: str = "1.2"


def _q(name: str) -> str:
    return f"{{{NS}}}{name}"


def _sub(parent: ET.Element, name: str, text: str | int | None = None) -> ET.Element:
    el = ET.SubElement(parent, _q(name))
    if text is not None:
        el.text = str(text)
    return el


def _ct(parent: ET.Element, name: str, ct: ContentType) -> None:
    el = _sub(parent, name)
    _sub(el, "CTType", ct.ct_type)
    _sub(el, "VerCT", ct.ver_ct)


def devinf_to_element(info: DevInf) -> ET.Element:
    """Build the DevInf Element in DevInf 1.2 DTD order."""
    if not info.data_stores:
        raise SyncMLError("DevInf needs at least one DataStore")
    root = ET.Element(_q("DevInf"))
    _sub(root, "VerDTD", info.ver_dtd)
    for name, value in (("Man", info.man), ("Mod", info.mod), ("OEM", info.oem), ("FwV", info.fw_v),
                        ("SwV", info.sw_v), ("HwV", info.hw_v)):
        if value is not None:
            _sub(root, name, value)
    _sub(root, "DevID", info.dev_id)
    _sub(root, "DevTyp", info.dev_typ)
    for name, on in (("UTC", info.utc), ("SupportLargeObjs", info.support_large_objs),
                     ("SupportNumberOfChanges", info.support_number_of_changes)):
        if on:
            _sub(root, name)
    for ds in info.data_stores:
        el = _sub(root, "DataStore")
        _sub(el, "SourceRef", ds.source_ref)
        if ds.display_name is not None:
            _sub(el, "DisplayName", ds.display_name)
        if ds.max_guid_size is not None:
            _sub(el, "MaxGUIDSize", ds.max_guid_size)
        _ct(el, "Rx-Pref", ds.rx_pref)
        for ct in ds.rx:
            _ct(el, "Rx", ct)
        _ct(el, "Tx-Pref", ds.tx_pref)
        for ct in ds.tx:
            _ct(el, "Tx", ct)
        cap = _sub(el, "SyncCap")
        if not ds.sync_types:
            raise SyncMLError(f"DataStore {ds.source_ref} needs at least one SyncType")
        for st in ds.sync_types:
            _sub(cap, "SyncType", st)
    return root


def _kids(el: ET.Element, ctx: str) -> list[tuple[str, ET.Element]]:
    out = []
    for k in el:
        if not isinstance(k.tag, str):
            continue
        if not k.tag.startswith(f"{{{NS}}}"):
            raise SyncMLError(f"{ctx}: element {k.tag} is not in {NS}")
        out.append((k.tag[len(NS) + 2:], k))
    return out


def _txt(el: ET.Element, ctx: str) -> str:
    if len(el):
        raise SyncMLError(f"{ctx}: expected text")
    return (el.text or "").strip()


def _read_ct(el: ET.Element, ctx: str) -> ContentType:
    vals = {n: _txt(k, f"{ctx}/{n}") for n, k in _kids(el, ctx)}
    if "CTType" not in vals or "VerCT" not in vals:
        raise SyncMLError(f"{ctx}: needs CTType and VerCT")
    return ContentType(vals["CTType"], vals["VerCT"])


def _read_store(el: ET.Element) -> DataStore:
    ctx = "DevInf/DataStore"
    fields: dict[str, object] = {"rx": [], "tx": [], "sync_types": []}
    for name, k in _kids(el, ctx):
        c = f"{ctx}/{name}"
        if name == "SourceRef":
            fields["source_ref"] = _txt(k, c)
        elif name == "DisplayName":
            fields["display_name"] = _txt(k, c)
        elif name == "MaxGUIDSize":
            raw = _txt(k, c)
            if not raw.isdigit():
                raise SyncMLError(f"{c}: {raw[:16]!r} is not a number")
            fields["max_guid_size"] = int(raw)
        elif name in ("Rx-Pref", "Tx-Pref"):
            fields[name.lower().replace("-", "_")] = _read_ct(k, c)
        elif name in ("Rx", "Tx"):
            fields[name.lower()].append(_read_ct(k, c))  # type: ignore[union-attr]
        elif name == "SyncCap":
            for sn, sk in _kids(k, c):
                raw = _txt(sk, f"{c}/{sn}")
                if sn != "SyncType" or not raw.isdigit():
                    raise SyncMLError(f"{c}: bad {sn} {raw[:16]!r}")
                fields["sync_types"].append(int(raw))  # type: ignore[union-attr]
        # CTCap, DSMem, Filter-Rx, FilterCap, SupportHierarchicalSync: tolerated, not modelled
        elif name not in ("CTCap", "DSMem", "Filter-Rx", "FilterCap", "SupportHierarchicalSync"):
            raise SyncMLError(f"{ctx}: unknown element {name}")
    for need in ("source_ref", "rx_pref", "tx_pref"):
        if need not in fields:
            raise SyncMLError(f"{ctx}: missing {need}")
    return DataStore(**fields)  # type: ignore[arg-type]


def devinf_from_element(el: ET.Element) -> DevInf:
    """Read a DevInf Element (as found in ``Item.data``); SyncMLError when malformed."""
    if not isinstance(el, ET.Element) or el.tag != _q("DevInf"):
        raise SyncMLError("item data is not a syncml:devinf DevInf document")
    simple = {"VerDTD": "ver_dtd", "Man": "man", "Mod": "mod", "OEM": "oem", "FwV": "fw_v",
              "SwV": "sw_v", "HwV": "hw_v", "DevID": "dev_id", "DevTyp": "dev_typ"}
    flags = {"UTC": "utc", "SupportLargeObjs": "support_large_objs",
             "SupportNumberOfChanges": "support_number_of_changes"}
    fields: dict[str, object] = {"data_stores": []}
    for name, k in _kids(el, "DevInf"):
        if name in simple:
            fields[simple[name]] = _txt(k, f"DevInf/{name}")
        elif name in flags:
            fields[flags[name]] = True
        elif name == "DataStore":
            fields["data_stores"].append(_read_store(k))  # type: ignore[union-attr]
        elif name not in ("CTCap", "Ext"):  # Ext is the spec's extension point
            raise SyncMLError(f"DevInf: unknown element {name}")
    for need in ("dev_id", "dev_typ"):
        if need not in fields:
            raise SyncMLError(f"DevInf: missing {need}")
    if not fields["data_stores"]:
        raise SyncMLError("DevInf: needs at least one DataStore")
    return DevInf(**fields)  # type: ignore[arg-type]


DOCTYPE_DEVINF12 = ('<!DOCTYPE DevInf PUBLIC "-//SYNCML//DTD DevInf 1.2//EN" '
                    '"http://www.openmobilealliance.org/tech/DTD/OMA-SyncML-Device_Information-DTD-1.2.dtd">')


def encode_devinf(info: DevInf, *, doctype: bool = False) -> bytes:
    """A standalone DevInf XML document. libwbxml recognises a standalone DevInf
    only by this DOCTYPE (a SyncML message is recognised by its namespace)."""
    from host.syncml.codec import serialize_element

    return ('<?xml version="1.0" encoding="UTF-8"?>' + (DOCTYPE_DEVINF12 if doctype else "")
            + serialize_element(devinf_to_element(info))).encode()


def decode_devinf(data: bytes) -> DevInf:
    return devinf_from_element(parse_xml(data, "DevInf document"))
