"""The DS client's default authentication is md5: over real HTTP against simvault's DS server
(real SQLite), the password never crosses the wire, in clear or in base64; a server that only
offers basic gets basic (its Chal asks for it), a wrong password is refused either way."""
from __future__ import annotations

import base64
import os

import pytest

from host.ds.client import DsAccount, DsClient
from host.ds.errors import DsAuthError
from host.ds.server import run_server_in_thread
from host.ds.state import AnchorStore
from host.ds.store import DsStore
from host.ds.transport import HttpTransport
from host.syncml import codec
from host.syncml import model as m
from host.syncml.auth import AUTH_BASIC, AUTH_MD5

PASSWORD = "correct horse battery staple"


class Recorder(HttpTransport):
    """Real HTTP; keeps every request body as sent."""

    def __init__(self) -> None:
        super().__init__(timeout=10)
        self.bodies: list[bytes] = []

    def post(self, url: str, body: bytes, content_type: str):
        self.bodies.append(body)
        return super().post(url, body, content_type)


@pytest.fixture(params=["any", "md5", "basic"])
def server(request, tmp_path):
    store = DsStore(f"sqlite:///{tmp_path / 'ds.db'}")
    store.add_user("alice", PASSWORD)
    with run_server_in_thread(store, auth=request.param) as srv:
        yield request.param, srv
    store.close()


def cred_types(bodies: list[bytes]) -> list[str | None]:
    out = []
    for body in bodies:
        hdr = codec.decode(body).header
        out.append(hdr.cred.meta.type if hdr.cred is not None else None)
    return out


def test_default_is_md5_and_the_password_never_travels(server) -> None:
    offered, srv = server
    account = DsAccount(url=srv.url, username="alice", password=PASSWORD, device_id="dev-a")
    assert account.auth == "md5"
    wire = Recorder()
    archive = os.urandom(3000)
    DsClient(account, AnchorStore(None), wire).backup(archive, "b1")
    assert DsClient(account, AnchorStore(None)).restore("b1").archive == archive
    types = [t for t in cred_types(wire.bodies) if t is not None]
    if offered == "basic":   # the server's Chal asked for basic: the client follows
        assert types == [AUTH_BASIC]
        return
    assert types == [AUTH_MD5]
    secrets = (PASSWORD.encode(), base64.b64encode(f"alice:{PASSWORD}".encode()), base64.b64encode(PASSWORD.encode()))
    for body in wire.bodies:
        for secret in secrets:
            assert secret not in body


def test_a_wrong_password_is_refused_with_the_default(server) -> None:
    _, srv = server
    account = DsAccount(url=srv.url, username="alice", password="wrong", device_id="dev-b")
    with pytest.raises(DsAuthError, match="refused the credentials"):
        DsClient(account, AnchorStore(None)).backup(os.urandom(100), "x")
