"""Parameter declarations and their pre-compiled validators.

A :class:`Param` describes one by-name JSON-RPC parameter with a small JSON-schema
subset.  :func:`compile_params` turns a list of them into a single fast validator
that is run before the handler; every failure raises :class:`RpcError` with code
-32602 and a message naming the parameter and the reason.

Supported schema keywords:

* ``type``: ``"string" | "integer" | "number" | "boolean" | "object" | "array"``
  (``bool`` is never an integer/number; integers must be JSON integers, not floats)
* ``format`` (strings only): ``"hex"`` (``0x`` + even number of hex digits, optional
  ``maxBytes``), ``"hash32"`` (``0x`` + 64 hex digits), ``"amount"`` (decimal string of a
  non-negative integer, no sign, no leading zeros, at most 78 digits), ``"address"``
  (string starting with ``ait1``; deeper checks belong to the handler)
* ``minimum`` / ``maximum`` (integer and number), ``maxLength`` (string, characters),
  ``maxItems`` (array), ``enum`` (any type)

Other keywords (``description``, ``items``, ``properties`` ...) are accepted and only
reported through OpenRPC.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from rpc.errors import INVALID_PARAMS, RpcError

__all__ = ["FORMATS", "TYPES", "Param", "compile_params", "json_type_name", "schema_for_openrpc"]

TYPES = frozenset({"string", "integer", "number", "boolean", "object", "array"})
FORMATS = frozenset({"hex", "hash32", "amount", "address"})

# Upper bound for "amount" strings: 2**256 has 78 decimal digits.
AMOUNT_MAX_DIGITS = 78
ADDRESS_PREFIX = "ait1"
ADDRESS_MAX_LENGTH = 128

_HEX_RE = re.compile(r"0x[0-9a-fA-F]*")
_HASH32_RE = re.compile(r"0x[0-9a-fA-F]{64}")
_AMOUNT_RE = re.compile(r"0|[1-9][0-9]*")

# Patterns advertised through OpenRPC (informative; validation uses the code below).
FORMAT_PATTERNS = {
    "hex": "^0x([0-9a-fA-F]{2})*$",
    "hash32": "^0x[0-9a-fA-F]{64}$",
    "amount": "^(0|[1-9][0-9]*)$",
    "address": "^ait1",
}


@dataclass(frozen=True)
class Param:
    """One by-name parameter: ``schema`` is a JSON-schema subset (see module doc)."""

    name: str
    schema: dict = field(default_factory=dict)
    required: bool = True
    description: str = ""


_JSON_TYPE_NAMES = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    dict: "object",
    list: "array",
    type(None): "null",
}


def json_type_name(value: Any) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _invalid(name: str, reason: str) -> RpcError:
    return RpcError(INVALID_PARAMS, f"invalid params: {name!r} {reason}")


Check = Callable[[Any], "str | None"]  # returns a failure reason or None


def _type_check(type_name: str) -> Check:
    # ``type(v) is int`` rejects bool (a subclass of int) and floats such as 1.0.
    if type_name == "string":
        return lambda v: None if type(v) is str else f"must be a string, got {json_type_name(v)}"
    if type_name == "integer":
        return lambda v: None if type(v) is int else f"must be an integer, got {json_type_name(v)}"
    if type_name == "number":
        return lambda v: (
            None if type(v) is int or type(v) is float else f"must be a number, got {json_type_name(v)}"
        )
    if type_name == "boolean":
        return lambda v: None if type(v) is bool else f"must be a boolean, got {json_type_name(v)}"
    if type_name == "object":
        return lambda v: None if type(v) is dict else f"must be an object, got {json_type_name(v)}"
    if type_name == "array":
        return lambda v: None if type(v) is list else f"must be an array, got {json_type_name(v)}"
    raise ValueError(f"unsupported schema type {type_name!r}")


def _format_check(fmt: str, schema: dict) -> Check:
    if fmt == "hex":
        max_bytes = schema.get("maxBytes")
        if max_bytes is not None and (type(max_bytes) is not int or max_bytes < 0):
            raise ValueError("maxBytes must be a non-negative integer")

        def check_hex(v: str) -> str | None:
            if _HEX_RE.fullmatch(v) is None or len(v) % 2:
                return "must be 0x-prefixed hex with an even number of digits"
            if max_bytes is not None and (len(v) - 2) // 2 > max_bytes:
                return f"must be at most {max_bytes} bytes"
            return None

        return check_hex
    if fmt == "hash32":
        return lambda v: None if _HASH32_RE.fullmatch(v) else "must be 0x-prefixed 32-byte hex"
    if fmt == "amount":

        def check_amount(v: str) -> str | None:
            if len(v) > AMOUNT_MAX_DIGITS or _AMOUNT_RE.fullmatch(v) is None:
                return (
                    "must be a decimal string of a non-negative integer "
                    f"(digits only, no sign, no leading zeros, at most {AMOUNT_MAX_DIGITS} digits)"
                )
            return None

        return check_amount
    if fmt == "address":
        return lambda v: (
            None
            if v.startswith(ADDRESS_PREFIX) and len(v) <= ADDRESS_MAX_LENGTH
            else f"must be an address starting with {ADDRESS_PREFIX!r}"
        )
    raise ValueError(f"unsupported format {fmt!r}")


def _compile_one(param: Param) -> Check:
    schema = param.schema
    if not isinstance(schema, dict):
        raise ValueError(f"param {param.name!r}: schema must be a dict")
    checks: list[Check] = []
    type_name = schema.get("type")
    fmt = schema.get("format")
    if fmt is not None:
        if fmt not in FORMATS:
            raise ValueError(f"param {param.name!r}: unsupported format {fmt!r}")
        if type_name is None:
            type_name = "string"
        elif type_name != "string":
            raise ValueError(f"param {param.name!r}: format {fmt!r} requires type 'string'")
    if type_name is not None:
        if type_name not in TYPES:
            raise ValueError(f"param {param.name!r}: unsupported type {type_name!r}")
        checks.append(_type_check(type_name))
    if "enum" in schema:
        allowed = list(schema["enum"])

        def check_enum(v: Any) -> str | None:
            # Compare with the type too, so that True does not match 1.
            for a in allowed:
                if type(a) is type(v) and a == v:
                    return None
            return "must be one of " + ", ".join(repr(a) for a in allowed)

        checks.append(check_enum)
    if fmt is not None:
        checks.append(_format_check(fmt, schema))
    minimum, maximum = schema.get("minimum"), schema.get("maximum")
    if minimum is not None or maximum is not None:
        if type_name not in ("integer", "number"):
            raise ValueError(f"param {param.name!r}: minimum/maximum need type integer or number")
        if minimum is not None:
            checks.append(lambda v: None if v >= minimum else f"must be >= {minimum}")
        if maximum is not None:
            checks.append(lambda v: None if v <= maximum else f"must be <= {maximum}")
    max_length = schema.get("maxLength")
    if max_length is not None:
        if type_name != "string":
            raise ValueError(f"param {param.name!r}: maxLength needs type string")
        checks.append(lambda v: None if len(v) <= max_length else f"must be at most {max_length} characters")
    max_items = schema.get("maxItems")
    if max_items is not None:
        if type_name != "array":
            raise ValueError(f"param {param.name!r}: maxItems needs type array")
        checks.append(lambda v: None if len(v) <= max_items else f"must have at most {max_items} items")

    if not checks:
        return lambda v: None
    if len(checks) == 1:
        return checks[0]
    checks_t = tuple(checks)

    def check_all(v: Any) -> str | None:
        # Checks are ordered: the type check first, so later checks may assume the type.
        for c in checks_t:
            reason = c(v)
            if reason is not None:
                return reason
        return None

    return check_all


Validator = Callable[[dict], dict]


def compile_params(params: Iterable[Param], *, reserved: Iterable[str] = ()) -> Validator:
    """Compile ``params`` into ``validate(given: dict) -> dict``.

    The returned dict holds the keyword arguments for the handler: absent optional
    params (and optional params given as JSON null) are left out so that the
    handler's own defaults apply.  Raises :class:`RpcError` (-32602) on any failure
    and :class:`ValueError` at compile time for a malformed declaration.
    """
    params = tuple(params)
    reserved = frozenset(reserved)
    seen: set[str] = set()
    for p in params:
        if not isinstance(p, Param):
            raise TypeError(f"expected Param, got {type(p).__name__}")
        if not p.name or not isinstance(p.name, str):
            raise ValueError("param name must be a non-empty string")
        if p.name in seen:
            raise ValueError(f"duplicate param {p.name!r}")
        if p.name in reserved:
            raise ValueError(f"param name {p.name!r} is reserved")
        seen.add(p.name)
    if not params:

        def validate_none(given: dict) -> dict:
            if given:
                raise RpcError(INVALID_PARAMS, f"invalid params: unknown parameter {next(iter(given))!r}")
            return given

        return validate_none

    specs = tuple((p.name, p.required, _compile_one(p)) for p in params)
    known = frozenset(seen)

    def validate(given: dict) -> dict:
        for key in given:
            if key not in known:
                raise RpcError(INVALID_PARAMS, f"invalid params: unknown parameter {str(key)[:64]!r}")
        out: dict = {}
        for name, required, check in specs:
            if name in given:
                value = given[name]
                if value is None and not required:
                    continue
                reason = check(value)
                if reason is not None:
                    raise _invalid(name, reason)
                out[name] = value
            elif required:
                raise RpcError(INVALID_PARAMS, f"invalid params: missing required parameter {name!r}")
        return out

    return validate


def schema_for_openrpc(schema: dict) -> dict:
    """A copy of ``schema`` with an informative ``pattern`` for custom formats."""
    out = dict(schema)
    fmt = out.get("format")
    if fmt in FORMAT_PATTERNS:
        out.setdefault("type", "string")
        out.setdefault("pattern", FORMAT_PATTERNS[fmt])
    return out
