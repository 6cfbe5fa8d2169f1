"""`simvault dm ...`: the DM server, its admin commands, and the device agent.

    simvault dm server ...                            (host.cli.dm_server)
    simvault dm device-add DEVICE [--public-key keys/device.sign.pub.pem] [--enc-key keys/device.enc.pub.pem]
                       [--auth md5|hmac|basic] [--user NAME]   (passwords from $SIMVAULT_DM_PASSWORD and
                       $SIMVAULT_DM_SERVER_PASSWORD; --public-key: a device with simvault's agent)
    simvault dm device-key DEVICE --enc-key keys/device.enc.pub.pem   (DS passwords are sealed to it)
    simvault dm device-remove DEVICE [--purge]        (server backups kept unless --purge)
    simvault dm devices | backups [--device D] | jobs [--device D] | job ID   [--json]
    simvault dm ds-account add NAME --url URL --user U [--datastore D]   (password: $SIMVAULT_DS_PASSWORD
                       or a prompt; stored encrypted) | ds-account list
    simvault dm backup-start DEVICE --target server|card|ds [--ds-account NAME] [--scope "./A ./B"] [--wait S]
    simvault dm restore-start DEVICE --source server|card|ds [--id HEX] [--ds-account NAME] [--wait S]
    simvault dm fumo-start DEVICE [--node ./FUMO/x] [--wait]
    simvault dm agent --tree FILE --server URL --device-id ID --key DIR
                       [--card-emulator IMAGE | --card-reader R] [--listen 127.0.0.1:7701] [--wbxml]
                       [--ca-file ca.pem]   (an https --server whose CA the system does not know)
    simvault dm agent backup-now [--destination server|card] | restore --id HEX | sync | status
                       [--control http://127.0.0.1:7701]

The admin commands talk to the server's JSON API (--api, default
http://127.0.0.1:8080, token as above) and print tables; --json prints the JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from host.cli import dm_server, dm_text as cli_text
from host.cli import exitcodes, progress
from host.cli.dm_server import TOKEN_ENV, hostport
from host.errors import TransportError, UsageError
from host.cli.prompt import read_secret

if TYPE_CHECKING:
    from host.dm.agent.core import AgentConfig

PASSWORD_ENV = "SIMVAULT_DM_PASSWORD"
SERVER_PASSWORD_ENV = "SIMVAULT_DM_SERVER_PASSWORD"
DS_PASSWORD_ENV = "SIMVAULT_DS_PASSWORD"
DEFAULT_API = "http://127.0.0.1:8080"
DEFAULT_CONTROL = "http://127.0.0.1:7701"
AGENT_STOP_GRACE = 3.0  # seconds a session in progress may take to finish after SIGTERM


def register(sub: argparse._SubParsersAction) -> None:
    dm = sub.add_parser("dm", help="OMA DM server, its administration, and the device agent")
    dsub = dm.add_subparsers(dest="dm_command", metavar="DM_COMMAND")

    dm_server.register(dsub)

    def api_opts(q: argparse.ArgumentParser, json_out: bool = True) -> None:
        q.add_argument("--api", default=os.environ.get("SIMVAULT_DM_API", DEFAULT_API),
                       help=f"the DM server's URL (default $SIMVAULT_DM_API or {DEFAULT_API})")
        q.add_argument("--admin-token", default=None, help=f"admin API token (default ${TOKEN_ENV})")
        q.add_argument("--ca-file", type=Path, default=None, metavar="PEM",
                       help="https --api: the CA that issued the server's certificate (default: the system's)")
        if json_out:
            q.add_argument("--json", action="store_true", help="print the server's JSON (for scripts)")

    p = dsub.add_parser("device-add", help="register a device (passwords from the environment)")
    p.add_argument("device", help="the device id (the tree's ./DevInfo/DevId, e.g. IMEI:...)")
    p.add_argument("--public-key", type=Path, default=None,
                   help="the device's signing public key (PEM; a device with simvault's agent)")
    p.add_argument("--user", default=None, metavar="NAME",
                   help="the account's user name (its DMAcc AAuthName; default the device id)")
    p.add_argument("--enc-key", type=Path, default=None, metavar="PEM",
                   help="the device's encryption public key (device.enc.pub.pem): DS passwords are sealed "
                        "to it; without it DS jobs need the server on https")
    p.add_argument("--auth", choices=("md5", "hmac", "basic"), default="hmac",
                   help="hmac (default): every message signed; md5: a digest on a session's first message; "
                        "basic: syncml:auth-basic (or md5), over TLS or a server with --allow-basic-over-http")
    p.add_argument("--notify-url", default=None,
                   help="the agent's notification listener (default: the agent reports it)")
    api_opts(p)
    p.set_defaults(func=_cmd_device_add)
    p = dsub.add_parser("device-key", help="register or replace a device's encryption public key")
    p.add_argument("device", help="the device id")
    p.add_argument("--enc-key", type=Path, required=True, metavar="PEM",
                   help="the device's encryption public key (device.enc.pub.pem)")
    api_opts(p)
    p.set_defaults(func=_cmd_device_key)
    p = dsub.add_parser("device-remove", help="remove a device; its server backups are kept unless --purge")
    p.add_argument("device", help="the device id")
    p.add_argument("--purge", action="store_true", help="also delete its backups stored on the server")
    api_opts(p)
    p.set_defaults(func=_cmd_device_remove)
    for name, helptext in (("devices", "list devices"),
                           ("backups", "list the backups known: on the server, on cards, through DS"),
                           ("jobs", "list jobs")):
        p = dsub.add_parser(name, help=helptext)
        if name != "devices":
            p.add_argument("--device", default=None, help="only this device")
        api_opts(p)
        p.set_defaults(func=_cmd_list, what=name, device=None)
    p = dsub.add_parser("job", help="one job with its results")
    p.add_argument("job_id", type=int, help="the job's number (dm jobs)")
    api_opts(p)
    p.set_defaults(func=_cmd_job)

    p = dsub.add_parser("ds-account", help="DS accounts for backups through Data Sync (use case 3)")
    p.add_argument("action", choices=("add", "list"), help="add (or update) an account, or list them")
    p.add_argument("name", nargs="?", help="the account's name (add)")
    p.add_argument("--url", help="the DS server, e.g. http://127.0.0.1:8450/sync (add)")
    p.add_argument("--user", help="the DS user name (add)")
    p.add_argument("--datastore", default="backup", help="the DS datastore (default backup)")
    p.add_argument("--ds-auth", choices=("basic", "md5"), default="md5",
                   help="DS authentication the device uses (default md5)")
    api_opts(p)
    p.set_defaults(func=_cmd_ds_account)

    wait_help = "wait up to SECONDS for the job to finish (default: return once it is queued)"
    p = dsub.add_parser("backup-start", help="use case 1/3: ask a device to back up (server, card or DS)")
    p.add_argument("device", help="the device id")
    p.add_argument("--target", choices=("server", "card", "ds"), default="server",
                   help="where the backup goes (default server; ds needs --ds-account)")
    p.add_argument("--ds-account", default=None, metavar="NAME", help="the DS account (dm ds-account add)")
    p.add_argument("--mode", choices=("auto", "agent", "standard", "two-way", "refresh"), default=None,
                   help="--target server: auto (default: the BaR MO when the device has it, else standard "
                        "DM commands), agent, standard; --target ds: the sync type, two-way (default: the "
                        "previous backup stays until the new one is whole) or refresh")
    p.add_argument("--scope", default=None, help="space-separated URIs (default: the whole tree)")
    p.add_argument("--wait", type=float, default=0, metavar="SECONDS", help=wait_help)
    api_opts(p)
    p.set_defaults(func=_cmd_start, kind="backup")
    p = dsub.add_parser("restore-start", help="restore a device from a backup (dm backups lists them)")
    p.add_argument("device", help="the device id")
    p.add_argument("--id", dest="backup_id", default=None,
                   help="the backup id (dm backups); with --source ds, default the newest DS backup")
    p.add_argument("--source", dest="target", choices=("server", "card", "ds"), default="server",
                   help="where the backup is (default server; ds needs --ds-account)")
    p.add_argument("--ds-account", default=None, metavar="NAME", help="the DS account (dm ds-account add)")
    p.add_argument("--mode", choices=("auto", "agent", "standard"), default=None,
                   help="--source server: auto (default), agent (BaR MO), standard (a backup the server read)")
    p.add_argument("--dry-run", action="store_true", help="standard: the diff as the job's result, no write")
    p.add_argument("--wait", type=float, default=0, metavar="SECONDS", help=wait_help)
    api_opts(p)
    p.set_defaults(func=_cmd_start, kind="restore", scope=None)
    p = dsub.add_parser("fumo-start", help="firmware update (OMA FUMO Exec <node>/Update); the device's "
                                           "Policy/BeforeFirmwareUpdate backs up first")
    p.add_argument("device", help="the device id")
    p.add_argument("--node", default="./FUMO/FwUpdate", help="the FUMO management object (default ./FUMO/FwUpdate)")
    p.add_argument("--wait", type=float, default=0, metavar="SECONDS", help=wait_help)
    api_opts(p)
    p.set_defaults(func=_cmd_start, kind="firmware_update", target="device", scope=None, ds_account=None, mode=None)

    p = dsub.add_parser("agent", help="run the device agent, or talk to a running one")
    p.add_argument("action", nargs="?", default="run", choices=("run", "backup-now", "restore", "sync", "status"),
                   help="run (default): the agent itself; the others ask a running agent (--control)")
    p.add_argument("--tree", type=Path, help="the device's tree (TNDS XML file; saved in place)")
    p.add_argument("--server", help="the DM server URL, e.g. http://127.0.0.1:8080/dm")
    p.add_argument("--device-id", help="the device id the server knows (dm device-add)")
    p.add_argument("--key", type=Path, help="key directory (simvault keys gen)")
    p.add_argument("--key-name", default="device", help="the key pair's name in --key (default device)")
    p.add_argument("--auth", choices=("md5", "hmac"), default="md5",
                   help="what the agent starts with; it moves to hmac when the server's challenge asks")
    p.add_argument("--wbxml", action="store_true", help="speak application/vnd.syncml.dm+wbxml")
    p.add_argument("--ca-file", type=Path, default=None, metavar="PEM",
                   help="https --server and https DS servers: the CA(s) that issued their certificates, "
                        "one PEM file (default: the system's)")
    p.add_argument("--server-id", default="simvault-dms", help="the DM server's ServerID (default simvault-dms)")
    p.add_argument("--password-env", default=PASSWORD_ENV, metavar="VAR",
                   help=f"environment variable with the device's DM password (default {PASSWORD_ENV})")
    p.add_argument("--server-password-env", default=SERVER_PASSWORD_ENV, metavar="VAR",
                   help=f"environment variable with the server's DM password (default {SERVER_PASSWORD_ENV})")
    card = p.add_mutually_exclusive_group()
    card.add_argument("--card-emulator", type=Path, metavar="IMAGE", help="an emulated card's image file")
    card.add_argument("--card-reader", metavar="R", help="a PC/SC reader name (e.g. \"Virtual PCD 00 00\")")
    p.add_argument("--pin-env", default="SIMVAULT_PIN", metavar="VAR",
                   help="environment variable with the card PIN (default SIMVAULT_PIN)")
    p.add_argument("--listen", type=hostport, default=("127.0.0.1", 7701), metavar="HOST:PORT",
                   help="the agent's notification and control listener (default 127.0.0.1:7701)")
    p.add_argument("--max-msg-size", type=int, default=16 * 1024, metavar="BYTES",
                   help="largest SyncML message the agent accepts and announces (default 16384)")
    p.add_argument("--control", default=DEFAULT_CONTROL, help="a running agent's listener (for actions)")
    p.add_argument("--destination", choices=("server", "card"), default=None,
                   help="backup-now: where the backup goes (default: the device's policy)")
    p.add_argument("--id", dest="backup_id", default=None, help="restore: the backup id")
    p.add_argument("--source", default="card", help="restore: where the backup is, card (default) or server")
    p.add_argument("--json", action="store_true", help="actions: print the agent's JSON answer (for scripts)")
    p.set_defaults(func=_cmd_agent)


# ------------------------------------------------------------------ admin token
def _token(args: argparse.Namespace) -> str | None:
    return dm_server.admin_token(args)


# ------------------------------------------------------------------ admin via the API
def _api(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    token = _token(args)
    if not token:
        raise UsageError(f"no admin token: pass --admin-token or set ${TOKEN_ENV}")
    req = urllib.request.Request(args.api.rstrip("/") + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    from host.tls import context_for, untrusted
    context = context_for(args.api, args.ca_file)
    try:
        with urllib.request.urlopen(req, timeout=30, context=context) as resp:  # noqa: S310 - the admin's own server
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise cli_text.refusal("the DM server", exc.code, exc.read(), TOKEN_ENV) from None
    except (urllib.error.URLError, OSError) as exc:
        why = untrusted(exc)
        if why:
            raise TransportError(f"the DM server at {args.api} has a certificate we do not trust "
                                 f"({why}): pass the CA that issued it with --ca-file") from None
        raise TransportError(f"cannot reach the DM server at {args.api} ({getattr(exc, 'reason', exc)}): is "
                             "'simvault dm server' running? (--api or $SIMVAULT_DM_API names it)") from None


def _print(data: Any) -> None:
    print(json.dumps(data, indent=1, sort_keys=True, default=str))


def _show(args: argparse.Namespace, data: Any, text: Callable[[Any], str]) -> None:
    """--json: the server's JSON as is (scripts); otherwise a table or a few lines."""
    if getattr(args, "json", False):
        _print(data)
    else:
        print(text(data))


