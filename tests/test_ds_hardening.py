"""Hardening of the DS part: Exec Data escaping, DS credentials encrypted at rest on the
DM server, the safe default backup mode (two-way) under cuts, base64 large objects split
mid-quantum, Alert 223 when a new object cuts a large one short.

Peers here are real: simvault's DS server over HTTP on loopback (with hand-built SyncML
where a test must send what simvault's own client never sends), real SQLite databases."""
from __future__ import annotations

import base64
import os
import stat
import urllib.request

import pytest

from host.dm.server.db import Store
from host.dm.server.ds_accounts import (
    DsAccountError,
    ds_account_password,
    ds_accounts,
    exec_data_for_job,
    set_ds_account,
)
from host.dm.session import format_kv, parse_kv
from host.ds.client import DsAccount, DsClient
from host.ds.errors import DsTransportError
from host.ds.largeobj import TolerantAssembler
from host.ds.proxy import run_proxy_in_thread
from host.ds.server import run_server_in_thread
from host.ds.state import AnchorStore
from host.ds.store import DsStore
from host.ds.transport import CONTENT_TYPE_XML
from host.errors import SyncMLError
from host.syncml import auth, codec
from host.syncml import model as m
from host.syncml.status import AlertCode, StatusCode

HOSTILE_PASSWORD = "p;w=d%41 ;x=%zz é"


# ------------------------------------------------------------------ 1a: the Exec Data format
@pytest.mark.parametrize("value", [HOSTILE_PASSWORD, " edge ", "", "a=b", "100%", "line\nbreak", "plain"])
def test_kv_values_round_trip_through_percent_encoding(value):
    data = format_kv({"url": "http://h/x?a=1&b=2", "password": value, "user": "u"})
    assert data.count(";") == 2 and data.count("=") == 3  # only the separators stay raw
    assert parse_kv(data) == {"url": "http://h/x?a=1&b=2", "password": value, "user": "u"}


@pytest.mark.parametrize("bad", ["a=b=c", "a=%zz", "a=%4", "a=1;a=2", "a b=1", "novalue", "=x"])
def test_kv_parser_is_strict(bad):
    with pytest.raises(SyncMLError):
        parse_kv(bad)


# ------------------------------------------------------------------ 1b: DS accounts, encrypted at rest
@pytest.fixture
def dm_store(tmp_path, monkeypatch):
    monkeypatch.delenv("SIMVAULT_DM_SECRET_KEY", raising=False)
    monkeypatch.delenv("SIMVAULT_DM_SECRET_KEY_FILE", raising=False)
    store = Store(f"sqlite:///{tmp_path / 'dm.db'}")
    yield store


def test_ds_account_password_is_encrypted_at_rest_and_round_trips(dm_store, tmp_path):
    set_ds_account(dm_store, "acc", "http://127.0.0.1:1/sync", "phone", HOSTILE_PASSWORD)
    key = tmp_path / "dm.db.secret.key"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600 and len(key.read_bytes()) == 32
    raw = b"".join(f.read_bytes() for f in tmp_path.glob("dm.db*") if f.name != key.name)
    assert HOSTILE_PASSWORD.encode() not in raw and b"p;w=d" not in raw
    [listed] = ds_accounts(dm_store)
    assert set(listed) == {"name", "url", "datastore", "username", "auth", "updated"}  # no password, no ciphertext
    exec_data = exec_data_for_job(dm_store, format_kv({"url": "http://127.0.0.1:1/sync", "user": "phone",
                                                       "account": "acc", "mode": "two-way"}),
                                  device_id="IMEI:1", correlator="c1", enc_key=None, tls=True)  # inside TLS
    assert parse_kv(exec_data) == {"url": "http://127.0.0.1:1/sync", "user": "phone", "mode": "two-way",
                                   "password": HOSTILE_PASSWORD}


def test_ds_account_tampered_or_other_key_gives_a_clear_error(dm_store, tmp_path, monkeypatch):
    from sqlalchemy import text
    set_ds_account(dm_store, "acc", "http://127.0.0.1:1/sync", "phone", "secret")
    with dm_store.engine.begin() as c:  # move the ciphertext to another account name: AAD refuses it
        c.execute(text("UPDATE ds_accounts SET name = 'other' WHERE name = 'acc'"))
    with pytest.raises(DsAccountError, match="integrity"):
        ds_account_password(dm_store, "other")
    monkeypatch.setenv("SIMVAULT_DM_SECRET_KEY", base64.b64encode(os.urandom(32)).decode())
    with pytest.raises(DsAccountError, match="another server secret key"):
        ds_account_password(dm_store, "other")
    with pytest.raises(DsAccountError, match="no DS account"):
        ds_account_password(dm_store, "missing")


