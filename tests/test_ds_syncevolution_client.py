"""SyncEvolution 2.0 as a DS *client* against simvault's DS server, over real HTTP, real SQLite.

SyncEvolution (libsynthesis) with a file datastore (text/plain) syncs to ``simvault ds
server``; its libcurl transport needs scripts/syncevolution-curl-shim.cpp (LD_PRELOAD,
built here with g++). A session cut mid-way (FaultProxy drops the connection) makes
SyncEvolution alert Resume (225) next time: the server cannot resume and answers 509 +
Alert 200 (as libsynthesis itself does), SyncEvolution goes on with a normal two-way sync
in that same run, and every change arrives. Slow, two-way, refresh-from-server (into an
emptied folder) and refresh-from-client, each in WBXML and XML.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from host.ds.proxy import run_proxy_in_thread
from host.ds.server import run_server_in_thread
from host.ds.store import DsStore

pytestmark = pytest.mark.syncevolution

SHIM_SOURCE = Path(__file__).resolve().parent.parent / "scripts" / "syncevolution-curl-shim.cpp"


@pytest.fixture(scope="module")
def shim(tmp_path_factory) -> Path:
    for tool in ("syncevolution", "g++"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: scripts/setup.sh installs it (apt-get install syncevolution g++)")
    out = tmp_path_factory.mktemp("shim") / "curlshim.so"
    subprocess.run(["g++", "-std=c++11", "-shared", "-fPIC", "-O2", "-o", str(out), str(SHIM_SOURCE), "-ldl"],
                   check=True, capture_output=True, timeout=120)
    return out


@pytest.fixture
def server(tmp_path):
    store = DsStore(f"sqlite:///{tmp_path / 'ds.db'}")
    store.add_user("alice", "alice-pw")
    with run_server_in_thread(store) as srv:
        yield srv, store
    store.close()


class SyncEvolutionClient:
    def __init__(self, home: Path, shim: Path, url: str, wbxml: bool = True) -> None:
        self.home, self.data = home / "home", home / "data"
        self.data.mkdir(parents=True)
        (home / "run").mkdir(mode=0o700)
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home),
                    "XDG_CONFIG_HOME": str(self.home / ".config"), "XDG_DATA_HOME": str(self.home / ".local/share"),
                    "XDG_CACHE_HOME": str(self.home / ".cache"), "XDG_RUNTIME_DIR": str(home / "run"),
                    "LD_PRELOAD": str(shim)}
        self.run("--configure", "--template", "SyncEvolution", "keyring=no", f"syncURL={url}", "username=alice",
                 "password=alice-pw", "deviceId=se-client-1", f"enableWBXML={int(wbxml)}", "--datastore-property", "backend=file",
                 "--datastore-property", f"database=file://{self.data}", "--datastore-property",
                 "databaseFormat=text/plain", "--datastore-property", "uri=backup", "--datastore-property",
                 "sync=two-way", "simv", "backup")

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(["syncevolution", *args], env=self.env, capture_output=True, text=True,
                              timeout=120, check=False)
        if check and proc.returncode != 0:
            pytest.fail(f"syncevolution {' '.join(args[:3])} failed ({proc.returncode}): "
                        f"{(proc.stdout + proc.stderr)[-1500:]}")
        return proc

    def sync(self, *extra: str, check: bool = True) -> str:
        """One sync; its whole output (SyncEvolution logs INFO lines on stderr, the report on stdout)."""
        proc = self.run("--run", "--sync-property", "RetryDuration=0", "--sync-property", "RetryInterval=0",
                        *extra, "simv", "backup", check=check)
        return f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"


def held(store: DsStore) -> set[str]:
    return {item.data.replace("\r\n", "\n").strip() for item in store.items("alice", "backup")}


@pytest.mark.parametrize("wbxml", [True, False], ids=["wbxml", "xml"])
def test_syncevolution_client_slow_then_two_way(server, shim, tmp_path, wbxml):
    srv, store = server
    se = SyncEvolutionClient(tmp_path / "se", shim, srv.url, wbxml)
    (se.data / "1.txt").write_text("hello one\n")
    (se.data / "2.txt").write_text("hello two\n")
    answers: list[bytes] = []
    with run_proxy_in_thread(srv.url, tamper=lambda body: answers.append(body) or body) as proxy:
        out = se.sync("--sync", "slow", "--sync-property", f"syncURL={proxy.url}")
    assert "synchronization completed successfully" in out
    assert held(store) == {"hello one", "hello two"}
    assert answers and all(a.startswith(b"\x03\xa4\x01\x6a") == wbxml for a in answers)  # SyncML 1.2 WBXML
    (se.data / "2.txt").write_text("changed two\n")
    (se.data / "3.txt").write_text("hello three\n")
    out = se.sync()
    assert "normal sync done successfully" in out
    assert held(store) == {"hello one", "changed two", "hello three"}


@pytest.mark.parametrize("wbxml", [True, False], ids=["wbxml", "xml"])
def test_syncevolution_resumes_after_a_cut_session_in_the_same_run(server, shim, tmp_path, caplog, wbxml):
    srv, store = server
    se = SyncEvolutionClient(tmp_path / "se", shim, srv.url, wbxml)
    (se.data / "1.txt").write_text("hello one\n")
    se.sync("--sync", "slow")
    (se.data / "1.txt").write_text("changed one\n")
    (se.data / "2.txt").write_text("hello two\n")
    with run_proxy_in_thread(srv.url, vanish_at=2) as proxy:  # its changes reach nobody's database
        cut = se.sync("--sync-property", f"syncURL={proxy.url}", check=False)
    assert not cut.startswith("rc=0") and "transport" in cut
    assert held(store) == {"hello one"}
    with caplog.at_level(logging.INFO, logger="host.ds.server_session"):
        out = se.sync()
    assert "asked to resume backup (225): not resumable, 509 -> sync type 200" in caplog.text
    assert "normal sync done successfully" in out and "synchronization completed successfully" in out
    assert held(store) == {"changed one", "hello two"}
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="host.ds.server_session"):
        se.sync()  # completed: no resume any more
    assert "225" not in caplog.text


def local(se: SyncEvolutionClient) -> set[str]:
    return {p.read_text().strip() for p in se.data.iterdir() if p.is_file()}


@pytest.mark.parametrize("wbxml", [True, False], ids=["wbxml", "xml"])
def test_syncevolution_refresh_from_server_into_an_emptied_folder_then_two_way(server, shim, tmp_path, wbxml):
    """The folder is emptied, refresh-from-server brings every item back (SyncEvolution's file
    backend gives them LUIDs anew and Maps them), the next two-way sync goes through and carries
    a change. (The LUID re-use of issue 11 point 1 inside one flush is pinned by
    tests/test_ds_store_maps.py; this run does not reach it: it passes with that fix removed.)"""
    srv, store = server
    se = SyncEvolutionClient(tmp_path / "se", shim, srv.url, wbxml)
    for n in (1, 2, 3):
        (se.data / f"{n}.txt").write_text(f"item {n}\n")
    se.sync("--sync", "slow")
    for p in se.data.iterdir():
        p.unlink()
    out = se.sync("--sync", "refresh-from-server")
    assert "synchronization completed successfully" in out
    assert local(se) == {"item 1", "item 2", "item 3"} == held(store)
    changed = next(p for p in se.data.iterdir() if p.read_text().strip() == "item 2")
    changed.write_text("item 2 changed\n")
    out = se.sync()
    assert "normal sync done successfully" in out
    assert held(store) == {"item 1", "item 2 changed", "item 3"}


@pytest.mark.parametrize("wbxml", [True, False], ids=["wbxml", "xml"])
def test_syncevolution_refresh_from_client_replaces_what_the_server_holds(server, shim, tmp_path, wbxml):
    srv, store = server
    se = SyncEvolutionClient(tmp_path / "se", shim, srv.url, wbxml)
    (se.data / "1.txt").write_text("old one\n")
    (se.data / "2.txt").write_text("old two\n")
    se.sync("--sync", "slow")
    (se.data / "2.txt").unlink()
    (se.data / "1.txt").write_text("new one\n")
    (se.data / "3.txt").write_text("new three\n")
    out = se.sync("--sync", "refresh-from-client")
    assert "synchronization completed successfully" in out
    assert held(store) == {"new one", "new three"} == local(se)
