"""A small synchronous JSON-RPC client for the CLI and scripts."""

from __future__ import annotations

import itertools
from typing import Any

import httpx

from state.errors import AitbcError


class RpcClientError(AitbcError):
    reason = "rpc"

    def __init__(self, message: str, code: int | None = None, data: Any = None) -> None:
        reason = data.get("reason") if isinstance(data, dict) and isinstance(data.get("reason"), str) else None
        super().__init__(message, reason)
        self.code = code
        self.data = data


class RpcClient:
    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url
        self._client = httpx.Client(timeout=timeout)
        self._ids = itertools.count(1)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RpcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, **params: Any) -> Any:
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
        try:
            resp = self._client.post(self.url, json=body)
        except httpx.HTTPError as exc:
            err = RpcClientError(f"cannot reach the node at {self.url}: {exc or type(exc).__name__} (is it running? "
                                 "see --rpc, $AITBC_RPC_URL, --home)")
            err.reason = "unreachable"
            raise err from None
        try:
            obj = resp.json()
        except ValueError:
            raise RpcClientError(f"the node at {self.url} answered HTTP {resp.status_code} without JSON "
                                 "(not an aitbc-peer JSON-RPC URL?)") from None
        if not isinstance(obj, dict):
            raise RpcClientError(f"the node at {self.url} answered an unexpected JSON value")
        if "error" in obj:
            err = obj["error"]
            raise RpcClientError(err.get("message", "error"), err.get("code"), err.get("data"))
        return obj["result"]
