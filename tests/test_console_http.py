"""The web console's HTTP behaviour without a browser: login, session cookie, CSRF and Origin checks,
security headers, escaping of hostile input, masked secrets, and bad input answered like the API.

A real DM server (aiohttp on loopback, SQLite) with archives made by host.backup; the browser walk
of the operator's path is tests/test_console_browser.py.
"""
from __future__ import annotations

import html
import http.client
import re
import shutil
import urllib.parse
from pathlib import Path

import pytest

from host.backup.keys import Identity, generate_identity, load_identity
from host.backup.ops import backup_tree
from host.dm.server.backup_plugin import verify_uploaded_archive
from host.dm.server.registry import register_device
from host.tree.tnds import read_tnds
from test_dm_fixtures import (ADMIN_TOKEN, DEV_PASSWORD, PHONE_TREE, SRV_PASSWORD, DMWorld,  # noqa: F401
                              db_url, pg_cluster, tree_with_id)

HOSTILE_ID = "IMEI:<script>alert(1)</script>\"'&x"
HOSTILE_VALUE = "<img src=x onerror=alert(2)>"


class Client:
    """A cookie-keeping HTTP client that does not follow redirects (to see each answer)."""

    def __init__(self, base: str, ssl_context=None) -> None:
        parts = urllib.parse.urlsplit(base)
        self.base, self.host, self.port = base, parts.hostname, parts.port
        self.ssl_context = ssl_context
        self.cookies: dict[str, str] = {}
        self.set_cookie = ""

    def request(self, method: str, path: str, form: dict | None = None, headers: dict | None = None):
        conn = (http.client.HTTPSConnection(self.host, self.port, timeout=15, context=self.ssl_context)
                if self.ssl_context else http.client.HTTPConnection(self.host, self.port, timeout=15))
        hdrs = {"Origin": self.base} if method == "POST" else {}
        hdrs.update(headers or {})
        if self.cookies:
            hdrs["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = urllib.parse.urlencode(form or {}) if form is not None else None
        if body is not None:
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        hdrs = {k: v for k, v in hdrs.items() if v is not None}
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        text = resp.read().decode()
        for name, value in resp.getheaders():
            if name.lower() == "set-cookie":
                self.set_cookie = value
                key, _, rest = value.partition("=")
                self.cookies[key] = rest.split(";", 1)[0]
        conn.close()
        return resp, text

    def login(self, token: str = ADMIN_TOKEN):
        return self.request("POST", "/console/login", {"token": token, "next": "/console/"})

    def csrf(self, path: str = "/console/") -> str:
        _, text = self.request("GET", path)
        return re.search(r'name="csrf" value="([^"]+)"', text).group(1)


def server_backup(world: DMWorld, device_id: str, tree_bytes: bytes, identity: Identity, previous=None):
    """An archive made by host.backup and stored as the server stores an upload (verified first)."""
    archive = backup_tree(read_tnds(tree_bytes), identity, previous=previous)
    data = archive.to_bytes()
    store = world.web.server.store
    verify_uploaded_archive(data, device_id, store.device(device_id).public_key)
    store.store_backup(device_id, archive.backup_id.hex(), archive.sequence, data, archive.summary(), None)
    return archive


@pytest.fixture
def console(tmp_path, db_url, monkeypatch):
    """A DM server (SQLite, PostgreSQL) whose console holds a server key; one device whose backups
    are wrapped for it."""
    monkeypatch.setenv("SIMVAULT_PIN", "1234")
    w = DMWorld(tmp_path / "world", db_url)
    server_key = generate_identity(tmp_path / "server-key")
    w.web.console.use_server_key(tmp_path / "server-key")
    dev = w.add_device("phone", start=False)
    (dev.identity.directory / "recipients").mkdir()
    shutil.copy(server_key.directory / "device.enc.pub.pem", dev.identity.directory / "recipients" / "dms.pem")
    try:
        yield w, dev, Client(w.url)
    finally:
        w.close()


def _jobs(world: DMWorld) -> list:
    return world.web.server.store.jobs()


def test_every_console_answer_carries_a_strict_csp_and_no_inline_script(console) -> None:
    world, dev, c = console
    resp, text = c.request("GET", "/console/login")
    assert resp.status == 200
    csp = resp.getheader("Content-Security-Policy")
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert resp.getheader("X-Content-Type-Options") == "nosniff" and resp.getheader("Cache-Control") == "no-store"
    c.login()
    pages = ["/console/", f"/console/device?id={urllib.parse.quote(dev.device_id)}", "/console/audit",
             "/console/nope", "/console/static/htmx.min.js", "/console/static/console.css"]
    for path in pages:
        resp, text = c.request("GET", path)
        assert resp.getheader("Content-Security-Policy") == csp, path
        if path.startswith("/console/static"):
            assert resp.status == 200
            continue
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), f"inline script on {path}"
        assert not re.search(r"\son[a-z]+=|\sstyle=|javascript:", text), f"inline handler or style on {path}"
    assert "http" not in re.sub(r'href="/[^"]*"|src="/[^"]*"', "", _head(c)), "a page loads from elsewhere"


