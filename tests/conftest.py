"""Shared fixtures: the real pcscd, vpcd slots serving virtual cards, --hardware.

    def test_x(vpcd_card):
        reader = vpcd_card(MyCard())            # slot 0: "Virtual PCD 00 00"
        reader2 = vpcd_card(Other(), slot=1)    # slot 1: "Virtual PCD 00 01"
        vpcd_card.bridge(reader).stop()         # the card is "removed"

pcscd is the system daemon (a private one does not work with pcsc-lite
1.9.9): tests share it and each picks its vpcd slot. Missing pcscd fails the
tests loudly; installing it is scripts/setup.sh's job.

Several pytest sessions (several engineers) may share the machine: a slot is
taken under a file lock (``vpcd_slot_lock``), so sessions queue for it instead
of stealing each other's reader. A test that serves a card some other way (a
subprocess) takes the lock itself: ``with vpcd_slot_lock(1): ...``.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from card.vpcd import VpcdBridge, slot_lock
from host.link.pcsc import card_present, list_readers, wait_for_card

ROOT = Path(__file__).resolve().parent.parent
PCSCD_SCRIPT = ROOT / "scripts" / "pcscd.sh"
VPCD_HOST = "127.0.0.1"
VPCD_PORTS = (35963, 35964)
VPCD_READERS = ("Virtual PCD 00 00", "Virtual PCD 00 01")
CARD_WAIT_SECONDS = 10.0
SLOT_LOCK_SECONDS = float(os.environ.get("SIMVAULT_SLOT_LOCK_SECONDS", "180"))
CARD_IMPL = "python"            # --card; set by pytest_configure


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--hardware", action="store_true", default=False,
                     help="run tests marked 'hardware' (a physical reader and card)")
    parser.addoption("--card", choices=("python", "javacard"), default="python",
                     help="the card behind vpcd in pcsc tests: the Python emulator (default) or the Java Card "
                          "applet in jCardSim (javacard/, built on first use)")


# Under --card javacard these tests are deselected, each for its reason (keep this short and true).
PYTHON_CARD_ONLY = {
    # what only the emulator has
    "test_backup_pcsc.py::test_card_serve_killed_mid_backup":
        "kill -9 of `card serve` and its NVM image surviving it: jCardSim keeps the card in RAM",
    "test_card_pcsc.py::test_whole_cycle_through_pcscd[short-T0]":
        "a T=0, short-APDU-only card is an emulator configuration (CardLimits); the applet offers T=1 + extended",
    "test_card_pcsc_cli.py::test_serve_readers_status_apdu":
        "`card serve --image` of an emulator image (the Java card: tests/test_jcardsim.py)",
    "test_card_pcsc_cli.py::test_second_serve_of_one_image_is_refused": "the image lock of `card serve --image`",
    # no simvault card in them: a second run proves nothing new
    "test_vpcd_bridge.py": "card/vpcd.py, the Python bridge, with an echo card",
    "test_pcsc_transport.py": "the host's PC/SC transport with an echo card",
    "test_card_pcsc_cli.py::test_card_without_the_applet_is_one_clear_line": "a foreign card, not simvault's",
    "test_card_pcsc_cli.py::test_empty_reader_is_one_clear_line": "an empty reader",
    "test_jcardsim.py": "serves the Java card whatever --card says: the default run covers it",
    "test_demo.py::test_demo_in_process": "`simvault demo --no-pcsc`: the emulator in-process, no reader",
}


def _python_only_reason(item: pytest.Item) -> str | None:
    name = item.nodeid.split("/")[-1]
    return PYTHON_CARD_ONLY.get(name) or PYTHON_CARD_ONLY.get(name.split("::")[0])


def pytest_configure(config: pytest.Config) -> None:
    global CARD_IMPL
    config.addinivalue_line("markers", "emulator_only: under --card javacard deselected, the reason in "
                                       "conftest.PYTHON_CARD_ONLY (listed at the end of the run)")
    CARD_IMPL = config.getoption("--card")
    if CARD_IMPL == "javacard":
        from cards import record_personalisations
        record_personalisations()                    # before the test modules import personalise
        os.environ["SIMVAULT_DEMO_CARD"] = "javacard"  # `simvault demo` run by tests/test_demo.py


EMULATOR_ONLY_DROPPED: list[tuple[str, str]] = []     # (test, reason): pcsc tests not run on the Java card


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if EMULATOR_ONLY_DROPPED:
        terminalreporter.section("pcsc tests for the emulator only, not run with --card javacard")
        grouped: dict[tuple[str, str], int] = {}      # whole files listed once
        for nodeid, reason in EMULATOR_ONLY_DROPPED:
            path = nodeid.partition("::")[0]
            key = path if path.split("/")[-1] in PYTHON_CARD_ONLY else nodeid
            grouped[(key, reason)] = grouped.get((key, reason), 0) + 1
        for (what, reason), n in grouped.items():
            terminalreporter.line(f"{what}{f' ({n} tests)' if n > 1 else ''}: {reason}")


def pytest_report_header(config: pytest.Config) -> str:
    return f"card behind vpcd: {config.getoption('--card')}"


@pytest.hookimpl(tryfirst=True)       # before `-m pcsc` selects on the marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:                 # every test through pcscd is a pcsc test, marked or not
        if "pcscd" in getattr(item, "fixturenames", ()) and "pcsc" not in item.keywords:
            item.add_marker(pytest.mark.pcsc)
    for item in items:
        if _python_only_reason(item):
            item.add_marker(pytest.mark.emulator_only)
    if config.getoption("--card") == "javacard":
        kept, dropped = [], []
        for item in items:
            (dropped if _python_only_reason(item) else kept).append(item)
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = kept
        EMULATOR_ONLY_DROPPED[:] = [(i.nodeid, _python_only_reason(i) or "") for i in dropped
                                    if "pcsc" in i.keywords]
    if config.getoption("--hardware"):
        return
    skip = pytest.mark.skip(reason="needs a physical reader and card: run with --hardware")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def ident(tmp_path_factory):
    """A device identity (host/keys.py) per test module; modules that need a fresh one per
    test define their own ``ident``."""
    from host.backup.keys import generate_identity
    return generate_identity(tmp_path_factory.mktemp("keys") / "k")


@pytest.fixture(scope="session")
def pcscd() -> list[str]:
    """pcscd is running and shows both vpcd readers; returns the reader names."""
    if not PCSCD_SCRIPT.exists():
        pytest.fail(f"{PCSCD_SCRIPT} is missing")
    result = subprocess.run([str(PCSCD_SCRIPT), "start"], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        pytest.fail(
            "pcscd could not be started (install it with scripts/setup.sh): "
            + (result.stderr or result.stdout).strip()
        )
    names = list_readers()
    missing = [r for r in VPCD_READERS if r not in names]
    if missing:
        pytest.fail(f"pcscd runs but lacks the vpcd readers {missing}: install vsmartcard-vpcd")
    return names


def _slot_index(slot: int) -> int:
    index = VPCD_PORTS.index(slot) if slot in VPCD_PORTS else slot
    if index not in (0, 1):
        raise ValueError(f"vpcd slot must be 0, 1, 35963 or 35964, got {slot}")
    return index


@contextlib.contextmanager
def vpcd_slot_lock(slot: int) -> Iterator[str]:
    """Hold vpcd slot 0/1 across processes (see card.vpcd.slot_lock); yields
    its reader name. Not re-entrant for one slot within a process."""
    index = _slot_index(slot)
    lock = slot_lock(VPCD_PORTS[index], SLOT_LOCK_SECONDS)
    try:
        lock.__enter__()
    except TimeoutError as exc:  # only the wait for the lock, not the test body
        pytest.fail(str(exc))
    try:
        yield VPCD_READERS[index]
    finally:
        lock.__exit__(None, None, None)


_wait_presence = wait_for_card  # imported by test_card_pcsc_cli


class VpcdSlots:
    """Factory behind the ``vpcd_card`` fixture; stops its bridges at teardown."""

    def __init__(self) -> None:
        self._bridges: dict[str, VpcdBridge] = {}
        self._locks = contextlib.ExitStack()

    def __call__(self, card: object, slot: int = 0) -> str:
        """Serve ``card`` on vpcd slot 0/1 (or port 35963/35964); return the
        reader name once pcscd sees the card present. Under --card javacard a
        freshly personalised emulator card is replaced by the Java Card applet in
        jCardSim with the same personalisation (other card objects are served as given)."""
        index = _slot_index(slot)
        reader = VPCD_READERS[index]
        if reader in self._bridges:
            raise RuntimeError(f"{reader} already serves a card in this test")
        self._locks.enter_context(vpcd_slot_lock(index))
        if not _wait_presence(reader, False, CARD_WAIT_SECONDS):
            pytest.fail(f"{reader} still shows a card: another bridge or vicc holds port {VPCD_PORTS[index]}")
        from card.emulator import VirtualCard
        if CARD_IMPL == "javacard" and isinstance(card, VirtualCard):
            self._bridges[reader] = _java_card(card, VPCD_PORTS[index])  # type: ignore[assignment]
            if not _wait_presence(reader, True, CARD_WAIT_SECONDS):
                pytest.fail(f"pcscd did not see the Java card in {reader} within {CARD_WAIT_SECONDS}s")
            return reader
        bridge = VpcdBridge(card, VPCD_HOST, VPCD_PORTS[index])  # type: ignore[arg-type]
        bridge.run_in_thread()
        self._bridges[reader] = bridge
        if not _wait_presence(reader, True, CARD_WAIT_SECONDS):
            pytest.fail(f"pcscd did not see the card in {reader} within {CARD_WAIT_SECONDS}s")
        return reader

    def bridge(self, reader: str) -> VpcdBridge:
        return self._bridges[reader]

    def remove(self, reader: str) -> None:
        """Stop the bridge ("pull the card") and wait until pcscd notices."""
        bridge = self._bridges.pop(reader)
        uncaught = 0
        if not isinstance(bridge, VpcdBridge) and bridge.running:     # the Java card
            uncaught = bridge.counters()["sw6f00"]
        bridge.stop()
        if not _wait_presence(reader, False, CARD_WAIT_SECONDS):
            pytest.fail(f"pcscd still sees a card in {reader} after the bridge stopped")
        if uncaught:
            pytest.fail(f"the Java card answered 6F00 {uncaught} time(s): exceptions the applet did not catch")

    def close(self) -> None:
        try:
            for reader in list(self._bridges):
                self.remove(reader)
        finally:
            self._locks.close()


def _java_card(card: object, port: int):
    """The Java card (card/jcardsim.py) personalised like the emulator ``card``; the test
    fails with the reason when that is impossible or the applet does not start."""
    from cards import personalisation_of

    from card.jcardsim import JavaCard, JavaCardUnavailable
    try:
        perso = personalisation_of(card)  # type: ignore[arg-type]
    except ValueError as exc:
        pytest.fail(f"--card javacard: {exc}: add the test to conftest.PYTHON_CARD_ONLY with the reason")
    java = JavaCard(perso, VPCD_HOST, port)
    try:
        java.start()
        java.wait_connected()
    except JavaCardUnavailable as exc:
        java.stop()
        pytest.fail(f"--card javacard: {exc}")
    return java


@pytest.fixture
def vpcd_card(pcscd: list[str]):
    slots = VpcdSlots()
    try:
        yield slots
    finally:
        slots.close()


@contextlib.contextmanager
def served_image(image: Path, slot: int = 0, extra: tuple[str, ...] = (),
                 locked: bool = True) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run `simvault card serve --image IMAGE` as a process on vpcd slot 0/1:
    takes the slot lock (unless the caller holds it: ``locked=False``), yields
    (reader name, process) once pcscd sees the card, and always stops the
    process (SIGTERM, then SIGKILL) and waits until the reader is empty."""
    index = _slot_index(slot)
    reader = VPCD_READERS[index]
    with contextlib.ExitStack() as stack:
        if CARD_IMPL == "javacard":
            pytest.fail("--card javacard: served_image serves an emulator image: add the test to "
                        "conftest.PYTHON_CARD_ONLY with the reason, or serve the card through vpcd_card")
        if locked:
            stack.enter_context(vpcd_slot_lock(index))
        if not _wait_presence(reader, False, CARD_WAIT_SECONDS):
            pytest.fail(f"{reader} still shows a card: a stray `card serve` or vicc holds port {VPCD_PORTS[index]}")
        proc = subprocess.Popen([sys.executable, "-m", "host.cli.card", "card", "serve",
                                 "--image", str(image), "--vpcd", f"{VPCD_HOST}:{VPCD_PORTS[index]}", *extra],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 15
            while not card_present(reader):
                if proc.poll() is not None:
                    pytest.fail(f"card serve exited: {(proc.stderr.read() if proc.stderr else '')[-300:]}")
                if time.monotonic() > deadline:
                    pytest.fail(f"pcscd did not see the served card in {reader}")
                time.sleep(0.05)
            yield reader, proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            _wait_presence(reader, False, CARD_WAIT_SECONDS)
