"""The layout of docs/ARCHITECTURE.md, checked on the source (ast, nothing imported).

Every module of apdu_specs/, card/ and host/: its imports (module level, function
level and under TYPE_CHECKING alike, since each is a dependency of the design) must
name a module that exists (no stale path), must not close a circle (strongly
connected components of the import graph), must respect the layer rules, and the
module must stay under MAX_LINES.
"""
from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from host import _moved

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("apdu_specs", "card", "host")
MAX_LINES = 460  # "about 450": room for a small fix, not for a new feature

# Layers, by module prefix (the longest prefix wins), and the layers each may import.
# A layer may always import itself (without circles). Keep in step with docs/ARCHITECTURE.md.
LAYERS: dict[str, tuple[str, ...]] = {
    "base": ("host", "host.errors", "host.fsutil", "host._moved", "host.tls"),
    "specs": ("apdu_specs",),
    "link": ("host.link",),
    "card": ("card",),
    "formats": ("host.tree", "host.syncml"),
    "client": ("host.client", "host.client_errors"),
    "backup": ("host.archive", "host.backup"),
    "ds": ("host.ds",),
    "dm": ("host.dm",),
    "dm.server": ("host.dm.server",),
    "dm.agent": ("host.dm.agent",),
    "demo": ("host.demo",),
    "cli": ("host.cli",),
}
MAY_IMPORT: dict[str, set[str]] = {
    "base": set(),
    "specs": set(),
    "link": {"base"},
    "card": {"base", "specs", "link"},  # card.vpcd serves a host.link.transport.VirtualCard
    "formats": {"base"},
    "client": {"base", "specs", "link"},
    "backup": {"base", "specs", "formats"},
    "ds": {"base", "formats", "backup"},
    "dm": {"base", "formats"},
    "dm.server": {"base", "specs", "formats", "backup", "ds", "dm"},
    "dm.agent": {"base", "specs", "link", "card", "formats", "client", "backup", "ds", "dm"},
    "demo": {"base", "specs", "link", "card", "formats", "client", "backup", "ds", "dm", "dm.server", "dm.agent"},
    "cli": {"base", "specs", "link", "card", "formats", "client", "backup", "ds", "dm", "dm.server", "dm.agent",
            "demo"},
}


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if any(not (d / "__init__.py").exists() for d in path.parents if ROOT in d.parents):
                continue  # a script in a data folder (apdu_specs/vectors/), not a module of the package
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, int]]:
    """(imported module, line) for every import statement anywhere in the module."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{module}.{alias.name}"
                found.append((sub if sub in MODULES else module, node.lineno))
    ours = [(target, line) for target, line in found if target.split(".")[0] in PACKAGES]
    return list(dict.fromkeys(ours))  # one entry per (module, line)


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(module: str) -> str:
    best, best_len = "", -1
    for layer, prefixes in LAYERS.items():
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = layer, len(prefix)
    return best


def test_every_import_names_an_existing_module() -> None:
    """No import of a path that moved (host/_moved.py keeps those for outside programs only)."""
    stale = [f"{MODULES[m].relative_to(ROOT)}:{line}: {target}"
             for m, edges in GRAPH.items() for target, line in edges if target not in MODULES]
    assert not stale, "imports of modules that do not exist:\n" + "\n".join(stale)


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; the components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_strongly_connected_finds_a_circle() -> None:
    """The checker itself: a circle of three and a self-contained pair are found, a chain is not."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"e"}, "e": {"d"}, "f": {"a"}, "g": set()}
    assert sorted(_strongly_connected(graph)) == [["a", "b", "c"], ["d", "e"]]
    assert _strongly_connected({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_import_circles() -> None:
    graph = {m: {t for t, _ in edges if t in MODULES and t != m} for m, edges in GRAPH.items()}
    circles = _strongly_connected(graph)
    assert not circles, "import circles (strongly connected components):\n" + "\n".join(
        " <-> ".join(c) for c in circles)


def test_layers() -> None:
    unassigned = [m for m in MODULES if not _layer(m)]
    assert not unassigned, f"modules in no layer (add them to LAYERS and docs/ARCHITECTURE.md): {unassigned}"
    wrong = []
    for module, edges in GRAPH.items():
        mine = _layer(module)
        for target, line in edges:
            theirs = _layer(target)
            if theirs != mine and theirs not in MAY_IMPORT[mine]:
                wrong.append(f"{MODULES[module].relative_to(ROOT)}:{line}: {module} ({mine}) imports "
                             f"{target} ({theirs})")
    assert not wrong, "imports against the layer rules of docs/ARCHITECTURE.md:\n" + "\n".join(wrong)


def test_dm_server_and_agent_do_not_import_each_other() -> None:
    """Stated on its own because it is the rule the layout exists for."""
    crossing = [(m, t) for m, edges in GRAPH.items() for t, _ in edges
                if {_layer(m), _layer(t)} == {"dm.server", "dm.agent"}]
    assert not crossing


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_size(module: str) -> None:
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{MODULES[module].relative_to(ROOT)} has {lines} lines (max {MAX_LINES}): split it"


def test_layer_rules_catch_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: an agent module importing the server is reported."""
    assert _layer("host.dm.agent.bar") == "dm.agent" and _layer("host.dm.server.db") == "dm.server"
    assert _layer("host.dm.session") == "dm" and _layer("host.errors") == "base"
    assert "dm.server" not in MAY_IMPORT["dm.agent"] and "dm.agent" not in MAY_IMPORT["dm.server"]
    assert "cli" not in MAY_IMPORT["demo"] and "host" not in {_layer(m) for m in MODULES if m.startswith("card")}


@pytest.mark.parametrize("old", sorted(_moved.MOVED))
def test_old_module_paths_still_import(old: str) -> None:
    """host/_moved.py: a program written before the move imports the same module object."""
    assert importlib.import_module(old) is importlib.import_module(_moved.MOVED[old])
    assert old not in MODULES  # an alias never hides a real module


def test_plugin_api_of_docs_dm_md_keeps_its_names() -> None:
    from host.dm.agent import AgentConfig, DMAgent
    from host.dm.agent.core import DMAgent as CoreAgent
    from host.dm.agent_bar import CardAccess
    from host.dm.agent_cmds import AlertReport, ExecOutcome, ExecRequest, register_exec_handler
    from host.dm.mo_ds import DsBackupRecorder, command_backup_via_ds, command_restore_via_ds, ds_job_params
    from host.dm.plugin import Notifier, ServerPlugin, SessionContext
    from host.dm.registry import register_device
    from host.dm.server import DMServer
    from host.dm.webapp import ServerThread, build_server, create_job_checked
    from host.backup_ops import backup_tree_to_card, restore_tree
    assert DMAgent is CoreAgent and AgentConfig.__module__ == "host.dm.agent.api"
    assert DMServer.__module__ == "host.dm.server.engine"
    assert all(callable(x) for x in (CardAccess, AlertReport, ExecOutcome, ExecRequest, register_exec_handler,
                                     DsBackupRecorder, command_backup_via_ds, command_restore_via_ds,
                                     ds_job_params, Notifier, ServerPlugin, SessionContext, register_device,
                                     ServerThread, build_server, create_job_checked, backup_tree_to_card,
                                     restore_tree))
    with pytest.raises(AttributeError):
        import host.dm.agent as agent_pkg
        agent_pkg.NoSuchName  # noqa: B018 - only the old module's names are forwarded


@pytest.mark.parametrize("module", ["host.dm.cli", "host.cli_card", "host.cli"])
def test_python_dash_m_runs_the_old_and_new_command_paths(module: str) -> None:
    proc = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "usage: simvault" in proc.stdout
