"""PC/SC transport through pyscard: reader selection, exclusive connection,
reset, and pyscard failures turned into one-line TransportErrors."""
from __future__ import annotations

import fnmatch
import time
from collections.abc import Sequence

from host.errors import ReaderNotFound, TransportError

from .transport import Transport

try:  # pyscard is a dependency, but keep `import host.link` working without it
    from smartcard import scard
    from smartcard.CardConnection import CardConnection
    from smartcard.Exceptions import SmartcardException as _SmartcardException
    from smartcard.pcsc.PCSCExceptions import BaseSCardException

    # pyscard raises two unrelated hierarchies (context errors are not
    # SmartcardExceptions): catch both wherever pyscard is called.
    SmartcardException = (_SmartcardException, BaseSCardException)
    from smartcard.System import readers as _pyscard_readers
except ImportError:  # pragma: no cover - reported when a PcscTransport is used
    scard = None  # type: ignore[assignment]

ReaderSpec = int | str | None

_HINT_PCSCD = "is pcscd running? start it (sudo systemctl start pcscd, or scripts/pcscd.sh) and retry"


def _require_pyscard() -> None:
    if scard is None:
        raise TransportError("pyscard is not installed: run scripts/setup.sh (pip install pyscard)")


def list_readers() -> list[str]:
    """Names of the PC/SC readers pcscd knows; TransportError if pcscd is down."""
    _require_pyscard()
    try:
        return [str(r) for r in _pyscard_readers()]
    except SmartcardException as exc:
        hresult = getattr(exc, "hresult", -1)
        if hresult in (scard.SCARD_E_NO_READERS_AVAILABLE,):
            return []
        raise TransportError(f"cannot list PC/SC readers ({_scard_text(hresult)}): {_HINT_PCSCD}") from None


def select_reader(spec: ReaderSpec, names: Sequence[str]) -> str:
    """Pick one reader name from ``names``.

    ``spec``: None (the only reader), an index (int or "0"), an exact name, a
    glob pattern ("*PCD 00 01") or a case-insensitive substring. Several
    matches are refused (ReaderNotFound listing them); no match lists all.
    """
    names = list(names)
    if not names:
        raise ReaderNotFound(f"no PC/SC reader found: connect a reader; {_HINT_PCSCD}")
    listing = "; ".join(f"{i}: {n}" for i, n in enumerate(names))
    if spec is None:
        if len(names) == 1:
            return names[0]
        raise ReaderNotFound(f"{len(names)} readers, choose one with --reader: {listing}")
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        index = int(spec)
        if 0 <= index < len(names):
            return names[index]
        raise ReaderNotFound(f"no reader with index {index}: readers are {listing}")
    if spec in names:
        return spec
    if any(c in spec for c in "*?["):
        matches = [n for n in names if fnmatch.fnmatchcase(n.lower(), spec.lower())]
    else:
        matches = [n for n in names if spec.lower() in n.lower()]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ReaderNotFound(f"no reader matches {spec!r}: readers are {listing}")
    raise ReaderNotFound(
        f"{spec!r} matches {len(matches)} readers, give an exact name or index: " + "; ".join(matches)
    )


def reader_state(reader: str) -> tuple[bool, bytes]:
    """(a responsive card is present, its ATR) as pcscd reports it, without connecting."""
    _require_pyscard()
    hresult, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hresult != scard.SCARD_S_SUCCESS:
        raise TransportError(f"cannot reach pcscd ({_scard_text(hresult)}): {_HINT_PCSCD}")
    try:
        hresult, states = scard.SCardGetStatusChange(
            context, 0, [(reader, scard.SCARD_STATE_UNAWARE)]
        )
        if hresult not in (scard.SCARD_S_SUCCESS, scard.SCARD_E_TIMEOUT):
            return False, b""
        _name, state, atr = states[0]
        present = bool(state & scard.SCARD_STATE_PRESENT) and not state & scard.SCARD_STATE_MUTE
        return present, bytes(atr or b"") if present else b""
    finally:
        scard.SCardReleaseContext(context)


def card_present(reader: str) -> bool:
    """True when pcscd reports a card in ``reader`` (no connection made)."""
    return reader_state(reader)[0]


