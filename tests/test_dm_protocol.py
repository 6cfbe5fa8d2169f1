"""OMA DM 1.2 conformance of real sessions, WBXML, and the agent against a hostile server.

Every exchange goes over HTTP between the real server and real agents. The
server's messages are observed (not replaced) by wrapping DMServer.handle_message;
the hostile cases put a tampering HTTP proxy between a real agent and the real server.
"""
from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from host.dm.agent.commands import AlertReport
from host.dm.agent.tree import BAR, CLIENT_AUTH
from host.dm.session import Channel
from host.syncml import codec
from host.syncml import model as m
from host.syncml.wbxml import CONTENT_TYPE_DM_WBXML, decode_wbxml, encode_wbxml
from test_dm_fixtures import QuietPlugin, db_url, differences, pg_cluster, world  # noqa: F401

pytestmark = pytest.mark.timeout(120)


def record_messages(world) -> list[tuple[m.SyncMLMessage, m.SyncMLMessage, str, str]]:  # type: ignore[no-untyped-def]
    """(device message, server reply, request type, reply type) of every exchange from now on."""
    seen: list[tuple[m.SyncMLMessage, m.SyncMLMessage, str, str]] = []
    core = world.web.server
    original = core.handle_message

    def observed(body: bytes, headers: dict[str, str] | None = None, **kw):  # type: ignore[no-untyped-def]
        reply = original(body, headers, **kw)
        if reply.http_status == 200:
            ctype = {k.lower(): v for k, v in (headers or {}).items()}.get("content-type", "")
            rtype = reply.headers["Content-Type"]
            dec = decode_wbxml if "wbxml" in ctype else codec.decode
            rdec = decode_wbxml if "wbxml" in rtype else codec.decode
            seen.append((dec(body), rdec(reply.body), ctype, rtype))
        return reply

    core.handle_message = observed  # type: ignore[method-assign]
    return seen