def _cmd_device_add(args: argparse.Namespace) -> int:
    pw, spw = os.environ.get(PASSWORD_ENV), os.environ.get(SERVER_PASSWORD_ENV)
    if not pw or not spw:
        raise UsageError(f"set ${PASSWORD_ENV} (the device's) and ${SERVER_PASSWORD_ENV} (the server's) passwords")
    body = {"device": args.device, "password": pw, "server_password": spw, "auth": args.auth,
            "notify_url": args.notify_url}
    for key, value in (("user", args.user), ("public_key_pem", args.public_key and _read_pem(args.public_key))):
        if value:
            body[key] = value
    if args.enc_key is not None:
        body["enc_key_pem"] = _read_pem(args.enc_key)
    row = _api(args, "POST", "/api/devices", body)
    _show(args, row, lambda d: f"device {d['id']} registered ({d['auth_type']})"
                               + (f", encryption key {d['enc_key_id']}" if d.get("enc_key_id") else ""))
    return 0


def _cmd_device_key(args: argparse.Namespace) -> int:
    row = _api(args, "PUT", f"/api/devices/{_quote(args.device)}/enc-key", {"enc_key_pem": _read_pem(args.enc_key)})
    _show(args, row, lambda d: f"device {d['id']}: encryption key {d['enc_key_id']} registered")
    return 0


