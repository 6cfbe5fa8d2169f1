"""The origin document's use cases 1 and 2, over real HTTP, a real database and real cards.

Use case 1: the DM server starts a backup (to itself, to the card), then a
restore after the tree was corrupted. Use case 2: the device asks (user
request, interval policy, change policy, firmware update) and the server's
policy decides.
"""
from __future__ import annotations

import time

import pytest

from host.dm.agent.tree import BAR
from host.tree.generate import generate_tree
from host.tree.tnds import write_tnds
from test_dm_fixtures import db_url, differences, pg_cluster, world  # noqa: F401 - fixtures

pytestmark = pytest.mark.timeout(120)


def corrupt(dev) -> None:  # type: ignore[no-untyped-def]
    """What a broken update does: a subtree lost, a value changed, a node added."""
    holder = dev.agent.tree
    with holder.lock:
        holder.tree.delete("./DevDetail")
        holder.tree.replace("./DevInfo/Man", "garbage")
        holder.tree.add("./DevInfo/Junk", "x", format="chr")
    holder.save()


def test_server_initiated_backup_to_server_then_restore(world) -> None:
    big = write_tnds(generate_tree(300_000, seed=7))  # archive > MaxMsgSize: travels as a large object
    dev = world.add_device("phone", tree_bytes=big)
    original = dev.agent.tree.snapshot_for_backup()
    job = world.wait_job(world.job(dev, "backup", "server")["id"])
    assert job["state"] == "succeeded", job["reason"]
    [stored] = world.web.server.store.backups(dev.device_id)
    assert stored["size"] > 2 * 4096  # above the agent's MaxMsgSize: several messages with MoreData
    assert dev.agent.wait_idle(20)  # the server's Delete of the node follows the job's success
    assert max(r["messages"] for r in world.web.server.store.sessions(dev.device_id)) > 2  # (closed by now)
    assert dev.agent.tree.tree.find(f"{BAR}/Backups/{stored['backup_id']}/Archive") is None  # server Deleted it
    assert dev.agent.tree.value(f"{BAR}/Backups/{stored['backup_id']}/Location") == "server"

    corrupt(dev)
    assert differences(original, dev.agent.tree.snapshot_for_backup())
    job = world.wait_job(world.job(dev, "restore", "server", backup_id=stored["backup_id"])["id"])
    assert job["state"] == "succeeded", job["reason"]
    assert differences(original, dev.agent.tree.snapshot_for_backup()) == []
    # saved atomically to the tree file too
    from host.tree.tnds import read_tnds
    on_disk = read_tnds(dev.tree_path.read_bytes())
    on_disk.delete(BAR)
    assert differences(original, on_disk) == []
    assert dev.agent.tree.value(f"{BAR}/LastResult/Operation") == "Restore"


def test_server_initiated_backup_to_card_then_restore(world) -> None:
    dev = world.add_device("phone", card="emulator")
    original = dev.agent.tree.snapshot_for_backup()
    job = world.wait_job(world.job(dev, "backup", "card")["id"])
    assert job["state"] == "succeeded", job["reason"]
    assert world.web.server.store.backups(dev.device_id) == []  # nothing on the server
    results = world.web.server.store.results(job["id"])
    backup_id = results[0]["data"]["id"]
    assert results[0]["data"]["location"] == "card"
    # the backup really is on the card (read back through the card client)
    with dev.agent.card.open() as card:
        assert backup_id in [e.backup_id.hex() for e in card.list_backups()]

    corrupt(dev)
    job = world.wait_job(world.job(dev, "restore", "card", backup_id=backup_id)["id"])
    assert job["state"] == "succeeded", job["reason"]
    assert differences(original, dev.agent.tree.snapshot_for_backup()) == []