def _head(c: Client) -> str:
    return c.request("GET", "/console/")[1].split("</head>")[0].split("<head>")[1]


def test_login_with_the_admin_token_sets_a_strict_http_only_cookie(console) -> None:
    world, _dev, c = console
    resp, _ = c.request("GET", "/console/")
    assert resp.status == 303 and resp.getheader("Location").startswith("/console/login?next=")
    resp, text = c.login("wrong-token")
    assert resp.status == 401 and "wrong admin token" in text and not c.cookies
    resp, _ = c.login()
    assert resp.status == 303 and resp.getheader("Location") == "/console/"
    cookie = resp.getheader("Set-Cookie")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie                       # plain http here; https: tests/test_console_browser.py
    assert c.request("GET", "/console/")[0].status == 200
    events = [a["event"] for a in world.web.server.store.audit_log()]
    assert "console.login_failed" in events and "console.login" in events
    assert not any(ADMIN_TOKEN in (a["detail"] or "") for a in world.web.server.store.audit_log())
    # no open redirect after login
    c2 = Client(world.url)
    resp, _ = c2.request("POST", "/console/login", {"token": ADMIN_TOKEN, "next": "//evil.example/x"})
    assert resp.getheader("Location") == "/console/"


@pytest.mark.parametrize("forgery", ["no csrf", "wrong csrf", "other origin", "no origin", "no session"])
def test_forged_forms_are_refused_and_start_nothing(console, forgery) -> None:
    world, dev, c = console
    c.login()
    form = {"csrf": c.csrf(), "device": dev.device_id, "target": "server"}
    headers: dict = {}
    if forgery == "no csrf":
        del form["csrf"]
    elif forgery == "wrong csrf":
        form["csrf"] = "A" * 43
    elif forgery == "other origin":
        headers["Origin"] = "http://127.0.0.2:9"
    elif forgery == "no origin":
        headers["Origin"] = None
    else:
        c.cookies.clear()
    resp, text = c.request("POST", "/console/backup", form, headers)
    assert resp.status == (401 if forgery == "no session" else 403)
    assert "Refused" in text and _jobs(world) == []
    assert any(a["event"] == "console.refused" for a in world.web.server.store.audit_log())


def test_the_logout_ends_the_session(console) -> None:
    world, _dev, c = console
    c.login()
    old = dict(c.cookies)
    assert c.request("POST", "/console/logout", {"csrf": c.csrf()})[0].status == 303
    c.cookies = old                                      # the old cookie no longer works
    assert c.request("GET", "/console/")[0].status == 303