def check_conformance(exchanges) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Status for SyncHdr and for every command, with the right MsgRef/CmdRef, both ways."""
    counts = {"generic_alerts": 0, "exec": 0, "status_202": 0}
    by_session: dict[str, list] = {}
    for ex in exchanges:
        by_session.setdefault(ex[0].header.session_id, []).append(ex)
    for session in by_session.values():
        for i, (req, rep, _, _) in enumerate(session):
            assert req.header.msg_id == i + 1 and rep.header.msg_id == i + 1
            assert rep.header.session_id == req.header.session_id
            assert rep.header.target.loc_uri == req.header.source.loc_uri
            statuses = {(s.msg_ref, s.cmd_ref): s for s in rep.commands if isinstance(s, m.Status)}
            hdr = statuses[(req.header.msg_id, 0)]
            assert hdr.cmd == "SyncHdr" and rep.commands[0] is hdr  # first in the reply
            for cmd in req.commands:
                if isinstance(cmd, m.Status):
                    continue
                st = statuses.get((req.header.msg_id, cmd.cmd_id))
                assert st is not None and st.cmd == cmd.name, f"no Status for {cmd.name} {cmd.cmd_id}"
                if isinstance(cmd, m.Alert) and cmd.data == 1226:
                    counts["generic_alerts"] += 1
                    for item in cmd.items:
                        assert item.source is not None and item.source.loc_uri.startswith("./")
                        assert item.meta is not None and item.meta.type and item.meta.format == "chr"
            if not req.final:  # the device's package goes on: the server asks for more
                assert any(isinstance(c, m.Alert) and c.data == 1222 for c in rep.commands)
            # the device answers every server command in its next message
            if i + 1 < len(session):
                nxt = session[i + 1][0]
                answers = {(s.msg_ref, s.cmd_ref): s for s in nxt.commands if isinstance(s, m.Status)}
                assert (rep.header.msg_id, 0) in answers
                for cmd in rep.commands:
                    if isinstance(cmd, m.Status):
                        continue
                    st = answers.get((rep.header.msg_id, cmd.cmd_id))
                    assert st is not None and st.cmd == cmd.name, f"device gave no Status for {cmd.name}"
                    if isinstance(cmd, m.Exec):
                        counts["exec"] += 1
                        assert cmd.correlator
                        counts["status_202"] += st.data == 202
    return counts


def test_a_backup_and_restore_session_is_conformant(world) -> None:
    from host.tree.generate import generate_tree
    from host.tree.tnds import write_tnds
    dev = world.add_device("phone", tree_bytes=write_tnds(generate_tree(400_000, seed=3)))
    seen = record_messages(world)
    job = world.wait_job(world.job(dev, "backup", "server")["id"])
    assert job["state"] == "succeeded", job["reason"]
    job = world.wait_job(world.job(dev, "restore", "server", backup_id=job["backup_id"])["id"])
    assert job["state"] == "succeeded", job["reason"]
    assert dev.agent.wait_idle(10)
    counts = check_conformance(seen)
    assert counts["exec"] == 2 and counts["status_202"] == 2 and counts["generic_alerts"] >= 2
    # the archive came up as a large object: MoreData chunks, Meta Size on the first one only
    chunks = [it for req, _, _, _ in seen for c in req.commands if isinstance(c, m.Results) for it in c.items]
    assert len(chunks) >= 2 and all(it.more_data for it in chunks[:-1]) and not chunks[-1].more_data
    assert chunks[0].meta is not None and chunks[0].meta.size and not any(
        it.meta and it.meta.size for it in chunks[1:])
    # the result alert carries the Exec's Correlator
    alerts = [c for req, _, _, _ in seen for c in req.commands if isinstance(c, m.Alert) and c.data == 1226]
    assert {a.correlator for a in alerts} >= {job["correlator"]}


@pytest.mark.parametrize("auth", ["md5", "hmac"])
def test_a_whole_use_case_in_wbxml(world, auth) -> None:
    dev = world.add_device("phone", auth=auth, wbxml=True)
    seen = record_messages(world)
    original = dev.agent.tree.snapshot_for_backup()
    job = world.wait_job(world.job(dev, "backup", "server")["id"])
    assert job["state"] == "succeeded", job["reason"]
    dev.agent.tree.tree.delete("./DevDetail")
    job = world.wait_job(world.job(dev, "restore", "server", backup_id=job["backup_id"])["id"])
    assert job["state"] == "succeeded", job["reason"]
    assert differences(original, dev.agent.tree.snapshot_for_backup()) == []
    assert seen and all(c == r == CONTENT_TYPE_DM_WBXML for _, _, c, r in seen)  # answered in kind
    check_conformance(seen)


def test_the_server_answers_in_the_representation_it_was_sent(world) -> None:
    dev = world.add_device("phone", start=False)
    url = f"{world.url}/dm"
    ch = Channel("W1", m.Source(dev.device_id, dev.device_id), m.Target(url))
    ch.send(m.Alert(cmd_id=1, data=1201))
    for ctype, body, decode in ((CONTENT_TYPE_DM_WBXML, encode_wbxml(ch.build()), decode_wbxml),
                                (codec.CONTENT_TYPE_DM_XML, codec.encode(ch.build()), codec.decode)):
        status, reply, headers = _post(url, body, ctype)
        assert status == 200 and headers["content-type"].startswith(ctype)
        assert decode(reply).commands[0].data == 407  # no credentials: challenged, in kind
    assert _post(url, b"\x03\x9f\x53\x6a\x00\x6d\x6c\x71", CONTENT_TYPE_DM_WBXML)[0] == 400  # truncated WBXML
    assert world.web.server.store.jobs() == []


def test_exec_inside_atomic_runs_only_when_the_atomic_commits(world) -> None:
    from test_dm_agent_commands import replace, run_script
    dev = world.add_device("phone")
    backup = m.Exec(cmd_id=1, correlator="atomic-1", item=m.Item(target=m.Target(f"{BAR}/Operations/Backup"),
                                                                  data="destination=server"))
    denied = replace("./DevInfo/DevId", "evil")  # the ACL refuses it: the Atomic rolls back
    script = run_script(world, dev, [("rolled-back", m.Atomic(cmd_id=1, commands=[backup, denied]))])
    assert script.status["rolled-back"] == 507
    assert dev.agent.wait_idle(10)
    assert dev.agent.tree.tree.find(f"{BAR}/Backups").children == {}  # the Exec never ran
    script = run_script(world, dev, [("committed", m.Atomic(cmd_id=1, commands=[
        backup, replace(f"{BAR}/Config/Scope", ".")]))])
    assert script.status["committed"] == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not dev.agent.tree.tree.find(f"{BAR}/Backups").children:
        time.sleep(0.05)
    assert dev.agent.wait_idle(10)
    assert len(dev.agent.tree.tree.find(f"{BAR}/Backups").children) == 1


def test_a_resent_device_report_does_not_duplicate_the_job(world) -> None:
    dev = world.add_device("phone", card="emulator")
    dev.agent.tree.set_leaf(f"{BAR}/Policy/ServerApproval", "false", "bool")
    dev.agent.tree.set_leaf(f"{BAR}/Config/Destination", "card")
    dev.agent.backup_now(reason="user")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not world.web.server.store.jobs(dev.device_id, ("succeeded",)):
        time.sleep(0.05)
    [job] = world.web.server.store.jobs(dev.device_id)
    [result] = world.web.server.store.results(job["id"])
    data = ";".join(f"{k}={v}" for k, v in result["data"].items())
    # the server's Status was lost: the device sends the same report again, twice
    for _ in range(2):
        dev.agent.queue_report(f"{BAR}/Operations/Backup", "device:user", AlertReport(200, data))
    dev.agent.sync_now()
    assert dev.agent.wait_idle(10) and dev.agent.history[-1].ok
    assert dev.agent.pending == []  # acknowledged
    assert [j["id"] for j in world.web.server.store.jobs(dev.device_id)] == [job["id"]]
    assert len(world.web.server.store.results(job["id"])) == 1


def test_jobs_created_one_after_another_are_notified_at_once(world) -> None:
    """The admin path notifies and so does the ticker: the second Package 0 (same nonce) must not
    leave the next job waiting for the re-notification back-off (it did: 30 s)."""
    dev = world.add_device("phone")
    world.web.server.renotify_after = 30.0
    start = time.monotonic()
    for _ in range(3):
        assert world.wait_job(world.job(dev, "backup", "server")["id"], timeout=10)["state"] == "succeeded"
        assert dev.agent.wait_idle(10)
    assert time.monotonic() - start < 10


def test_the_agent_moves_to_hmac_when_the_server_asks(world) -> None:
    dev = world.add_device("phone", start=False, auth="hmac")  # the server expects HMAC
    dev.agent = world.start_agent(dev, auth="md5")  # the agent starts with md5 (the default)
    assert dev.agent.tree.value(f"{CLIENT_AUTH}/AAuthType") == "HMAC"
    job = world.wait_job(world.job(dev, "backup", "server")["id"])
    assert job["state"] == "succeeded", job["reason"]


# ------------------------------------------------------------------ a hostile or failing server
class TamperingProxy:
    """A real HTTP hop between the agent and the real server that damages replies on demand."""

    def __init__(self, upstream: str) -> None:
        self.upstream, self.mode = upstream, "pass"
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                mode = proxy.mode
                if mode == "close":  # the server vanishes: no answer at all
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                req = urllib.request.Request(proxy.upstream, data=body, method="POST",
                                             headers={k: v for k, v in self.headers.items()
                                                      if k.lower() in ("content-type", "x-syncml-hmac")})
                with urllib.request.urlopen(req, timeout=10) as resp:
                    status, data = resp.status, resp.read()
                    headers = {k: v for k, v in resp.headers.items() if k.lower() in ("content-type", "x-syncml-hmac")}
                if mode == "garbage":
                    data = b"<SyncML><SyncHdr>" + b"\x00\xff" * 50
                elif mode == "oversize":
                    data = data + b" " * 2_000_000
                elif mode == "wrong-session":
                    data = data.replace(b"<SessionID>", b"<SessionID>X", 1)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if mode == "cut":  # half the body, then the connection drops
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/dm"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("mode,reason", [("garbage", "malformed reply"), ("oversize", "exceeds our MaxMsgSize"),
                                         ("cut", "connection lost"), ("close", "connection lost"),
                                         ("wrong-session", "another session")])
def test_the_agent_survives_a_hostile_server_with_its_tree_untouched(world, mode, reason) -> None:
    dev = world.add_device("phone", start=False)
    proxy = TamperingProxy(f"{world.url}/dm")
    try:
        dev.agent = world.start_agent(dev, server_url=proxy.url)
        before = dev.agent.tree.tree.copy()
        on_disk = dev.tree_path.read_bytes()
        proxy.mode = mode
        world.web.server.plugins.insert(0, _ReplaceEverything())
        dev.agent.sync_now()
        assert dev.agent.wait_idle(20)
        record = dev.agent.history[-1]
        assert not record.ok and reason in record.reason, record
        assert differences(before, dev.agent.tree.tree) == []
        if mode != "wrong-session":  # (there the reply decoded: only nonces moved)
            assert differences(before, _read(dev.tree_path)) == [] and len(on_disk) > 0
        proxy.mode = "pass"  # the server is back: the next session works (nonces heal)
        world.web.server.plugins.pop(0)
        dev.agent.sync_now()
        assert dev.agent.wait_idle(20)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not dev.agent.history[-1].ok:
            dev.agent.sync_now()
            assert dev.agent.wait_idle(20)
        assert dev.agent.history[-1].ok, dev.agent.history[-3:]
    finally:
        proxy.close()


class _ReplaceEverything(QuietPlugin):
    """Would change the device's tree if the agent executed anything from a damaged reply."""

    name = "test-hostile"

    def on_session(self, ctx) -> None:  # type: ignore[no-untyped-def]
        ctx.send(m.Replace(cmd_id=1, items=[m.Item(target=m.Target(f"{BAR}/Config/Scope"),
                                                   meta=m.Meta(format="chr"), data="./Nothing")]), "r")


