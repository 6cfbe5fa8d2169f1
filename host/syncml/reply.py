"""Helpers to answer a received message: the reply header and Status commands.

    hdr = reply_header(received.header, msg_id=2)
    cmds = [header_status(received.header, cmd_id=1, code=212)]
    cmds += [status_for(c, msg_ref=received.header.msg_id, cmd_id=i, code=200)
             for i, c in enumerate(received.commands, start=2)]
"""
from __future__ import annotations

import dataclasses

from host.syncml import model as m


def reply_header(received: m.SyncHdr, msg_id: int, **changes: object) -> m.SyncHdr:
    """The header of the answer: same session, Target and Source swapped, no Cred/Meta.

    ``changes`` sets other fields (meta=Meta(max_msg_size=...), resp_uri=...). Where
    to send the answer (the peer's RespURI) is the transport's business.
    """
    hdr = m.SyncHdr(session_id=received.session_id, msg_id=msg_id,
                    target=m.Target(received.source.loc_uri, received.source.loc_name),
                    source=m.Source(received.target.loc_uri), ver_proto=received.ver_proto,
                    ver_dtd=received.ver_dtd)
    return dataclasses.replace(hdr, **changes)  # type: ignore[arg-type]


def header_status(received: m.SyncHdr, cmd_id: int, code: int, chal: m.Chal | None = None) -> m.Status:
    """Status for the SyncHdr (CmdRef 0), e.g. 212 / 401 / 407 with a Chal."""
    return m.Status(cmd_id=cmd_id, msg_ref=received.msg_id, cmd_ref=0, cmd="SyncHdr", data=code,
                    target_refs=[received.target.loc_uri], source_refs=[received.source.loc_uri],
                    chal=chal)


def _refs(cmd: m.Command) -> tuple[list[str], list[str]]:
    items: list[m.Item] = []
    if isinstance(cmd, (m.ItemCommand, m.Alert, m.Results)):
        items = cmd.items
    elif isinstance(cmd, m.Exec):
        items = [cmd.item]
    targets = [i.target.loc_uri for i in items if i.target is not None]
    sources = [i.source.loc_uri for i in items if i.source is not None]
    if isinstance(cmd, (m.Sync, m.Map)):
        targets = [cmd.target.loc_uri] if cmd.target else []
        sources = [cmd.source.loc_uri] if cmd.source else []
    return targets, sources


def status_with_refs(cmd: m.Command, msg_ref: int, cmd_id: int, code: int, target: str | None = None,
                     source: str | None = None, items: list[m.Item] | None = None,
                     chal: m.Chal | None = None) -> m.Status:
    """Status answering ``cmd`` with at most one TargetRef/SourceRef, given by the caller."""
    return m.Status(cmd_id=cmd_id, msg_ref=msg_ref, cmd_ref=cmd.cmd_id, cmd=cmd.name, data=code,
                    target_refs=[target] if target else [], source_refs=[source] if source else [],
                    items=list(items or []), chal=chal)


def status_for(cmd: m.Command, msg_ref: int, cmd_id: int, code: int,
               items: list[m.Item] | None = None) -> m.Status:
    """Status answering ``cmd`` with TargetRef/SourceRef taken from its items."""
    targets, sources = _refs(cmd)
    return m.Status(cmd_id=cmd_id, msg_ref=msg_ref, cmd_ref=cmd.cmd_id, cmd=cmd.name, data=code,
                    target_refs=targets, source_refs=sources, items=list(items or []))
