"""`simvault ds ...`: the embedded DS server, its users, and DS backup/restore of archive files.

    simvault ds server --listen 127.0.0.1:8450 --db sqlite:///ds.db [--auth any|basic|md5]
                       [--tls-cert server.pem --tls-key server.key]   (https; clients: --ca-file ca.pem)
    SIMVAULT_DS_PASSWORD=pw simvault ds user add alice --db sqlite:///ds.db
    simvault ds user list|remove NAME --db ...
    simvault ds sessions --db ...
    SIMVAULT_DS_PASSWORD=pw simvault ds push FILE.svarch --url URL --user alice [--datastore backup] [--device-id ID]
    SIMVAULT_DS_PASSWORD=pw simvault ds pull OUT.svarch --url URL --user alice [--id HEX]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path

from host import tls
from host.cli import progress as cli_progress
from host.cli.dm_text import table
from host.cli.ui import add_json_option, emit
from host.errors import UsageError
from host.cli.prompt import read_secret

DB_ENV = "SIMVAULT_DS_DB"
PASSWORD_ENV = "SIMVAULT_DS_PASSWORD"
DEFAULT_DB = "sqlite:///simvault-ds.db"
DEFAULT_STATE = Path.home() / ".simvault" / "ds-state.json"


def _store(args: argparse.Namespace):
    from host.ds.store import DsStore
    return DsStore(args.db)


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise UsageError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8450")
    return host, int(port)


def cmd_server(args: argparse.Namespace) -> int:
    from host.ds.server import DsServer
    host, port = _listen(args.listen)
    store = _store(args)
    server = DsServer(store, auth=args.auth, max_msg_size=args.max_msg_size, ssl_context=tls.server_context_from(args))

    async def main() -> None:
        url = await server.start(host, port)
        print(f"simvault DS server: {url} (db {args.db.split('@')[-1]})", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()

    try:
        asyncio.run(main())
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.listen}: {exc.strerror}: pick another port") from None
    except KeyboardInterrupt:
        pass
    return 0


def cmd_user_add(args: argparse.Namespace) -> int:
    _store(args).add_user(args.name, read_secret(PASSWORD_ENV, f"password for {args.name}", confirm=True, strip=False), replace=args.replace)
    done = "updated" if args.replace else "added"
    emit(args, {"user": args.name, "done": done}, [f"DS user {args.name} {done}"])
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    store = _store(args)
    users = [{"user": name, "datastores": store.datastores(name)} for name in store.users()]
    emit(args, {"users": users}, [table(["USER", "DATASTORES"], [[u["user"], " ".join(u["datastores"])]
                                                                 for u in users],
                                        "no DS users (add one with 'simvault ds user add NAME')")])
    return 0


def cmd_user_remove(args: argparse.Namespace) -> int:
    if not _store(args).remove_user(args.name):
        raise UsageError(f"no DS user {args.name!r}: 'simvault ds user list' shows them")
    emit(args, {"user": args.name, "done": "removed"}, [f"DS user {args.name} removed"])
    return 0


def cmd_sessions(args: argparse.Namespace) -> int:
    rows = [{"user": s.user_name, "device": s.device_id, "datastore": s.datastore, "mode": s.mode,
             "status": s.status, "items_in": s.items_in, "items_out": s.items_out,
             "bytes_in": s.bytes_in, "bytes_out": s.bytes_out, "message": s.message}
            for s in _store(args).sessions(args.limit)]
    if args.json:           # JSON lines, one session each (as before --json existed)
        for row in rows:
            print(json.dumps(row))
        return 0
    print(table(["USER", "DEVICE", "DATASTORE", "MODE", "STATUS", "IN", "OUT", "MESSAGE"],
                [[r["user"], r["device"], r["datastore"], r["mode"], r["status"],
                  f"{r['items_in']} / {r['bytes_in']} B", f"{r['items_out']} / {r['bytes_out']} B",
                  (r["message"] or "")[:60]] for r in rows], "no DS sessions yet"))
    return 0


def _account(args: argparse.Namespace):
    from host.ds.client import DsAccount
    return DsAccount(url=args.url, username=args.user, password=read_secret(PASSWORD_ENV, f"DS password for {args.user}", strip=False),
                     datastore=args.datastore, device_id=args.device_id, auth=args.auth,
                     backup_mode=getattr(args, "mode", "two-way"), resume=getattr(args, "resume", False),
                     ca_file=args.ca_file)


def cmd_push(args: argparse.Namespace) -> int:
    from host.archive import Archive
    from host.ds.client import DsClient
    from host.ds.state import AnchorStore
    data = Path(args.archive).read_bytes()
    archive = Archive.from_bytes(data)  # refuse to upload something that is not an archive
    show = cli_progress.bar(args, "push to DS")
    total = (len(data) + 2) // 3 * 4    # the item goes as base64; SyncML around it makes the rest
    progress = (lambda sent, _received: show(min(sent, total - 1), total)) if show else None
    result = DsClient(_account(args), AnchorStore(args.state), progress=progress).backup(data, archive.backup_id.hex())
    if show:
        show(total, total)
    doc = {"backup_id": result.backup_id, "mode": sync_mode_name(int(result.mode)),
           "alert": int(result.mode), "slow_sync": result.slow_sync,
           "bytes_sent": result.bytes_sent, "messages": result.messages, "anchor_state": str(args.state)}
    slow = " (a slow sync: the anchors were new or lost)" if result.slow_sync else ""
    _print_one(args, doc, f"backup {doc['backup_id']} pushed to {args.url} as {args.user} (datastore "
                          f"{args.datastore}): {doc['bytes_sent']} bytes in {doc['messages']} message(s), "
                          f"{doc['mode']} sync{slow}; anchors in {args.state}")
    return 0


def _print_one(args: argparse.Namespace, doc: dict, line: str) -> None:
    """--json: the one-line JSON object these commands have always printed; else the line."""
    print(json.dumps(doc) if args.json else line)


# SyncML DS sync types by the names `ds push --mode` uses (201, a slow sync, is a two-way sync
# whose anchors were lost: the "slow_sync" field says so)
SYNC_MODE_NAMES = {200: "two-way", 201: "two-way", 203: "refresh", 205: "refresh-from-server"}


def sync_mode_name(alert: int) -> str:
    """The name of a DS sync type (Alert code), e.g. 203 -> "refresh"; unknown codes as "alert N"."""
    return SYNC_MODE_NAMES.get(alert, f"alert {alert}")


def cmd_pull(args: argparse.Namespace) -> int:
    from host.archive import Archive
    from host.backup.ops import atomic_write
    from host.ds.client import DsClient
    from host.ds.state import AnchorStore
    show = cli_progress.bar(args, "pull from DS")
    progress = (lambda _sent, received: show(received, None)) if show else None
    try:
        result = DsClient(_account(args), AnchorStore(args.state), progress=progress).restore(args.id)
    finally:
        if show:
            show.close()
    assert result.archive is not None
    Archive.from_bytes(result.archive)
    atomic_write(Path(args.out), result.archive)
    doc = {"backup_id": result.backup_id, "bytes": len(result.archive), "out": str(args.out)}
    _print_one(args, doc, f"backup {doc['backup_id']} pulled from {args.url} into {args.out}: {doc['bytes']} bytes")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    ds = sub.add_parser("ds", help="SyncML DS: the embedded DS server, its users, push/pull archives")
    dsub = ds.add_subparsers(dest="ds_command", metavar="DS_COMMAND")

    def with_db(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--db", default=os.environ.get(DB_ENV, DEFAULT_DB),
                       help=f"sqlite:///PATH or postgresql+psycopg://... (env {DB_ENV}, default {DEFAULT_DB})")
        return p

    p = with_db(dsub.add_parser("server", help="run the DS server"))
    p.add_argument("--listen", default="127.0.0.1:8450", help="HOST:PORT (default 127.0.0.1:8450)")
    p.add_argument("--auth", choices=("any", "basic", "md5"), default="any", help="accepted credentials")
    p.add_argument("--max-msg-size", type=int, default=1024 * 1024,
                   help="largest SyncML message accepted and announced, in bytes (default 1 MiB)")
    tls.add_server_options(p)
    p.set_defaults(func=cmd_server)

    user = dsub.add_parser("user", help="manage DS users")
    usub = user.add_subparsers(dest="user_command", metavar="USER_COMMAND")
    p = with_db(usub.add_parser("add", help=f"add a user (password from {PASSWORD_ENV} or a prompt)"))
    p.add_argument("name", help="the DS user name")
    p.add_argument("--replace", action="store_true", help="change the password of an existing user")
    add_json_option(p)
    p.set_defaults(func=cmd_user_add)
    p = with_db(usub.add_parser("list", help="list users and their datastores"))
    add_json_option(p)
    p.set_defaults(func=cmd_user_list)
    p = with_db(usub.add_parser("remove", help="remove a user and all their datastores"))
    p.add_argument("name", help="the DS user name")
    add_json_option(p)
    p.set_defaults(func=cmd_user_remove)

    p = with_db(dsub.add_parser("sessions", help="recent DS sessions (--json: JSON lines)"))
    add_json_option(p, "one JSON object per session (JSON lines)")
    p.add_argument("--limit", type=int, default=20, help="how many sessions, newest first (default 20)")
    p.set_defaults(func=cmd_sessions)

    def with_account(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--url", required=True, help="DS server URL (http://127.0.0.1:8450/sync, SyncEvolution's ...)")
        p.add_argument("--user", required=True, help=f"DS user name (password from ${PASSWORD_ENV} or a prompt)")
        p.add_argument("--datastore", default="backup", help="the server's datastore (default backup)")
        p.add_argument("--device-id", default="simvault-device", help="our DevID (SyncEvolution: remoteDeviceId)")
        p.add_argument("--auth", choices=("basic", "md5"), default="md5",
                       help="SyncML authentication (default md5; basic only if the server asks for it)")
        p.add_argument("--ca-file", type=Path, default=None, metavar="PEM",
                       help="https --url: the CA that issued the DS server's certificate (default: the system's)")
        p.add_argument("--state", default=str(DEFAULT_STATE), metavar="FILE",
                       help=f"where the sync anchors are kept between sessions (default {DEFAULT_STATE}); "
                            "losing it only makes the next two-way push a slow sync")
        add_json_option(p, "the result as one JSON object")
        cli_progress.add_progress_options(p)
        return p

    p = with_account(dsub.add_parser("push", help="back up an archive file to a DS server (two-way by default)"))
    p.add_argument("archive", help="the archive file (.svarch) to back up")
    p.add_argument("--mode", choices=("two-way", "refresh"), default="two-way",
                   help="two-way: the previous archive stays until the new one is complete (docs/DS.md); "
                        "refresh: Alert 203")
    p.add_argument("--resume", action="store_true",
                   help="after a push cut mid-way, alert Resume (225) first; a server that cannot resume "
                        "answers 509 (go on as a normal sync) or 508 (slow sync)")
    p.set_defaults(func=cmd_push)
    p = with_account(dsub.add_parser("pull", help="fetch an archive from a DS server (refresh from server)"))
    p.add_argument("out", help="the archive file to write")
    p.add_argument("--id", default=None, help="backup id (hex) when the datastore holds several")
    p.set_defaults(func=cmd_pull)
