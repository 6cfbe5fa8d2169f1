"""Hostile and unlucky cases: wrong credentials, replayed nonces, another device's
backup, malformed and oversized SyncML, a server restart in the middle of a job."""
from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest

from host.dm import dmauth
from host.dm.agent.tree import BAR
from host.dm.session import Channel
from host.syncml import codec
from host.syncml import model as m
from host.syncml.auth import AUTH_MD5
from host.tree.generate import generate_tree
from host.tree.tnds import write_tnds
from test_dm_fixtures import (DEV_PASSWORD, db_url, differences, pg_cluster, world)  # noqa: F401

pytestmark = pytest.mark.timeout(120)


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": codec.CONTENT_TYPE_DM_XML, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read(), {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), {}


def client_message(device_id: str, server_url: str, cred: m.Cred | None, session: str = "A1") -> bytes:
    ch = Channel(session, m.Source(device_id, device_id), m.Target(server_url))
    ch.send(m.Alert(cmd_id=1, data=1201))
    return codec.encode(ch.build(cred=cred))


def header_status(body: bytes) -> m.Status:
    reply = codec.decode(body)
    return next(c for c in reply.commands if isinstance(c, m.Status) and c.cmd == "SyncHdr")


def md5_cred(password: str, nonce: bytes, user: str) -> m.Cred:
    return m.Cred(data=dmauth.md5_from_secret(dmauth.secret_of(user, password), nonce),
                  meta=m.Meta(type=AUTH_MD5, format="b64"))


def test_wrong_password_is_refused_and_nothing_happens(world) -> None:
    dev = world.add_device("phone", start=False)
    dev.agent = world.start_agent(dev, password="not-the-password")
    assert not dev.agent.history[-1].ok and "refused our credentials" in dev.agent.history[-1].reason
    job = world.job(dev, "backup", "server")
    time.sleep(1.0)
    assert world.web.server.store.job(job["id"])["state"] in ("queued", "notified")
    assert world.web.server.store.backups() == []
    events = [a["event"] for a in world.web.server.store.audit_log(dev.device_id)]
    assert "auth.failed" in events


def test_unknown_device_and_wrong_cred_get_401_with_a_challenge(world) -> None:
    dev = world.add_device("phone", start=False)
    url = f"{world.url}/dm"
    for device_id in ("IMEI:999", dev.device_id):
        status, body, _ = post(url, client_message(device_id, url, md5_cred("wrong-pass", b"", device_id)))
        assert status == 200
        st = header_status(body)
        assert st.data == 401 and st.chal is not None and st.chal.meta.next_nonce
    status, body, _ = post(url, client_message(dev.device_id, url, None, session="B2"))
    assert header_status(body).data == 407  # no Cred at all: missing credentials


def test_a_replayed_md5_message_fails(world) -> None:
    dev = world.add_device("phone", start=False)
    url = f"{world.url}/dm"
    good = client_message(dev.device_id, url, md5_cred(DEV_PASSWORD, b"", dev.device_id))
    status, body, _ = post(url, good)
    st = header_status(body)
    assert st.data == 212 and st.chal.meta.next_nonce  # accepted, and a fresh nonce for next time
    status, body, _ = post(url, good)  # the same bytes again: the nonce they used is spent
    assert header_status(body).data in (401, 408)
    # a new session with the *old* nonce is refused too
    status, body, _ = post(url, client_message(dev.device_id, url, md5_cred(DEV_PASSWORD, b"", dev.device_id),
                                               session="C3"))
    assert header_status(body).data == 401
    # the nonce from the challenge works, once
    nonce = dmauth.unb64(st.chal.meta.next_nonce)
    fresh = client_message(dev.device_id, url, md5_cred(DEV_PASSWORD, nonce, dev.device_id), session="D4")
    status, body, _ = post(url, fresh)
    assert header_status(body).data == 401  # C3's failure rotated the nonce again


def test_a_replayed_hmac_message_fails(world) -> None:
    dev = world.add_device("phone", auth="hmac", start=False)
    url = f"{world.url}/dm"
    body = client_message(dev.device_id, url, None)
    secret = dmauth.secret_of(dev.device_id, DEV_PASSWORD)
    header = {"x-syncml-hmac": dmauth.hmac_header_from_secret(dev.device_id, secret, b"", body)}
    status, reply, headers = post(url, body, header)
    assert header_status(reply).data == 212
    assert "x-syncml-hmac" in headers  # the server signs its reply too
    status, reply, _ = post(url, body, header)
    assert header_status(reply).data in (401, 408)
    tampered = client_message(dev.device_id, url, None, session="Z9")  # another body, the old mac
    status, reply, _ = post(url, tampered, header)
    assert header_status(reply).data == 401


