"""A stock OMA DM 1.2 client, intel libdmclient's testdmclient, against `simvault dm server`.

The client is built from ../shared/peers/libdmclient-9d4e3e8.tar.gz (scripts/libdmclient.sh)
and left as it is; it is provisioned like a device (tests/mgtobj/simvault.dmacc: the address
http://127.0.0.1:<port>/funambol/dm, its user and passwords). Every exchange is real HTTP on
loopback to the real server and database.
"""
from __future__ import annotations

import logging
import base64
import json
import os
import re
import subprocess
import sys
import time

import pytest

from host.dm.server.auth import BASIC_SWITCH
from host.syncml import model as m
from libdmclient_peer import DEV_ID, HoldOpen, Prober, StockDevice, testdmclient  # noqa: F401 - fixture
from test_dm_cli import ROOT, _port, _wait_http
from test_dm_fixtures import DMWorld, db_url, pg_cluster  # noqa: F401 - fixtures

pytestmark = pytest.mark.timeout(180)

PATHS = ["/dm", "/funambol/dm"]


@pytest.fixture
def make_world(tmp_path, db_url):  # noqa: F811
    worlds: list[DMWorld] = []

    def make(**options) -> DMWorld:  # type: ignore[no-untyped-def]
        w = DMWorld(tmp_path / f"world{len(worlds)}", db_url, server_options={"paths": PATHS, **options})
        worlds.append(w)
        return w
    yield make
    for w in worlds:
        w.close()


def stock(world: DMWorld, client, tmp_path, *, auth_type: str = "DIGEST", register: str | None = "md5",  # noqa: F811
          **kw) -> StockDevice:  # type: ignore[no-untyped-def]
    dev = StockDevice(client, tmp_path / "dmclient", address=f"{world.url}/funambol/dm", auth_type=auth_type, **kw)
    if register:
        dev.register(world.web.server.store, auth=register)
    return dev


def sessions(world: DMWorld) -> list[dict]:
    return sorted(world.web.server.store.sessions(DEV_ID), key=lambda s: s["id"])


def audit(world: DMWorld, event: str) -> list[str]:
    return [a["detail"] for a in world.web.server.store.audit_log(DEV_ID) if a["event"] == event]


def replies(log: str) -> list[str]:
    """The server's packets as testdmclient logged them (XML runs)."""
    return re.findall(r"<SyncML xmlns=\"SYNCML:SYNCML1.2\">.*?</SyncML>", log, re.S)


def status_codes(packet: str) -> list[tuple[str, str]]:
    return re.findall(r"<Status>.*?<Cmd>(\w+)</Cmd>.*?<Data>(\d+)</Data>", packet, re.S)


@pytest.mark.parametrize("wbxml", [False, True], ids=["xml", "wbxml"])
def test_md5_sessions_on_the_clients_path_in_xml_and_wbxml(make_world, testdmclient,  # noqa: F811
                                                           tmp_path, wbxml) -> None:
    world = make_world()
    dev = stock(world, testdmclient, tmp_path)
    for _ in range(2):  # the nonces the server gave are kept in the device's account: no 401 the 2nd time
        run = dev.session(wbxml=wbxml)
        assert run.returncode == 0, run.log[-3000:]
    assert [(s["state"], s["messages"]) for s in sessions(world)] == [("ended", 1), ("ended", 1)]
    assert audit(world, "auth.failed") == []
    device = world.web.server.store.device(DEV_ID)
    assert device.devinfo["Man"] == "test manufacturer" and device.devinfo["Ext/Intel/test1"] == "data of test1"
    assert dev.account_value("./DMAcc/simvault/AppAuth/toserver/AAuthData") != ""  # our NextNonce, stored


def test_basic_over_http_is_refused_without_the_switch(make_world, testdmclient, tmp_path) -> None:  # noqa: F811
    world = make_world()
    dev = stock(world, testdmclient, tmp_path, auth_type="BASIC", register="basic")
    run = dev.session()
    assert run.returncode == 0, run.log[-3000:]
    first, second = replies(run.log)[:2]
    # every command of the refused package has its Status, the SyncHdr's with a Chal for md5
    assert status_codes(first) == [("SyncHdr", "401"), ("Alert", "401"), ("Replace", "401")]
    assert "<Type xmlns=\"syncml:metinf\">syncml:auth-md5</Type>" in first.split("</Status>")[0]
    assert "<Data>212</Data>" in second  # the client followed the challenge: md5, never basic again
    [refusal] = audit(world, "auth.basic_refused")
    assert BASIC_SWITCH in refusal and "--tls-cert" in refusal
    assert audit(world, "auth.basic_over_http") == []
    assert [(s["state"], s["messages"]) for s in sessions(world)] == [("ended", 2)]


