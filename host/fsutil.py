"""Small file-system helpers shared by the host packages."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path


def atomic_write(path: str | os.PathLike[str], data: bytes | Iterable[bytes], mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` all-or-nothing: a temp file beside it, fsync,
    chmod ``mode``, os.replace. A crash leaves the old file or the new one, never half.
    ``data`` may be an iterable of byte strings, written as they come (a large file
    is never whole in memory); an error while producing them leaves ``path`` as it was."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, (bytes, bytearray, memoryview)):
                f.write(data)
            else:
                for piece in data:
                    f.write(piece)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