def test_hostile_ids_and_node_values_are_escaped_and_secrets_masked(console, tmp_path) -> None:
    world, _dev, c = console
    ident = generate_identity(tmp_path / "hostile-keys")
    shutil.copytree(world.devices["phone"].identity.directory / "recipients", ident.directory / "recipients")
    register_device(world.web.server.store, "simvault-dms", HOSTILE_ID, DEV_PASSWORD, SRV_PASSWORD,
                    public_key_pem=(ident.directory / "device.sign.pub.pem").read_bytes())
    tree = read_tnds(tree_with_id(PHONE_TREE.read_bytes(), HOSTILE_ID))
    first = server_backup(world, HOSTILE_ID, _tnds(tree), ident)
    secret_uri = _first_secret(tree)
    tree.replace(secret_uri, "s3cret-new-value")
    tree.add("./DevDetail/Hostile", HOSTILE_VALUE, format="chr")
    second = server_backup(world, HOSTILE_ID, _tnds(tree), ident, previous=first)
    c.login()
    pages = ["/console/", "/console/device?id=" + urllib.parse.quote(HOSTILE_ID),
             "/console/audit?device=" + urllib.parse.quote(HOSTILE_ID),
             f"/console/diff?device={urllib.parse.quote(HOSTILE_ID)}&a={first.backup_id.hex()}&b={second.backup_id.hex()}"]
    for path in pages:
        resp, text = c.request("GET", path)
        assert resp.status == 200, (path, text[:300])
        assert "<script>alert" not in text and "<img src=x" not in text, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text, path
    diff_page = text
    assert "&lt;img src=x onerror=alert(2)&gt;" in diff_page and "1 added" in diff_page
    assert secret_uri in diff_page and "s3cret-new-value" not in diff_page and "(secret, masked)" in diff_page
    assert f"{world.web.console.keys.key_ids[0]} (this server)" in diff_page


def _tnds(tree) -> bytes:
    from host.tree.tnds import write_tnds
    data = write_tnds(tree)
    return data.encode() if isinstance(data, str) else data


def _first_secret(tree) -> str:
    from host.tree.secrets import secret_uris
    return next(u for u in secret_uris(tree) if "AAuth" not in u)


def test_the_diff_says_why_when_the_server_holds_no_key(console, tmp_path) -> None:
    world, dev, c = console
    shutil.rmtree(dev.identity.directory / "recipients")        # backups for the device's key only
    tree_bytes = dev.tree_path.read_bytes()
    a = server_backup(world, dev.device_id, tree_bytes, dev.identity)
    b = server_backup(world, dev.device_id, tree_bytes, dev.identity, previous=a)
    c.login()
    _, text = c.request("GET", f"/console/diff?device={urllib.parse.quote(dev.device_id)}"
                               f"&a={a.backup_id.hex()}&b={b.backup_id.hex()}")
    assert "The nodes cannot be shown" in text and "is not among them" in text and "--recipient" in text
    assert "their trees are identical" in text                   # same chain, same tree MAC
    world.web.console.keys.decryptors.clear()
    _, text = c.request("GET", f"/console/diff?device={urllib.parse.quote(dev.device_id)}"
                               f"&a={a.backup_id.hex()}&b={b.backup_id.hex()}")
    assert "holds no decryption key" in text and "--server-key" in text