def test_api_refuses_ds_jobs_with_a_password(tmp_path):
    from host.dm.server.webapp import build_server, create_job_checked
    from host.errors import UsageError
    web = build_server(f"sqlite:///{tmp_path / 'dm.db'}")
    assert (tmp_path / "dm.db.secret.key").exists()  # created on first start
    with pytest.raises(UsageError, match="never a password"):
        create_job_checked(web.server, "dev", "backup_via_ds", "ds",
                           params={"data": "url=http://x/sync;user=u;password=p"}, notify=False)


# ------------------------------------------------------------------ 2: the safe default under cuts
@pytest.fixture
def ds_server(tmp_path):
    store = DsStore(f"sqlite:///{tmp_path / 'ds.db'}")
    store.add_user("alice", "alice-pw")
    with run_server_in_thread(store, max_msg_size=8000) as srv:
        yield srv, store


def _acc(url: str, **kw) -> DsAccount:
    return DsAccount(**{"url": url, "username": "alice", "password": "alice-pw", "device_id": "dev-h",
                        "max_msg_size": 8000, **kw})


@pytest.mark.parametrize("cut", [2, 3, 5])
def test_default_backup_cut_anywhere_keeps_previous_on_simvault_server(ds_server, cut):
    srv, _ = ds_server
    anchors = AnchorStore(None)
    assert _acc(srv.url).backup_mode == "two-way"
    previous = os.urandom(30_000)
    DsClient(_acc(srv.url), anchors).backup(os.urandom(1000), "01")
    DsClient(_acc(srv.url), anchors).backup(previous, "02")  # two-way: "01" deleted after "02" is in
    with run_proxy_in_thread(srv.url, vanish_at=cut) as proxy, pytest.raises(DsTransportError):
        DsClient(_acc(proxy.url), anchors).backup(os.urandom(30_000), "03")
    got = DsClient(_acc(srv.url), anchors).restore()
    assert got.archive == previous and got.backup_id == "02" and got.items == 1


