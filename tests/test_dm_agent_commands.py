"""The agent's handling of every DM command, driven by the real server over HTTP.

A script plugin (a ServerPlugin, as another DM feature would be) sends the
commands in one session and collects each Status and Results.
"""
from __future__ import annotations

import time

import pytest

from host.dm.agent.tree import BAR
from host.syncml import model as m
from host.tree.tnds import TNDS_MIME_XML, read_tnds
from test_dm_fixtures import db_url, pg_cluster, world  # noqa: F401

pytestmark = pytest.mark.timeout(60)


class Script:
    name = "test-script"

    def __init__(self, commands: list[tuple[str, m.Command]]) -> None:
        self.commands = commands
        self.sent = False
        self.status: dict[str, int] = {}
        self.results: dict[str, list[m.Item]] = {}

    def on_session(self, ctx) -> None:  # type: ignore[no-untyped-def]
        if not self.sent:
            self.sent = True
            for tag, cmd in self.commands:
                ctx.send(cmd, tag)

    def on_status(self, ctx, tag, status) -> None:  # type: ignore[no-untyped-def]
        self.status[tag] = status.data

    def on_results(self, ctx, tag, results, item) -> None:  # type: ignore[no-untyped-def]
        self.results.setdefault(tag, []).append(item)

    def on_generic_alert(self, ctx, alert, item):  # type: ignore[no-untyped-def]
        return None


def run_script(world, dev, commands) -> Script:  # type: ignore[no-untyped-def]
    script = Script(commands)
    world.web.server.plugins.insert(0, script)
    dev.agent.sync_now()
    deadline = time.monotonic() + 20
    while len(script.status) < len(commands) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert dev.agent.wait_idle(20)
    return script


def get(uri: str) -> m.Get:
    return m.Get(cmd_id=1, items=[m.Item(target=m.Target(uri))])


def replace(uri: str, value: str, fmt: str = "chr") -> m.Replace:
    return m.Replace(cmd_id=1, items=[m.Item(target=m.Target(uri), meta=m.Meta(format=fmt), data=value)])


def add(uri: str, value: str | None = None, fmt: str = "chr") -> m.Add:
    return m.Add(cmd_id=1, items=[m.Item(target=m.Target(uri), meta=m.Meta(format=fmt), data=value)])


def test_get_forms_and_acl(world) -> None:
    dev = world.add_device("phone")
    script = run_script(world, dev, [
        ("leaf", get("./DevInfo/DevId")),
        ("interior", get(f"{BAR}/Config")),
        ("tnds", get(f"{BAR}?list=TNDS+ACL+Format+Value")),
        ("struct", get(f"{BAR}/Policy?list=Struct")),
        ("prop", get("./DevInfo/DevId?prop=ACL")),
        ("missing", get("./No/Such/Node")),
        ("denied", replace("./DevInfo/DevId", "stolen")),       # DevInfo: Get=* only
        ("denied-delete", m.Delete(cmd_id=1, items=[m.Item(target=m.Target("./DevDetail"))])),
        ("bad-query", get("./DevInfo?list=Nonsense")),
    ])
    assert script.status["leaf"] == 200 and script.results["leaf"][0].data == dev.device_id
    assert script.results["interior"][0].meta.format == "node"
    assert set(script.results["interior"][0].data.split("/")) == {"Destination", "Scope", "ExcludeSecrets",
                                                                  "ServerURL"}
    tnds = script.results["tnds"][0]
    assert tnds.meta.type == TNDS_MIME_XML
    sub = read_tnds(tnds.data)
    assert sub.get(f"{BAR}/Config/Destination").value == "server"
    uris = [i.source.loc_uri for i in script.results["struct"]]
    assert f"{BAR}/Policy/Interval" in uris and len(uris) == 5
    assert script.results["prop"][0].data == "Get=*"
    assert script.status["missing"] == 404
    assert script.status["denied"] == 425 and script.status["denied-delete"] == 425
    assert dev.agent.tree.value("./DevInfo/DevId") == dev.device_id
    assert script.status["bad-query"] in (406, 500)


