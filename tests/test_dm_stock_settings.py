"""The server settings stock DM clients need, each with its safe default (issue 18 point 1).

dm server --path, the plain SyncML content types, syncml:auth-basic over TLS (and its refusal
over plain HTTP), --min-password-length, a device account's own user name, the access log.
Real HTTP(S) on loopback to the real server; the client side is hand-made SyncML here (the
stock client itself: tests/test_dm_libdmclient.py).
"""
from __future__ import annotations

import base64
import logging
import ssl
import urllib.error
import urllib.request

import pytest

from host import tls
from host.cli import build_parser
from host.dm.server.registry import register_device
from host.dm.server.webapp import build_server
from host.dm.session import Channel
from host.errors import UsageError
from host.syncml import codec
from host.syncml import model as m
from host.syncml.auth import basic_credential
from host.syncml.wbxml import decode_wbxml, encode_wbxml
from test_dm_fixtures import DMWorld, db_url, pg_cluster  # noqa: F401 - fixtures
from test_dm_tls import make_ca

pytestmark = pytest.mark.timeout(120)

DEV, USER, PW, SPW = "IMEI:490154203237518", "stock-user", "stock-password", "server-password"


@pytest.fixture
def world(tmp_path, db_url):  # noqa: F811
    w = DMWorld(tmp_path, db_url, server_options={"paths": ["/dm", "/funambol/dm"]})
    try:
        yield w
    finally:
        w.close()


def message(cred: m.Cred | None, *, session: str = "1", url: str = "http://127.0.0.1/funambol/dm") -> m.SyncMLMessage:
    ch = Channel(session, m.Source(DEV), m.Target(url))
    ch.send(m.Alert(cmd_id=1, data=1201))
    return ch.build(cred=cred)


def post(url: str, body: bytes, ctype: str, context: ssl.SSLContext | None = None) -> tuple[int, bytes, str]:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as resp:
            return resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), ""


def header_code(reply: m.SyncMLMessage) -> int:
    return next(c.data for c in reply.commands if isinstance(c, m.Status) and c.cmd == "SyncHdr")


@pytest.mark.parametrize("ctype", ["application/vnd.syncml.dm+xml", "application/vnd.syncml+xml",
                                   "application/vnd.syncml.dm+wbxml", "application/vnd.syncml+wbxml"])
def test_every_path_and_dm_content_type_is_answered_in_kind(world, ctype) -> None:
    register_device(world.web.server.store, "simvault-dms", DEV, PW, SPW, auth_type="md5", username=USER)
    encode, decode = (encode_wbxml, decode_wbxml) if "wbxml" in ctype else (codec.encode, codec.decode)
    for path, session in (("/funambol/dm", "1"), ("/dm", "2")):
        status, body, rtype = post(world.url + path, encode(message(None, session=session)), ctype)
        assert (status, rtype) == (200, ctype)
        reply = decode(body)
        assert header_code(reply) == 407  # no Cred yet: challenged, in the client's own representation
        assert reply.header.source.loc_uri == world.url + path  # the server as the device addressed it
    assert post(world.url + "/other/dm", encode(message(None)), ctype)[0] == 404


def test_bad_paths_are_refused_with_the_option_named(tmp_path) -> None:
    for bad in (["dm"], ["/api/dm"], ["/dm", "/dm"], ["/d m"]):
        with pytest.raises(UsageError, match="--path"):
            build_server(f"sqlite:///{tmp_path}/x.db", paths=bad)
    args = build_parser().parse_args(["dm", "server", "--path", "/dm", "--path", "/funambol/dm",
                                      "--allow-basic-over-http", "--min-password-length", "6"])
    assert (args.paths, args.allow_basic_over_http, args.min_password_length) == (["/dm", "/funambol/dm"], True, 6)
    assert build_parser().parse_args(["dm", "server"]).paths is None  # -> /dm


def test_basic_is_accepted_over_tls_without_the_switch(tmp_path) -> None:
    ca, cert, key = make_ca(tmp_path / "pki")
    w = DMWorld(tmp_path / "world", f"sqlite:///{tmp_path}/dm.db", ssl_context=tls.server_context(cert, key))
    try:
        register_device(w.web.server.store, "simvault-dms", DEV, PW, SPW, auth_type="basic", username=USER)
        context = ssl.create_default_context(cafile=str(ca))
        status, body, _ = post(f"{w.url}/dm", codec.encode(message(basic_credential(USER, PW))),
                               codec.CONTENT_TYPE_DM_XML, context)
        reply = codec.decode(body)
        assert (status, header_code(reply)) == (200, 212)
        assert reply.header.cred is not None  # and the server authenticates to the device (md5)
        events = [a["event"] for a in w.web.server.store.audit_log(DEV)]
        assert "auth.basic_over_http" not in events and "auth.basic_refused" not in events
    finally:
        w.close()