@pytest.mark.pcsc
@pytest.mark.timeout(400)  # the vpcd slot is shared (a cross-process lock): other suites may hold it a while
def test_backup_and_restore_with_the_card_behind_pcscd(world, vpcd_card, db_url) -> None:  # noqa: F811
    from card.emulator import VirtualCard
    from host.dm.agent.bar import CardAccess
    dev = world.add_device("phone", start=False, card="emulator")
    virtual = VirtualCard.open(dev.card_image)
    try:
        reader = vpcd_card(virtual, slot=0)
        dev.agent = world.start_agent(dev, card=CardAccess(reader=reader))
        original = dev.agent.tree.snapshot_for_backup()
        job = world.wait_job(world.job(dev, "backup", "card")["id"], timeout=60)
        assert job["state"] == "succeeded", job["reason"]
        backup_id = world.web.server.store.results(job["id"])[0]["data"]["id"]
        corrupt(dev)
        job = world.wait_job(world.job(dev, "restore", "card", backup_id=backup_id)["id"], timeout=60)
        assert job["state"] == "succeeded", job["reason"]
        assert differences(original, dev.agent.tree.snapshot_for_backup()) == []
    finally:
        vpcd_card.close()
        virtual.close()


@pytest.mark.parametrize("destination", ["server", "card"])
def test_device_initiated_user_request(world, destination) -> None:
    dev = world.add_device("phone", card="emulator")
    dev.agent.backup_now(destination)
    jobs = _wait_jobs(world, dev, 1)
    job = world.wait_job(jobs[0]["id"])
    assert job["state"] == "succeeded", job["reason"]
    assert job["origin"] == "device:user" and job["target"] == destination
    assert len(world.web.server.store.backups(dev.device_id)) == (1 if destination == "server" else 0)
    # and it restores: from where it went
    original = dev.agent.tree.snapshot_for_backup()
    corrupt(dev)
    backup_id = world.web.server.store.results(job["id"])[0]["data"]["id"]
    job = world.wait_job(world.job(dev, "restore", destination, backup_id=backup_id)["id"])
    assert job["state"] == "succeeded", job["reason"]
    assert differences(original, dev.agent.tree.snapshot_for_backup()) == []


def test_device_request_refused_by_server_policy(world) -> None:
    dev = world.add_device("phone")
    world.web.server.store.update_device(dev.device_id, allow_device_backup=False)
    dev.agent.backup_now("server")
    assert dev.agent.wait_idle(10)
    assert dev.agent.refusals == ["user:406"]
    assert world.web.server.store.jobs(dev.device_id) == []
    events = [a["event"] for a in world.web.server.store.audit_log(dev.device_id)]
    assert "request.refused" in events


@pytest.mark.parametrize("destination", ["server", "card"])
def test_device_policy_without_server_approval(world, destination) -> None:
    """ServerApproval false: the device backs up at once, then reports; the server records it."""
    dev = world.add_device("phone", card="emulator")
    dev.agent.tree.set_leaf(f"{BAR}/Policy/ServerApproval", "false", "bool")
    dev.agent.tree.set_leaf(f"{BAR}/Config/Destination", destination)
    dev.agent.backup_now(reason="user")
    jobs = _wait_jobs(world, dev, 1)
    job = world.wait_job(jobs[0]["id"])
    assert job["state"] == "succeeded" and job["origin"] == "device:user" and job["target"] == destination, job
    assert len(world.web.server.store.backups(dev.device_id)) == (1 if destination == "server" else 0)
    assert dev.agent.tree.value(f"{BAR}/LastResult/Operation") == "Backup"


def test_interval_policy_backs_up_to_the_server(world) -> None:
    dev = world.add_device("phone")
    dev.agent.tree.set_leaf(f"{BAR}/Policy/Interval", "1", "int")
    jobs = _wait_jobs(world, dev, 1, timeout=15)
    job = world.wait_job(jobs[0]["id"])
    assert job["origin"] == "device:interval" and job["state"] == "succeeded", job
    assert len(world.web.server.store.backups(dev.device_id)) >= 1


