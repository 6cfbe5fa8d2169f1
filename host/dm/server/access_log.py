"""One access-log line per DM request (logger ``host.dm.access``, level INFO).

    POST /funambol/dm device=DMCtest session=1 msg=2 status=200 in=1830 out=912 ms=4.1

Device, SessionID and MsgID are what the SyncHdr said ("-" before it was decoded: a
415, 413, 408 or malformed body); they come from the network, so each is cut to 64
printable characters. Never a credential: no header, no Cred, no body.
"""
from __future__ import annotations

import logging
import re
import time

log = logging.getLogger("host.dm.access")

_UNSAFE = re.compile(r"[^\x21-\x7e]")


def _field(value: object) -> str:
    if value is None or value == "":
        return "-"
    return _UNSAFE.sub("?", str(value))[:64]


def record(path: str, status: int, bytes_in: int, bytes_out: int, started: float, *,
           device_id: str | None = None, session_id: str | None = None, msg_id: int | None = None) -> None:
    """``started``: time.perf_counter() when the request arrived."""
    if not log.isEnabledFor(logging.INFO):
        return
    log.info("POST %s device=%s session=%s msg=%s status=%d in=%d out=%d ms=%.1f", _field(path),
             _field(device_id), _field(session_id), _field(msg_id), status, bytes_in, bytes_out,
             (time.perf_counter() - started) * 1000.0)