def test_archives_the_server_built_for_its_own_key_are_diffed(console, tmp_path) -> None:
    """As agentless backups are: signed by the server's key pair and wrapped for it alone."""
    from host.archive import make_layered_archive
    world, dev, c = console
    server = load_identity(tmp_path / "server-key")
    store = world.web.server.store
    tree = read_tnds(dev.tree_path.read_bytes())
    ids = []
    for n, man in enumerate(("Before Corp", "After Corp")):
        tree.replace("./DevInfo/Man", man)
        archive = make_layered_archive(tree, server.signer, [server.recipient], device_id=dev.device_id,
                                       sequence=100 + n)
        assert set(archive.recipients) == {server.recipient.key_id}
        store.store_backup(dev.device_id, archive.backup_id.hex(), archive.sequence, archive.to_bytes(),
                           archive.summary(), None)
        ids.append(archive.backup_id.hex())
    c.login()
    _, text = c.request("GET", f"/console/diff?device={urllib.parse.quote(dev.device_id)}&a={ids[0]}&b={ids[1]}")
    assert "0 added, 0 removed, 1 changed" in text and "Before Corp" in text and "After Corp" in text
    world.web.console.keys.signers.clear()                      # a signature the server does not trust
    _, text = c.request("GET", f"/console/diff?device={urllib.parse.quote(dev.device_id)}&a={ids[0]}&b={ids[1]}")
    assert "does not verify" in text and "not trusted" in text and "After Corp" not in text


def test_bad_input_gets_the_api_errors(console) -> None:
    world, dev, c = console
    other = world.add_device("other", start=False)
    theirs = server_backup(world, other.device_id, other.tree_path.read_bytes(), other.identity)
    c.login()
    token = c.csrf()
    cases = [({"device": dev.device_id, "target": "tape"}, "/console/backup", "backup", "tape", {}),
             ({"device": "IMEI:nobody", "target": "server"}, "/console/backup", "backup", "server", {}),
             ({"device": dev.device_id, "source": "server", "backup_id": theirs.backup_id.hex(), "confirm": "yes"},
              "/console/restore", "restore", "server", {"backup_id": theirs.backup_id.hex()})]
    for form, path, kind, target, extra in cases:
        api_status, api_body = world.api("POST", "/api/jobs", {"device": form["device"], "kind": kind,
                                                               "target": target, **extra})
        resp, text = c.request("POST", path, {"csrf": token, **form})
        assert resp.status == api_status and resp.status in (400, 404)
        assert api_body["error"] in html.unescape(text), (text, api_body)
    resp, text = c.request("POST", "/console/restore", {"csrf": token, "device": dev.device_id,
                                                        "backup_id": theirs.backup_id.hex(), "source": "server"})
    assert resp.status == 400 and "preview" in text
    resp, text = c.request("GET", f"/console/diff?device={urllib.parse.quote(dev.device_id)}&a=zz&b=")
    assert resp.status == 400 and "give a backup id" in text
    assert c.request("GET", "/console/jobs/999")[0].status == 404
    assert _jobs(world) == []                                   # nothing half-made


def test_a_restore_from_ds_names_an_account_and_makes_the_api_job(console) -> None:
    from host.dm.server.ds_accounts import set_ds_account
    world, dev, c = console
    store = world.web.server.store
    set_ds_account(store, "phone-ds", "http://127.0.0.1:9/sync", "phone1", "ds-password-1")
    bid, quoted = "ab" * 16, urllib.parse.quote(dev.device_id)
    c.login()
    resp, text = c.request("GET", f"/console/restore?device={quoted}&backup={bid}&source=ds")
    assert resp.status == 200 and "the DS server holds this backup" in text and '<option value="phone-ds">' in text
    form = {"csrf": c.csrf(), "device": dev.device_id, "backup_id": bid, "source": "ds", "confirm": "yes"}
    resp, text = c.request("POST", "/console/restore", form)
    assert resp.status == 400 and "needs the DS account" in text
    resp, text = c.request("POST", "/console/restore", {**form, "ds_account": "nobody"})
    api_status, api_body = world.api("POST", "/api/jobs", {"device": dev.device_id, "kind": "restore_via_ds",
                                                           "backup_id": bid, "params": {"account": "nobody"}})
    assert resp.status == api_status == 400 and api_body["error"] in html.unescape(text)
    assert c.request("POST", "/console/restore", {**form, "ds_account": "phone-ds"})[0].status == 303
    [job] = store.jobs()
    api_status, api_job = world.api("POST", "/api/jobs", {"device": dev.device_id, "kind": "restore_via_ds",
                                                          "backup_id": bid, "params": {"account": "phone-ds"}})
    assert api_status == 201
    same = ("kind", "target", "backup_id", "params")
    assert {k: job[k] for k in same} == {k: api_job[k] for k in same}
    assert "ds-password-1" not in str(job["params"])