# ------------------------------------------------------------------ hand-built sessions (what our client never sends)
class RawPeer:
    """A minimal DS client speaking hand-built SyncML to the server over HTTP."""

    def __init__(self, url: str) -> None:
        self.url, self.msg_id, self.session = url, 0, "77"

    def send(self, commands: list[m.Command], final: bool = True, cred: bool = False) -> m.SyncMLMessage:
        self.msg_id += 1
        hdr = m.SyncHdr(session_id=self.session, msg_id=self.msg_id, target=m.Target(self.url),
                        source=m.Source("raw-dev", "alice"), ver_proto=m.PROTO_DS,
                        cred=auth.basic_credential("alice", "alice-pw") if cred else None,
                        meta=m.Meta(max_msg_size=1_000_000))
        msg = m.SyncMLMessage(hdr, commands, final=final)
        for n, c in enumerate(msg.iter_commands(), start=1):
            c.cmd_id = n
        req = urllib.request.Request(self.url, data=codec.encode(msg),
                                     headers={"Content-Type": CONTENT_TYPE_XML}, method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            answer = codec.decode(resp.read())
        self.url = answer.header.resp_uri or self.url
        return answer

    def open(self, mode: int = AlertCode.REFRESH_FROM_CLIENT) -> None:
        alert = m.Alert(cmd_id=0, data=mode, items=[m.Item(target=m.Target("backup"), source=m.Source("./raw"),
                                                           meta=m.Meta(anchor=m.Anchor(next="1", last=None)))])
        answer = self.send([alert], cred=True)
        assert any(isinstance(c, m.Alert) and c.data == mode for c in answer.commands), answer.commands


def _chunk(luid: str, text: str, more: bool, size: int | None = None) -> m.Replace:
    return m.Replace(cmd_id=1, meta=m.Meta(type="text/plain", format="b64"), items=[m.Item(
        source=m.Source(luid), data=text, more_data=more, meta=m.Meta(size=size) if size is not None else None)])


# ------------------------------------------------------------------ 3: base64 split mid-quantum
def test_codec_and_assembler_join_b64_chunks_split_anywhere():
    payload = os.urandom(301)
    b64 = base64.b64encode(payload).decode()
    for cut1 in range(1, 40):
        cut2 = cut1 + 37 + cut1 % 5
        parts = [b64[:cut1], b64[cut1:cut2], b64[cut2:]]
        assembler, whole = TolerantAssembler(), None
        for i, part in enumerate(parts):
            cmd = _chunk("x", part, i < 2, len(payload) if i == 0 else None)
            hdr = m.SyncHdr(session_id="1", msg_id=1, target=m.Target("t"), source=m.Source("s"))
            decoded = codec.decode(codec.encode(m.SyncMLMessage(hdr, [cmd])), b64_chunks_as_text=True)
            whole = assembler.feed(decoded.commands[0].items[0])
        assert whole is not None and whole.data == payload, cut1


def test_default_codec_still_refuses_a_lone_chunk_that_is_not_base64():
    hdr = m.SyncHdr(session_id="1", msg_id=1, target=m.Target("t"), source=m.Source("s"))
    with pytest.raises(SyncMLError, match="not base64"):
        codec.decode(codec.encode(m.SyncMLMessage(hdr, [_chunk("x", "QUJDR", True, 4)])))


def test_server_stores_b64_text_item_split_mid_quantum(ds_server):
    srv, store = ds_server
    text = "simvault b64 item é " * 50
    b64 = base64.b64encode(text.encode()).decode()
    peer = RawPeer(srv.url)
    peer.open()
    sync = m.Sync(cmd_id=0, target=m.Target("backup"), source=m.Source("./raw"), commands=[
        _chunk("item-1", b64[:101], True, len(text.encode()))])
    answer = peer.send([sync], final=False)
    assert [s.data for s in answer.commands if isinstance(s, m.Status) and s.cmd == "Replace"] == [213]
    sync.commands = [_chunk("item-1", b64[101:], False)]
    answer = peer.send([sync])
    assert [s.data for s in answer.commands if isinstance(s, m.Status) and s.cmd == "Replace"] == [201]
    assert [i.data for i in store.items("alice", "backup")] == [text]


# ------------------------------------------------------------------ 4: Alert 223
def test_new_object_before_last_chunk_gets_alert_223(ds_server):
    srv, store = ds_server
    peer = RawPeer(srv.url)
    peer.open()
    cut_short = base64.b64encode(b"A" * 300).decode()
    sync = m.Sync(cmd_id=0, target=m.Target("backup"), source=m.Source("./raw"), commands=[
        _chunk("big", cut_short[:150], True, 300), _chunk("small", base64.b64encode(b"whole").decode(), False)])
    answer = peer.send([sync])
    alerts = [c for c in answer.commands if isinstance(c, m.Alert) and c.data == AlertCode.NO_END_OF_DATA]
    assert len(alerts) == 1 and alerts[0].items[0].target.loc_uri == "big"
    codes = [s.data for s in answer.commands if isinstance(s, m.Status) and s.cmd == "Replace"]
    assert codes == [StatusCode.CHUNKED_ITEM_ACCEPTED, StatusCode.ITEM_ADDED]  # the new object processed
    assert answer.final
    peer.send([m.Status(cmd_id=0, msg_ref=answer.header.msg_id, cmd_ref=alerts[0].cmd_id, cmd="Alert", data=200)])
    assert [i.data for i in store.items("alice", "backup")] == ["whole"]  # the cut one never stored


def test_two_way_backup_after_a_restore_never_deletes_the_new_archive(ds_server):
    """A restore maps the server's item to a LUID; the next two-way backup Replaces its new
    archive and Deletes the older LUIDs. Found by bench_ds: the same item under two LUIDs
    (sv-<id> from the backup, r-<GUID> from the restore's Map) was Replaced, then Deleted."""
    srv, store = ds_server
    client = DsClient(_acc(srv.url, device_id="dev-rr"), AnchorStore(None))
    for backup_id in ("aa", "aa", "bb", "bb", "cc"):
        client.backup(backup_id.encode() * 400, backup_id)
        got = client.restore(backup_id)
        assert got.archive == backup_id.encode() * 400 and got.items == 1, backup_id
    assert len(store.items("alice", "backup")) == 1
