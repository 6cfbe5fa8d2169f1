"""SyncML 1.2 representation layer shared by OMA DM 1.2 and OMA DS 1.2.

Modules:

* :mod:`host.syncml.model`    dataclasses: SyncMLMessage, SyncHdr, commands, Item, Meta...
* :mod:`host.syncml.codec`    ``encode(msg) -> bytes`` / ``decode(bytes) -> msg`` (XML)
* :mod:`host.syncml.wbxml`    ``encode_wbxml`` / ``decode_wbxml`` (SyncML 1.2 + MetInf + DevInf pages)
* :mod:`host.syncml.devinf`   DS Device Information (syncml:devinf) nested document
* :mod:`host.syncml.packing`  ``pack()`` to MaxMsgSize, large objects, LargeObjectAssembler
* :mod:`host.syncml.auth`     basic / md5 Cred, x-syncml-hmac, CredentialVerifier (212/401/407)
* :mod:`host.syncml.package0` DM Notification (Package 0) build / verify
* :mod:`host.syncml.status`   status and alert codes with names
* :mod:`host.syncml.reply`    reply_header / header_status / status_for (answering a message)

Every malformed input raises :class:`host.errors.SyncMLError` (one line).

Example (a DM client's first message)::

    from host.syncml import *

    hdr = SyncHdr(session_id="1", msg_id=1, target=Target("https://dm.example/"),
                  source=Source("IMEI:490154203237518", "dev-user"),
                  meta=Meta(max_msg_size=10000))
    msg = SyncMLMessage(hdr, [
        Alert(cmd_id=1, data=AlertCode.CLIENT_INITIATED_MGMT),
        Replace(cmd_id=2, items=[Item(source=Source("./DevInfo/Mod"), data="simvault")]),
    ])
    wire = encode(msg)                       # bytes, application/vnd.syncml.dm+xml
    again = decode(wire)                     # == msg
    for part in pack(hdr, msg.commands, max_msg_size=1024):
        send(encode(part))                   # only the last part has Final
"""
from host.syncml.auth import (
    AUTH_BASIC,
    AUTH_MAC,
    AUTH_MD5,
    HMAC_HEADER,
    AuthResult,
    CredentialVerifier,
    HmacHeader,
    auth_secret,
    basic_credential,
    challenge,
    decode_nonce,
    encode_nonce,
    hmac_header,
    hmac_mac,
    hmac_mac_from_secret,
    md5_credential,
    md5_digest,
    md5_digest_from_secret,
    new_nonce,
    nonce_from_chal,
    parse_hmac_header,
)
from host.syncml.codec import (
    CONTENT_TYPE_DM_XML,
    CONTENT_TYPE_DS_XML,
    NS_METINF,
    NS_SYNCML,
    decode,
    decode_element,
    encode,
)
from host.syncml.devinf import (
    DEVINF_TYPE,
    DEVINF_URI,
    ContentType,
    DataStore,
    DevInf,
    decode_devinf,
    devinf_from_element,
    devinf_to_element,
    encode_devinf,
)
from host.syncml.model import (
    PROTO_DM,
    PROTO_DS,
    Add,
    Alert,
    Anchor,
    Atomic,
    Chal,
    Command,
    Copy,
    Cred,
    Delete,
    Exec,
    Get,
    Item,
    ItemCommand,
    Location,
    Map,
    MapItem,
    Meta,
    Move,
    Put,
    Replace,
    Results,
    Sequence,
    Source,
    Status,
    Sync,
    SyncHdr,
    SyncMLMessage,
    Target,
)
from host.syncml.package0 import (
    CONTENT_TYPE_PACKAGE0,
    Initiator,
    Notification,
    UIMode,
    build_package0,
    parse_package0,
    verify_package0,
)
from host.syncml.packing import (
    LargeObjectAssembler,
    pack,
    wire_size,
)
from host.syncml.reply import (
    header_status,
    reply_header,
    status_for,
    status_with_refs,
)
from host.syncml.status import (
    AlertCode,
    StatusCode,
    SyncMLStatusError,
    alert_name,
    is_success,
    status_name,
)
from host.syncml.wbxml import (
    CONTENT_TYPE_DM_WBXML,
    CONTENT_TYPE_DS_WBXML,
    decode_wbxml,
    encode_wbxml,
)

__all__ = [
    "AUTH_BASIC",
    "AUTH_MAC",
    "AUTH_MD5",
    "CONTENT_TYPE_DM_WBXML",
    "CONTENT_TYPE_DM_XML",
    "CONTENT_TYPE_DS_WBXML",
    "CONTENT_TYPE_DS_XML",
    "CONTENT_TYPE_PACKAGE0",
    "DEVINF_TYPE",
    "DEVINF_URI",
    "HMAC_HEADER",
    "NS_METINF",
    "NS_SYNCML",
    "PROTO_DM",
    "PROTO_DS",
    "Add",
    "Alert",
    "AlertCode",
    "Anchor",
    "Atomic",
    "AuthResult",
    "Chal",
    "Command",
    "ContentType",
    "Copy",
    "Cred",
    "CredentialVerifier",
    "DataStore",
    "Delete",
    "DevInf",
    "Exec",
    "Get",
    "HmacHeader",
    "Initiator",
    "Item",
    "ItemCommand",
    "LargeObjectAssembler",
    "Location",
    "Map",
    "MapItem",
    "Meta",
    "Move",
    "Notification",
    "Put",
    "Replace",
    "Results",
    "Sequence",
    "Source",
    "Status",
    "StatusCode",
    "Sync",
    "SyncHdr",
    "SyncMLMessage",
    "SyncMLStatusError",
    "Target",
    "UIMode",
    "alert_name",
    "auth_secret",
    "basic_credential",
    "build_package0",
    "challenge",
    "decode",
    "decode_devinf",
    "decode_element",
    "decode_nonce",
    "decode_wbxml",
    "devinf_from_element",
    "devinf_to_element",
    "encode",
    "encode_devinf",
    "encode_nonce",
    "encode_wbxml",
    "header_status",
    "hmac_header",
    "hmac_mac",
    "hmac_mac_from_secret",
    "is_success",
    "md5_credential",
    "md5_digest",
    "md5_digest_from_secret",
    "new_nonce",
    "nonce_from_chal",
    "pack",
    "parse_hmac_header",
    "parse_package0",
    "reply_header",
    "status_for",
    "status_name",
    "status_with_refs",
    "verify_package0",
    "wire_size",
]