def test_basic_over_http_with_the_switch_warns_once_per_device(make_world, testdmclient, tmp_path,  # noqa: F811
                                                              caplog) -> None:
    caplog.set_level(logging.WARNING, logger="host.dm.server.auth")
    world = make_world(allow_basic_over_http=True)
    dev = stock(world, testdmclient, tmp_path, auth_type="BASIC", register="basic")
    for _ in range(2):
        run = dev.session()
        assert run.returncode == 0, run.log[-3000:]
        assert status_codes(replies(run.log)[0])[0] == ("SyncHdr", "212")
    warnings = [r.getMessage() for r in caplog.records if r.name == "host.dm.server.auth"]
    assert len([w for w in warnings if "is accepted over plain HTTP" in w]) == 1  # at start
    assert len([w for w in warnings if DEV_ID in w]) == 1  # once for the device, not per session
    assert len(audit(world, "auth.basic_over_http")) == 1
    assert [s["state"] for s in sessions(world)] == ["ended", "ended"]


@pytest.mark.parametrize("auth_type,register", [("BASIC", "basic"), ("DIGEST", "md5")])
def test_a_wrong_password_is_refused_with_a_status_per_command(make_world, testdmclient, tmp_path,  # noqa: F811
                                                              auth_type, register) -> None:
    world = make_world(allow_basic_over_http=True)
    dev = stock(world, testdmclient, tmp_path, auth_type=auth_type, register=None)
    dev.register(world.web.server.store, auth=register, password="not-the-device-password")
    run = dev.session(timeout=30)
    *refusals, last = replies(run.log)
    assert len(refusals) == 3  # MAX_AUTH_FAILURES, then the session is over
    for packet in refusals:
        assert status_codes(packet) == [("SyncHdr", "401"), ("Alert", "401"), ("Replace", "401")]
        assert "<Cred>" not in packet  # nothing of the server's credentials to an unauthenticated peer
    assert status_codes(last) == [("SyncHdr", "408")]  # its next message: no such session (client stops)
    [session] = sessions(world)
    assert (session["state"], session["reason"]) == ("failed", "authentication failed")
    assert len(audit(world, "auth.failed")) == 3
    assert world.web.server.store.device(DEV_ID).devinfo == {}  # nothing of the refused package was used


