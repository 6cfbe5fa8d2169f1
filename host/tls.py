"""TLS for the DM and DS servers and their clients (the device agent, the admin CLI, the DS client).

The DM server's HMAC/MD5 authentication proves who sent a message, not who reads it: a
backup's metadata, the jobs and the DS account an Exec hands a device travel inside; a DS
session carries the (encrypted) archive and, with basic auth, the DS password. Over anything
but loopback, run the servers with a certificate (``--tls-cert/--tls-key``) and give the
clients the CA that issued it (``--ca-file``, a PEM file that may hold several CAs); the
system's trust store otherwise.
"""
from __future__ import annotations

import argparse
import ssl
from pathlib import Path

from host.errors import UsageError

MIN_VERSION = ssl.TLSVersion.TLSv1_2  # OMA DM 1.2 security: TLS 1.0 is long gone; 1.2 is what devices have


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context with CERT (PEM, the chain after the leaf) and its private KEY (PEM)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = MIN_VERSION
    try:
        ctx.load_cert_chain(certfile=str(cert), keyfile=str(key))
    except FileNotFoundError as exc:
        raise UsageError(f"TLS: cannot read {exc.filename}: {exc.strerror}") from None
    except ssl.SSLError as exc:  # the key does not match the certificate, or a file is not PEM
        raise UsageError(f"TLS: {cert} and {key} are not a PEM certificate and its private key ({exc.reason})") from None
    return ctx


def client_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """A client context that checks the server's certificate and host name against CA_FILE
    (PEM), or against the system's trust store when there is none."""
    try:
        ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except FileNotFoundError:
        raise UsageError(f"TLS: cannot read the CA file {ca_file}") from None
    except ssl.SSLError as exc:
        raise UsageError(f"TLS: {ca_file} holds no PEM CA certificate ({exc.reason})") from None
    ctx.minimum_version = MIN_VERSION
    return ctx


def context_for(url: str, ca_file: Path | None = None) -> ssl.SSLContext | None:
    """The client context an https URL needs (None for http: urllib's default)."""
    return client_context(ca_file) if url.lower().startswith("https:") else None


def untrusted(exc: BaseException) -> str | None:
    """Why the server's certificate was refused, when that is what EXC (from urllib) is about."""
    reason = getattr(exc, "reason", exc)  # urllib wraps it in a URLError
    return reason.verify_message if isinstance(reason, ssl.SSLCertVerificationError) else None


def check_pair(cert: Path | None, key: Path | None) -> None:
    if (cert is None) != (key is None):
        raise UsageError("--tls-cert and --tls-key go together: the certificate and its private key")


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """--tls-cert / --tls-key of a server command (dm server, ds server)."""
    parser.add_argument("--tls-cert", type=Path, default=None, metavar="PEM",
                        help="serve https with this certificate (and its chain); needs --tls-key")
    parser.add_argument("--tls-key", type=Path, default=None, metavar="PEM", help="the certificate's private key")


def server_context_from(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The server context --tls-cert/--tls-key ask for (None: plain http)."""
    check_pair(args.tls_cert, args.tls_key)
    return server_context(args.tls_cert, args.tls_key) if args.tls_cert else None
