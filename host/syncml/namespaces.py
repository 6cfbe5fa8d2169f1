"""SyncML 1.2 namespaces, doctype and content types (host.syncml.codec re-exports them)."""
from __future__ import annotations

NS_SYNCML = "SYNCML:SYNCML1.2"
NS_METINF = "syncml:metinf"
NS_DEVINF = "syncml:devinf"
NS_DMDDF = "syncml:dmddf1.2"  # TNDS (OMA DM TND 1.2 MgmtTree)
# set by the WBXML decoder on a Data whose OPAQUE bytes are binary (not text, not a nested document):
# its text is then their base64 and the item's data comes out as bytes
OPAQUE_BYTES_ATTR = "{urn:simvault:wbxml}opaque-b64"
DOCTYPE_SYNCML12 = ('<!DOCTYPE SyncML PUBLIC "-//SYNCML//DTD SyncML 1.2//EN" '
                    '"http://www.openmobilealliance.org/tech/DTD/OMA-TS-SyncML_RepPro_DTD-V1_2.dtd">')
CONTENT_TYPE_DM_XML = "application/vnd.syncml.dm+xml"
CONTENT_TYPE_DS_XML = "application/vnd.syncml+xml"


def _local(tag: str) -> tuple[str | None, str]:
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return None, tag
