"""The consensus rules of a job kind (:class:`KindRules`), its parameter error and checking helpers.

Pure: no I/O, no device. Execution (NumPy reference runs, CUDA kernels, whole-result checks) is added by
the subclasses in ``gpu/kinds/``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..errors import AitbcError
from .encoding import encoded_size


class JobParamError(AitbcError, ValueError):
    """Job parameters or input refused. ``reason`` is a short snake_case code: ``bad_type``,
    ``unknown_param``, ``missing_param``, ``out_of_bounds``, ``input_required``, ``input_size``,
    ``bad_input`` (input bytes that do not decode as the kind requires) or ``unknown_kind``."""

    reason = "bad_param"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message, reason)


# --------------------------------------------------------------------------------------------------
# Parameter checking


def check_keys(params: Any, required: frozenset[str], optional: frozenset[str] = frozenset()) -> dict:
    """``params`` must be a map with text keys, exactly ``required`` plus any of ``optional``."""
    if type(params) is not dict:
        raise JobParamError("bad_type", f"params must be a map, got {type(params).__name__}")
    for k in params:
        if type(k) is not str:
            raise JobParamError("bad_type", f"param names must be text, got {k!r}")
    unknown = sorted(params.keys() - required - optional)
    if unknown:
        raise JobParamError("unknown_param", f"unknown param(s) {unknown}; allowed {sorted(required | optional)}")
    missing = sorted(required - params.keys())
    if missing:
        raise JobParamError("missing_param", f"missing param(s) {missing}")
    return params


def int_param(params: dict, key: str, lo: int, hi: int) -> int:
    """An integer param (booleans refused) within ``[lo, hi]``."""
    v = params[key]
    if type(v) is not int:
        raise JobParamError("bad_type", f"param '{key}' must be an integer, got {type(v).__name__}")
    if not lo <= v <= hi:
        shown = str(v) if v.bit_length() <= 64 else f"a {v.bit_length()}-bit integer"  # str() of a huge int raises
        raise JobParamError("out_of_bounds", f"param '{key}' = {shown} outside [{lo}, {hi}]")
    return v


def bytes_param(params: dict, key: str, length: int) -> bytes:
    """A byte-string param of exactly ``length`` bytes."""
    v = params[key]
    if type(v) is not bytes:
        raise JobParamError("bad_type", f"param '{key}' must be bytes, got {type(v).__name__}")
    if len(v) != length:
        raise JobParamError("out_of_bounds", f"param '{key}' must be {length} bytes, got {len(v)}")
    return v


def limit(what: str, value: int, hi: int) -> None:
    """A derived bound (e.g. result size) that ``value`` must not exceed."""
    if value > hi:
        raise JobParamError("out_of_bounds", f"{what} = {value} exceeds the limit {hi}")


def ceil_div(a: int, b: int) -> int:
    """``ceil(a / b)`` for integers."""
    return -(-a // b)


# --------------------------------------------------------------------------------------------------
# Chain context


@dataclass(frozen=True)
class KindContext:
    """What the chain knows that a kind's rules may consult when a job is submitted (and when its
    disputes are judged): ``resolve_model(model_id)`` returns the registered model's manifest (a map
    with ``format``, ``arch``, ``size``, ``root``, …; ``state/market/models.py``) or None. The market
    builds it from the block's state; kinds never read state themselves."""

    resolve_model: Callable[[bytes], dict | None]


# --------------------------------------------------------------------------------------------------
# The interface


