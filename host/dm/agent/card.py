"""How the agent reaches its card: an emulator image in-process, or a PC/SC reader."""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from host.errors import UsageError


@dataclass
class CardAccess:
    """How the agent reaches its card: an emulator image in-process, or a PC/SC reader.

    The PIN comes from the environment variable ``pin_env`` (never from the
    command line, never logged).
    """

    emulator: Path | None = None
    reader: str | None = None
    pin_env: str = "SIMVAULT_PIN"

    @contextmanager
    def open(self) -> Iterator[object]:
        from host.client import BackupCard
        from host.link import EmulatorTransport, PcscTransport
        pin = os.environ.get(self.pin_env)
        if not pin:
            raise UsageError(f"no card PIN: set ${self.pin_env} for the agent")
        virtual = None
        if self.emulator is not None:
            from card.emulator import VirtualCard
            virtual = VirtualCard.open(self.emulator)
            transport = EmulatorTransport(virtual, name=f"emulator {self.emulator}")
        else:
            transport = PcscTransport(self.reader)
        try:
            yield BackupCard.connect(transport, pin)
        finally:
            try:
                transport.disconnect()  # idempotent: also when connect/select/verify failed
            finally:
                if virtual is not None:
                    virtual.close()
