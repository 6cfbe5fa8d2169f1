"""Bridge a virtual card object to pcscd's vpcd driver (vsmartcard-vpcd).

vpcd listens on TCP (127.0.0.1:35963 for "Virtual PCD 00 00", 35964 for
"Virtual PCD 00 01"); the card connects to it as a client. Every frame is a
2-byte big-endian length and a payload. A 1-byte payload is a control frame:
0 power off, 1 power on, 2 reset (no answer), 4 get ATR (answer: the ATR).
A longer payload is a C-APDU, answered with the R-APDU.

While the bridge is connected pcscd sees a card in the reader; when it stops
or the socket drops, the card is "removed". If vpcd goes away (pcscd restart)
the bridge reconnects with a backoff.

    python -m card.vpcd --port 35963 --card host.link.echo_card:EchoCard
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from host.link.transport import VirtualCard

# VirtualCard: the one card contract, the same as EmulatorTransport's

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 35963

CTRL_OFF = 0
CTRL_ON = 1
CTRL_RESET = 2
CTRL_ATR = 4

_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 2.0
UNREACHABLE_WARN_SECONDS = 5.0      # at most one "no vpcd" warning per this many seconds

# The Debian vpcd config (/etc/reader.conf.d/vpcd): port -> the reader pcscd shows
VPCD_READER_NAMES = {35963: "Virtual PCD 00 00", 35964: "Virtual PCD 00 01"}


def reader_for_port(port: int) -> str | None:
    """The PC/SC reader name vpcd gives the slot on ``port`` (None when not a default port)."""
    return VPCD_READER_NAMES.get(port)


SLOT_LOCK_DIR = Path(os.environ.get("SIMVAULT_LOCK_DIR", "/tmp"))


@contextlib.contextmanager
def slot_lock(port: int, timeout: float = 180.0) -> Iterator[None]:
    """Hold a vpcd port across processes (flock on /tmp/simvault-vpcd-PORT.lock)
    so test sessions and benchmarks sharing pcscd queue for a slot instead of
    taking each other's reader. Raises TimeoutError naming the holder's pid.
    The lock is per open file: do not nest it for one port in one process."""
    path = SLOT_LOCK_DIR / f"simvault-vpcd-{port}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                    raise TimeoutError(f"vpcd port {port} stays locked by pid {holder} ({path})") from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


class _Closed(Exception):
    """The peer closed the connection (or we shut it down)."""


class _Mute(_Closed):
    """The card answered nothing: we drop the connection ourselves."""


_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    """Read exactly n bytes: a frame may arrive in several segments."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        if _QUICKACK is not None:
            # vpcd writes the length and the payload separately without
            # TCP_NODELAY: Nagle holds the payload until the length segment is
            # ACKed, so ACK at once (the kernel clears QUICKACK, set it again).
            sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise _Closed()
        got += k
    return bytes(buf)


