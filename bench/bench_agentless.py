"""Agentless backup (issue 18): messages, bytes and seconds per strategy, beside the agent's own backup.

    .venv/bin/python bench/bench_agentless.py                    # 1,000 and 10,000 nodes
    .venv/bin/python bench/bench_agentless.py --nodes 1000 --gets 64

Each row is a fresh DM server (aiohttp, SQLite, on loopback) and one device with the
same synthetic tree of N nodes (DevInfo plus groups of 20 leaves of mixed formats).
The stock client is tests/stock_dm_client.py (no BaR MO) configured for each
strategy: tnds (Get ?list=TNDS), structdata (TNDS refused: 406, then
?list=StructData), walk (both refused: a Get per node). The baseline, rerun in the
same run, is the simvault agent's own backup to the server (host.dm.agent: Exec,
the agent builds and signs the archive, the server Gets it as a large object).
Counted at the server: DM messages received, bytes in + out (SyncML bodies), and
seconds from the job's creation to its success. Client and server MaxMsgSize 16 KiB.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from host.backup.keys import generate_identity  # noqa: E402
from host.dm.agent.core import AgentConfig, DMAgent  # noqa: E402
from host.dm.server.agentless.config import AgentlessConfig, server_identity  # noqa: E402
from host.dm.server.registry import register_device  # noqa: E402
from host.dm.server.webapp import ServerThread, build_server, create_job_checked  # noqa: E402
from host.tree.model import DMTree  # noqa: E402
from host.tree.tnds import write_tnds  # noqa: E402
from stock_dm_client import StockClient, open_tree  # noqa: E402

DEV = "IMEI:350000000000001"
PASSWORD, SERVER_PASSWORD = "bench-device-pw", "bench-server-pw"
MSG = 16 * 1024
STRATEGIES = {"tnds": {}, "structdata": {"tnds": False, "structdata": True}, "walk": {"tnds": False}}


def synthetic(nodes: int) -> DMTree:
    t = open_tree(DMTree())
    t.add("./DevInfo", None, format="node")
    for leaf, value in (("DevId", DEV), ("Man", "Bench"), ("Mod", "B-1"), ("DmV", "1.2"), ("Lang", "en")):
        t.add(f"./DevInfo/{leaf}", value, format="chr")
    t.add("./Vendor", None, format="node")
    t.add("./Vendor/Bench", None, format="node")
    count, g = 9, 0
    while count < nodes:
        t.add(f"./Vendor/Bench/G{g}", None, format="node")
        count += 1
        for i in range(min(20, nodes - count)):
            uri = f"./Vendor/Bench/G{g}/L{i}"
            if i % 4 == 0:
                t.add(uri, str(g * 100 + i), format="int")
            elif i % 4 == 1:
                t.add(uri, "dGhlIHF1aWNrIGJyb3du", format="b64")
            else:
                t.add(uri, f"value {g}.{i} of the bench tree", format="chr", type="text/plain")
            count += 1
        g += 1
    return t


class Counter:
    """Wraps DMServer.handle_message: messages and bytes both ways."""

    def __init__(self, core) -> None:  # type: ignore[no-untyped-def]
        self.messages = self.bytes = 0
        self._inner = core.handle_message
        core.handle_message = self

    def __call__(self, body: bytes, headers=None):  # type: ignore[no-untyped-def]
        reply = self._inner(body, headers)
        self.messages += 1
        self.bytes += len(body) + len(reply.body)
        return reply

    def reset(self) -> None:
        self.messages = self.bytes = 0


def wait(store, job_id: int, timeout: float = 600.0) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = store.job(job_id)
        if job["state"] in ("succeeded", "failed"):
            return job
        time.sleep(0.02)
    raise SystemExit(f"job {job_id} did not finish in {timeout:g} s")


def run(work: Path, label: str, tree: DMTree, gets: int) -> dict:
    ident = server_identity(generate_identity(work / "server-key").directory)
    web = build_server(f"sqlite:///{work}/dm.db", admin_token="bench", tick_interval=0.05, max_msg_size=MSG,
                       agentless=AgentlessConfig(identity=ident, gets_per_message=gets,
                                                 max_nodes=200_000, max_bytes=256 * 1024 * 1024))
    thread = ServerThread(web).start()
    store = web.server.store
    counter = Counter(web.server)
    agent = None
    try:
        if label == "agent":
            dev = generate_identity(work / "dev")
            (work / "tree.xml").write_bytes(write_tnds(tree))
            register_device(store, "simvault-dms", DEV, PASSWORD, SERVER_PASSWORD,
                            public_key_pem=(work / "dev" / "device.sign.pub.pem").read_bytes())
            agent = DMAgent(AgentConfig(tree=work / "tree.xml", server_url=f"{thread.url}/dm", device_id=DEV,
                                        key_dir=work / "dev", password=PASSWORD, server_password=SERVER_PASSWORD,
                                        max_msg_size=MSG, policy_poll=60.0, retry_interval=1.0), identity=dev)
            agent.start()
            agent.wait_idle(60)
            counter.reset()
            t0 = time.monotonic()
            job = wait(store, create_job_checked(web.server, DEV, "backup", "server", notify=False)["id"])
        else:
            register_device(store, "simvault-dms", DEV, PASSWORD, SERVER_PASSWORD, auth_type="md5")
            client = StockClient(f"{thread.url}/dm", DEV, PASSWORD, tree, max_msg_size=MSG, **STRATEGIES[label])
            t0 = time.monotonic()
            job = create_job_checked(web.server, DEV, "backup", "server", notify=False)
            client.session()
            job = store.job(job["id"])
        seconds = time.monotonic() - t0
        if job["state"] != "succeeded":
            raise SystemExit(f"{label}: {job['reason']}")
        [row] = store.backups(DEV)
        return {"label": label, "messages": counter.messages, "bytes": counter.bytes, "seconds": seconds,
                "archive": row["size"], "strategy": row["meta"].get("strategy", "agent")}
    finally:
        if agent is not None:
            agent.stop()
        thread.stop()
        store.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--gets", type=int, default=64, help="Gets outstanding at a time in a walk (default 64)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    rows = []
    for n in args.nodes:
        tree = synthetic(n)
        for label in ("agent", "tnds", "structdata", "walk"):
            with tempfile.TemporaryDirectory(prefix="simvault-bench-agentless-") as work:
                row = run(Path(work), label, tree.copy(), args.gets)
            row["nodes"] = tree.node_count()
            rows.append(row)
            print(f"{n} nodes, {label}: {row['messages']} messages, {row['bytes']} bytes, "
                  f"{row['seconds']:.2f} s", flush=True)
    print()
    print("| nodes | strategy | messages | bytes (in+out) | seconds | archive bytes | vs agent (s) |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    base = {r["nodes"]: r for r in rows if r["label"] == "agent"}
    for r in rows:
        ratio = r["seconds"] / base[r["nodes"]]["seconds"] if r["nodes"] in base else float("nan")
        print(f"| {r['nodes']} | {r['label']} | {r['messages']} | {r['bytes']} | {r['seconds']:.2f} | "
              f"{r['archive']} | {ratio:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
