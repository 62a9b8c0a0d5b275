"""File descriptors: raise the process's RLIMIT_NOFILE and keep a reserve for the node's own files.

Every accepted RPC connection costs a descriptor. Without a bound, a few thousand idle sockets use up
the soft limit and then the node's own opens fail (LevelDB tables, the WAL, the sign state, blobs), which
kills it. At start the node raises its soft limit to the hard limit (:func:`raise_nofile_limit`) and
builds an :class:`FdBudget`: the RPC server asks it before keeping each new connection and refuses the
connection when fewer than ``reserve`` descriptors would stay free.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable

log = logging.getLogger("aitbc.node")

#: Highest soft limit asked for when the hard limit is "unlimited" (macOS caps it at OPEN_MAX anyway).
MAX_SOFT_LIMIT = 1 << 20
MACOS_OPEN_MAX = 10240
#: With fewer free descriptors than this above the reserve, every check recounts exactly.
EXACT_BELOW = 64


def raise_nofile_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (bounded); returns the resulting (soft, hard).
    Never fails: on a platform without ``resource`` or a refused setrlimit the limits stay as they are."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return (MAX_SOFT_LIMIT, MAX_SOFT_LIMIT)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = MAX_SOFT_LIMIT if hard == resource.RLIM_INFINITY else min(hard, MAX_SOFT_LIMIT)
    candidates = [target]
    if sys.platform == "darwin":
        candidates.append(min(target, MACOS_OPEN_MAX))
    for want in candidates:
        if soft != resource.RLIM_INFINITY and want <= soft:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            break
        except (ValueError, OSError) as exc:
            log.debug("setrlimit(RLIMIT_NOFILE, %d) refused: %s", want, exc)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = MAX_SOFT_LIMIT
    if hard == resource.RLIM_INFINITY:
        hard = MAX_SOFT_LIMIT
    return soft, hard


def open_fd_count() -> int | None:
    """Descriptors open in this process now (``/proc/self/fd`` or ``/dev/fd``), or None if unknown."""
    for d in ("/proc/self/fd", "/dev/fd"):
        try:
            return max(0, len(os.listdir(d)) - 1)  # minus the descriptor listdir itself opened
        except OSError:
            continue
    return None


class FdBudget:
    """How many more descriptors the RPC server may hold while ``reserve`` stay free for the node.

    :meth:`headroom` takes ``held``: the descriptors the caller holds now (its open connections, the one
    being admitted included). The open count is sampled at most every ``refresh_s`` seconds (a listdir
    of ``/proc/self/fd``); in between it is estimated as the last sample plus the change in ``held``.
    Close to the limit (headroom below :data:`EXACT_BELOW`) every call recounts.
    """

    def __init__(
        self,
        soft_limit: int,
        reserve: int,
        *,
        counter: Callable[[], int | None] = open_fd_count,
        refresh_s: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if soft_limit < 1 or reserve < 0:
            raise ValueError("soft_limit must be positive and reserve non-negative")
        self.soft_limit = soft_limit
        self.reserve = reserve
        self._counter = counter
        self._refresh_s = refresh_s
        self._clock = clock
        self._base: int | None = None  # descriptors open besides the caller's, at the last sample
        self._sampled_at = -1e18
        first = counter()
        #: Open at start (also the fallback base where descriptors cannot be counted).
        self.open_at_start = first if first is not None else 64

    def _sample(self, held: int) -> None:
        n = self._counter()
        if n is None:
            n = self.open_at_start + held
        self._base = n - held
        self._sampled_at = self._clock()

    def headroom(self, held: int) -> int:
        """Descriptors left above the reserve (negative: the reserve is already being used)."""
        if self._base is None or self._clock() - self._sampled_at > self._refresh_s:
            self._sample(held)
        free = self.soft_limit - self.reserve - (self._base + held)  # type: ignore[operator]
        if free < EXACT_BELOW:
            self._sample(held)
            free = self.soft_limit - self.reserve - (self._base + held)  # type: ignore[operator]
        return free

    def static_cap(self) -> int:
        """Connections that fit above the reserve given what was open at start (for the log and docs)."""
        return max(0, self.soft_limit - self.reserve - self.open_at_start)


def setup_fd_limits(reserve: int) -> FdBudget:
    """Raise RLIMIT_NOFILE and return the budget the RPC server admits connections against.

    ``reserve`` is kept free for the node's own files; it is lowered to half the soft limit when the
    limit is too small for it (with a warning), so a small limit still leaves room for some clients.
    """
    soft, hard = raise_nofile_limit()
    effective = reserve
    if reserve > soft // 2:
        effective = soft // 2
        log.warning(
            "RLIMIT_NOFILE is only %d (hard %d): keeping %d descriptors in reserve instead of rpc.fd_reserve=%d",
            soft, hard, effective, reserve,
        )
    budget = FdBudget(soft, effective)
    log.info(
        "file descriptors: limit %d (hard %d), %d open, %d reserved for the node's files; room for about %d "
        "RPC connections",
        soft, hard, budget.open_at_start, effective, budget.static_cap(),
    )
    return budget