class VpcdBridge:
    """Serves one card object on one vpcd slot.

    ``serve_forever()`` blocks until ``stop()`` (or SIGTERM/SIGINT when run in
    the main thread); ``run_in_thread()`` starts it in a daemon thread.
    """

    def __init__(self, card: VirtualCard, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 reconnect: bool = True, notify: Callable[[str], None] | None = None,
                 warn_interval: float = UNREACHABLE_WARN_SECONDS) -> None:
        """``notify`` receives user-facing lines: "card in reader ..." on each
        connection, and "no vpcd at ..." at most once per ``warn_interval`` seconds
        while vpcd cannot be reached."""
        self.card = card
        self.notify = notify
        self.warn_interval = warn_interval
        self._last_warning: float | None = None
        self.host = host
        self.port = port
        self.reconnect = reconnect
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.apdus = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def reader_description(self) -> str:
        """Where pcscd shows the card: "reader 'Virtual PCD 00 00'" or, on another port, the port."""
        name = reader_for_port(self.port)
        return f"reader '{name}'" if name else f"the vpcd reader of port {self.port}"

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    # -- life cycle --------------------------------------------------------

    def serve_forever(self) -> None:
        """Connect to vpcd and answer frames until stopped; reconnect on loss."""
        restore = self._install_signal_handlers()
        backoff = _BACKOFF_FIRST
        try:
            while not self._stop.is_set():
                sock = self._open()
                if sock is None:
                    if not self.reconnect:
                        return
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, _BACKOFF_MAX)
                    continue
                backoff = _BACKOFF_FIRST
                try:
                    self._serve(sock)
                except _Mute:
                    pass                            # logged where it happened
                except _Closed:
                    if not self._stop.is_set():
                        log.warning("vpcd %s closed the connection: reconnecting", self.address)
                except OSError as exc:
                    if not self._stop.is_set():
                        log.warning("vpcd %s connection lost (%s): reconnecting", self.address, exc.strerror or exc)
                finally:
                    self._close()
                if not self.reconnect:
                    return
                self._stop.wait(backoff)
        finally:
            restore()

    def run_in_thread(self) -> threading.Thread:
        """Start serve_forever in a daemon thread; returns the thread."""
        self._stop.clear()
        thread = threading.Thread(target=self.serve_forever, name=f"vpcd-{self.port}", daemon=True)
        self._thread = thread
        thread.start()
        return thread

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and disconnect (pcscd then sees the card removed)."""
        self._stop.set()
        with self._lock:
            sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked recv
            except OSError:
                pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> VpcdBridge:
        self.run_in_thread()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals ---------------------------------------------------------

    def _open(self) -> socket.socket | None:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=2.0)
        except OSError as exc:
            log.debug("vpcd %s not reachable (%s)", self.address, exc.strerror or exc)
            now = time.monotonic()
            if self.notify is not None and (self._last_warning is None
                                            or now - self._last_warning >= self.warn_interval):
                self._last_warning = now
                self.notify(f"no vpcd at {self.address}: is pcscd running with vsmartcard-vpcd? retrying")
            return None
        # Without TCP_NODELAY every answer waits ~40 ms for a delayed ACK.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(None)
        with self._lock:
            if self._stop.is_set():
                sock.close()
                return None
            self._sock = sock
        self._connected.set()
        self._last_warning = None
        log.info("card connected to vpcd %s", self.address)
        if self.notify is not None:
            self.notify(f"card in {self.reader_description} (vpcd {self.address})")
        return sock

    def _close(self) -> None:
        self._connected.clear()
        with self._lock:
            sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        try:
            self.card.power_off()
        except Exception:
            log.exception("card power_off failed")

    def _serve(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            length = int.from_bytes(_recv_exact(sock, 2), "big")
            payload = _recv_exact(sock, length) if length else b""
            answer = self._handle(payload)
            if answer == b"":
                # A mute card (power lost mid-APDU). An empty vpcd frame leaves
                # pcscd waiting; dropping the link makes it report the card
                # removed at once, and the reconnect re-inserts (powers up) it.
                log.warning("the card answered nothing (power lost?): re-inserting it on vpcd %s", self.address)
                raise _Mute()
            if answer is not None:
                if len(answer) > 0xFFFF:
                    log.error("card answer of %d bytes exceeds a vpcd frame: sending 6700", len(answer))
                    answer = b"\x67\x00"
                sock.sendall(len(answer).to_bytes(2, "big") + answer)

    def _handle(self, payload: bytes) -> bytes | None:
        card = self.card
        if len(payload) == 1:
            ctrl = payload[0]
            try:
                if ctrl == CTRL_OFF:
                    card.power_off()
                elif ctrl == CTRL_ON:
                    card.power_on()
                elif ctrl == CTRL_RESET:
                    card.reset()
                elif ctrl == CTRL_ATR:
                    return bytes(card.atr)
                else:
                    log.warning("unknown vpcd control byte %d ignored", ctrl)
            except Exception:
                log.exception("card failed on vpcd control %d", ctrl)
            return None
        self.apdus += 1
        try:
            return bytes(card.transmit(payload))
        except Exception:
            # Log the header only: the data may be a PIN or key.
            log.exception("card raised on APDU %s (%d bytes)", payload[:4].hex(), len(payload))
            return b"\x6F\x00"

    def _install_signal_handlers(self):  # -> Callable[[], None]
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handler(signum: int, _frame: Any) -> None:
            log.info("signal %d: stopping the vpcd bridge", signum)
            self._stop.set()
            with self._lock:
                sock = self._sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for sig, old in previous.items():
                signal.signal(sig, old)

        return restore


def load_card(spec: str) -> VirtualCard:
    """Build a card from "module:callable" (e.g. host.link.echo_card:EchoCard)."""
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise SystemExit(f"--card {spec!r}: expected MODULE:CALLABLE")
    factory = getattr(importlib.import_module(module_name), attr)
    return factory()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a virtual card on a vpcd slot.")
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="35963 = reader 00 00, 35964 = 00 01")
    parser.add_argument("--card", default="host.link.echo_card:EchoCard", help="MODULE:CALLABLE building the card")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    VpcdBridge(load_card(args.card), args.host, args.port).serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
