"""JSON-RPC 2.0 core: method registry and transport-independent dispatcher.

Handlers are ``async def handler(**params) -> Any`` registered on a
:class:`MethodRegistry` with by-name :class:`Param` declarations; the
:class:`Dispatcher` parses a request body (single request or batch), validates it
exactly per JSON-RPC 2.0, validates params, calls handlers and encodes the
response.  The HTTP and WebSocket transports live in ``rpc.server``.
"""

from __future__ import annotations

import hmac
import inspect
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import trio

from rpc.errors import (
    BUSY,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    NOT_FOUND,
    PARSE_ERROR,
    SERVER_ERROR,
    TX_REJECTED,
    UNAUTHORIZED,
    RpcError,
)
from rpc.limits import STATE_CHANGING, Refusal, is_loopback
from rpc.params import Param, Validator, compile_params

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from rpc.subscriptions import SubscriberConnection, SubscriptionHub

__all__ = [
    "BUSY",
    "BUILTIN_METHODS",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "NOT_FOUND",
    "PARSE_ERROR",
    "SERVER_ERROR",
    "TX_REJECTED",
    "UNAUTHORIZED",
    "CallContext",
    "Dispatcher",
    "Method",
    "MethodRegistry",
    "Param",
    "RpcError",
    "RpcMetrics",
    "is_loopback",
]

log = logging.getLogger("aitbc.rpc")

#: Names the server implements itself; a registry refuses them.
BUILTIN_METHODS = frozenset({"rpc.discover", "subscribe", "unsubscribe"})

_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_encode = _ENCODER.encode


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_decode = _DECODER.decode

_ENCODE_ERRORS = (TypeError, ValueError, OverflowError, RecursionError)


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True, slots=True)
class Method:
    name: str
    handler: Callable[..., Any]
    params: tuple[Param, ...]
    result: dict | None
    summary: str
    admin: bool
    validate: Validator
    is_async: bool
    errors: tuple[dict, ...] = ()  # OpenRPC error objects (rpc.discover); empty: the common ones


class MethodRegistry:
    """Named JSON-RPC methods.  Register with :meth:`method` (decorator) or :meth:`add`."""

    def __init__(self) -> None:
        self._methods: dict[str, Method] = {}
        self._version = 0  # bumped on every change (OpenRPC cache key)

    def method(
        self,
        name: str,
        *,
        params: Iterable[Param] = (),
        result: dict | None = None,
        summary: str = "",
        admin: bool = False,
    ) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
        """Decorator: ``@registry.method("getBalance", params=[Param("address", {...})])``."""

        def decorator(handler: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            self.add(name, handler, params=params, result=result, summary=summary, admin=admin)
            return handler

        return decorator

    def add(
        self,
        name: str,
        handler: Callable[..., Awaitable[Any]],
        *,
        params: Iterable[Param] = (),
        result: dict | None = None,
        summary: str = "",
        admin: bool = False,
    ) -> Method:
        """Register ``handler`` (``async def handler(**params)``) as ``name``; returns the :class:`Method`."""
        if not isinstance(name, str) or not name:
            raise ValueError("method name must be a non-empty string")
        if name.startswith("rpc.") or name in BUILTIN_METHODS:
            raise ValueError(f"method name {name!r} is reserved")
        if name in self._methods:
            raise ValueError(f"method {name!r} is already registered")
        if not callable(handler):
            raise TypeError("handler must be callable")
        params = tuple(params)
        validate = compile_params(params)
        _check_signature(name, handler, params)
        m = Method(
            name=name,
            handler=handler,
            params=params,
            result=result,
            summary=summary,
            admin=bool(admin),
            validate=validate,
            is_async=inspect.iscoroutinefunction(handler),
        )
        self._methods[name] = m
        self._version += 1
        return m

    def describe(self, name: str, *, result: dict | None = None, errors: Iterable[dict] | None = None) -> Method:
        """Set the documented result schema and errors (OpenRPC ``errors``) of a registered method."""
        m = self._methods[name]
        m = replace(
            m,
            result=result if result is not None else m.result,
            errors=tuple(errors) if errors is not None else m.errors,
        )
        self._methods[name] = m
        self._version += 1
        return m

    def remove(self, name: str) -> None:
        del self._methods[name]
        self._version += 1

    def get(self, name: str) -> Method | None:
        return self._methods.get(name)

    def names(self) -> list[str]:
        return list(self._methods)

    def methods(self) -> list[Method]:
        return list(self._methods.values())

    def __contains__(self, name: object) -> bool:
        return name in self._methods

    def __len__(self) -> int:
        return len(self._methods)


def _check_signature(name: str, handler: Callable[..., Any], params: tuple[Param, ...]) -> None:
    """Catch handler/param mismatches at registration instead of at call time."""
    try:
        sig = inspect.signature(handler)
    except (TypeError, ValueError):  # pragma: no cover - builtins etc.
        return
    kinds = {p.name: p for p in sig.parameters.values()}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in kinds.values()):
        accepted = None
    else:
        accepted = {
            n
            for n, p in kinds.items()
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        }
    declared = {p.name for p in params}
    if accepted is not None:
        missing = declared - accepted
        if missing:
            raise TypeError(f"handler for {name!r} does not accept params {sorted(missing)}")
    for n, p in kinds.items():
        if p.default is inspect.Parameter.empty and p.kind in (
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.KEYWORD_ONLY,
        ):
            if n not in declared:
                raise TypeError(f"handler for {name!r} requires {n!r}, which is not a declared param")
            if not next(q for q in params if q.name == n).required:
                raise TypeError(f"handler for {name!r}: optional param {n!r} needs a default value")
        if p.kind is inspect.Parameter.POSITIONAL_ONLY and p.default is inspect.Parameter.empty:
            raise TypeError(f"handler for {name!r} has a positional-only parameter {n!r}")