def test_hmac_device_full_backup_and_restore(world) -> None:
    dev = world.add_device("phone", auth="hmac")
    original = dev.agent.tree.snapshot_for_backup()
    job = world.wait_job(world.job(dev, "backup", "server")["id"])
    assert job["state"] == "succeeded", job["reason"]
    dev.agent.tree.tree.delete("./DevDetail")
    backup_id = world.web.server.store.backups(dev.device_id)[0]["backup_id"]
    job = world.wait_job(world.job(dev, "restore", "server", backup_id=backup_id)["id"])
    assert job["state"] == "succeeded", job["reason"]
    assert differences(original, dev.agent.tree.snapshot_for_backup()) == []


def test_a_device_cannot_restore_another_devices_backup(world) -> None:
    from host.errors import UsageError
    alice = world.add_device("alice")
    bob = world.add_device("bob")
    job = world.wait_job(world.job(alice, "backup", "server")["id"])
    assert job["state"] == "succeeded"
    alice_backup = world.web.server.store.backups(alice.device_id)[0]
    with pytest.raises(UsageError, match="another device"):
        world.job(bob, "restore", "server", backup_id=alice_backup["backup_id"])
    code, answer = world.api("POST", "/api/jobs", {"device": bob.device_id, "kind": "restore",
                                                   "target": "server", "backup_id": alice_backup["backup_id"]})
    assert code == 400 and "another device" in answer["error"]
    # filed under Bob on the server (a buggy server or a bad actor in its database): the server's
    # re-check before sending (Bob's registered key) refuses it ...
    archive = world.web.server.store.backup_archive(alice.device_id, alice_backup["backup_id"])
    world.web.server.store.store_backup(bob.device_id, alice_backup["backup_id"], 1, archive, {}, None)
    before = bob.agent.tree.snapshot_for_backup()
    job = world.wait_job(world.job(bob, "restore", "server", backup_id=alice_backup["backup_id"])["id"])
    assert job["state"] == "failed" and "is damaged" in job["reason"]
    # ... and even if the archive reaches Bob's Staging node anyway, Bob's agent refuses it
    bob.agent.tree.set_leaf(f"{BAR}/Staging/Archive", archive, "bin", "application/vnd.simvault.archive")
    job = world.wait_job(world.job(bob, "restore", "staging", backup_id=alice_backup["backup_id"])["id"])
    assert job["state"] == "failed" and "500" in job["reason"]
    assert differences(before, bob.agent.tree.snapshot_for_backup()) == []
    assert "Restore" == bob.agent.tree.value(f"{BAR}/LastResult/Operation")


def test_an_upload_that_fails_verification_is_not_stored(world) -> None:
    """Bob's server record holds Alice's key: Bob's genuine archive fails the signature check."""
    alice = world.add_device("alice", start=False)
    bob = world.add_device("bob")
    alice_key = world.web.server.store.device(alice.device_id).public_key
    world.web.server.store.update_device(bob.device_id, public_key=alice_key)
    job = world.wait_job(world.job(bob, "backup", "server")["id"])
    assert job["state"] == "failed" and "refused" in job["reason"]
    assert world.web.server.store.backups() == []


@pytest.mark.parametrize("body,expected", [
    (b"<SyncML", 400),
    (b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'aaaa'>]><SyncML xmlns='SYNCML:SYNCML1.2'>&a;</SyncML>", 400),
    (b"<SyncML xmlns='SYNCML:SYNCML1.2'><SyncHdr><VerDTD>1.1</VerDTD></SyncHdr></SyncML>", 400),
    (b"\x00\x01\x02 binary junk", 400),
])
def test_malformed_syncml_gets_400_and_stores_nothing(world, body, expected) -> None:
    status, _, _ = post(f"{world.url}/dm", body)
    assert status == expected
    assert world.web.server.store.sessions() == [] and world.web.server.store.jobs() == []
    assert world.api("GET", "/api/health")[0] == 200  # still serving


