"""Small helpers shared by the p2p modules: guarded background tasks, stream closing."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

log = logging.getLogger("aitbc.p2p")


async def _guarded(fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
    """Run a background task of the service; a bug in one peer's handling must not stop the node."""
    try:
        await fn(*args)
    except Exception:
        log.exception("p2p task %s failed", getattr(fn, "__name__", fn))


async def _close_stream(stream: Any, *, reset: bool) -> None:
    with trio.CancelScope(shield=True):
        with trio.move_on_after(1.0):
            try:
                if reset:
                    await stream.reset()
                else:
                    await stream.close()
            except Exception:
                pass