# --------------------------------------------------------------------------- context
class CallContext:
    """Per-request (HTTP) or per-connection (WebSocket) facts the dispatcher needs.

    The transport may also set: ``rate`` (``rate(n) -> None | seconds``: takes ``n`` tokens of the
    client's rate limit, or says how long until they would be there), ``deadline`` (trio time after
    which calls are answered with a timeout error), ``json_body`` (False when an HTTP request did not
    declare ``Content-Type: application/json``: state-changing methods are then refused) and ``origin``
    (the browser ``Origin`` header, if any: admin calls then always need the token). The dispatcher sets
    ``status`` (an HTTP status for a refusal of the whole request, e.g. 429) and ``retry_after``.
    """

    __slots__ = (
        "_admin_ok",
        "authorization",
        "client_host",
        "deadline",
        "json_body",
        "origin",
        "rate",
        "retry_after",
        "status",
        "subscriber",
    )

    def __init__(
        self,
        client_host: str | None = None,
        authorization: bytes | None = None,
        subscriber: SubscriberConnection | None = None,
    ) -> None:
        self.client_host = client_host
        self.authorization = authorization
        self.subscriber = subscriber  # set on WebSocket connections only
        self._admin_ok: bool | None = None
        self.rate: Callable[[int], float | None] | None = None
        self.deadline: float | None = None
        self.json_body = True
        self.origin: str | None = None
        self.status: int | None = None
        self.retry_after: float | None = None


# --------------------------------------------------------------------------- metrics
class RpcMetrics:
    """``rpc_request_seconds{method}`` and ``rpc_requests_total{method,outcome}``.

    Labels are only ever registered method names, built-in names or "unknown",
    so cardinality is bounded by the registry.
    """

    BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

    def __init__(self, registry: CollectorRegistry) -> None:
        from prometheus_client import Counter, Histogram

        self.seconds = Histogram(
            "rpc_request_seconds",
            "JSON-RPC request handling time in seconds, by method",
            ["method"],
            registry=registry,
            buckets=self.BUCKETS,
        )
        self.total = Counter(
            "rpc_requests_total",
            "JSON-RPC requests, by method and outcome (ok/error)",
            ["method", "outcome"],
            registry=registry,
        )
        self._children: dict[str, tuple[Any, Any, Any]] = {}

    def record(self, label: str, ok: bool, seconds: float) -> None:
        c = self._children.get(label)
        if c is None:
            c = self._children[label] = (
                self.seconds.labels(label),
                self.total.labels(label, "ok"),
                self.total.labels(label, "error"),
            )
        c[0].observe(seconds)
        (c[1] if ok else c[2]).inc()