def test_a_job_started_for_an_unreachable_device_is_visible_as_waiting(console) -> None:
    world, dev, c = console                                     # its agent never started: no listener
    c.login()
    resp, _ = c.request("POST", "/console/backup", {"csrf": c.csrf(), "device": dev.device_id, "target": "server"})
    assert resp.status == 303
    job_path = resp.getheader("Location")
    _, text = c.request("GET", job_path + "/state", headers={"HX-Request": "true"})
    assert 'data-state="queued"' in text and "waiting to reach the device" in text and "hx-trigger" in text
    job_id = int(job_path.rsplit("/", 1)[1])
    world.web.server.store.set_job_state(job_id, "failed", "device said <b>no</b>")
    _, text = c.request("GET", job_path + "/state", headers={"HX-Request": "true"})
    assert 'data-state="failed"' in text and "device said &lt;b&gt;no&lt;/b&gt;" in text
    assert "hx-trigger" not in text                             # final: the polling stops


def test_sessions_expire_and_the_oldest_make_room() -> None:
    from host.dm.server.console import auth
    sessions = auth.Sessions(ttl=60)
    sid, session = sessions.new()
    assert sessions.get(sid) is session and sessions.get(sid + "x") is None and sessions.get("") is None
    session.expires = 0
    assert sessions.get(sid) is None and sessions.get(sid) is None     # gone for good
    first, _ = sessions.new()
    for _ in range(auth.MAX_SESSIONS):
        sessions.new()
    assert sessions.get(first) is None


def test_server_key_errors_are_clear(tmp_path) -> None:
    from host.dm.server.console.diff import ServerKeys
    from host.errors import UsageError
    with pytest.raises(UsageError, match="simvault keys gen --key"):
        ServerKeys.load(tmp_path)
    Path(tmp_path / "device.enc.pem").write_text("not a key")
    with pytest.raises(UsageError, match="--server-key"):
        ServerKeys.load(tmp_path)


def test_over_https_the_cookie_is_secure_and_the_origin_is_https(tmp_path, monkeypatch) -> None:
    import ssl

    from host import tls
    from test_dm_tls import make_ca
    ca, cert, key = make_ca(tmp_path / "pki")
    world = DMWorld(tmp_path / "world", f"sqlite:///{tmp_path}/dm.db", ssl_context=tls.server_context(cert, key))
    try:
        c = Client(world.url, ssl.create_default_context(cafile=str(ca)))
        assert world.url.startswith("https://")
        resp, _ = c.login()
        assert resp.status == 303 and "Secure" in c.set_cookie and "HttpOnly" in c.set_cookie
        dev = world.add_device("phone", start=False)
        form = {"csrf": c.csrf(), "device": dev.device_id, "target": "card"}
        resp, text = c.request("POST", "/console/backup", form, {"Origin": world.url.replace("https", "http")})
        assert resp.status == 403 and "another origin" in text    # http:// is another origin than https://
        assert c.request("POST", "/console/backup", form)[0].status == 303
    finally:
        world.close()


def test_without_an_admin_token_the_console_is_off(tmp_path) -> None:
    from host.dm.server.webapp import ServerThread, build_server
    thread = ServerThread(build_server(f"sqlite:///{tmp_path}/dm.db", admin_token=None)).start()
    try:
        c = Client(thread.url)
        resp, text = c.request("GET", "/console/login")
        assert resp.status == 200 and "The console is off" in text and 'name="token"' not in text
        resp, text = c.login("anything")
        assert resp.status == 403 and "--admin-token" in text and not c.cookies
    finally:
        thread.stop()
        thread.web.server.store.close()
