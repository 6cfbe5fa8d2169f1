"""`simvault dm ...`: the DM server, its admin commands, and the device agent.

    simvault dm server --listen 127.0.0.1:8080 --db sqlite:///dm.db   (token: --admin-token or
                       $SIMVAULT_DM_ADMIN_TOKEN; PostgreSQL: --db postgresql+psycopg://u@h:p/db)
    simvault dm device-add DEVICE --public-key keys/device.sign.pub.pem [--auth md5|hmac]
                       (passwords from $SIMVAULT_DM_PASSWORD and $SIMVAULT_DM_SERVER_PASSWORD)
    simvault dm devices | backups [--device D] | jobs [--device D] | job ID
    simvault dm backup-start DEVICE --target server|card [--scope "./A ./B"] [--wait]
    simvault dm restore-start DEVICE --id HEX --source server|card [--wait]
    simvault dm fumo-start DEVICE [--node ./FUMO/x] [--wait]
    simvault dm agent --tree FILE --server URL --device-id ID --key DIR
                       [--card-emulator IMAGE | --card-reader R] [--listen 127.0.0.1:7701] [--wbxml]
    simvault dm agent backup-now [--destination server|card] | restore --id HEX | sync | status
                       [--control http://127.0.0.1:7701]

The admin commands talk to the server's JSON API (--api, default
http://127.0.0.1:8080, token as above) and print JSON.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from host.errors import SimvaultError, TransportError, UsageError

TOKEN_ENV = "SIMVAULT_DM_ADMIN_TOKEN"
PASSWORD_ENV = "SIMVAULT_DM_PASSWORD"
SERVER_PASSWORD_ENV = "SIMVAULT_DM_SERVER_PASSWORD"
DEFAULT_API = "http://127.0.0.1:8080"
DEFAULT_CONTROL = "http://127.0.0.1:7701"


def _hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: write HOST:PORT, e.g. 127.0.0.1:8080")
    return host or "127.0.0.1", int(port)


def register(sub: argparse._SubParsersAction) -> None:
    dm = sub.add_parser("dm", help="OMA DM server, its administration, and the device agent")
    dsub = dm.add_subparsers(dest="dm_command", metavar="DM_COMMAND")

    p = dsub.add_parser("server", help="run the DM server (HTTP, loopback by default)")
    p.add_argument("--listen", type=_hostport, default=("127.0.0.1", 8080), metavar="HOST:PORT")
    p.add_argument("--db", default="sqlite:///simvault-dm.db",
                   help="sqlite:///PATH (default) or postgresql+psycopg://USER@HOST:PORT/DB")
    p.add_argument("--admin-token", default=None, help=f"admin API token (default ${TOKEN_ENV})")
    p.add_argument("--server-id", default="simvault-dms")
    p.add_argument("--max-msg-size", type=int, default=64 * 1024)
    p.add_argument("--job-timeout", type=float, default=900.0, help="seconds a running job may wait for its result")
    p.set_defaults(func=_cmd_server)

    def api_opts(q: argparse.ArgumentParser) -> None:
        q.add_argument("--api", default=os.environ.get("SIMVAULT_DM_API", DEFAULT_API), help="server URL")
        q.add_argument("--admin-token", default=None, help=f"(default ${TOKEN_ENV})")

    p = dsub.add_parser("device-add", help="register a device (passwords from the environment)")
    p.add_argument("device")
    p.add_argument("--public-key", type=Path, required=True, help="the device's signing public key (PEM)")
    p.add_argument("--auth", choices=("md5", "hmac"), default="hmac",
                   help="hmac (default): every message signed; md5: a digest on a session's first message")
    p.add_argument("--notify-url", default=None)
    api_opts(p)
    p.set_defaults(func=_cmd_device_add)
    for name, helptext in (("devices", "list devices"), ("backups", "list server-side backups"),
                           ("jobs", "list jobs")):
        p = dsub.add_parser(name, help=helptext)
        p.add_argument("--device", default=None)
        api_opts(p)
        p.set_defaults(func=_cmd_list, what=name)
    p = dsub.add_parser("job", help="one job with its results")
    p.add_argument("job_id", type=int)
    api_opts(p)
    p.set_defaults(func=_cmd_job)
    p = dsub.add_parser("backup-start", help="use case 1: ask a device to back up")
    p.add_argument("device")
    p.add_argument("--target", choices=("server", "card"), default="server")
    p.add_argument("--scope", default=None, help="space-separated URIs (default: the whole tree)")
    p.add_argument("--wait", type=float, default=0, metavar="SECONDS", help="wait for the job to finish")
    api_opts(p)
    p.set_defaults(func=_cmd_start, kind="backup")
    p = dsub.add_parser("restore-start", help="restore a device from a backup")
    p.add_argument("device")
    p.add_argument("--id", dest="backup_id", required=True)
    p.add_argument("--source", dest="target", choices=("server", "card"), default="server")
    p.add_argument("--wait", type=float, default=0, metavar="SECONDS")
    api_opts(p)
    p.set_defaults(func=_cmd_start, kind="restore", scope=None)
    p = dsub.add_parser("fumo-start", help="firmware update (OMA FUMO Exec <node>/Update); the device's "
                                           "Policy/BeforeFirmwareUpdate backs up first")
    p.add_argument("device")
    p.add_argument("--node", default="./FUMO/FwUpdate", help="the FUMO management object (default ./FUMO/FwUpdate)")
    p.add_argument("--wait", type=float, default=0, metavar="SECONDS")
    api_opts(p)
    p.set_defaults(func=_cmd_start, kind="firmware_update", target="device", scope=None)

    p = dsub.add_parser("agent", help="run the device agent, or talk to a running one")
    p.add_argument("action", nargs="?", default="run", choices=("run", "backup-now", "restore", "sync", "status"))
    p.add_argument("--tree", type=Path)
    p.add_argument("--server", help="the DM server URL, e.g. http://127.0.0.1:8080/dm")
    p.add_argument("--device-id")
    p.add_argument("--key", type=Path, help="key directory (simvault keys gen)")
    p.add_argument("--key-name", default="device")
    p.add_argument("--auth", choices=("md5", "hmac"), default="md5",
                   help="what the agent starts with; it moves to hmac when the server's challenge asks")
    p.add_argument("--wbxml", action="store_true", help="speak application/vnd.syncml.dm+wbxml")
    p.add_argument("--server-id", default="simvault-dms")
    card = p.add_mutually_exclusive_group()
    card.add_argument("--card-emulator", type=Path, metavar="IMAGE")
    card.add_argument("--card-reader", metavar="R")
    p.add_argument("--pin-env", default="SIMVAULT_PIN")
    p.add_argument("--listen", type=_hostport, default=("127.0.0.1", 7701), metavar="HOST:PORT")
    p.add_argument("--max-msg-size", type=int, default=16 * 1024)
    p.add_argument("--control", default=DEFAULT_CONTROL, help="a running agent's listener (for actions)")
    p.add_argument("--destination", choices=("server", "card"), default=None)
    p.add_argument("--id", dest="backup_id", default=None)
    p.add_argument("--source", default="card")
    p.set_defaults(func=_cmd_agent)


# ------------------------------------------------------------------ server
def _token(args: argparse.Namespace) -> str | None:
    return args.admin_token or os.environ.get(TOKEN_ENV)


def _cmd_server(args: argparse.Namespace) -> int:
    from host.dm.webapp import build_server
    host, port = args.listen
    web = build_server(args.db, host=host, port=port, admin_token=_token(args), server_id=args.server_id,
                       max_msg_size=args.max_msg_size, running_timeout=args.job_timeout)

    async def main() -> None:
        await web.start()
        print(f"simvault DM server on {web.url}/dm (db {web.server.store.safe_url}); "
              f"admin API {'on' if web.admin_token else 'off (no token)'}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await web.stop()
        web.server.store.close()

    asyncio.run(main())
    return 0


# ------------------------------------------------------------------ admin via the API
def _api(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    token = _token(args)
    if not token:
        raise UsageError(f"no admin token: pass --admin-token or set ${TOKEN_ENV}")
    req = urllib.request.Request(args.api.rstrip("/") + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - the admin's own server
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", "")
        except ValueError:
            message = ""
        raise SimvaultError(f"server answered {exc.code}: {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise TransportError(f"cannot reach the DM server at {args.api}: {exc}; is 'simvault dm server' running?") from None


def _print(data: Any) -> None:
    print(json.dumps(data, indent=1, sort_keys=True, default=str))


def _cmd_device_add(args: argparse.Namespace) -> int:
    pw, spw = os.environ.get(PASSWORD_ENV), os.environ.get(SERVER_PASSWORD_ENV)
    if not pw or not spw:
        raise UsageError(f"set ${PASSWORD_ENV} (the device's) and ${SERVER_PASSWORD_ENV} (the server's) passwords")
    try:
        pem = args.public_key.read_text()
    except OSError as exc:
        raise UsageError(f"cannot read {args.public_key}: {exc.strerror}") from None
    _print(_api(args, "POST", "/api/devices", {"device": args.device, "password": pw, "server_password": spw,
                                                "auth": args.auth, "public_key_pem": pem,
                                                "notify_url": args.notify_url}))
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    path = f"/api/{args.what}" + (f"?device={urllib.request.quote(args.device)}" if args.device else "")
    _print(_api(args, "GET", path))
    return 0


def _cmd_job(args: argparse.Namespace) -> int:
    _print(_api(args, "GET", f"/api/jobs/{args.job_id}"))
    return 0


def _cmd_start(args: argparse.Namespace) -> int:
    job = _api(args, "POST", "/api/jobs", {"device": args.device, "kind": args.kind, "target": args.target,
                                           "scope": args.scope, "backup_id": getattr(args, "backup_id", None),
                                           "params": {"node": args.node} if getattr(args, "node", None) else None})
    deadline = time.monotonic() + args.wait
    while args.wait and job["state"] not in ("succeeded", "failed") and time.monotonic() < deadline:
        time.sleep(0.5)
        job = _api(args, "GET", f"/api/jobs/{job['id']}")
    _print(job)
    return 1 if job["state"] == "failed" else 0


# ------------------------------------------------------------------ agent
def _cmd_agent(args: argparse.Namespace) -> int:
    if args.action != "run":
        return _agent_control(args)
    missing = [o for o, v in (("--tree", args.tree), ("--server", args.server), ("--device-id", args.device_id),
                              ("--key", args.key)) if not v]
    if missing:
        raise UsageError(f"the agent needs {', '.join(missing)}")
    from host.dm.agent import AgentConfig, DMAgent
    from host.dm.agent_bar import CardAccess
    card = None
    if args.card_emulator or args.card_reader:
        card = CardAccess(emulator=args.card_emulator, reader=args.card_reader, pin_env=args.pin_env)
    agent = DMAgent(AgentConfig(tree=args.tree, server_url=args.server, device_id=args.device_id, key_dir=args.key,
                                key_name=args.key_name, password=os.environ.get(PASSWORD_ENV),
                                server_password=os.environ.get(SERVER_PASSWORD_ENV), auth_type=args.auth,
                                server_id=args.server_id, card=card, listen=args.listen,
                                max_msg_size=args.max_msg_size, wbxml=args.wbxml))
    agent.start()
    print(f"simvault DM agent for {args.device_id}: notifications at {agent.notify_url}", flush=True)
    stop = {"now": False}

    def on_signal(*_: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not stop["now"]:
        time.sleep(0.2)
    agent.stop()
    return 0


def _agent_control(args: argparse.Namespace) -> int:
    base = args.control.rstrip("/")
    if args.action == "status":
        method, path = "GET", "/control/status"
    elif args.action == "backup-now":
        method, path = "POST", "/control/backup-now" + (f"?destination={args.destination}" if args.destination else "")
    elif args.action == "restore":
        if not args.backup_id:
            raise UsageError("restore needs --id HEX")
        method, path = "POST", f"/control/restore?id={args.backup_id}&source={args.source}"
    else:
        method, path = "POST", "/control/sync"
    req = urllib.request.Request(base + path, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - the local agent
            print(resp.read().decode())
    except urllib.error.HTTPError as exc:
        raise SimvaultError(f"agent answered {exc.code}: {exc.read()[:200].decode(errors='replace')}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise TransportError(f"no agent at {base}: {exc}; start it with 'simvault dm agent --tree ...'") from None
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m host.dm.cli dm ...`: the dm commands alone (same handlers as `simvault dm`)."""
    from host.cli import run  # at call time: host.cli imports this module
    parser = argparse.ArgumentParser(prog="simvault")
    register(parser.add_subparsers(dest="command"))
    return run(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