# --------------------------------------------------------------------------- dispatcher
_NOTIFICATION = object()  # marker: request had no "id" member


def _error_response(rid: Any, code: int, message: str, data: Any = None) -> str:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    try:
        return _encode({"jsonrpc": "2.0", "id": rid, "error": err})
    except _ENCODE_ERRORS:
        log.error("unserialisable error data for code %s; dropping data", code)
        return _encode({"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}})


_PARSE_ERROR_RESPONSE = _error_response(None, PARSE_ERROR, "parse error")
_EMPTY_BATCH_RESPONSE = _error_response(None, INVALID_REQUEST, "invalid request: empty batch")
_BATCH_TOO_LARGE_RESPONSE = _error_response(None, INVALID_REQUEST, "batch too large")
_NOT_OBJECT_RESPONSE = _error_response(None, INVALID_REQUEST, "invalid request: expected a JSON object")
_BAD_ID_RESPONSE = _error_response(
    None, INVALID_REQUEST, "invalid request: 'id' must be a string, number or null"
)
REQUEST_TOO_LARGE_RESPONSE = _error_response(None, INVALID_REQUEST, "request too large")



def positional_params(method: str, names: list[str], values: list) -> dict:
    """By-position params (``"params": [...]``, in the order of the method's documented params) as the
    by-name object; more values than documented params is -32602 (so the array is bounded like an object).
    A ``null`` stands for an absent optional param (as by name)."""
    if len(values) > len(names):
        if not names:
            raise RpcError(INVALID_PARAMS, f"invalid params: {method[:100]} takes no params, got {len(values)}")
        raise RpcError(
            INVALID_PARAMS,
            f"invalid params: too many positional params: {method[:100]} takes at most {len(names)} "
            f"({', '.join(names)}), got {len(values)}",
        )
    return dict(zip(names, values, strict=False))


class Dispatcher:
    """Parses, validates and executes JSON-RPC payloads; returns the encoded response.

    ``openrpc`` is a zero-argument callable returning the ``rpc.discover`` document.
    """

    def __init__(
        self,
        registry: MethodRegistry,
        *,
        max_batch: int = 1000,
        admin_enabled: bool = False,
        admin_token: str | None = None,
        metrics: RpcMetrics | None = None,
        openrpc: Callable[[], dict] | None = None,
        admin_loopback: bool = True,
        state_changing: Iterable[str] = STATE_CHANGING,
    ) -> None:
        self.registry = registry
        self.max_batch = max_batch
        self.admin_enabled = admin_enabled
        self.admin_loopback = admin_loopback
        self._admin_header = ("Bearer " + admin_token).encode() if admin_token else None
        self.metrics = metrics
        self._openrpc = openrpc
        self._methods = registry._methods  # live view, read on every call
        self.state_changing = frozenset(state_changing)
        #: Refused calls by reason (rate_limited, timeout, content_type): ``rpc_refusals_total``.
        self.refusals: Counter[str] = Counter()

    # -- entry point ----------------------------------------------------------
    async def handle(self, payload: bytes | str, ctx: CallContext) -> str | None:
        """Handle one HTTP body / WebSocket message; None means "send nothing"."""
        rate = ctx.rate
        if rate is not None:  # one token before parsing anything: a refused flood costs no JSON decode
            wait = rate(1)
            if wait is not None:
                return self._rate_limited(ctx, wait)
        try:
            if type(payload) is not str:
                payload = payload.decode("utf-8")
            req = _decode(payload)
        except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, NaN
            self._record_unknown_error()
            return _PARSE_ERROR_RESPONSE
        if type(req) is list:
            if not req:
                self._record_unknown_error()
                return _EMPTY_BATCH_RESPONSE
            if len(req) > self.max_batch:
                self._record_unknown_error()
                return _BATCH_TOO_LARGE_RESPONSE
            if rate is not None and len(req) > 1:  # a batch costs one token per call, taken all at once
                rate(-1)  # the token taken before parsing
                wait = rate(len(req))
                if wait is not None:  # refused: nothing is taken
                    return self._rate_limited(ctx, wait)
            parts = []
            for item in req:
                r = await self.call(item, ctx)
                if r is not None:
                    parts.append(r)
            if not parts:
                return None
            return "[" + ",".join(parts) + "]"
        return await self.call(req, ctx)

    def _record_unknown_error(self) -> None:
        if self.metrics is not None:
            self.metrics.record("unknown", False, 0.0)

    def _rate_limited(self, ctx: CallContext, wait: float) -> str:
        self.refusals["rate_limited"] += 1
        self._record_unknown_error()
        retry_ms = max(1, int(wait * 1000 + 0.999))
        ctx.status = 429
        ctx.retry_after = wait
        return _error_response(
            None,
            BUSY,
            f"rate limited: too many requests from this address; retry in {retry_ms} ms",
            {"reason": "rate_limited", "retry_after_ms": retry_ms},
        )

    # -- one request object ---------------------------------------------------
    async def call(self, req: Any, ctx: CallContext) -> str | None:
        """Execute one decoded request object; returns the encoded response or None."""
        start = time.perf_counter()
        label = "unknown"
        ok = False
        try:
            if type(req) is not dict:
                return _NOT_OBJECT_RESPONSE
            rid = req.get("id", _NOTIFICATION)
            if rid is not _NOTIFICATION and rid is not None:
                t = type(rid)
                if t is not str and t is not int and t is not float:
                    return _BAD_ID_RESPONSE
                if t is float and not math.isfinite(rid):  # 1e400 parses as inf: no response could carry it
                    return _BAD_ID_RESPONSE
            reply_id = None if rid is _NOTIFICATION else rid
            if req.get("jsonrpc") != "2.0":
                return _error_response(
                    reply_id, INVALID_REQUEST, "invalid request: 'jsonrpc' must be \"2.0\""
                )
            name = req.get("method")
            if type(name) is not str:
                return _error_response(
                    reply_id, INVALID_REQUEST, "invalid request: 'method' must be a string"
                )
            method = self._methods.get(name)
            if method is None and name not in BUILTIN_METHODS:  # whatever its params
                if rid is _NOTIFICATION:
                    return None
                return _error_response(rid, METHOD_NOT_FOUND, f"method not found: {name[:100]!r}")
            params = req.get("params")
            if params is None:  # absent (or null) means no params
                params = {}
            elif type(params) is not dict and type(params) is not list:
                return _error_response(
                    reply_id, INVALID_REQUEST, "invalid request: 'params' must be an object or an array"
                )
            try:
                if method is not None:
                    label = name
                    if method.admin:
                        self._check_admin(ctx)
                    if not ctx.json_body and (method.admin or name in self.state_changing):
                        self.refusals["content_type"] += 1
                        refusal = Refusal(
                            "content_type",
                            f"{name} changes state: send it with 'Content-Type: application/json'",
                        )
                        raise RpcError(refusal.code, refusal.message, refusal.data())
                    if type(params) is list:
                        params = positional_params(name, [p.name for p in method.params], params)
                    kwargs = method.validate(params)
                    deadline = ctx.deadline
                    if deadline is None:
                        result = await self._invoke(method, kwargs)
                    else:
                        with trio.CancelScope(deadline=deadline) as scope:
                            result = await self._invoke(method, kwargs)
                        if scope.cancelled_caught:
                            self.refusals["timeout"] += 1
                            raise RpcError(
                                BUSY, f"request timed out: {name} did not finish in time", {"reason": "timeout"}
                            )
                elif name in BUILTIN_METHODS:
                    label = name
                    result = self._builtin(name, params, ctx)
                else:
                    raise RpcError(METHOD_NOT_FOUND, f"method not found: {name[:100]!r}")
            except RpcError as e:
                if rid is _NOTIFICATION:
                    return None
                return _error_response(rid, e.code, e.message, e.data)
            except Exception:
                log.exception("internal error in JSON-RPC method %r", name)
                if rid is _NOTIFICATION:
                    return None
                return _error_response(rid, INTERNAL_ERROR, "internal error")
            if rid is _NOTIFICATION:
                ok = True
                return None
            try:
                out = _encode({"jsonrpc": "2.0", "id": rid, "result": result})
            except _ENCODE_ERRORS:
                log.exception("result of JSON-RPC method %r is not JSON-serialisable", name)
                return _error_response(rid, INTERNAL_ERROR, "internal error")
            ok = True
            return out
        finally:
            if self.metrics is not None:
                self.metrics.record(label, ok, time.perf_counter() - start)

    @staticmethod
    async def _invoke(method: Method, kwargs: dict) -> Any:
        if method.is_async:
            return await method.handler(**kwargs)
        result = method.handler(**kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result

    # -- admin ----------------------------------------------------------------
    def _check_admin(self, ctx: CallContext) -> None:
        if not self.admin_enabled:
            raise RpcError(UNAUTHORIZED, "admin methods are disabled")
        allowed = ctx._admin_ok
        if allowed is None:
            # A browser (Origin header) never gets the loopback exemption: any page can reach 127.0.0.1.
            trusted_loopback = self.admin_loopback and ctx.origin is None and is_loopback(ctx.client_host)
            allowed = trusted_loopback or (
                self._admin_header is not None
                and ctx.authorization is not None
                and hmac.compare_digest(ctx.authorization, self._admin_header)
            )
            ctx._admin_ok = allowed
        if not allowed:
            where = "off loopback" if self.admin_loopback else "(rpc.admin_loopback is off)"
            raise RpcError(
                UNAUTHORIZED,
                f"unauthorized: admin methods need 'Authorization: Bearer <token>' {where}",
                {"reason": "unauthorized"},
            )

    # -- built-ins ------------------------------------------------------------
    def _builtin(self, name: str, params: dict | list, ctx: CallContext) -> Any:
        if name == "rpc.discover":
            if params:
                if type(params) is list:
                    positional_params(name, [], params)
                raise RpcError(
                    INVALID_PARAMS, f"invalid params: unknown parameter {str(next(iter(params)))[:64]!r}"
                )
            if self._openrpc is None:
                raise RpcError(METHOD_NOT_FOUND, "method not found: 'rpc.discover'")
            return self._openrpc()
        sub = ctx.subscriber
        if sub is None:
            raise RpcError(METHOD_NOT_FOUND, f"method {name!r} is only available over WebSocket (/ws)")
        if name == "subscribe":
            if type(params) is list:  # [topic] or [topic, {filter params}] (like eth_subscribe)
                if len(params) == 2 and type(params[1]) is not dict:
                    raise RpcError(
                        INVALID_PARAMS,
                        "invalid params: the second positional param of subscribe must be an object "
                        "of the topic's filter params",
                    )
                values = positional_params(name, ["topic", "filter"], params)
                params = {**values.get("filter", {}), "topic": values.get("topic")} if values else {}
            return sub.subscribe(params)
        if type(params) is list:
            params = positional_params(name, ["subscription"], params)
        return sub.unsubscribe(params)


def make_openrpc_provider(
    registry: MethodRegistry,
    hub: SubscriptionHub | None,
    *,
    title: str,
    version: str,
    include_admin: bool,
) -> Callable[[], dict]:
    """A cached ``rpc.discover`` document builder (rebuilt when methods/topics change)."""
    from rpc.openrpc import build_openrpc

    cache: list[Any] = [None, None]

    def provider() -> dict:
        key = (registry._version, hub._version if hub is not None else 0)
        if cache[0] != key:
            cache[1] = build_openrpc(registry, hub, title=title, version=version, include_admin=include_admin)
            cache[0] = key
        return cache[1]

    return provider
