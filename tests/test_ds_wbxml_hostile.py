"""Hostile and foreign WBXML against simvault's DS server, over real HTTP, real SQLite:
binary OPAQUE that starts like a WBXML document, nested documents in charsets we cannot
read, whole messages in ISO-8859-1 or UTF-16. Clear SyncML statuses, never HTTP 500."""
from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from test_syncml_codec import tnds

from host.ds.client import DsAccount, DsClient
from host.ds.server import run_server_in_thread
from host.ds.state import AnchorStore
from host.ds.store import DsStore
from host.ds.transport import CONTENT_TYPE_WBXML
from host.syncml import auth
from host.syncml import model as m
from host.syncml.status import AlertCode, StatusCode
from host.syncml.wbxml import _encode_doc, _mb_u_int32, decode_wbxml, encode_wbxml
from host.syncml.wbxml_tables import PUBLIC_ID_DMDDF12

MARK = "@@OPAQUE@@"
_TNDS = _encode_doc(tnds(), PUBLIC_ID_DMDDF12)
TNDS_UTF16 = _TNDS[:3] + b"\x87\x77" + _TNDS[4:]


@pytest.fixture
def server(tmp_path):
    store = DsStore(f"sqlite:///{tmp_path / 'ds.db'}")
    store.add_user("alice", "alice-pw")
    with run_server_in_thread(store) as srv:
        yield srv, store
    store.close()


def post(url: str, body: bytes) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": CONTENT_TYPE_WBXML}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def hdr(url: str, n: int) -> m.SyncHdr:
    return m.SyncHdr(session_id="s1", msg_id=n, target=m.Target(url), source=m.Source("wb-dev", "alice"),
                     ver_proto=m.PROTO_DS, cred=auth.basic_credential("alice", "alice-pw") if n == 1 else None)


def opaque(wire: bytes, raws: list[bytes]) -> bytes:
    for raw in raws:
        inline = b"\x03" + MARK.encode() + b"\x00"
        at = wire.index(inline)
        wire = wire[:at] + b"\xc3" + _mb_u_int32(len(raw)) + raw + wire[at + len(inline):]
    return wire


def statuses(msg: m.SyncMLMessage) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for c in msg.commands:
        if isinstance(c, m.Status):
            out.setdefault(c.cmd, []).append(c.data)
    return out


def open_session(url: str) -> str:
    alert = m.Alert(cmd_id=1, data=AlertCode.SLOW_SYNC, items=[m.Item(
        target=m.Target("backup"), source=m.Source("./local"), meta=m.Meta(anchor=m.Anchor(next="a1")))])
    code, body = post(url, encode_wbxml(m.SyncMLMessage(hdr(url, 1), [alert], final=True)))
    assert code == 200
    answer = decode_wbxml(body)
    assert statuses(answer)["Alert"] == [StatusCode.OK]
    return answer.header.resp_uri


@pytest.mark.parametrize("bad", [
    (b"\x03\x01\x6a\x00\xff\xfe\x00", "text/plain"),  # binary starting like WBXML 1.3
    (b"\x01\x9f\x80\x00", None),  # WBXML 1.1-looking, no Type
    (TNDS_UTF16, "application/vnd.syncml.dmtnds+wbxml"),  # a TNDS document in UTF-16
], ids=["binary-text-plain", "binary-untyped", "tnds-utf16"])
def test_foreign_opaque_item_gets_415_and_nothing_is_stored(server, bad):
    srv, store = server
    raw, ctype = bad
    resp = open_session(srv.url)
    sync = m.Sync(cmd_id=1, target=m.Target("backup"), source=m.Source("./local"), commands=[
        m.Add(cmd_id=2, meta=m.Meta(type=ctype) if ctype else None,
              items=[m.Item(source=m.Source("luid-bad"), data=MARK)]),
        m.Add(cmd_id=3, meta=m.Meta(type="text/plain"), items=[m.Item(source=m.Source("luid-ok"), data="hello")])])
    code, body = post(resp, opaque(encode_wbxml(m.SyncMLMessage(hdr(resp, 2), [sync], final=True)), [raw]))
    assert code == 200, body[:200]
    answer = decode_wbxml(body)
    assert statuses(answer)["Add"] == [StatusCode.UNSUPPORTED_MEDIA_TYPE, StatusCode.ITEM_ADDED]
    assert not store.has_datastore("alice", "backup") or store.items("alice", "backup") == []  # no commit


def test_utf16_message_is_http_415_with_a_clear_reason(server):
    srv, _ = server
    wire = encode_wbxml(m.SyncMLMessage(hdr(srv.url, 1), [m.Alert(cmd_id=1, data=AlertCode.SLOW_SYNC, items=[
        m.Item(target=m.Target("backup"), source=m.Source("./l"), meta=m.Meta(anchor=m.Anchor(next="a")))])]))
    code, body = post(srv.url, wire[:3] + b"\x87\x77" + wire[4:])
    assert code == 415
    assert b"WBXML charset 1015 (UTF-16) is not supported: send UTF-8" in body


def test_iso_8859_1_client_is_understood(server):
    """A message in ISO-8859-1 (MIBenum 4) with a non-ASCII LocName: the session opens."""
    srv, _ = server
    h = hdr(srv.url, 1)
    h.source = m.Source("wb-dev", "alice")
    alert = m.Alert(cmd_id=1, data=AlertCode.SLOW_SYNC, items=[m.Item(
        target=m.Target("backup"), source=m.Source("./Kalender-\u00e9t\u00e9"), meta=m.Meta(anchor=m.Anchor(next="a")))])
    wire = encode_wbxml(m.SyncMLMessage(h, [alert], final=True))
    latin = wire.replace("\u00e9".encode(), "\u00e9".encode("latin-1"))
    latin = latin[:3] + b"\x04" + latin[4:]
    code, body = post(srv.url, latin)
    assert code == 200
    answer = decode_wbxml(body)
    assert statuses(answer)["Alert"] == [StatusCode.OK]
    back = [c for c in answer.commands if isinstance(c, m.Alert)][0]
    assert back.items[0].target.loc_uri == "./Kalender-\u00e9t\u00e9"


def test_wbxml_backup_and_restore_still_work(server):
    srv, _ = server
    acc = DsAccount(url=srv.url, username="alice", password="alice-pw", device_id="wb-2", wbxml=True)
    anchors = AnchorStore(None)
    data = bytes(range(256)) * 300
    DsClient(acc, anchors).backup(data, "w1")
    assert DsClient(acc, anchors).restore("w1").archive == data