def test_a_new_session_with_session_id_1_supersedes_the_open_one(make_world, testdmclient,  # noqa: F811
                                                                 tmp_path) -> None:
    hold = HoldOpen()
    world = make_world(plugins=[hold])
    dev = stock(world, testdmclient, tmp_path)
    first = dev.start()  # it waits for the user's answer to the server's Alert 1101 (its stdin): killed
    try:
        deadline = time.monotonic() + 10
        while not (hold.asked and world.web.server.open_sessions()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert world.web.server.open_sessions() == 1
    finally:
        first.kill()
        first.wait()
    run = dev.session()  # libdmclient: SessionID 1 again, MsgID 1, Alert 1201
    assert run.returncode == 0, run.log[-3000:]
    old, new = sessions(world)
    assert (old["state"], new["state"]) == ("failed", "ended")
    assert old["reason"].startswith("superseded")
    assert old["session_id"] == new["session_id"] == "1"
    assert len(audit(world, "session.superseded")) == 1


def test_one_access_log_line_per_request_and_no_credential(make_world, testdmclient,  # noqa: F811
                                                           tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="host.dm.access")
    world = make_world(allow_basic_over_http=True)
    dev = stock(world, testdmclient, tmp_path, auth_type="BASIC", register="basic")
    run = dev.session()
    assert run.returncode == 0, run.log[-3000:]
    lines = [r.getMessage() for r in caplog.records if r.name == "host.dm.access"]
    assert len(lines) == 1, lines
    assert re.fullmatch(r"POST /funambol/dm device=DMCtest session=1 msg=1 status=200 in=\d+ out=\d+ ms=[\d.]+",
                        lines[0]), lines[0]
    basic = base64.b64encode(f"{dev.user}:{dev.password}".encode()).decode()
    everything = "\n".join(r.getMessage() for r in caplog.records)
    assert dev.password not in everything and basic not in everything


def _get(uri: str) -> m.Get:
    return m.Get(cmd_id=1, items=[m.Item(target=m.Target(uri))])


def _item(cls, uri: str, data: str | None = None, fmt: str = "chr"):  # type: ignore[no-untyped-def]
    return cls(cmd_id=1, items=[m.Item(target=m.Target(uri), meta=m.Meta(format=fmt, type="text/plain"),
                                       data=data)])


PROBES = {
    "get TNDS": _get("./DevInfo?list=TNDS+Format+Type+Value"),
    "get StructData": _get("./DevInfo?list=StructData"),
    "get Struct": _get("./DevInfo?list=Struct"),
    "get interior": _get("./DevInfo/Ext"),
    "get root": _get("."),
    "get leaf": _get("./DevInfo/Man"),
    "prop ACL": _get("./DevInfo?prop=ACL"),
    "prop Name": _get("./DevInfo/Man?prop=Name"),
    "prop Size": _get("./DevInfo/Man?prop=Size"),
    "prop Title": _get("./DevInfo/Man?prop=Title"),
    "get hidden secret": _get("./DMAcc/simvault/AppAuth/toserver/AAuthSecret"),
    "get missing": _get("./Vendor/nothing"),
    "add memory leaf": _item(m.Add, "./Vendor/memory/probe", "v1"),
    "replace memory leaf": _item(m.Replace, "./Vendor/memory/probe", "v2"),
    "get memory leaf": _get("./Vendor/memory/probe"),
    "delete memory leaf": _item(m.Delete, "./Vendor/memory/probe"),
    # an empty <Data/>: without Data at all the client dereferences NULL (sml2tree.c add_node) and dies
    "add memory interior": _item(m.Add, "./Vendor/memory/dir", "", fmt="node"),
    "add memory child": _item(m.Add, "./Vendor/memory/dir/leaf", "c"),
    "delete memory interior": _item(m.Delete, "./Vendor/memory/dir"),
    "get after delete": _get("./Vendor/memory/dir/leaf"),
    "get Vendor": _get("./Vendor"),
    "replace DevInfo leaf": _item(m.Replace, "./DevInfo/Man", "x"),
    "replace DMAcc leaf": _item(m.Replace, "./DMAcc/simvault/Name", "renamed by the server"),
    "replace memory interior": _item(m.Replace, "./Vendor/memory", "x", fmt="node"),
    "add Inbox leaf": _item(m.Add, "./Inbox/probe", "v"),
    "replace DevDetail leaf": _item(m.Replace, "./DevDetail/FwV", "9"),
    "delete DevInfo leaf": _item(m.Delete, "./DevInfo/Lang"),
    "add under DevInfo": _item(m.Add, "./DevInfo/New", "v"),
    "copy": m.Copy(cmd_id=1, items=[m.Item(target=m.Target("./Vendor/memory/c"), source=m.Source("./DevInfo/Mod"))]),
    "exec on a leaf": m.Exec(cmd_id=1, item=m.Item(target=m.Target("./DevInfo/Man"))),
    "atomic": m.Atomic(cmd_id=1, commands=[_item(m.Add, "./Vendor/memory/atomic", "a")]),
    "exec": m.Exec(cmd_id=1, item=m.Item(target=m.Target("./test/execute"))),
}


def test_what_testdmclient_supports(make_world, testdmclient, tmp_path) -> None:  # noqa: F811
    """The capability matrix docs/DM.md ("Devices without simvault") states, as observed."""
    probe = Prober(PROBES)
    world = make_world(plugins=[probe])
    dev = stock(world, testdmclient, tmp_path)
    run = dev.session()
    assert run.returncode == 0, run.log[-3000:]
    codes = {label: code for label, (code, _results) in probe.answers.items()}
    assert codes == {
        "get TNDS": 406, "get StructData": 406, "get Struct": 406,  # ?list= is not supported
        "get interior": 200, "get root": 200, "get leaf": 200,
        "prop ACL": 200, "prop Name": 200,
        "prop Size": 406, "prop Title": 406,
        "get hidden secret": 425, "get missing": 404,
        "add memory leaf": 200, "replace memory leaf": 200, "get memory leaf": 200, "delete memory leaf": 200,
        "add memory interior": 200, "add memory child": 200,
        "delete memory interior": 200, "get after delete": 404, "get Vendor": 200,
        "replace DevInfo leaf": 425, "replace DMAcc leaf": 200,
        "replace memory interior": 405, "add Inbox leaf": 406, "replace DevDetail leaf": 425,
        "delete DevInfo leaf": 425, "add under DevInfo": 425, "copy": 501, "exec on a leaf": 425,
        "atomic": None,  # no Status for an Atomic at all (the commands inside run one by one)
        "exec": 200,
    }, codes
    assert probe.statuses["atomic"] == [("Add", 200)]  # its command's, applied alone
    results = {label: res for label, (_code, res) in probe.answers.items()}
    assert results["get interior"] == [("./DevInfo/Ext", "node", "Intel/other")]
    assert results["get leaf"] == [("./DevInfo/Man", "chr", "test manufacturer")]
    assert results["get memory leaf"] == [("./Vendor/memory/probe", "chr", "v2")]
    assert results["get root"] == [(".", "node", "Inbox/DMAcc/Vendor/DevInfo/DevDetail/test")]
    assert results["prop ACL"] == [("./DevInfo?prop=ACL", "chr", "Get=*")]
    assert dev.account_value("./DMAcc/simvault/Name") == "renamed by the server"  # a Replace is kept


def test_an_agent_and_a_stock_client_share_the_server(make_world, testdmclient, tmp_path) -> None:  # noqa: F811
    world = make_world()
    phone = world.add_device("phone")  # simvault's agent, its BaR MO, md5
    job = world.wait_job(world.job(phone, "backup", "server")["id"])
    assert job["state"] == "succeeded", job["reason"]
    dev = stock(world, testdmclient, tmp_path)
    run = dev.session(wbxml=True)
    assert run.returncode == 0, run.log[-3000:]
    assert [s["state"] for s in sessions(world)] == ["ended"]
    [stored] = world.web.server.store.backups(phone.device_id)
    job = world.wait_job(world.job(phone, "restore", "server", backup_id=stored["backup_id"])["id"])
    assert job["state"] == "succeeded", job["reason"]


def test_values_with_a_nul_refused_in_xml_kept_as_bytes_in_wbxml(make_world, testdmclient,  # noqa: F811
                                                                 tmp_path) -> None:
    """libdmclient sends some values with their terminating NUL byte: ?prop=Format/Type (its core,
    dmtree.c: data_size = strlen + 1) and the child list of a ./Vendor/memory interior node (its
    memory plugin). In XML that is not XML: the server refuses the message (400) and says why in
    the audit. In WBXML the value is opaque and arrives as bytes ending in NUL."""
    probe = Prober({"add dir": _item(m.Add, "./Vendor/memory/dir", "", fmt="node"),
                    "add leaf": _item(m.Add, "./Vendor/memory/dir/leaf", "c"),
                    "get dir": _get("./Vendor/memory/dir"),
                    "prop Format": _get("./DevInfo/Man?prop=Format")})
    world = make_world(plugins=[probe])
    dev = stock(world, testdmclient, tmp_path)
    run = dev.session(wbxml=True)
    assert run.returncode == 0, run.log[-3000:]
    assert probe.answers["get dir"] == (200, [("./Vendor/memory/dir", "node", b"leaf\x00")])
    assert probe.answers["prop Format"] == (200, [("./DevInfo/Man?prop=Format", "chr", b"chr\x00")])

    probe.commands, probe.sent = {"prop Format": _get("./DevInfo/Man?prop=Format")}, False
    run = dev.session()
    assert re.search(r'Reply from "[^"]+": 400', run.log), run.log[-2000:]
    [detail] = [a["detail"] for a in world.web.server.store.audit_log() if a["event"] == "message.malformed"]
    assert "not well-formed" in detail


def test_the_operator_flow_for_a_stock_client_with_the_cli(testdmclient, tmp_path) -> None:  # noqa: F811
    """dm server --path/--allow-basic-over-http, dm device-add --auth basic --user (no agent key),
    testdmclient's session, the access log and the warning on the server's stderr."""
    port = _port()
    api = f"http://127.0.0.1:{port}"
    env = dict(os.environ, SIMVAULT_DM_ADMIN_TOKEN="cli-token-123", PYTHONPATH=str(ROOT))
    dm = [sys.executable, "-m", "host.cli.dm", "dm"]
    server = subprocess.Popen(dm + ["server", "--listen", f"127.0.0.1:{port}", "--db", f"sqlite:///{tmp_path}/dm.db",
                                    "--path", "/dm", "--path", "/funambol/dm", "--allow-basic-over-http"],
                              env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_http(f"{api}/api/health")
        dev = StockDevice(testdmclient, tmp_path / "dmclient", address=f"{api}/funambol/dm", auth_type="BASIC")

        def device_add(password: str) -> subprocess.CompletedProcess:
            return subprocess.run(dm + ["device-add", DEV_ID, "--auth", "basic", "--user", dev.user, "--api", api,
                                        "--json"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                                  env=dict(env, SIMVAULT_DM_PASSWORD=password,
                                           SIMVAULT_DM_SERVER_PASSWORD=dev.server_password))
        short = device_add("srvpwd")  # libdmclient's sample password: 6 characters
        assert short.returncode != 0 and "--min-password-length" in short.stderr
        added = device_add(dev.password)
        assert added.returncode == 0, added.stderr
        assert json.loads(added.stdout)["username"] == dev.user
        run = dev.session()
        assert run.returncode == 0, run.log[-3000:]
    finally:
        server.terminate()
        _out, err = server.communicate(timeout=30)
    assert re.search(r"host\.dm\.access INFO POST /funambol/dm device=DMCtest session=1 msg=1 status=200 ", err), err
    assert err.count("over plain HTTP") >= 2  # at start, then once for the device
    assert dev.password not in err