def test_basic_needs_the_right_user_and_password_and_a_basic_device(world) -> None:
    store = world.web.server.store
    register_device(store, "simvault-dms", DEV, PW, SPW, auth_type="basic", username=USER)
    world.web.server.auth.allow_basic_over_http = True
    for session, cred in (("1", basic_credential(USER, "wrong-password")), ("2", basic_credential(DEV, PW)),
                          ("3", m.Cred(data="not base64!", meta=m.Meta(type="syncml:auth-basic", format="b64")))):
        _, body, _ = post(f"{world.url}/dm", codec.encode(message(cred, session=session)), codec.CONTENT_TYPE_DM_XML)
        reply = codec.decode(body)
        statuses = [(c.cmd, c.data) for c in reply.commands if isinstance(c, m.Status)]
        assert statuses == [("SyncHdr", 401), ("Alert", 401)]
        assert all(isinstance(c, m.Status) for c in reply.commands)  # only Status commands, OMA DM 1.2 9.4
    store.update_device(DEV, auth_type="md5")  # an md5 device never takes basic, switch or not
    _, body, _ = post(f"{world.url}/dm", codec.encode(message(basic_credential(USER, PW), session="4")),
                      codec.CONTENT_TYPE_DM_XML)
    assert header_code(codec.decode(body)) == 401


def test_min_password_length_is_the_servers_policy(tmp_path) -> None:
    w = DMWorld(tmp_path, f"sqlite:///{tmp_path}/dm.db")
    try:
        status, out = w.api("POST", "/api/devices", {"device": DEV, "password": "srvpwd", "server_password": SPW,
                                                     "auth": "md5"})
        assert status == 409 and "at least 8" in out["error"] and "--min-password-length" in out["error"]
        assert w.web.server.store.device(DEV) is None
    finally:
        w.close()
    w = DMWorld(tmp_path / "six", f"sqlite:///{tmp_path}/dm6.db", server_options={"min_password_length": 6})
    try:
        status, out = w.api("POST", "/api/devices", {"device": DEV, "password": "srvpwd", "server_password": "dmpw12",
                                                     "auth": "basic", "user": USER})
        assert status == 201, out
        assert (out["username"], out["auth_type"]) == (USER, "basic")
        status, out = w.api("POST", "/api/devices", {"device": "other", "password": "x" * 10,
                                                     "server_password": "y" * 10, "user": USER})
        assert status == 409 and "belongs to another device" in out["error"]
    finally:
        w.close()
    with pytest.raises(UsageError, match="--min-password-length"):
        build_server(f"sqlite:///{tmp_path}/z.db", min_password_length=0)


def test_access_log_lines_for_refused_requests_name_no_secret(world, caplog) -> None:
    caplog.set_level(logging.INFO, logger="host.dm.access")
    register_device(world.web.server.store, "simvault-dms", DEV, PW, SPW, auth_type="basic", username=USER)
    body = codec.encode(message(basic_credential(USER, PW)))
    post(f"{world.url}/funambol/dm", body, codec.CONTENT_TYPE_DM_XML)  # refused: basic over plain HTTP
    post(f"{world.url}/dm", b"hello", "text/plain")
    post(f"{world.url}/dm", b"<SyncML>", codec.CONTENT_TYPE_DM_XML)
    lines = [r.getMessage() for r in caplog.records if r.name == "host.dm.access"]
    assert len(lines) == 3, lines
    assert lines[0].startswith(f"POST /funambol/dm device={DEV} session=1 msg=1 status=200 in={len(body)} ")
    assert lines[1].startswith("POST /dm device=- session=- msg=- status=415 in=5 ")
    assert lines[2].startswith("POST /dm device=- session=- msg=- status=400 in=8 ")
    secret = base64.b64encode(f"{USER}:{PW}".encode()).decode()
    assert all(secret not in r.getMessage() and PW not in r.getMessage() for r in caplog.records)