def _read_pem(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}: give the device's PEM public "
                         "key ('simvault keys gen' writes keys/device.sign.pub.pem and device.enc.pub.pem)") from None


def _cmd_device_remove(args: argparse.Namespace) -> int:
    out = _api(args, "DELETE", f"/api/devices/{_quote(args.device)}" + ("?purge=1" if args.purge else ""))
    _show(args, out, lambda o: f"device {o['device']} removed; {o['backups']} server backup(s) "
                               + ("deleted" if o["purged"] else "kept (back when it is added again)"))
    return 0


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def _cmd_list(args: argparse.Namespace) -> int:
    query = {"device": args.device} if args.device else {}
    if args.what == "backups":
        query["location"] = "all"
    path = f"/api/{args.what}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    texts = {"devices": cli_text.devices_text, "backups": cli_text.backups_text, "jobs": cli_text.jobs_text}
    _show(args, _api(args, "GET", path), texts[args.what])
    return 0


def _cmd_job(args: argparse.Namespace) -> int:
    _show(args, _api(args, "GET", f"/api/jobs/{args.job_id}"), cli_text.job_text)
    return 0


def _cmd_ds_account(args: argparse.Namespace) -> int:
    if args.action == "list":
        _show(args, _api(args, "GET", "/api/ds-accounts"), cli_text.ds_accounts_text)
        return 0
    missing = [o for o, v in (("NAME", args.name), ("--url", args.url), ("--user", args.user)) if not v]
    if missing:
        raise UsageError(f"ds-account add needs {', '.join(missing)}: "
                         "simvault dm ds-account add NAME --url URL --user USER")
    password = read_secret(DS_PASSWORD_ENV, f"DS password of {args.user}")
    row = _api(args, "POST", "/api/ds-accounts", {"name": args.name, "url": args.url, "user": args.user,
                                                  "password": password, "datastore": args.datastore,
                                                  "auth": args.ds_auth})
    _show(args, row, lambda a: f"DS account {a['name']}: {a['username']} at {a['url']} "
                               f"(datastore {a['datastore']}); password stored encrypted")
    return 0