def test_a_slow_client_is_cut_off_and_others_are_served(world) -> None:
    world.web.body_timeout = 0.5
    host, port = "127.0.0.1", world.port
    slow = socket.create_connection((host, port))
    try:
        slow.sendall(b"POST /dm HTTP/1.1\r\nHost: x\r\nContent-Type: application/vnd.syncml.dm+xml\r\n"
                     b"Content-Length: 5000\r\n\r\n<SyncML")  # ... and then nothing
        assert world.api("GET", "/api/health")[0] == 200  # the event loop is not blocked
        slow.settimeout(5)
        answer = slow.recv(200)
        assert answer.startswith(b"HTTP/1.1 408")
    finally:
        slow.close()
    big = socket.create_connection((host, port))
    try:  # a declared length above MaxMsgSize is refused before the body is read
        big.sendall(b"POST /dm HTTP/1.1\r\nHost: x\r\nContent-Type: application/vnd.syncml.dm+xml\r\n"
                    + f"Content-Length: {10 * world.web.server.max_request_bytes}\r\n\r\n".encode())
        big.settimeout(5)
        assert big.recv(200).startswith(b"HTTP/1.1 413")
    finally:
        big.close()
    assert world.web.server.store.sessions() == []


def _post(url: str, body: bytes, ctype: str) -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read(), {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), {}


def _read(path):  # type: ignore[no-untyped-def]
    from host.tree.tnds import read_tnds
    return read_tnds(path.read_bytes())
