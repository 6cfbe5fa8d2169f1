"""The DM server's plugin interface: how a feature (backup, DS, ...) drives devices.

A plugin never sees HTTP, XML, authentication or MaxMsgSize. The session
engine (host.dm.server.engine) calls it with a :class:`SessionContext` at four
points, and the plugin answers by queueing commands with ``ctx.send``:

``on_session(ctx)``
    the device's package is complete and nothing is queued: send what this
    device needs (the engine calls it again after each package, so keep track
    of what was sent in ``ctx.state``).
``on_status(ctx, tag, status)``
    the device's Status for a command you sent with ``ctx.send(cmd, tag)``.
``on_results(ctx, tag, results, item)``
    the Results of a Get you sent (large objects already reassembled).
``on_generic_alert(ctx, alert, item) -> int | None``
    a Generic Alert 1226 item; return the Status code to answer (200, 406
    ...) or None when it is not yours (the next plugin is asked).
``on_session_end(ctx, state)`` (optional)
    the session is over ("ended", or "failed": aborted, idle, auth); e.g. put
    back the work whose commands the device never answered.

Embedding in another DM server: implement the same four calls around its own
session engine, build a :class:`SessionContext`-like object with ``send``,
``device_id``, ``store`` and ``state``, and hand the plugin the decoded
host.syncml.model commands.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from host.syncml import model as m

if TYPE_CHECKING:
    from host.dm.server.db import Store
    from host.dm.session import Channel


@dataclass
class SessionContext:
    """What a plugin may use during one DM session with one device."""

    device_id: str
    session_id: str
    initiator: str  # "server" (after a Package 0) or "client" (Alert 1201)
    store: "Store"
    channel: "Channel"
    plugin_name: str = ""
    state: dict[str, Any] = field(default_factory=dict)  # per plugin, per session scratch
    server_id: str = "simvault-dms"
    tls: bool = False  # the device reaches this server over https (secrets inside TLS only)

    def send(self, cmd: m.Command, tag: object = None) -> m.Command:
        """Queue a command for the device; its Status/Results come back with ``tag``."""
        return self.channel.send(cmd, (self.plugin_name, tag))


class ServerPlugin(Protocol):
    name: str

    def on_session(self, ctx: SessionContext) -> None: ...

    def on_status(self, ctx: SessionContext, tag: object, status: m.Status) -> None: ...

    def on_results(self, ctx: SessionContext, tag: object, results: m.Results, item: m.Item) -> None: ...

    def on_generic_alert(self, ctx: SessionContext, alert: m.Alert, item: m.Item) -> int | None: ...


class Notifier(Protocol):
    """Delivers a Package 0 to a device (WAP push, SMS ... here: HTTP to a loopback listener).

    ``notify`` raises host.errors.SimvaultError when the device could not be
    reached; the job then stays queued and is retried.
    """

    def notify(self, device_id: str, address: str | None, package0: bytes) -> None: ...
