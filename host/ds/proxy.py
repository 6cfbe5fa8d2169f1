"""A fault-injecting SyncML HTTP proxy, for tests and demos of failure handling.

It forwards every POST to a real DS server (simvault's or SyncEvolution's),
rewrites the RespURI so the session stays on the proxy, and can break the
exchange the way networks and broken peers do:

* ``vanish_at=N``: the N-th request gets its connection dropped, no answer,
  and the proxy stops forwarding (the server "vanished mid-session");
* ``garble_at=N``: the N-th answer is replaced by malformed SyncML;
* ``end_package_in_large_object``: the first answer carrying a MoreData chunk
  is cut there and marked Final (a truncated large object);
* ``tamper``: any function bytes -> bytes applied to answers.

    with run_proxy_in_thread(upstream_url, vanish_at=3) as proxy:
        DsClient(DsAccount(url=proxy.url, ...)).backup(...)
"""
from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

from aiohttp import ClientError, ClientSession, ClientTimeout, web

from host.ds.loopthread import service_thread


class FaultProxy:
    def __init__(self, upstream_url: str, *, vanish_at: int | None = None, garble_at: int | None = None,
                 end_package_in_large_object: bool = False, tamper: Callable[[bytes], bytes] | None = None) -> None:
        parts = urlsplit(upstream_url)
        self.upstream_origin = f"{parts.scheme}://{parts.netloc}"
        self.upstream_path = parts.path
        self.vanish_at = vanish_at
        self.garble_at = garble_at
        self.end_package_in_large_object = end_package_in_large_object
        self.tamper = tamper
        self.requests = 0
        self.vanished = False
        self.origin = ""
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        body = await request.read()
        if self.vanished or self.requests == self.vanish_at:
            self.vanished = True
            if request.transport is not None:
                request.transport.abort()  # no answer at all: the peer is gone
            return web.Response(status=503)  # never reaches the client: the connection is already closed
        target = self.upstream_origin + request.path_qs
        async with ClientSession(timeout=ClientTimeout(total=120)) as http:
            try:
                async with http.post(target, data=body, headers={"Content-Type": request.content_type}) as up:
                    status, ctype, data = up.status, up.headers.get("Content-Type", ""), await up.read()
            except ClientError as exc:
                return web.Response(status=502, text=f"proxy: upstream failed: {exc}\n")
        if status != 200:
            return web.Response(status=status, body=data, content_type="text/plain")
        data = data.replace(self.upstream_origin.encode(), self.origin.encode())
        if self.requests == self.garble_at:
            data = b"<?xml version='1.0'?><SyncML xmlns='SYNCML:SYNCML1.2'><SyncHdr><VerDTD>1.2</VerDTD><Broken"
        if self.end_package_in_large_object and b"<MoreData/>" in data:
            self.end_package_in_large_object = False
            cut = data.index(b"<MoreData/>") + len(b"<MoreData/>")
            closing = data.index(b"</Item>", cut)
            rest = data[closing:]
            # close the open Item/Add/Sync and end the package right after the chunk
            tail = re.sub(rb"(</Item></(?:Add|Replace)></Sync>).*", rb"\1<Final/></SyncBody></SyncML>", rest,
                          flags=re.DOTALL)
            data = data[:cut] + tail
        if self.tamper is not None:
            data = self.tamper(data)
        return web.Response(status=200, body=data, headers={"Content-Type": ctype})


@contextlib.contextmanager
def run_proxy_in_thread(upstream_url: str, host: str = "127.0.0.1", **faults) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream_url, **faults)
    runner_box: list[web.AppRunner] = []

    async def start() -> None:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/{tail:.*}", proxy.handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
        await runner.setup()
        site = web.TCPSite(runner, host, 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        proxy.origin = f"http://{host}:{port}"
        proxy.url = proxy.origin + proxy.upstream_path
        runner_box.append(runner)

    async def stop() -> None:
        await runner_box[0].cleanup()

    with service_thread(start, stop, name="ds-proxy", failure="fault proxy could not start"):
        yield proxy
