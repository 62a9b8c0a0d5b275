"""JSON-RPC 2.0 error codes and the :class:`RpcError` exception (re-exported by ``rpc.jsonrpc``)."""

from __future__ import annotations

from typing import Any

__all__ = [
    "BUSY",
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "NOT_FOUND",
    "PARSE_ERROR",
    "SERVER_ERROR",
    "TX_REJECTED",
    "UNAUTHORIZED",
    "RpcError",
]

# Standard codes (JSON-RPC 2.0 section 5.1).
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

# Implementation-defined server errors (-32000 .. -32099).
SERVER_ERROR = -32000
UNAUTHORIZED = -32001
NOT_FOUND = -32004
BUSY = -32005
TX_REJECTED = -32010


class RpcError(Exception):
    """An error reported to the client as a JSON-RPC error object.

    Raise it from a handler to answer with ``{"code": code, "message": message,
    "data": data}`` (``data`` omitted when None; it must be JSON-serialisable).
    """

    PARSE_ERROR = PARSE_ERROR
    INVALID_REQUEST = INVALID_REQUEST
    METHOD_NOT_FOUND = METHOD_NOT_FOUND
    INVALID_PARAMS = INVALID_PARAMS
    INTERNAL_ERROR = INTERNAL_ERROR
    SERVER_ERROR = SERVER_ERROR
    UNAUTHORIZED = UNAUTHORIZED
    NOT_FOUND = NOT_FOUND
    BUSY = BUSY
    TX_REJECTED = TX_REJECTED

    def __init__(self, code: int, message: str, data: Any | None = None) -> None:
        if type(code) is not int:
            raise TypeError("RpcError code must be an int")
        super().__init__(code, message, data)
        self.code = code
        self.message = str(message)
        self.data = data

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"

    def __repr__(self) -> str:
        return f"RpcError({self.code!r}, {self.message!r}, {self.data!r})"

    def to_dict(self) -> dict:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            err["data"] = self.data
        return err