def _cmd_start(args: argparse.Namespace) -> int:
    kind, params = args.kind, {"node": args.node} if getattr(args, "node", None) else None
    if args.target == "ds":
        if not args.ds_account:
            raise UsageError("a DS job needs --ds-account NAME (simvault dm ds-account list)")
        kind = f"{kind}_via_ds"
        params = {"account": args.ds_account, **({"mode": args.mode} if args.mode else {})}
        if args.mode not in (None, "two-way", "refresh"):
            raise UsageError(f"--mode {args.mode} goes with --target server; DS modes are two-way, refresh")
    elif args.ds_account or getattr(args, "mode", None) in ("two-way", "refresh"):
        raise UsageError("--ds-account and --mode two-way|refresh go with --target ds / --source ds")
    elif kind == "restore" and not args.backup_id:
        raise UsageError("restore-start needs --id (simvault dm backups lists them)")
    if args.target == "server" and kind in ("backup", "restore"):
        params = {k: v for k, v in (("mode", getattr(args, "mode", None)),
                                    ("dry_run", getattr(args, "dry_run", False) or None)) if v}
    elif getattr(args, "mode", None) and args.target != "ds":
        raise UsageError("--mode goes with --target server (auto, agent, standard) or ds")
    if getattr(args, "dry_run", False) and args.target != "server":
        raise UsageError("--dry-run goes with --source server (a backup the server read)")
    job = _api(args, "POST", "/api/jobs", {"device": args.device, "kind": kind, "target": args.target,
                                           "scope": args.scope, "backup_id": getattr(args, "backup_id", None),
                                           "params": params})
    deadline = time.monotonic() + args.wait
    status = progress.waiting(args) if args.wait else None
    try:
        while args.wait and job["state"] not in ("succeeded", "failed") and time.monotonic() < deadline:
            if status:
                status.show(f"job {job['id']} ({job['kind']} {job['target']}, {job['device_id']}): {job['state']}")
            time.sleep(0.5)
            job = _api(args, "GET", f"/api/jobs/{job['id']}")
    finally:
        if status:
            status.close()
    _show(args, job, cli_text.job_text)
    if job["state"] == "failed":
        return exitcodes.FAILED
    if args.wait and job["state"] != "succeeded":
        # a script that waited must not take an unfinished job for a success
        print(f"simvault: job {job['id']} still {job['state']} after {args.wait:g}s: is the device's agent "
              f"running ('simvault dm agent')? 'simvault dm job {job['id']}' follows it", file=sys.stderr)
        return exitcodes.UNFINISHED
    return 0


