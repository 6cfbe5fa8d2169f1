"""`simvault dm server`: its options and its runner (host.cli.dm registers it).

    simvault dm server --listen 127.0.0.1:8080 --db sqlite:///dm.db   (token: --admin-token or
                       $SIMVAULT_DM_ADMIN_TOKEN; PostgreSQL: --db postgresql+psycopg://u@h:p/db)
                       [--tls-cert server.pem --tls-key server.key]   (https; clients: --ca-file ca.pem)
                       [--path /dm --path /funambol/dm]   (the DM endpoint's paths; default /dm)
                       [--allow-basic-over-http] [--min-password-length 8] [--no-access-log]
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

from host import tls
from host.dm.server.agentless.config import add_agentless_options, agentless_config_from

TOKEN_ENV = "SIMVAULT_DM_ADMIN_TOKEN"


def hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: write HOST:PORT, e.g. 127.0.0.1:8080")
    return host or "127.0.0.1", int(port)


def admin_token(args: argparse.Namespace) -> str | None:
    return args.admin_token or os.environ.get(TOKEN_ENV)


def register(dsub: argparse._SubParsersAction) -> None:
    p = dsub.add_parser("server", help="run the DM server (HTTP, loopback by default)")
    p.add_argument("--listen", type=hostport, default=("127.0.0.1", 8080), metavar="HOST:PORT",
                   help="where the DM endpoint (/dm) and the admin API (/api) listen (default 127.0.0.1:8080)")
    p.add_argument("--db", default="sqlite:///simvault-dm.db",
                   help="sqlite:///PATH (default) or postgresql+psycopg://USER@HOST:PORT/DB")
    p.add_argument("--admin-token", default=None, help=f"admin API token (default ${TOKEN_ENV})")
    p.add_argument("--server-id", default="simvault-dms",
                   help="the server's DM identity (ServerID; the devices' DMAcc must match; default simvault-dms)")
    p.add_argument("--max-msg-size", type=int, default=64 * 1024, metavar="BYTES",
                   help="largest SyncML message the server accepts and announces (default 65536)")
    p.add_argument("--job-timeout", type=float, default=900.0, metavar="SECONDS",
                   help="seconds a running job may wait for its result (default 900)")
    p.add_argument("--path", dest="paths", action="append", default=None, metavar="PATH",
                   help="a path the DM endpoint answers on, repeatable (default /dm); e.g. /funambol/dm, "
                        "the address a device's DMAcc names")
    p.add_argument("--allow-basic-over-http", action="store_true",
                   help="accept syncml:auth-basic (the password in base64) over plain HTTP too; without it "
                        "basic is accepted over TLS only (default off)")
    p.add_argument("--no-access-log", action="store_true",
                   help="no access-log line per DM request (default: one on stderr, logger host.dm.access)")
    p.add_argument("--min-password-length", type=int, default=8, metavar="N",
                   help="device and server passwords shorter than N are refused at registration (default 8)")
    p.add_argument("--blob-store", default="db", metavar="db|dir:PATH",
                   help="where backup chunks live, each once: in the database (default) or files in a directory")
    tls.add_server_options(p)
    add_agentless_options(p)  # --server-key: also the key the console opens backups with
    p.set_defaults(func=_cmd_server)


def _cmd_server(args: argparse.Namespace) -> int:
    from host.dm.server.webapp import build_server
    # INFO even when the rest logs warnings only (the default without -v)
    logging.getLogger("host.dm.access").setLevel(logging.WARNING if args.no_access_log else logging.INFO)
    host, port = args.listen
    context = tls.server_context_from(args)
    web = build_server(args.db, host=host, port=port, admin_token=admin_token(args), server_id=args.server_id,
                       max_msg_size=args.max_msg_size, running_timeout=args.job_timeout, ssl_context=context,
                       paths=args.paths or ["/dm"], allow_basic_over_http=args.allow_basic_over_http,
                       min_password_length=args.min_password_length, agentless=agentless_config_from(args),
                       blob_store=args.blob_store)
    key_ids = web.console.use_server_key(args.server_key) if args.server_key else []

    async def main() -> None:
        await web.start()
        print(f"simvault DM server on {', '.join(web.url + p for p in web.paths)} (db {web.server.store.safe_url}); "
              f"admin API {'on' if web.admin_token else 'off (no token)'}; console {web.url}/console"
              + (f" (server key {', '.join(key_ids)})" if key_ids else ""), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await web.stop()
        web.server.store.close()

    asyncio.run(main())
    return 0
