"""Alert 225 (Resume) against simvault's DS server over real HTTP, real SQLite.

The server keeps nothing of a session cut mid-way (it commits only at its end), so it cannot
resume one. It answers as libsynthesis (SyncEvolution's engine) does: 509 and Alert 200 -- a
normal two-way sync in the same session -- when the client's Last anchor matches, else 508
Refresh required and Alert 201 (slow sync). The host DS client alerts 225 after a cut backup
when ``DsAccount.resume`` is set.
"""
from __future__ import annotations

import os

import pytest

from host.ds.client import DsAccount, DsClient, replace_anchor
from host.ds.errors import DsTransportError
from host.ds.server import run_server_in_thread
from host.ds.state import AnchorStore
from host.ds.store import DsStore
from host.ds.transport import CONTENT_TYPE_XML, HttpTransport
from host.syncml import codec
from host.syncml import model as m
from host.syncml.status import AlertCode, StatusCode


@pytest.fixture
def server(tmp_path):
    store = DsStore(f"sqlite:///{tmp_path / 'ds.db'}")
    store.add_user("alice", "alice-pw")
    with run_server_in_thread(store) as srv:
        yield srv
    store.close()


class WireTransport(HttpTransport):
    """Real HTTP; records every decoded request and reply; ``cut_at=N`` loses the N-th reply
    (the server got and processed the request, the client never hears back: a dropped line)."""

    def __init__(self, cut_at: int | None = None) -> None:
        super().__init__(timeout=10)
        self.cut_at = cut_at
        self.sent: list[m.SyncMLMessage] = []
        self.replies: list[m.SyncMLMessage] = []

    def post(self, url: str, body: bytes, content_type: str):
        self.sent.append(codec.decode(body))
        reply = super().post(url, body, content_type)
        if self.cut_at is not None and len(self.sent) == self.cut_at:
            raise DsTransportError("DS server unreachable or vanished mid-session (test cut)", 503)
        self.replies.append(codec.decode(reply.body))
        return reply

    def pkg1(self) -> tuple[m.SyncMLMessage, m.SyncMLMessage]:
        """The first request the server answered past authentication, and its answer: md5
        (the default) re-sends pkg1 after a challenge when the stored nonce is stale, as it is
        after a cut session whose reply carried the next one."""
        return next((s, r) for s, r in zip(self.sent, self.replies)
                    if any(isinstance(c, m.Status) and c.cmd == "Alert" for c in r.commands))


def account(url: str, **kw) -> DsAccount:
    kw.setdefault("device_id", "dev-r")
    return DsAccount(url=url, username="alice", password="alice-pw", **kw)


def alerts(msg: m.SyncMLMessage) -> list[m.Alert]:
    return [c for c in msg.commands if isinstance(c, m.Alert) and c.data not in (AlertCode.NEXT_MESSAGE,)]


def alert_status(reply: m.SyncMLMessage) -> int:
    return next(c.data for c in reply.commands if isinstance(c, m.Status) and c.cmd == "Alert")


@pytest.mark.parametrize("mode", ["refresh", "two-way"])
def test_cut_backup_then_resume_goes_on_in_the_same_session(server, mode):
    anchors = AnchorStore(None)
    acc = account(server.url, resume=True, backup_mode=mode)
    first = os.urandom(20_000)
    DsClient(acc, anchors).backup(first, "r1")
    # the Sync package reaches the server, its answer is lost
    cut = WireTransport(cut_at=2)
    with pytest.raises(DsTransportError, match="vanished mid-session"):
        DsClient(acc, anchors, cut).backup(os.urandom(20_000), "r2")
    assert any(isinstance(c, m.Sync) for c in cut.sent[1].commands)
    assert anchors.get(DsClient(acc, anchors).key).interrupted_mode is not None
    check = account(server.url, device_id="dev-check")
    if mode == "two-way":  # the server waits for pkg5 (Map): nothing was committed, anchors stay
        assert DsClient(check, AnchorStore(None)).restore().archive == first
        want = (StatusCode.RESUME_NOT_POSSIBLE, AlertCode.TWO_WAY)
    else:  # refresh from client ends at pkg4 on the server's side: r2 is in, the server's anchor moved
        assert DsClient(check, AnchorStore(None)).restore().backup_id == "r2"
        want = (StatusCode.REFRESH_REQUIRED, AlertCode.SLOW_SYNC)

    wire = WireTransport()
    new = os.urandom(20_000)
    result = DsClient(acc, anchors, wire).backup(new, "r3")
    sent, reply = wire.pkg1()
    assert [a.data for a in alerts(sent)] == [AlertCode.RESUME]
    assert (alert_status(reply), [a.data for a in alerts(reply)]) == (want[0], [want[1]])
    assert result.mode == want[1] and result.slow_sync == (want[1] == AlertCode.SLOW_SYNC)
    assert anchors.get(DsClient(acc, anchors).key).interrupted_mode is None
    assert DsClient(acc, anchors).restore("r3").archive == new

    # the session after that completed one alerts its own sync type again
    again = WireTransport()
    DsClient(acc, anchors, again).backup(os.urandom(5000), "r4")
    sent, reply = again.pkg1()
    assert alerts(sent)[0].data == (AlertCode.TWO_WAY if mode == "two-way" else AlertCode.REFRESH_FROM_CLIENT)
    assert alert_status(reply) == StatusCode.OK


