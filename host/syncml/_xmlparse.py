"""The one place host.syncml turns bytes into an Element: host.tree.safexml.

safexml refuses entity declarations, external references and DTD subsets, and
bounds size, depth and element count. Its XmlError becomes a one-line
SyncMLError here, so every decoder in host.syncml raises only SyncMLError.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET

from host.errors import SimvaultError, SyncMLError
from host.tree import safexml

MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # far above any MaxMsgSize we negotiate
MAX_DEPTH = 64  # SyncML > SyncBody > Sync > Atomic > Add > Item > Data > MgmtTree > Node...
LIMITS = safexml.XmlLimits(max_bytes=MAX_MESSAGE_BYTES, max_depth=MAX_DEPTH, max_elements=200_000)


def parse_xml(data: bytes, what: str = "SyncML message") -> ET.Element:
    """Parse ``data`` safely; raise SyncMLError with a one-line reason."""
    if not isinstance(data, (bytes, bytearray)):
        raise SyncMLError(f"{what}: expected bytes, got {type(data).__name__}")
    try:
        return safexml.parse(bytes(data), LIMITS)
    except SimvaultError as exc:
        raise SyncMLError(f"{what} refused: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any parser failure is one line, never a traceback
        raise SyncMLError(f"{what} is not well-formed XML: {type(exc).__name__}") from None
