"""Interop with a real DS peer: SyncEvolution's SyncML HTTP server (Debian package
syncevolution-http), started headless on 127.0.0.1 by scripts/syncevolution.sh
with a private D-Bus session and a file-backed text/plain datastore.

The same backup and restore as against simvault's server: a DM tree archived,
carried as base64 text in one item (large object within SyncEvolution's
MaxMsgSize), restored byte-identical; plus wrong credentials and a session cut
mid-way."""
from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

import pytest

from host.ds.backup import backup_tree_via_ds, restore_tree_via_ds
from host.ds.client import DsAccount, DsClient
from host.ds.errors import DsAuthError, DsTransportError
from host.ds.proxy import run_proxy_in_thread
from host.ds.state import AnchorStore
from host.ds.transport import CONTENT_TYPE_WBXML, HttpTransport
from host.backup.keys import generate_identity
from host.syncml.status import AlertCode
from host.tree.canonical import canonical_bytes
from host.tree.generate import generate_tree, mutate_leaves

pytestmark = pytest.mark.syncevolution

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "syncevolution.sh"
ENV = {"SYNCEVO_DIR": f"/tmp/simvault-syncevolution-test-{os.getuid()}", "SYNCEVO_PORT": "18091",
       "SYNCEVO_USER": "simvault", "SYNCEVO_PASSWORD": "se-test-pw", "SYNCEVO_DEVICES": "sv-dev-1 sv-dev-2",
       "SYNCEVO_MAXMSG": "20000"}


def script(*args: str) -> str:
    result = subprocess.run([str(SCRIPT), *args], env={**os.environ, **ENV}, capture_output=True, text=True,
                            timeout=600, check=False)
    if result.returncode != 0:
        pytest.fail(f"scripts/syncevolution.sh {' '.join(args)} failed: {result.stderr.strip()[-500:]}")
    return result.stdout.strip()


@pytest.fixture(scope="module")
def sync_url():
    script("reset")
    url = script("start")
    try:
        yield url
    finally:
        script("stop")


def account(url: str, **kw) -> DsAccount:
    return DsAccount(**{"url": url, "username": "simvault", "password": "se-test-pw", "device_id": "sv-dev-1",
                        "max_msg_size": 20000, **kw})


def test_script_is_idempotent_and_binds_loopback(sync_url):
    assert script("start") == sync_url  # already running: same URL, nothing restarted
    assert sync_url.startswith("http://127.0.0.1:")
    listening = subprocess.run(["ss", "-ltn"], capture_output=True, text=True, check=False).stdout
    assert f"127.0.0.1:{ENV['SYNCEVO_PORT']}" in listening and f"0.0.0.0:{ENV['SYNCEVO_PORT']}" not in listening


def test_tree_backup_and_restore_through_syncevolution(sync_url, tmp_path):
    identity = generate_identity(tmp_path / "keys")
    anchors = AnchorStore(tmp_path / "state.json")
    tree = generate_tree(100_000, seed=11)
    before = canonical_bytes(tree)
    outcome = backup_tree_via_ds(tree, identity, account(sync_url), anchors)
    assert outcome.ds.mode in (AlertCode.TWO_WAY, AlertCode.SLOW_SYNC)  # the default: two-way (508 first)
    mutate_leaves(tree, 0.25, seed=4)
    report, result = restore_tree_via_ds(tree, identity, account(sync_url), anchors)
    assert report.backup_id == outcome.backup_id and result.mode == AlertCode.REFRESH_FROM_SERVER
    assert canonical_bytes(tree) == before


def test_large_archive_in_many_messages(sync_url):
    data = os.urandom(300_000)  # 400 KB of base64: ~20 messages of 20,000 bytes each way
    client = DsClient(account(sync_url, device_id="sv-dev-2"))
    sent = client.backup(data, "beef01")
    assert sent.messages > 15
    got = client.restore()
    assert got.archive == data and got.backup_id == "beef01" and got.messages > 15


def test_wrong_password_is_refused_and_backup_stays(sync_url):
    data = os.urandom(2000)
    DsClient(account(sync_url)).backup(data, "c0ffee")
    with pytest.raises(DsAuthError):
        DsClient(account(sync_url, password="wrong")).backup(os.urandom(2000), "bad")
    assert DsClient(account(sync_url)).restore("c0ffee").archive == data


def test_refresh_cut_before_the_sync_package_keeps_previous_backup(sync_url):
    data = os.urandom(50_000)
    DsClient(account(sync_url, backup_mode="refresh")).backup(data, "aa01")
    # the Alert gets through, our Sync never does (a refresh cut after it would leave SyncEvolution empty)
    with run_proxy_in_thread(sync_url, vanish_at=2) as proxy, pytest.raises(DsTransportError):
        DsClient(account(proxy.url, backup_mode="refresh")).backup(os.urandom(50_000), "aa02")
    # SyncEvolution aborts the unfinished session when the next one starts
    assert DsClient(account(sync_url)).restore("aa01").archive == data


def test_restore_cut_mid_way_returns_nothing_and_next_restore_works(sync_url):
    data = os.urandom(100_000)
    DsClient(account(sync_url)).backup(data, "bb01")
    with run_proxy_in_thread(sync_url, vanish_at=4) as proxy, pytest.raises(DsTransportError):
        DsClient(account(proxy.url)).restore("bb01")
    assert DsClient(account(sync_url)).restore("bb01").archive == data


def test_default_backup_keeps_previous_when_cut_mid_way(sync_url):
    """SyncEvolution empties the datastore when a refresh from client starts; the default
    (two-way) Replaces the new archive first and Deletes the older ones after it, in one Sync."""
    anchors = AnchorStore(None)
    acc = account(sync_url, device_id="sv-dev-2")
    assert acc.backup_mode == "two-way"
    previous = os.urandom(60_000)
    DsClient(acc, anchors).backup(os.urandom(60_000), "d1")
    DsClient(acc, anchors).backup(previous, "d2")
    assert DsClient(acc, anchors).restore().archive == previous  # d1 was deleted by the second backup
    for cut in (3, 4):  # inside the large object of the new archive
        with run_proxy_in_thread(sync_url, vanish_at=cut) as proxy, pytest.raises(DsTransportError):
            DsClient(dataclasses.replace(acc, url=proxy.url), anchors).backup(os.urandom(60_000), "d3")
        assert DsClient(acc, anchors).restore("d2").archive == previous


class RecordingTransport(HttpTransport):
    """The real HTTP transport, remembering the Content-Type of every reply."""

    def __init__(self) -> None:
        super().__init__()
        self.reply_types: list[str] = []

    def post(self, url: str, body: bytes, content_type: str):
        reply = super().post(url, body, content_type)
        self.reply_types.append(reply.content_type)
        return reply


def test_wbxml_backup_and_restore_with_syncevolution(sync_url):
    """SyncEvolution (libsynthesis) speaks SyncML WBXML too: a whole session both ways in WBXML,
    large object included."""
    anchors, transport = AnchorStore(None), RecordingTransport()
    acc = account(sync_url, device_id="sv-dev-2", wbxml=True)
    data = os.urandom(100_000)
    DsClient(acc, anchors, transport).backup(os.urandom(3000), "e1")
    sent = DsClient(acc, anchors, transport).backup(data, "e2")
    assert sent.mode == AlertCode.TWO_WAY and sent.messages > 5  # MoreData chunks, in WBXML
    got = DsClient(acc, anchors, transport).restore()
    assert got.archive == data and got.backup_id == "e2" and got.items == 1  # e1 deleted after e2 arrived
    assert transport.reply_types and set(transport.reply_types) == {CONTENT_TYPE_WBXML}