def test_resume_with_anchors_that_disagree_is_508_slow_sync(server):
    anchors = AnchorStore(None)
    acc = account(server.url, resume=True)
    DsClient(acc, anchors).backup(os.urandom(3000), "q1")
    with pytest.raises(DsTransportError):
        DsClient(acc, anchors, WireTransport(cut_at=2)).backup(os.urandom(3000), "q2")
    replace_anchor(anchors, acc, "not-the-servers-anchor")
    wire = WireTransport()
    result = DsClient(acc, anchors, wire).backup(os.urandom(3000), "q3")
    sent, reply = wire.pkg1()
    assert alerts(sent)[0].data == AlertCode.RESUME
    assert alert_status(reply) == StatusCode.REFRESH_REQUIRED
    assert alerts(reply)[0].data == AlertCode.SLOW_SYNC and result.slow_sync


def test_a_cut_restore_is_simply_done_again(server):
    """A restore (refresh from server) has nothing to resume: the next one alerts 205 again."""
    anchors = AnchorStore(None)
    acc = account(server.url, resume=True)
    data = os.urandom(150_000)  # several messages from the server
    DsClient(acc, anchors).backup(data, "s1")
    with pytest.raises(DsTransportError):
        DsClient(acc, anchors, WireTransport(cut_at=3)).restore("s1")
    wire = WireTransport()
    got = DsClient(acc, anchors, wire).restore("s1")
    assert alerts(wire.pkg1()[0])[0].data == AlertCode.REFRESH_FROM_SERVER and not got.slow_sync
    assert got.archive == data


def test_without_resume_a_cut_session_is_followed_by_a_normal_one(server):
    anchors = AnchorStore(None)
    acc = account(server.url)
    DsClient(acc, anchors).backup(os.urandom(3000), "t1")
    with pytest.raises(DsTransportError):
        DsClient(acc, anchors, WireTransport(cut_at=2)).backup(os.urandom(3000), "t2")
    wire = WireTransport()
    DsClient(acc, anchors, wire).backup(os.urandom(3000), "t3")
    sent, reply = wire.pkg1()
    assert alerts(sent)[0].data == AlertCode.TWO_WAY and alert_status(reply) == StatusCode.OK


def _raw_resume(url: str, target: str, phase_msgs: int = 0) -> m.SyncMLMessage:
    from host.syncml import auth
    hdr = m.SyncHdr(session_id="77", msg_id=1, target=m.Target(url), source=m.Source("raw-dev", "alice"),
                    ver_proto=m.PROTO_DS, cred=auth.basic_credential("alice", "alice-pw"))
    alert = m.Alert(cmd_id=1, data=AlertCode.RESUME, items=[m.Item(
        target=m.Target(target), source=m.Source("./local"), meta=m.Meta(anchor=m.Anchor(next="n1", last="l0")))])
    reply = HttpTransport(timeout=10).post(url, codec.encode(m.SyncMLMessage(hdr, [alert], final=True)),
                                           CONTENT_TYPE_XML)
    return codec.decode(reply.body)


def test_raw_225_gets_508_and_alert_201_with_anchors(server):
    """A third-party client's 225 (unknown session, datastore never synced): 508 + Alert 201
    carrying the server's Next anchor and the URIs reversed, as for any 508."""
    reply = _raw_resume(server.url, "./contacts")
    st = next(c for c in reply.commands if isinstance(c, m.Status) and c.cmd == "Alert")
    assert st.data == StatusCode.REFRESH_REQUIRED
    (back,) = alerts(reply)
    assert back.data == AlertCode.SLOW_SYNC
    assert back.items[0].target.loc_uri == "./local" and back.items[0].source.loc_uri == "contacts"
    assert back.items[0].meta.anchor.next


def test_225_later_in_a_session_is_406(server):
    """Resume only opens a session; inside the sync phase it is refused, the session goes on."""
    from host.syncml import auth
    url = server.url

    def msg(n: int, cmds: list[m.Command], resp: str) -> tuple[m.SyncMLMessage, str]:
        hdr = m.SyncHdr(session_id="78", msg_id=n, target=m.Target(resp), source=m.Source("raw-dev2", "alice"),
                        ver_proto=m.PROTO_DS, cred=auth.basic_credential("alice", "alice-pw") if n == 1 else None)
        return m.SyncMLMessage(hdr, cmds, final=True), resp

    open_alert = m.Alert(cmd_id=1, data=AlertCode.SLOW_SYNC, items=[m.Item(
        target=m.Target("backup"), source=m.Source("./l"), meta=m.Meta(anchor=m.Anchor(next="n1")))])
    first, _ = msg(1, [open_alert], url)
    r1 = codec.decode(HttpTransport(timeout=10).post(url, codec.encode(first), CONTENT_TYPE_XML).body)
    resp = r1.header.resp_uri
    late = m.Alert(cmd_id=1, data=AlertCode.RESUME, items=[m.Item(target=m.Target("backup"), source=m.Source("./l"))])
    second, _ = msg(2, [late], resp)
    r2 = codec.decode(HttpTransport(timeout=10).post(resp, codec.encode(second), CONTENT_TYPE_XML).body)
    st = next(c for c in r2.commands if isinstance(c, m.Status) and c.cmd == "Alert")
    assert st.data == StatusCode.OPTIONAL_FEATURE_NOT_SUPPORTED