def test_change_policy_after_a_server_replace(world) -> None:
    """A server Replace changes the tree; the debounced on-change policy asks for a backup."""
    dev = world.add_device("phone")
    dev.agent.tree.set_leaf(f"{BAR}/Policy/OnChange", "true", "bool")
    fumo = next(u for u, n in dev.agent.tree.tree.walk("./FUMO") if u.count("/") == 2)
    plugin = _OneShot(f"{fumo}/PkgVersion", "9.9.9")
    world.web.server.plugins.append(plugin)
    dev.agent.sync_now()
    jobs = _wait_jobs(world, dev, 1, timeout=15)
    assert plugin.status == 200 and dev.agent.tree.value(f"{fumo}/PkgVersion") == "9.9.9"
    job = world.wait_job(jobs[0]["id"])
    assert job["origin"] == "device:change" and job["state"] == "succeeded", job


def test_firmware_update_triggers_a_local_backup_first(world) -> None:
    dev = world.add_device("phone", card="emulator")
    fumo = next(u for u, n in dev.agent.tree.tree.walk("./FUMO") if u.count("/") == 2)
    world.web.server.plugins.append(_ExecOnce(f"{fumo}/Update"))
    dev.agent.sync_now()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and dev.agent.firmware_updates == 0:
        time.sleep(0.05)
    assert dev.agent.wait_idle(20)
    assert dev.agent.firmware_updates == 1
    assert dev.agent.tree.value(f"{fumo}/State") == "100"
    with dev.agent.card.open() as card:
        assert len(card.list_backups()) == 1  # the backup happened before the update
    assert dev.agent.tree.value(f"{BAR}/LastResult/Operation") == "Backup"


# ------------------------------------------------------------------ helpers
def _wait_jobs(world, dev, n: int, timeout: float = 10.0) -> list:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = world.web.server.store.jobs(dev.device_id)
        if len(jobs) >= n:
            return jobs
        time.sleep(0.05)
    raise AssertionError(f"{n} job(s) expected, got {world.web.server.store.jobs(dev.device_id)}")


class _OneShot:
    """A server plugin that sends one Replace (as another DM feature would)."""

    name = "test-replace"

    def __init__(self, uri: str, value: str) -> None:
        self.uri, self.value, self.sent = uri, value, False

    def on_session(self, ctx) -> None:  # type: ignore[no-untyped-def]
        from host.syncml import model as m
        if not self.sent:
            self.sent = True
            ctx.send(m.Replace(cmd_id=1, items=[m.Item(target=m.Target(self.uri), meta=m.Meta(format="chr"),
                                                       data=self.value)]), "replace")

    def on_status(self, ctx, tag, status) -> None:  # type: ignore[no-untyped-def]
        self.status = status.data

    def on_results(self, ctx, tag, results, item) -> None:  # type: ignore[no-untyped-def]
        pass

    def on_generic_alert(self, ctx, alert, item):  # type: ignore[no-untyped-def]
        return None


class _ExecOnce(_OneShot):
    name = "test-exec"

    def __init__(self, uri: str) -> None:
        super().__init__(uri, "")
        self.alerts: list[str] = []

    def on_session(self, ctx) -> None:  # type: ignore[no-untyped-def]
        from host.syncml import model as m
        if not self.sent:
            self.sent = True
            ctx.send(m.Exec(cmd_id=1, correlator="fumo-1", item=m.Item(target=m.Target(self.uri))), "exec")

    def on_generic_alert(self, ctx, alert, item):  # type: ignore[no-untyped-def]
        if alert.correlator == "fumo-1":
            self.alerts.append(str(item.data))
            return 200
        return None


def test_a_user_request_made_while_the_server_is_down_is_delivered_later(world) -> None:
    dev = world.add_device("phone")
    world.stop_server()
    dev.agent.backup_now("server")
    assert dev.agent.wait_idle(10)
    assert not dev.agent.history[-1].ok
    world.start_server()
    jobs = _wait_jobs(world, dev, 1, timeout=20)
    job = world.wait_job(jobs[0]["id"])
    assert job["state"] == "succeeded" and job["origin"] == "device:user", job
