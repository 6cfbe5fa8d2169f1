"""The console's login and request checks.

Login: the admin token (the API's) in a POST form; the answer is a random session id in a cookie
(HttpOnly, SameSite=Strict, Path=/console, Secure when the server is on https). Sessions live in
memory: a restart logs everyone out. Every POST must come from this origin (Origin header, or
Referer when a browser sends no Origin) and carry the session's CSRF token (a form field); both are
compared in constant time. Every console response carries a strict Content-Security-Policy (no
inline script or style, nothing from another origin) and is not cached.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

COOKIE = "simvault_console"
SESSION_TTL = 8 * 3600.0            # seconds a login lasts
MAX_SESSIONS = 256                  # the oldest go first
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
           "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin",
           "Cache-Control": "no-store", "Cross-Origin-Opener-Policy": "same-origin"}


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison that leaks neither content nor length."""
    return hmac.compare_digest(_digest(given), _digest(expected))


@dataclass
class ConsoleSession:
    csrf: str
    expires: float


class Sessions:
    """Logged-in browsers, keyed by the SHA-256 of the cookie value (no lookup on the secret)."""

    def __init__(self, ttl: float = SESSION_TTL) -> None:
        self.ttl = ttl
        self._by_digest: dict[bytes, ConsoleSession] = {}
        self._lock = threading.Lock()

    def new(self) -> tuple[str, ConsoleSession]:
        sid = secrets.token_urlsafe(32)
        session = ConsoleSession(secrets.token_urlsafe(32), time.time() + self.ttl)
        with self._lock:
            if len(self._by_digest) >= MAX_SESSIONS:
                oldest = min(self._by_digest, key=lambda k: self._by_digest[k].expires)
                del self._by_digest[oldest]
            self._by_digest[_digest(sid)] = session
        return sid, session

    def get(self, sid: str | None) -> ConsoleSession | None:
        if not sid:
            return None
        key = _digest(sid)
        with self._lock:
            session = self._by_digest.get(key)
            if session is not None and session.expires < time.time():
                del self._by_digest[key]
                return None
            return session

    def drop(self, sid: str | None) -> None:
        if sid:
            with self._lock:
                self._by_digest.pop(_digest(sid), None)


def origin_refusal(request: web.Request) -> str | None:
    """Why a POST is not from this console's own origin, or None when it is."""
    expected = f"{request.scheme}://{request.host}"
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        referer = request.headers.get("Referer")
        if not referer:
            return "the form came without an Origin or Referer header; post it from the console's own page"
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}"
    if origin != expected:
        return (f"the form was posted from another origin ({origin[:100]}), not from this console "
                f"({expected[:100]}); open the console at {expected[:100]}/console")
    return None


def csrf_refusal(session: ConsoleSession, form_token: str | None) -> str | None:
    if not form_token:
        return "the form carries no CSRF token; reload the page and submit it again"
    if not same_secret(form_token, session.csrf):
        return "the form's CSRF token is not this session's; reload the page and submit it again"
    return None


def set_session_cookie(response: web.StreamResponse, sid: str, *, secure: bool, ttl: float) -> None:
    response.set_cookie(COOKIE, sid, max_age=int(ttl), path="/console", httponly=True,
                        samesite="Strict", secure=secure)


def clear_session_cookie(response: web.StreamResponse, *, secure: bool) -> None:
    response.del_cookie(COOKIE, path="/console", secure=secure, httponly=True, samesite="Strict")


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare hook: every /console answer (pages, errors, static files)."""
    if request.path == "/console" or request.path.startswith("/console/"):
        for name, value in HEADERS.items():
            if name == "Cache-Control" and request.path.startswith("/console/static/"):
                response.headers[name] = "private, max-age=3600"
                continue
            response.headers[name] = value
