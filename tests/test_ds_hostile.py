"""Hostile input on both sides of DS: truncated large objects, malformed SyncML,
a server that vanishes mid-session, Size mismatches. Real HTTP throughout: a
fault-injecting proxy (host.ds.proxy) sits between the client and the real server."""
from __future__ import annotations

import base64
import os
import re
import urllib.error
import urllib.request

import pytest

from host.ds.client import DsAccount, DsClient
from host.ds.errors import (
    DsPayloadError,
    DsProtocolError,
    DsStatusError,
    DsTransportError,
)
from host.ds.proxy import run_proxy_in_thread
from host.ds.server import run_server_in_thread
from host.ds.state import AnchorStore
from host.ds.store import DsStore
from host.syncml import codec
from host.syncml import model as m

ARCHIVE_1 = os.urandom(40_000)
ARCHIVE_2 = os.urandom(40_000)


@pytest.fixture
def server(tmp_path):
    store = DsStore(f"sqlite:///{tmp_path / 'ds.db'}")
    store.add_user("alice", "pw")
    with run_server_in_thread(store, max_msg_size=8000) as srv:
        DsClient(account(srv.url)).backup(ARCHIVE_1, "01")  # the previous, good backup
        yield srv
    store.close()


def account(url: str, **kw) -> DsAccount:
    return DsAccount(**{"url": url, "username": "alice", "password": "pw", "device_id": "dev-1",
                        "max_msg_size": 8000, **kw})


def previous_is_intact(url: str) -> None:
    assert DsClient(account(url, device_id="checker")).restore().archive == ARCHIVE_1


def post(url: str, body: bytes, ctype: str = "application/vnd.syncml+xml") -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.parametrize("vanish_at", [2, 4, 7])
def test_server_vanishing_mid_backup_keeps_previous(server, vanish_at):
    anchors = AnchorStore(None)
    with run_proxy_in_thread(server.url, vanish_at=vanish_at) as proxy, pytest.raises(DsTransportError, match="vanished mid-session"):
        DsClient(account(proxy.url), anchors).backup(ARCHIVE_2, "02")
    assert anchors.get(AnchorStore.key(account(proxy.url).url, "alice", "backup")).last_anchor is None
    previous_is_intact(server.url)


def test_server_vanishing_mid_restore_returns_nothing(server):
    with run_proxy_in_thread(server.url, vanish_at=4) as proxy, pytest.raises(DsTransportError):
        DsClient(account(proxy.url)).restore()


def test_truncated_large_object_from_server_is_refused(server):
    with run_proxy_in_thread(server.url, end_package_in_large_object=True) as proxy, pytest.raises(DsProtocolError, match="large object"):
        DsClient(account(proxy.url)).restore()


def test_malformed_answer_is_a_protocol_error(server):
    for n in (1, 2):
        with run_proxy_in_thread(server.url, garble_at=n) as proxy, pytest.raises(DsProtocolError, match="malformed SyncML"):
            DsClient(account(proxy.url)).backup(ARCHIVE_2, "02")
    previous_is_intact(server.url)


def test_altered_item_is_never_returned(server):
    def flip(data: bytes) -> bytes:  # change the first base64 character of the item
        match = re.search(rb"sha256=[0-9a-f]{64} data=", data)
        if match is None:
            return data
        i = match.end()
        return data[:i] + (b"B" if data[i:i + 1] != b"B" else b"C") + data[i + 1:]

    with run_proxy_in_thread(server.url, tamper=flip) as proxy, pytest.raises((DsPayloadError, DsProtocolError)):
        DsClient(account(proxy.url, max_msg_size=1024 * 1024)).restore()


def _open_session(url: str, alert: int = 203) -> tuple[str, m.SyncHdr]:
    cred = m.Cred(data=base64.b64encode(b"alice:pw").decode(), meta=m.Meta(type="syncml:auth-basic", format="b64"))
    hdr = m.SyncHdr(session_id="77", msg_id=1, target=m.Target(url), source=m.Source("raw-dev"),
                    ver_proto=m.PROTO_DS, cred=cred)
    alert_cmd = m.Alert(cmd_id=1, data=alert, items=[m.Item(target=m.Target("backup"), source=m.Source("./x"),
                                                             meta=m.Meta(anchor=m.Anchor(next="1")))])
    status, body = post(url, codec.encode(m.SyncMLMessage(hdr, [alert_cmd], final=True)))
    assert status == 200
    answer = codec.decode(body)
    assert answer.header.resp_uri
    return answer.header.resp_uri, hdr