def test_oversized_and_wrong_type_requests(world) -> None:
    status, _, _ = post(f"{world.url}/dm", b"<" * (world.web.server.max_request_bytes + 10))
    assert status == 413
    req = urllib.request.Request(f"{world.url}/dm", data=b"x", method="POST", headers={"Content-Type": "text/plain"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    assert err.value.code == 415
    assert world.web.server.store.sessions() == []


def test_admin_api_needs_the_token(world) -> None:
    assert world.api("GET", "/api/jobs", token=None)[0] == 401
    assert world.api("GET", "/api/jobs", token="wrong")[0] == 401
    dev = world.add_device("phone")
    code, job = world.api("POST", "/api/jobs", {"device": dev.device_id, "kind": "backup", "target": "server"})
    assert code == 201
    assert world.wait_job(job["id"])["state"] == "succeeded"
    code, devices = world.api("GET", "/api/devices")
    assert code == 200 and devices[0]["id"] == dev.device_id and "secret" not in devices[0]
    code, detail = world.api("GET", f"/api/jobs/{job['id']}")
    assert code == 200 and detail["results"][0]["code"] == 200
    code, backups = world.api("GET", f"/api/backups?device={dev.device_id}")
    assert code == 200 and len(backups) == 1 and "archive" not in backups[0]
    assert world.api("GET", "/api/jobs/999999")[0] == 404


def test_server_restart_mid_job_finishes_the_job(world) -> None:
    """The server stops after sending the Exec; the device's report waits and is retried;
    the server comes back on the same database and port and finishes the job."""
    big = write_tnds(generate_tree(1_500_000, seed=11))  # a backup that takes a moment
    dev = world.add_device("phone", tree_bytes=big)
    job = world.job(dev, "backup", "server")
    deadline = time.monotonic() + 20
    while world.web.server.store.job(job["id"])["state"] != "running" and time.monotonic() < deadline:
        time.sleep(0.005)
    world.stop_server()
    from host.dm.server.db import Store
    store = Store(world.db_url)
    # stopped mid-job: still running (the Exec was answered 202, the report is pending on the device),
    # or queued again (the stop ended the session before the Exec was answered: it will be sent again)
    assert store.job(job["id"])["state"] in ("running", "queued")
    store.close()
    time.sleep(1.0)  # the agent finishes its backup and fails to report
    world.start_server()
    done = world.wait_job(job["id"], timeout=40)
    assert done["state"] == "succeeded", done["reason"]
    [stored] = world.web.server.store.backups(dev.device_id)
    # a committed backup survives another restart, byte for byte, and still verifies
    world.stop_server()
    world.start_server()
    from host.dm.server.backup_plugin import verify_uploaded_archive
    data = world.web.server.store.backup_archive(dev.device_id, stored["backup_id"])
    key = world.web.server.store.device(dev.device_id).public_key
    assert verify_uploaded_archive(data, dev.device_id, key).backup_id.hex() == stored["backup_id"]


def test_running_job_of_a_silent_device_fails_after_the_timeout(world) -> None:
    dev = world.add_device("phone")
    job = world.job(dev, "backup", "card")  # the agent has no card: it refuses (406)
    done = world.wait_job(job["id"])
    assert done["state"] == "failed" and "406" in done["reason"]
    dev.agent.stop()
    dev.agent = None
    world.stop_server()
    world.running_timeout = 0.5
    world.start_server()
    job = world.job(dev, "backup", "server")  # nobody answers the notification
    world.web.server.store.set_job_state(job["id"], "running", "sent")
    done = world.wait_job(job["id"], timeout=10)
    assert done["state"] == "failed" and "no result from the device" in done["reason"]


def test_the_device_refuses_a_server_with_wrong_credentials_then_heals(world) -> None:
    dev = world.add_device("phone")
    store = world.web.server.store
    right = store.device(dev.device_id).server_secret
    store.update_device(dev.device_id, server_secret=dmauth.secret_of("simvault-dms", "an-impostor-password"))
    job = world.job(dev, "backup", "server")  # its Package 0 does not verify: the agent ignores it
    assert world.web.server.store.job(job["id"])["state"] == "queued"
    dev.agent.sync_now()  # the device calls in: the server's Cred does not verify either
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any("server failed authentication" in r.reason
                                                  for r in dev.agent.history):
        time.sleep(0.05)
    assert any("server failed authentication" in r.reason for r in dev.agent.history)
    assert dev.agent.tree.tree.find(f"{BAR}/Backups") is not None
    assert dev.agent.tree.tree.find(f"{BAR}/Backups").children == {}  # the Exec was not executed
    store.update_device(dev.device_id, server_secret=right)
    done = world.wait_job(job["id"], timeout=40)  # re-notified; the nonces healed through the 401 + Chal
    assert done["state"] == "succeeded", done["reason"]


def test_a_forged_package0_is_refused_by_the_agent(world) -> None:
    from host.syncml.package0 import Notification, build_package0
    dev = world.add_device("phone")
    sessions = len(world.web.server.store.sessions(dev.device_id))
    forged = build_package0(Notification(server_id="simvault-dms", session_id=77), "guessed-password", b"")
    status, _, _ = post(dev.agent.notify_url, forged, {"Content-Type": "application/vnd.syncml.notification"})
    assert status == 401
    status, _, _ = post(dev.agent.notify_url, b"\x00" * 10, {"Content-Type": "application/vnd.syncml.notification"})
    assert status == 401
    time.sleep(0.3)
    assert dev.agent.wait_idle(5)
    assert len(world.web.server.store.sessions(dev.device_id)) == sessions  # no session was opened


def test_a_replayed_package0_is_refused(world) -> None:
    dev = world.add_device("phone")
    device = world.web.server.store.device(dev.device_id)
    _, pkg = world.web.server.package0_for(device)
    headers = {"Content-Type": "application/vnd.syncml.notification"}
    status, _, _ = post(dev.agent.notify_url, pkg, headers)
    assert status == 202
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not dev.agent.history[-1].ok:
        time.sleep(0.05)
    assert dev.agent.wait_idle(10)
    n = len(world.web.server.store.sessions(dev.device_id))
    status, _, _ = post(dev.agent.notify_url, pkg, headers)  # the session rotated the nonce it used
    assert status == 401
    assert dev.agent.wait_idle(5) and len(world.web.server.store.sessions(dev.device_id)) == n


def test_a_report_survives_an_agent_restart_while_the_server_is_down(world) -> None:
    dev = world.add_device("phone", card="emulator")
    dev.agent.tree.set_leaf(f"{BAR}/Policy/ServerApproval", "false", "bool")
    dev.agent.tree.set_leaf(f"{BAR}/Config/Destination", "card")
    world.stop_server()
    dev.agent.backup_now(reason="user")  # backs up to the card; the report cannot go out
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not dev.agent.pending:
        time.sleep(0.05)
    assert len(dev.agent.pending) == 1
    card = dev.agent.card
    dev.agent.stop()
    world.start_server()
    dev.agent = world.start_agent(dev, card=card)  # a new agent process: the report is on disk
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not world.web.server.store.jobs(dev.device_id):
        time.sleep(0.05)
    [job] = world.web.server.store.jobs(dev.device_id)
    assert job["state"] == "succeeded" and job["target"] == "card" and job["origin"] == "device:user", job
    assert dev.agent.pending == []


def test_delete_jobs_on_server_and_card(world) -> None:
    dev = world.add_device("phone", card="emulator")
    on_server = world.wait_job(world.job(dev, "backup", "server")["id"])
    on_card = world.wait_job(world.job(dev, "backup", "card")["id"])
    server_id = world.web.server.store.backups(dev.device_id)[0]["backup_id"]
    card_id = world.web.server.store.results(on_card["id"])[0]["data"]["id"]
    assert on_server["state"] == "succeeded"
    assert world.wait_job(world.job(dev, "delete", "server", backup_id=server_id)["id"])["state"] == "succeeded"
    assert world.web.server.store.backups(dev.device_id) == []
    assert dev.agent.tree.value(f"{BAR}/Backups/{server_id}/Status") == "deleted"
    assert world.wait_job(world.job(dev, "delete", "card", backup_id=card_id)["id"])["state"] == "succeeded"
    with dev.agent.card.open() as card:
        assert card.list_backups() == []
    failed = world.wait_job(world.job(dev, "delete", "card", backup_id=card_id)["id"])  # already gone
    assert failed["state"] == "failed" and "500" in failed["reason"]


def test_wbxml_in_a_charset_we_cannot_read_is_http_415_with_the_reason(world) -> None:
    from host.syncml import wbxml
    dev = world.add_device("phone", start=False)
    url = f"{world.url}/dm"
    ch = Channel("A1", m.Source(dev.device_id, dev.device_id), m.Target(url))
    ch.send(m.Alert(cmd_id=1, data=1201))
    wire = wbxml.encode_wbxml(ch.build(cred=md5_cred(DEV_PASSWORD, b"", dev.device_id)))
    utf16 = wire[:3] + b"\x87\x77" + wire[4:]     # charset MIBenum 1015 (UTF-16) in place of 106
    status, body, _ = post(url, utf16, {"Content-Type": wbxml.CONTENT_TYPE_DM_WBXML})
    assert status == 415
    assert b"WBXML charset 1015 (UTF-16) is not supported" in body
    status, _, _ = post(url, wire, {"Content-Type": wbxml.CONTENT_TYPE_DM_WBXML})
    assert status == 200                           # the same message in UTF-8 is read