# ------------------------------------------------------------------ agent
def _cmd_agent(args: argparse.Namespace) -> int:
    if args.action != "run":
        return _agent_control(args)
    missing = [o for o, v in (("--tree", args.tree), ("--server", args.server), ("--device-id", args.device_id),
                              ("--key", args.key)) if not v]
    if missing:
        raise UsageError(f"the agent needs {', '.join(missing)}")
    from host.tls import context_for
    context_for(args.server, args.ca_file)  # a CA file that cannot be read stops the agent here, not in a session
    from host.dm.agent.core import DMAgent
    agent = DMAgent(agent_config(args))
    agent.start()
    print(f"simvault DM agent for {args.device_id}: notifications at {agent.notify_url}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while not stop.wait(0.5):  # a timed wait: the main thread still runs the signal handlers
        pass
    if not agent.stop(timeout=AGENT_STOP_GRACE):
        print(f"simvault DM agent: stopped within a session after {AGENT_STOP_GRACE:.0f} s; "
              "the server retries the job when the agent is back", file=sys.stderr, flush=True)
    return 0


def agent_config(args: argparse.Namespace) -> "AgentConfig":
    """The AgentConfig of `simvault dm agent` (passwords from --password-env / --server-password-env)."""
    from host.dm.agent.core import AgentConfig
    from host.dm.agent.bar import CardAccess
    card = None
    if args.card_emulator or args.card_reader:
        card = CardAccess(emulator=args.card_emulator, reader=args.card_reader, pin_env=args.pin_env)
    return AgentConfig(tree=args.tree, server_url=args.server, device_id=args.device_id, key_dir=args.key,
                       key_name=args.key_name, password=os.environ.get(args.password_env),
                       server_password=os.environ.get(args.server_password_env), auth_type=args.auth,
                       server_id=args.server_id, card=card, listen=args.listen,
                       max_msg_size=args.max_msg_size, wbxml=args.wbxml, ca_file=args.ca_file)


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
            _show(args, json.loads(resp.read()), cli_text.agent_text)
    except urllib.error.HTTPError as exc:
        raise cli_text.refusal("the agent", exc.code, exc.read()) from None
    except (urllib.error.URLError, OSError) as exc:
        raise TransportError(f"no agent at {base}: {exc}; start it with 'simvault dm agent --tree ...'") from None
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m host.cli.dm dm ...`: the dm commands alone (same handlers as `simvault dm`)."""
    from host.cli import run  # at call time: host.cli imports this module
    parser = argparse.ArgumentParser(prog="simvault")
    register(parser.add_subparsers(dest="command"))
    return run(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
