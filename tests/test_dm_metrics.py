"""GET /metrics in the Prometheus text format, read by prometheus_client's own parser, after a
real backup over HTTP and a refused message; the admin token guards it."""
from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from host.dm.session import WIRE_XML
from host.syncml import model as m
from test_dm_fixtures import ADMIN_TOKEN, db_url, pg_cluster, world  # noqa: F401 - fixtures

pytestmark = pytest.mark.timeout(120)


def _scrape(world, token: str | None = ADMIN_TOKEN) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    req = urllib.request.Request(f"{world.url}/metrics",
                                 headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, "", exc.read().decode()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _post_unknown_device(world) -> None:  # type: ignore[no-untyped-def]
    hdr = m.SyncHdr(session_id="1", msg_id=1, target=m.Target(f"{world.url}/dm"), source=m.Source("IMEI:000"))
    body = WIRE_XML.encode(m.SyncMLMessage(hdr, [m.Alert(cmd_id=1, data=1201)], final=True))
    req = urllib.request.Request(f"{world.url}/dm", data=body, method="POST",
                                 headers={"Content-Type": WIRE_XML.content_type})
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()


def test_metrics_after_a_backup_and_a_refused_message(world) -> None:
    dev = world.add_device("phone")
    job = world.wait_job(world.job(dev, "backup", "server")["id"])
    assert job["state"] == "succeeded", job["reason"]
    _post_unknown_device(world)
    [stored] = world.web.server.store.backups(dev.device_id)

    status, ctype, text = _scrape(world)
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4"), (status, ctype)
    got = _samples(text)
    assert got[("simvault_dm_devices", ())] == 1
    assert got[("simvault_dm_jobs", (("kind", "backup"), ("state", "succeeded")))] == 1
    assert got[("simvault_dm_backups_stored", ())] == 1
    assert got[("simvault_dm_backup_bytes", ())] == stored["size"]
    assert got[("simvault_dm_auth_failures_total", ())] >= 1
    assert got[("simvault_dm_sessions", (("state", "ended"),))] >= 1
    assert ("simvault_dm_sessions_open", ()) in got
    assert dev.device_id not in text  # no device ids in labels


def test_metrics_need_the_admin_token(world) -> None:
    assert _scrape(world, token=None)[0] == 401
    assert _scrape(world, token="wrong-token")[0] == 401
