"""The Java Card applet (javacard/) in jCardSim, served on a vpcd slot of pcscd.

    perso = Personalisation(pin="1234", puk="12345678", admin_key=key16,
                            trust_anchors=[point65], capacity=1 << 20)
    with JavaCard(perso, port=35963) as jc:      # reader 'Virtual PCD 00 00'
        ...                                       # any PC/SC program talks to it
        jc.counters()                             # {'apdus': ..., 'bytes_in': ..., 'sw6f00': ...}

The card runs in a Java process (org.simvault.sim.VpcdCardMain, jCardSim's
CardSimulator): it gets its install parameters (the same personalisation as
``simvault card init`` writes into an emulator image) on standard input, never
on its command line, and stops when its standard input closes, so it never
outlives this process. jCardSim keeps the card's memory in the JVM's heap:
stopping the process loses every backup on that card.

The jar is built on first use (``mvn -q -o package`` in javacard/); without
Java or Maven the error says which command to run.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from card.emulator import check_chunk_entries
from host.errors import SimvaultError, UsageError

ROOT = Path(__file__).resolve().parent.parent
JAVACARD_DIR = ROOT / "javacard"
TARGET_DIR = JAVACARD_DIR / "target"
JAR = TARGET_DIR / "simvault-applet.jar"         # applet + launcher + jCardSim (javacard/pom.xml, shade)
MAIN_CLASS = "org.simvault.sim.VpcdCardMain"
BUILD_COMMAND = ("mvn", "-q", "-o", "-DskipTests", "package")
USER_BUILD_HINT = "cd javacard && mvn -q package"
# Fast start over peak speed: the card's work per APDU is small.
JVM_OPTIONS = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xss4m")
START_SECONDS = 30.0


class JavaCardUnavailable(SimvaultError):
    """No Java, no Maven, or the jar does not build: the message names the command to run."""


# ---- personalisation ------------------------------------------------------------------

# Install parameter TLV tags: apdu_specs/README.md, "Personalisation (install parameters)".
TAG_PIN = 0x01
TAG_PUK = 0x02
TAG_SCP03_KEYS = 0x03
TAG_KEY_VERSION = 0x04
TAG_TRUST_ANCHOR = 0x05
TAG_STORE_SIZE = 0x06
TAG_CHUNK_ENTRIES = 0x07
TAG_MAX_CHUNK_SIZE = 0x08
TAG_MAX_MANIFEST = 0x09
INSTALL_DATA_MAX = 255 - (1 + 10) - (1 + 1) - 1   # Applet.install's 255 bytes less AID, privileges, lengths


@dataclass(frozen=True)
class Personalisation:
    """What ``simvault card init`` sets: PIN (4-8 digits), PUK (8 digits), the admin
    key (16 bytes: one AES-128 key for ENC, MAC and DEK, or 48 bytes: ENC|MAC|DEK),
    trust anchors (uncompressed P-256 points) and the store size in bytes; the
    applet's own limits (None: its defaults) may be set too."""

    pin: str
    puk: str
    admin_key: bytes
    trust_anchors: tuple[bytes, ...] = ()
    capacity: int = 1 << 20
    admin_key_version: int = 1
    chunk_entries: int | None = None
    max_chunk_size: int | None = None
    max_manifest: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "trust_anchors", tuple(bytes(p) for p in self.trust_anchors))
        if not (self.pin.isdigit() and 4 <= len(self.pin) <= 8):
            raise UsageError("the PIN is 4 to 8 digits")
        if not (self.puk.isdigit() and len(self.puk) == 8):
            raise UsageError("the PUK is 8 digits")
        if len(self.admin_key) not in (16, 48):
            raise UsageError("the admin key is 16 bytes (AES-128) or 48 (ENC|MAC|DEK)")
        if not 1 <= self.admin_key_version <= 0x7F:
            raise UsageError("the admin key version is 1..127")
        for point in self.trust_anchors:
            if len(point) != 65 or point[0] != 0x04:
                raise UsageError("a trust anchor is an uncompressed P-256 point (65 bytes, 04...)")
        check_chunk_entries(self.chunk_entries)
        if not 16384 <= self.capacity < 1 << 23:
            raise UsageError(f"store size {self.capacity}: 16384 bytes to 8 MiB for the Java card")
        if len(self.install_params()) > INSTALL_DATA_MAX:
            raise UsageError(f"{len(self.trust_anchors)} trust anchors do not fit the install parameters "
                             f"({INSTALL_DATA_MAX} bytes): install with at most 2, add the others with "
                             "'simvault card trust add'")

    def __repr__(self) -> str:  # never show the secrets
        return (f"Personalisation(pin=<{len(self.pin)} digits>, puk=<8 digits>, admin_key=<{len(self.admin_key)} "
                f"bytes>, trust_anchors={len(self.trust_anchors)}, capacity={self.capacity})")

    def scp03_keys(self) -> tuple[bytes, bytes, bytes]:
        k = bytes(self.admin_key)
        return (k, k, k) if len(k) == 16 else (k[:16], k[16:32], k[32:])

    def install_params(self) -> bytes:
        """The applet's install parameters (the C9 value of GlobalPlatform's INSTALL [for install])."""
        enc, mac, dek = self.scp03_keys()
        out = bytearray()
        out += _tlv(TAG_PIN, _pin_block(self.pin))
        out += _tlv(TAG_PUK, _pin_block(self.puk))
        out += _tlv(TAG_SCP03_KEYS, enc + mac + dek)
        if self.admin_key_version != 1:
            out += _tlv(TAG_KEY_VERSION, bytes((self.admin_key_version,)))
        for point in self.trust_anchors:
            out += _tlv(TAG_TRUST_ANCHOR, point)
        out += _tlv(TAG_STORE_SIZE, self.capacity.to_bytes(4, "big"))
        for tag, value in ((TAG_CHUNK_ENTRIES, self.chunk_entries), (TAG_MAX_CHUNK_SIZE, self.max_chunk_size),
                           (TAG_MAX_MANIFEST, self.max_manifest)):
            if value is not None:
                out += _tlv(tag, value.to_bytes(2, "big"))
        return bytes(out)