@pytest.mark.parametrize("wbxml", [False, True], ids=["xml", "wbxml"])
def test_add_replace_delete_and_tnds_import(world, wbxml) -> None:
    # In WBXML the TNDS travels as a nested WBXML document (xml2wbxml's form) and reaches the agent
    # as an element: it must import exactly as the XML text does.
    dev = world.add_device("phone", wbxml=wbxml)
    fragment = (b'<MgmtTree xmlns="syncml:dmddf1.2"><VerDTD>1.2</VerDTD><Node><NodeName>Extra</NodeName>'
                b'<Node><NodeName>Note</NodeName><RTProperties><Format><chr/></Format></RTProperties>'
                b'<Value>hello</Value></Node></Node></MgmtTree>').decode()
    script = run_script(world, dev, [
        ("add-node", add(f"{BAR}/Config/Vendor", None, "node")),
        ("add-leaf", add(f"{BAR}/Config/Vendor/Color", "blue")),
        ("add-again", add(f"{BAR}/Config/Vendor/Color", "red")),
        ("replace", replace(f"{BAR}/Config/Destination", "card")),
        ("tnds", m.Add(cmd_id=1, items=[m.Item(target=m.Target(f"{BAR}/Config"),
                                               meta=m.Meta(format="xml", type=TNDS_MIME_XML), data=fragment)])),
        ("delete", m.Delete(cmd_id=1, items=[m.Item(target=m.Target(f"{BAR}/Config/Vendor/Color"))])),
    ])
    assert script.status == {"add-node": 200, "add-leaf": 200, "add-again": 418, "replace": 200,
                             "tnds": 200, "delete": 200}
    t = dev.agent.tree
    assert t.value(f"{BAR}/Config/Destination") == "card"
    assert t.value(f"{BAR}/Config/Extra/Note") == "hello"
    assert t.tree.find(f"{BAR}/Config/Vendor/Color") is None
    on_disk = read_tnds(dev.tree_path.read_bytes())  # saved after the session
    assert on_disk.get(f"{BAR}/Config/Extra/Note").value == "hello"


def test_atomic_rolls_back_all_or_nothing(world) -> None:
    dev = world.add_device("phone")
    before = dev.agent.tree.value(f"{BAR}/Config/Destination")
    bad = m.Atomic(cmd_id=1, commands=[
        replace(f"{BAR}/Config/Destination", "card"),
        m.Add(cmd_id=2, items=[m.Item(target=m.Target(f"{BAR}/Config/New"), meta=m.Meta(format="chr"), data="x")]),
        m.Replace(cmd_id=3, items=[m.Item(target=m.Target("./DevInfo/DevId"), meta=m.Meta(format="chr"),
                                          data="evil")]),   # denied: the whole Atomic fails
    ])
    good = m.Sequence(cmd_id=4, commands=[
        m.Replace(cmd_id=5, items=[m.Item(target=m.Target(f"{BAR}/Config/Scope"), meta=m.Meta(format="chr"),
                                          data="./DevDetail")]),
        m.Get(cmd_id=6, items=[m.Item(target=m.Target(f"{BAR}/Config/Scope"))]),
    ])
    script = run_script(world, dev, [("atomic", bad), ("sequence", good)])
    assert script.status["atomic"] == 507
    assert dev.agent.tree.value(f"{BAR}/Config/Destination") == before
    assert dev.agent.tree.tree.find(f"{BAR}/Config/New") is None
    assert script.status["sequence"] == 200
    assert dev.agent.tree.value(f"{BAR}/Config/Scope") == "./DevDetail"


def test_replacing_an_acl_takes_effect(world) -> None:
    """Replace ?prop=ACL needs Replace on the parent; afterwards the node follows its own ACL."""
    dev = world.add_device("phone")
    node = f"{BAR}/Config/Scope"
    script = run_script(world, dev, [
        ("acl", m.Replace(cmd_id=1, items=[m.Item(target=m.Target(f"{node}?prop=ACL"), meta=m.Meta(format="chr"),
                                                  data="Get=another-server")])),
        ("get", get(node)),
        ("replace", replace(node, "./DevDetail")),
        ("acl-denied", m.Replace(cmd_id=1, items=[m.Item(target=m.Target("./DevInfo/DevId?prop=ACL"),
                                                         meta=m.Meta(format="chr"), data="Get=*&Replace=*")])),
    ])
    assert script.status == {"acl": 200, "get": 425, "replace": 425, "acl-denied": 425}
    assert dev.agent.tree.tree.get(node).acl == "Get=another-server"
    assert dev.agent.tree.value(node) == "."


def test_exec_needs_the_acl_and_a_known_node(world) -> None:
    dev = world.add_device("phone")
    script = run_script(world, dev, [
        ("unknown-node", m.Exec(cmd_id=1, item=m.Item(target=m.Target(f"{BAR}/Operations/Nope")))),
        ("no-handler", m.Exec(cmd_id=1, item=m.Item(target=m.Target(f"{BAR}/Config/Scope")))),
        ("bad-data", m.Exec(cmd_id=1, item=m.Item(target=m.Target(f"{BAR}/Operations/Backup"),
                                                  data="destination=moon"))),
        ("denied", m.Exec(cmd_id=1, item=m.Item(target=m.Target("./DevInfo/DevId")))),
    ])
    assert script.status == {"unknown-node": 404, "no-handler": 406, "bad-data": 400, "denied": 425}


def test_large_get_results_cross_several_messages(world) -> None:
    dev = world.add_device("phone")
    big = "x" * 20_000  # five times the agent's MaxMsgSize
    script = run_script(world, dev, [("put", replace(f"{BAR}/Config/ServerURL", big)),
                                     ("get", get(f"{BAR}/Config/ServerURL"))])
    assert script.status["put"] == 200
    assert script.results["get"][0].data == big
    assert max(s["messages"] for s in world.web.server.store.sessions(dev.device_id)) >= 5
