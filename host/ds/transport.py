"""HTTP transport of the DS client: one POST per SyncML message.

Synchronous (stdlib urllib) so the client can run in the device agent's
worker thread; every failure becomes a one-line DsTransportError.
"""
from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from host.ds.errors import DsProtocolError, DsTransportError
from host.tls import context_for, untrusted

CONTENT_TYPE_XML = "application/vnd.syncml+xml"
CONTENT_TYPE_WBXML = "application/vnd.syncml+wbxml"
MAX_RESPONSE_BYTES = 8 * 1024 * 1024


@dataclass
class HttpReply:
    content_type: str
    body: bytes


class Transport(Protocol):
    def post(self, url: str, body: bytes, content_type: str) -> HttpReply: ...


class HttpTransport:
    """POST a message, return the reply; no retries (a DS session is not idempotent)."""

    def __init__(self, timeout: float = 60.0, user_agent: str = "simvault-ds/0.1",
                 ca_file: Path | None = None) -> None:
        self.timeout = timeout
        self.user_agent = user_agent
        self.ca_file = ca_file  # an https URL: the CA(s) of the server's certificate (else the system's)

    def post(self, url: str, body: bytes, content_type: str) -> HttpReply:
        if not url.startswith(("http://", "https://")):
            raise DsTransportError(f"DS server URL {url[:80]!r} is not http(s): fix the url= setting", 400)
        req = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": content_type, "Accept": content_type, "User-Agent": self.user_agent})
        context = context_for(url, self.ca_file)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=context) as resp:
                data = resp.read(MAX_RESPONSE_BYTES + 1)
                ctype = resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            code = exc.code
            raise DsTransportError(f"DS server {url.split('?')[0]} answered HTTP {code} {exc.reason}: "
                                   "check the URL and the server log", 401 if code == 401 else 503) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException, OSError) as exc:
            why = untrusted(exc)
            if why:
                raise DsTransportError(f"the DS server's certificate is not trusted ({why[:80]}): give the CA "
                                       "that issued it (--ca-file)") from None
            reason = getattr(exc, "reason", exc)
            raise DsTransportError(f"DS server {url.split('?')[0]} unreachable or vanished mid-session "
                                   f"({type(reason).__name__}: {str(reason)[:80]}): retry when it is back") from None
        if len(data) > MAX_RESPONSE_BYTES:
            raise DsProtocolError(f"DS server sent more than {MAX_RESPONSE_BYTES} bytes in one message")
        base = ctype.split(";")[0].strip().lower()
        if base not in (CONTENT_TYPE_XML, CONTENT_TYPE_WBXML):
            raise DsProtocolError(f"DS server answered with Content-Type {ctype[:60]!r}, not SyncML: "
                                  "is the URL a SyncML DS endpoint?")
        return HttpReply(content_type=base, body=data)
