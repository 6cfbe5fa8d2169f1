"""The default Package 0 notifier: an HTTP POST to the device's listener URL."""
from __future__ import annotations

import urllib.error
import urllib.request

from host.errors import TransportError
from host.syncml.package0 import CONTENT_TYPE_PACKAGE0


class HttpNotifier:
    """Default notifier: POST the Package 0 to the device's loopback listener URL."""

    def __init__(self, timeout: float = 5.0) -> None:
        self.timeout = timeout

    def notify(self, device_id: str, address: str | None, package0: bytes) -> None:
        if not address:
            raise TransportError(f"device {device_id} has no notification address; register one "
                                 "(notify_url) or let the device report it")
        req = urllib.request.Request(address, data=package0, method="POST",
                                     headers={"Content-Type": CONTENT_TYPE_PACKAGE0})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - loopback URL we registered
                resp.read()
        except urllib.error.HTTPError as exc:
            raise TransportError(f"device {device_id} refused the notification: HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise TransportError(f"device {device_id} unreachable at {address}: {exc}") from None