def _pin_block(digits: str) -> bytes:
    return digits.encode("ascii").ljust(8, b"\xff")


def _tlv(tag: int, value: bytes) -> bytes:
    return bytes((tag, len(value))) + value        # simple TLVs: one length byte


# ---- build ----------------------------------------------------------------------------


def _newest_source_mtime() -> float:
    newest = (JAVACARD_DIR / "pom.xml").stat().st_mtime
    for path in (JAVACARD_DIR / "src" / "main").rglob("*.java"):
        newest = max(newest, path.stat().st_mtime)
    return newest


def built_jar() -> Path | None:
    """The self-contained jar of ``mvn package`` (None before the first build)."""
    return JAR if JAR.exists() else None


def is_stale() -> bool:
    return not JAR.exists() or JAR.stat().st_mtime < _newest_source_mtime()


def ensure_built(build: bool = True, log: Callable[[str], None] | None = None) -> str:
    """The class path of the launcher (one jar), building it first when it is missing or
    older than its sources (under a lock: parallel test sessions build once)."""
    if shutil.which("java") is None:
        raise JavaCardUnavailable("no java on PATH: install a JDK 17 (Debian: default-jdk-headless; "
                                  "scripts/setup.sh does it)")
    if not (JAVACARD_DIR / "pom.xml").exists():
        raise JavaCardUnavailable(f"{JAVACARD_DIR / 'pom.xml'} is missing: the Java Card project is not there")
    if is_stale():
        if not build:
            raise JavaCardUnavailable(f"the Java card is not built: run '{USER_BUILD_HINT}'")
        if shutil.which("mvn") is None:
            raise JavaCardUnavailable("no mvn on PATH: install Maven (Debian: maven; scripts/setup.sh does it), "
                                      f"then run '{USER_BUILD_HINT}'")
        TARGET_DIR.mkdir(exist_ok=True)
        with _build_lock():
            if is_stale():
                if log is not None:
                    log("building the Java card: " + " ".join(BUILD_COMMAND) + " (in javacard/)")
                result = subprocess.run(BUILD_COMMAND, cwd=JAVACARD_DIR, capture_output=True, text=True,
                                        timeout=600)
                if result.returncode != 0 or is_stale():
                    tail = (result.stdout + result.stderr).strip().splitlines()[-8:]
                    raise JavaCardUnavailable(f"the Java card did not build: run '{USER_BUILD_HINT}' "
                                              "(without -o when Maven lacks plugins offline): " + " | ".join(tail))
    return str(JAR)


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    fd = os.open(TARGET_DIR / ".build.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# ---- the card process -----------------------------------------------------------------


class JavaCard:
    """One Java card process on one vpcd port: ``start()``, ``counters()``, ``stop()``."""

    def __init__(self, personalisation: Personalisation, host: str = "127.0.0.1", port: int = 35963, *,
                 notify: Callable[[str], None] | None = None, build: bool = True,
                 java_options: Sequence[str] = (), applet_class: str | None = None,
                 extra_classpath: Sequence[str] = ()) -> None:
        """``applet_class``: another applet than org.simvault.card.BackupApplet (AID F0..01), found
        in the jar or in ``extra_classpath`` (tests/test_jcardsim.py: a bridge test applet)."""
        self.personalisation = personalisation
        self.host = host
        self.port = port
        self.notify = notify
        self.build = build
        self.java_options = tuple(java_options)
        self.applet_class = applet_class
        self.extra_classpath = tuple(extra_classpath)
        self.proc: subprocess.Popen[str] | None = None
        self._stderr_lines: list[str] = []
        self._connected = threading.Event()
        self._io_lock = threading.Lock()
        self._counters_at_stop: dict[str, int] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> JavaCard:
        classpath = os.pathsep.join((ensure_built(self.build, self.notify), *self.extra_classpath))
        cmd = ["java", *JVM_OPTIONS, *self.java_options, "-cp", classpath, MAIN_CLASS,
               "--vpcd", self.address, "--params-stdin", "--control-stdin"]
        if self.applet_class:
            cmd += ["--applet", self.applet_class]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, bufsize=1)
        assert self.proc.stdin is not None
        self.proc.stdin.write(self.personalisation.install_params().hex() + "\n")
        self.proc.stdin.flush()
        threading.Thread(target=self._read_stderr, name=f"jcardsim-{self.port}", daemon=True).start()
        return self

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        try:
            for line in self.proc.stderr:
                line = line.rstrip("\n")
                self._stderr_lines.append(line)
                del self._stderr_lines[:-50]
                if line.startswith("card in "):
                    self._connected.set()
                if self.notify is not None and not line.startswith("serving "):
                    self.notify(line)
        except (OSError, ValueError):
            pass                                     # stop() closed the pipe

    def wait_connected(self, timeout: float = START_SECONDS) -> None:
        """Until the card has connected to vpcd; JavaCardUnavailable with the card's
        own error line if the process ended first."""
        deadline = time.monotonic() + timeout
        while not self._connected.wait(0.05):
            assert self.proc is not None
            if self.proc.poll() is not None:
                time.sleep(0.1)                      # let the reader thread take the last lines
                raise JavaCardUnavailable(f"the Java card stopped (exit {self.proc.returncode}): "
                                          + (self.error_text() or "no message"))
            if time.monotonic() > deadline:
                raise JavaCardUnavailable(f"the Java card did not reach vpcd {self.address} within {timeout:.0f}s: "
                                          + (self.error_text() or "no message"))

    def error_text(self) -> str:
        return " | ".join(self._stderr_lines[-5:])

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def counters(self) -> dict[str, int]:
        """What the card carried so far: apdus, bytes_in, bytes_out, sw6f00 (answers 6F00:
        an exception the applet did not catch). After stop(): the last values."""
        if not self.running:
            if self._counters_at_stop is not None:
                return dict(self._counters_at_stop)
            raise JavaCardUnavailable("the Java card is not running")
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        with self._io_lock:
            self.proc.stdin.write("counters\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline().split()
        if not line or line[0] != "counters":
            raise JavaCardUnavailable("the Java card did not answer its control channel: " + self.error_text())
        words = line[1:]
        return {words[i]: int(words[i + 1]) for i in range(0, len(words) - 1, 2)}

    @property
    def apdus(self) -> int:
        return self.counters()["apdus"]

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the card (its memory is lost): close its standard input, then terminate."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(SimvaultError, OSError, ValueError):
                self._counters_at_stop = self.counters()
            with contextlib.suppress(OSError, ValueError):
                assert proc.stdin is not None
                proc.stdin.close()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        for stream in (proc.stdout, proc.stderr):
            with contextlib.suppress(OSError, ValueError):
                if stream is not None:
                    stream.close()
        self.proc = None

    def __enter__(self) -> JavaCard:
        self.start()
        self.wait_connected()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
