"""The executable job kind (:class:`JobKind`), its execution error and the cooperative deadline.

A :class:`JobKind` is a kind's consensus rules (:class:`state.kinds.base.KindRules`: params, metering,
leaf check) plus execution: the NumPy reference, the device memory estimate and the off-chain
whole-result check.
"""

from __future__ import annotations

import threading
import time
from abc import abstractmethod
from typing import Any

import numpy as np

from state.errors import AitbcError
from state.kinds.base import JobParamError, KindRules


class JobExecutionError(AitbcError, RuntimeError):
    """A job that could not be run: ``timeout``, ``canceled``, ``memory``, ``result_too_large`` or
    ``backend`` (the device or its compiler failed)."""

    reason = "execution"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message, reason)


class Deadline:
    """A cooperative stop signal checked between chunks of work (monotonic clock)."""

    def __init__(self, time_limit_s: float | None = None, cancel: threading.Event | None = None) -> None:
        self.start = time.monotonic()
        self.limit_s = time_limit_s
        self.at = None if time_limit_s is None else self.start + time_limit_s
        self.cancel = cancel or threading.Event()

    def expired(self) -> bool:
        return self.at is not None and time.monotonic() > self.at

    def check(self) -> None:
        """Raise :class:`JobExecutionError` if the job was canceled or ran past its time limit."""
        if self.cancel.is_set():
            raise JobExecutionError("canceled", "job canceled")
        if self.expired():
            raise JobExecutionError(
                "timeout", f"job exceeded its time limit of {self.limit_s:g} s (abandoned)"
            )


def check_deadline(deadline: Deadline | None) -> None:
    """``deadline.check()`` unless there is no deadline."""
    if deadline is not None:
        deadline.check()


class JobKind(KindRules):
    """A job kind that this peer can run: its rules (inherited from the kind's ``state.kinds`` class)
    plus the NumPy reference, the memory estimate and the off-chain whole-result check.

    A concrete kind subclasses its rules class first, e.g. ``class MatmulU32(MatmulU32Rules, JobKind)``.
    """

    @abstractmethod
    def device_bytes(self, params: dict) -> int:
        """Device memory the job needs (inputs, intermediates and result), in bytes."""

    @abstractmethod
    def execute_numpy(self, params: dict, input: bytes | None, *, deadline: Deadline | None = None) -> np.ndarray:
        """Reference computation on the CPU; checks ``deadline`` between chunks of work."""

    @abstractmethod
    def verify_full(self, params: dict, input: bytes | None, result: np.ndarray, rng_seed: bytes) -> bool:
        """Off-chain check of a whole result (randomised where the kind allows it)."""

    def _result_ok(self, params: dict, result: Any) -> bool:
        return (
            isinstance(result, np.ndarray)
            and result.dtype == np.dtype(self.result_dtype)
            and result.shape == self.result_shape(params)
        )


__all__ = ["Deadline", "JobExecutionError", "JobKind", "JobParamError", "check_deadline"]
