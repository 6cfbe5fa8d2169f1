"""Run an aiohttp service on its own event-loop thread, for synchronous callers
(tests, the demo, the CLI): the DS server and the fault proxy share this."""
from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Iterator

from host.ds.errors import DsError


@contextlib.contextmanager
def service_thread(start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]], *,
                   name: str, failure: str) -> Iterator[None]:
    """Await ``start`` on a new loop in thread ``name``, serve until the block ends, then
    await ``stop``. A failing start raises DsError("<failure>: <cause>") in the caller."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    errors: list[BaseException] = []

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(start())
        except BaseException as exc:  # noqa: BLE001 - reported to the caller below
            errors.append(exc)
            started.set()
            return
        started.set()
        loop.run_forever()
        loop.run_until_complete(stop())
        loop.close()

    thread = threading.Thread(target=main, name=name, daemon=True)
    thread.start()
    started.wait(10)
    if errors:
        raise DsError(f"{failure}: {errors[0]}")
    try:
        yield
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