class KindRules(ABC):
    """The consensus rules of one kind of compute job: parameters and bounds, metering, result shape
    and the deterministic per-leaf check that on-chain challenges run.

    Subclasses set the class attributes and implement the abstract methods. ``params`` is always a
    dict decoded from canonical CBOR; every public method validates it first.
    """

    name: ClassVar[str]
    version: ClassVar[int]
    unit_type: ClassVar[str]
    deterministic: ClassVar[bool]
    tolerance: ClassVar[tuple[float, float] | None]  # (rtol, atol) for float kinds, None when exact
    result_dtype: ClassVar[str]
    # Whether the generic ``challenge`` transaction (one leaf re-checked by :meth:`check_leaf`) decides
    # disputes of this kind. A kind with its own dispute protocol (``llm-generate``) sets False.
    leaf_disputes: ClassVar[bool] = True

    # -- parameters --------------------------------------------------------------------------------
    def validate(self, params: dict, input_size: int | None) -> None:
        """Raise :class:`JobParamError` unless ``params`` (and an input of ``input_size`` bytes, or
        no input when None) describe a valid job of this kind."""
        self._check_params(params)
        expected = self.expected_input_size(params)
        if input_size is None:
            if self.input_required(params):
                raise JobParamError("input_required", f"{self.name}: these params need an input of {expected} bytes")
            return
        if type(input_size) is not int or input_size < 0:
            raise JobParamError("bad_type", f"input size must be a non-negative integer, got {input_size!r}")
        if expected is None:
            raise JobParamError("input_size", f"{self.name}: these params take no input (got {input_size} bytes)")
        if input_size != expected:
            raise JobParamError("input_size", f"{self.name}: input must be {expected} bytes, got {input_size}")

    def validate_params(self, params: dict) -> None:
        """Check ``params`` alone (key set, types, bounds), not the input."""
        self._check_params(params)

    def check_context(self, params: dict, ctx: KindContext) -> None:
        """Checks of (already validated) ``params`` that need the chain's state, run by ``job_submit``
        (e.g. that a named model is registered). Raises :class:`JobParamError`. None by default."""
        return None

    def dispute_work(self, params: dict, input_size: int | None, ctx: KindContext) -> int:
        """The most dispute work units one dispute transaction of such a job can cost: ``job_submit``
        refuses a challenge window above ``max_challenge_work``. By default one leaf check. May raise
        :class:`JobParamError` when no dispute of such a job would fit a transaction."""
        return self.leaf_check_work(params, input_size)

    @abstractmethod
    def _check_params(self, params: dict) -> None:
        """Key set, types and bounds of ``params``."""

    def expected_input_size(self, params: dict) -> int | None:
        """Exact input length these params accept, or None when they accept no input."""
        return None

    def input_required(self, params: dict) -> bool:
        """Whether these params need an input."""
        return False

    @abstractmethod
    def result_shape(self, params: dict) -> tuple[int, ...]:
        """Shape of the result array (params already validated)."""

    @abstractmethod
    def work_units(self, params: dict) -> int:
        """Metered work in ``unit_type`` units (>= 1, rounded up); identical on every backend."""

    @abstractmethod
    def leaf_check_work(self, params: dict, input_size: int | None) -> int:
        """Dispute work units (DWU, ~1 µs of one core, rounded up generously) that :meth:`check_leaf`
        costs for these params and an input of ``input_size`` bytes: known before it runs, so block
        execution can meter challenges (``state/market/disputes.py``). Calibrated by ``bench/disputes.py``."""

    def leaf_count(self, params: dict) -> int:
        """Number of Merkle leaves of the result (its rows)."""
        self.validate_params(params)
        return self.result_shape(params)[0]

    def result_encoded_size(self, params: dict) -> int:
        """Length of ``encode_array(result)``, known before running the job."""
        return encoded_size(self.result_dtype, self.result_shape(params))

    def leaf_bytes(self, params: dict) -> int:
        """Length of one leaf in bytes."""
        shape = self.result_shape(params)
        return math.prod(shape[1:]) * np.dtype(self.result_dtype).itemsize

    # -- verification ---------------------------------------------------------------------------------
    @abstractmethod
    def check_leaf(self, params: dict, input: bytes | None, index: int, leaf: bytes) -> bool:
        """Cheap deterministic check that ``leaf`` is a correct value for leaf ``index``."""

    def describe(self) -> dict:
        """Static facts about the kind (for docs, RPC and the probe)."""
        return {
            "name": self.name,
            "version": self.version,
            "unit_type": self.unit_type,
            "deterministic": self.deterministic,
            "tolerance": None if self.tolerance is None else {"rtol": self.tolerance[0], "atol": self.tolerance[1]},
            "result_dtype": self.result_dtype,
        }