def _send_chunked(url: str, hdr: m.SyncHdr, data: str, size: int, more: bool) -> m.SyncMLMessage:
    hdr = m.SyncHdr(**{**hdr.__dict__, "msg_id": 2, "target": m.Target(url), "cred": None})
    item = m.Item(source=m.Source("luid-1"), meta=m.Meta(size=size), data=data, more_data=more)
    sync = m.Sync(cmd_id=1, target=m.Target("backup"), source=m.Source("./x"),
                  commands=[m.Replace(cmd_id=2, meta=m.Meta(type="text/plain"), items=[item])])
    status, body = post(url, codec.encode(m.SyncMLMessage(hdr, [sync], final=True)))
    assert status == 200
    return codec.decode(body)


def test_server_refuses_truncated_more_data_and_keeps_previous(server):
    resp_uri, hdr = _open_session(server.url)
    answer = _send_chunked(resp_uri, hdr, "simvault-archive/1 partial", 5000, more=True)  # package ends mid-object
    codes = [c.data for c in answer.commands if isinstance(c, m.Status) and c.cmd == "Replace"]
    assert codes == [213]  # the chunk was taken, the object never completed: nothing committed
    previous_is_intact(server.url)


def test_server_refuses_size_mismatch_with_424(server):
    resp_uri, hdr = _open_session(server.url)
    hdr2 = m.SyncHdr(**{**hdr.__dict__, "msg_id": 2, "target": m.Target(resp_uri), "cred": None})
    first = m.Item(source=m.Source("l"), meta=m.Meta(size=10), data="0123456789abc", more_data=True)
    sync = m.Sync(cmd_id=1, target=m.Target("backup"), source=m.Source("./x"),
                  commands=[m.Replace(cmd_id=2, meta=m.Meta(type="text/plain"), items=[first])])
    _, body = post(resp_uri, codec.encode(m.SyncMLMessage(hdr2, [sync], final=True)))
    codes = [c.data for c in codec.decode(body).commands if isinstance(c, m.Status) and c.cmd == "Replace"]
    assert codes == [424]
    previous_is_intact(server.url)


@pytest.mark.parametrize("body", [
    b"not xml at all",
    b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'aaaa'>]><SyncML xmlns='SYNCML:SYNCML1.2'>&a;</SyncML>",
    b"<SyncML xmlns='SYNCML:SYNCML1.2'><SyncHdr><VerDTD>1.1</VerDTD></SyncHdr></SyncML>",
    b"<SyncML xmlns='SYNCML:SYNCML1.2'><SyncHdr>" + b"<x>" * 500 + b"</SyncHdr></SyncML>",
])
def test_server_answers_malformed_syncml_with_400(server, body):
    status, text = post(server.url, body)
    assert status == 400 and b"malformed SyncML" in text
    previous_is_intact(server.url)


def test_server_refuses_foreign_content_type_and_unknown_session(server):
    assert post(server.url, b"{}", "application/json")[0] == 415
    assert post(server.url + "?sessionid=nope", b"<x/>")[0] in (400, 404)
    valid_but_unknown = codec.encode(m.SyncMLMessage(
        m.SyncHdr(session_id="1", msg_id=2, target=m.Target(server.url), source=m.Source("d"), ver_proto=m.PROTO_DS),
        [], final=True))
    assert post(server.url + "?sessionid=nope", valid_but_unknown)[0] == 404


def test_client_refuses_archive_bigger_than_server_max_obj_size(tmp_path):
    store = DsStore(f"sqlite:///{tmp_path / 'small.db'}")
    store.add_user("alice", "pw")
    with run_server_in_thread(store, max_obj_size=10_000) as srv, pytest.raises(DsStatusError, match="MaxObjSize"):
        DsClient(account(srv.url)).backup(os.urandom(20_000), "03")