def wait_for_card(reader: str, present: bool = True, timeout: float = 10.0, poll: float = 0.02) -> bool:
    """Poll pcscd until ``reader`` has a card (``present``) or none; False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if card_present(reader) == present:
            return True
        time.sleep(poll)
    return False


def _scard_text(hresult: int) -> str:
    if scard is None or hresult in (-1, None):
        return "unknown error"
    try:
        return scard.SCardGetErrorMessage(hresult).strip().rstrip(".")
    except Exception:  # noqa: BLE001 - a message must never hide the real error
        return f"PC/SC error 0x{hresult & 0xFFFFFFFF:08X}"


class PcscTransport(Transport):
    """A card in a PC/SC reader, through pcscd and pyscard.

    ``reader``: see select_reader. ``exclusive``: SCARD_SHARE_EXCLUSIVE, so no
    other program interleaves APDUs with ours. The protocol (T=0 or T=1) is
    the one pcscd negotiates from the ATR. On disconnect the card is reset so
    no security state (a verified PIN) outlives the session.
    """

    def __init__(self, reader: ReaderSpec = None, exclusive: bool = True, reset_on_disconnect: bool = True) -> None:
        _require_pyscard()
        self._spec = reader
        self.exclusive = exclusive
        self.reset_on_disconnect = reset_on_disconnect
        self._reader_name: str | None = None
        self._conn = None
        self._atr = b""

    @property
    def name(self) -> str:
        return self._reader_name or f"reader {self._spec!r}"

    @property
    def atr(self) -> bytes:
        return self._atr

    @property
    def connected(self) -> bool:
        return self._conn is not None

    @property
    def protocol(self) -> str:
        if self._conn is None:
            return ""
        proto = self._conn.getProtocol()
        if proto == CardConnection.T0_protocol:
            return "T=0"
        if proto == CardConnection.T1_protocol:
            return "T=1"
        return "raw"

    def _mode(self) -> int:
        return scard.SCARD_SHARE_EXCLUSIVE if self.exclusive else scard.SCARD_SHARE_SHARED

    def connect(self) -> bytes:
        if self._conn is not None:
            return self._atr
        all_readers = _pyscard_readers_or_error()
        name = select_reader(self._spec, [str(r) for r in all_readers])
        reader = next(r for r in all_readers if str(r) == name)
        self._reader_name = name
        conn = None
        try:
            conn = reader.createConnection()
            disposition = scard.SCARD_RESET_CARD if self.reset_on_disconnect else scard.SCARD_LEAVE_CARD
            conn.connect(
                protocol=CardConnection.T0_protocol | CardConnection.T1_protocol,
                mode=self._mode(),
                disposition=disposition,
            )
            self._atr = bytes(conn.getATR())
        except SmartcardException as exc:
            if conn is not None:
                _release(conn)
            raise self._error("connect to", exc) from None
        self._conn = conn
        return self._atr

    def disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            _release(conn)

    def reset(self) -> bytes:
        """Warm reset through SCardReconnect; reconnects if the handle was lost."""
        if self._conn is None:
            return self.connect()
        try:
            self._conn.reconnect(
                protocol=CardConnection.T0_protocol | CardConnection.T1_protocol,
                mode=self._mode(),
                disposition=scard.SCARD_RESET_CARD,
            )
            # reconnect() stored RESET as the disposition; restore ours
            _inner(self._conn).disposition = (
                scard.SCARD_RESET_CARD if self.reset_on_disconnect else scard.SCARD_LEAVE_CARD
            )
            self._atr = bytes(self._conn.getATR())
        except SmartcardException as exc:
            self.disconnect()
            raise self._error("reset the card in", exc) from None
        return self._atr

    def transmit_raw(self, command: bytes) -> bytes:
        if self._conn is None:
            raise TransportError(f"{self.name}: not connected: call connect() first")
        try:
            data, sw1, sw2 = self._conn.transmit(list(command))
        except SmartcardException as exc:
            self.disconnect()
            raise self._error("talk to the card in", exc) from None
        return bytes(data) + bytes((sw1, sw2))

    def _error(self, doing: str, exc: Exception) -> TransportError:
        hresult = getattr(exc, "hresult", -1)
        where = self._reader_name or str(self._spec)
        if hresult in (scard.SCARD_W_REMOVED_CARD, scard.SCARD_E_NO_SMARTCARD):
            hint = "no card in the reader: insert the card (or start the emulator bridge) and retry"
        elif hresult == scard.SCARD_E_SHARING_VIOLATION:
            hint = "another program holds the card: close it (pcsc_scan, other simvault) and retry"
        elif hresult in (scard.SCARD_E_NO_SERVICE, scard.SCARD_E_SERVICE_STOPPED, scard.SCARD_E_NO_READERS_AVAILABLE):
            hint = _HINT_PCSCD
        elif hresult in (scard.SCARD_E_READER_UNAVAILABLE, scard.SCARD_E_UNKNOWN_READER):
            hint = "the reader disappeared: reconnect it and retry"
        elif hresult in (scard.SCARD_W_UNRESPONSIVE_CARD, scard.SCARD_S_SUCCESS, -1, None):
            # pyscard reports a card that answered nothing with no error code
            hint = "the card does not answer: reinsert it and retry"
        elif hresult == scard.SCARD_W_RESET_CARD:
            hint = "the card was reset by another program: reconnect and retry"
        else:
            hint = "check the card and pcscd (scripts/pcscd.sh), then retry"
        text = "no answer" if hresult in (scard.SCARD_S_SUCCESS, -1, None) else _scard_text(hresult)
        return TransportError(f"cannot {doing} {where!r} ({text}): {hint}")


def _release(conn) -> None:
    """Disconnect and free the PC/SC context, even when pcscd or the card is gone."""
    try:
        conn.disconnect()
    except SmartcardException:
        pass  # nothing left to release on the card side
    try:
        conn.release()
    except SmartcardException:
        # pcscd is gone: forget the context, or pyscard's __del__ retries
        # the release and prints a traceback at garbage collection.
        _inner(conn).hcontext = None


def _inner(conn):  # -> PCSCCardConnection
    """createConnection() wraps the PC/SC connection in a decorator."""
    return getattr(conn, "component", conn)


def _pyscard_readers_or_error() -> list:
    try:
        return list(_pyscard_readers())
    except SmartcardException as exc:
        hresult = getattr(exc, "hresult", -1)
        raise TransportError(f"cannot list PC/SC readers ({_scard_text(hresult)}): {_HINT_PCSCD}") from None
