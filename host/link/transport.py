"""Transports move raw APDU bytes to a card and back; nothing more.

T=0 handling, chaining and extended length live one layer up, in Link.
"""
from __future__ import annotations

import abc
from typing import Protocol

from host.errors import TransportError


class VirtualCard(Protocol):
    """The contract a virtual card (the card runtime, test cards) fulfils."""

    @property
    def atr(self) -> bytes: ...

    def power_on(self) -> bytes: ...

    def power_off(self) -> None: ...

    def reset(self) -> bytes: ...

    def transmit(self, apdu: bytes) -> bytes: ...


class Transport(abc.ABC):
    """A connection to one card. Context manager: connects and disconnects."""

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """Human-readable name of the reader or emulator."""

    @property
    @abc.abstractmethod
    def atr(self) -> bytes:
        """The ATR of the connected card (b"" when not connected)."""

    @property
    def protocol(self) -> str:
        """The active protocol for traces ("T=0", "T=1", "emu")."""
        return ""

    @property
    @abc.abstractmethod
    def connected(self) -> bool: ...

    @abc.abstractmethod
    def connect(self) -> bytes:
        """Connect (power the card up if needed); return the ATR."""

    @abc.abstractmethod
    def disconnect(self) -> None:
        """Release the card; idempotent."""

    @abc.abstractmethod
    def reset(self) -> bytes:
        """Warm reset; return the ATR."""

    @abc.abstractmethod
    def transmit_raw(self, command: bytes) -> bytes:
        """Send one C-APDU, return the R-APDU (data + SW1 SW2)."""

    def __enter__(self) -> Transport:
        if not self.connected:
            self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()


class EmulatorTransport(Transport):
    """In-process transport: calls the virtual card object directly."""

    def __init__(self, card: VirtualCard, name: str = "emulator") -> None:
        self._card = card
        self._name = name
        self._atr = b""
        self._connected = False

    @property
    def name(self) -> str:
        return self._name

    @property
    def atr(self) -> bytes:
        return self._atr

    @property
    def protocol(self) -> str:
        return "emu"

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def card(self) -> VirtualCard:
        return self._card

    def connect(self) -> bytes:
        self._atr = bytes(self._card.power_on())
        self._connected = True
        return self._atr

    def disconnect(self) -> None:
        if self._connected:
            self._connected = False
            self._card.power_off()

    def reset(self) -> bytes:
        if not self._connected:
            return self.connect()
        self._atr = bytes(self._card.reset())
        return self._atr

    def transmit_raw(self, command: bytes) -> bytes:
        if not self._connected:
            raise TransportError(f"{self._name}: not connected: call connect() first")
        response = bytes(self._card.transmit(bytes(command)))
        if len(response) < 2:
            raise TransportError(
                f"{self._name}: the card answered {len(response)} bytes without a status word: "
                "fix the card emulator"
            )
        return response
