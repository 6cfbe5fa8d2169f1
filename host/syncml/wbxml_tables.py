"""WBXML code pages of SyncML 1.2, MetInf 1.2, DevInf 1.2 and OMA DM DDF 1.2 (TNDS).

Token n of a page is ``tags[n - 5]`` ("-" marks an unused token). The DDF 1.2 page
(code page 2, namespace syncml:dmddf1.2) follows OMA-TS-DM_TND-V1_2 as libwbxml2 has
it; DDF 1.2 has no registered public id, so its documents name it with the literal
"-//OMA//DTD-DM-DDF 1.2//EN" in the string table, as xml2wbxml writes them.
"""
from __future__ import annotations

from host.syncml.namespaces import NS_DEVINF, NS_DMDDF, NS_METINF, NS_SYNCML

PUBLIC_ID_SYNCML12 = 0x1201
PUBLIC_ID_DEVINF12 = 0x1203
# no registered id: an internal key (beyond 32 bits, so never read from a document), written as a literal
PUBLIC_ID_DMDDF12 = 1 << 40
LITERAL_DMDDF12 = "-//OMA//DTD-DM-DDF 1.2//EN"
LITERAL_IDS = {"-//SYNCML//DTD SyncML 1.2//EN": PUBLIC_ID_SYNCML12,
               "-//SYNCML//DTD DevInf 1.2//EN": PUBLIC_ID_DEVINF12,
               LITERAL_DMDDF12: PUBLIC_ID_DMDDF12}
LITERAL_OF = {PUBLIC_ID_DMDDF12: LITERAL_DMDDF12}

SYNCML_TAGS = ["Add", "Alert", "Archive", "Atomic", "Chal", "Cmd", "CmdID", "CmdRef", "Copy", "Cred", "Data", "Delete", "Exec", "Final", "Get", "Item", "Lang", "LocName", "LocURI", "Map", "MapItem", "Meta", "MsgID", "MsgRef", "NoResp", "NoResults", "Put", "Replace", "RespURI", "Results", "Search", "Sequence", "SessionID", "SftDel", "Source", "SourceRef", "Status", "Sync", "SyncBody", "SyncHdr", "SyncML", "Target", "TargetRef", "-", "VerDTD", "VerProto", "NumberOfChanges", "MoreData", "Field", "Filter", "Record", "FilterType", "SourceParent", "TargetParent", "Move", "Correlator"]  # noqa: E501
METINF_TAGS = ["Anchor", "EMI", "Format", "FreeID", "FreeMem", "Last", "Mark", "MaxMsgSize", "Mem", "MetInf", "Next", "NextNonce", "SharedMem", "Size", "Type", "Version", "MaxObjSize", "FieldLevel"]  # noqa: E501
DEVINF_TAGS = ["CTCap", "CTType", "DataStore", "DataType", "DevID", "DevInf", "DevTyp", "DisplayName", "DSMem", "Ext", "FwV", "HwV", "Man", "MaxGUIDSize", "MaxID", "MaxMem", "Mod", "OEM", "ParamName", "PropName", "Rx", "Rx-Pref", "SharedMem", "MaxSize", "SourceRef", "SwV", "SyncCap", "SyncType", "Tx", "Tx-Pref", "ValEnum", "VerCT", "VerDTD", "XNam", "XVal", "UTC", "SupportNumberOfChanges", "SupportLargeObjs", "Property", "PropParam", "MaxOccur", "NoTruncate", "-", "Filter-Rx", "FilterCap", "FilterKeyword", "FieldLevel", "SupportHierarchicalSync"]  # noqa: E501
DMDDF_TAGS = ["AccessType", "ACL", "Add", "b64", "bin", "bool", "chr", "CaseSense", "CIS", "Copy", "CS", "date", "DDFName", "DefaultValue", "Delete", "Description", "DFFormat", "DFProperties", "DFTitle", "DFType", "Dynamic", "Exec", "float", "Format", "Get", "int", "Man", "MgmtTree", "MIME", "Mod", "Name", "Node", "node", "NodeName", "null", "Occurrence", "One", "OneOrMore", "OneOrN", "Path", "Permanent", "Replace", "RTProperties", "Scope", "Size", "time", "Title", "TStamp", "Type", "Value", "VerDTD", "VerNo", "xml", "ZeroOrMore", "ZeroOrN", "ZeroOrOne"]  # noqa: E501

# language -> {page: (namespace, tags from token 0x05)}
PAGES: dict[int, dict[int, tuple[str, list[str]]]] = {
    PUBLIC_ID_SYNCML12: {0: (NS_SYNCML, SYNCML_TAGS), 1: (NS_METINF, METINF_TAGS)},
    PUBLIC_ID_DEVINF12: {0: (NS_DEVINF, DEVINF_TAGS)},
    PUBLIC_ID_DMDDF12: {2: (NS_DMDDF, DMDDF_TAGS)},
}
TOKENS: dict[int, dict[str, tuple[int, int]]] = {
    pid: {f"{{{ns}}}{tag}": (page, 5 + i) for page, (ns, tags) in pages.items()
          for i, tag in enumerate(tags) if tag != "-"}
    for pid, pages in PAGES.items()}
# the root element a nested document of each language has
ROOTS = {f"{{{NS_DEVINF}}}DevInf": PUBLIC_ID_DEVINF12, f"{{{NS_DMDDF}}}MgmtTree": PUBLIC_ID_DMDDF12}

# nested documents' Meta Type: XML form <-> WBXML form (libwbxml2 switches them the same way)
TYPE_TO_WBXML = {"application/vnd.syncml-devinf+xml": "application/vnd.syncml-devinf+wbxml",
                 "application/vnd.syncml.dmtnds+xml": "application/vnd.syncml.dmtnds+wbxml"}
TYPE_TO_XML = {v: k for k, v in TYPE_TO_WBXML.items()}

# WBXML charsets (IANA MIBenum) whose strings we read: 0 = unknown (taken as UTF-8)
CHARSETS = {106: "utf-8", 0: "utf-8", 4: "latin-1", 3: "ascii"}
CHARSET_NAMES = {1015: "UTF-16", 1013: "UTF-16BE", 1014: "UTF-16LE", 1017: "UTF-32", 2026: "Big5",
                 17: "Shift_JIS", 2025: "GB2312", 5: "ISO-8859-2", 2252: "windows-1252"}
