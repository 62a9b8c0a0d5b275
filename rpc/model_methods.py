"""JSON-RPC methods of registered models (``market_getModel``, ``market_listModels``,
``market_getModelChunk``) and the node's model pins (``admin_pinModel``, ``admin_unpinModel``).

Errors: -32004 for an unknown model (``data.reason`` ``unknown_model``), -32602 for a chunk index out of
range, -32012 when the model's data cannot be obtained or does not verify (``data.reason``
``index_unavailable``, ``chunk_unavailable``, ``bad_index``, ``bad_chunk``) or a pin limit (``pin_limit``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from state.market import models as mm

from .errors import RpcError
from .jsonrpc import MethodRegistry
from .node_api import ModelAccessError
from .params import Param

if TYPE_CHECKING:
    from .node_api import ModelApi, NodeApi

OBJ = {"type": "object"}
MODEL_REF = {"type": "string", "minLength": 1, "maxLength": 66}
MODEL_ERROR = -32012  # a model's index or chunks unavailable or not verifying; pin limit (data.reason)


def register_model_methods(reg: MethodRegistry, node: NodeApi) -> None:
    get = node.chain.get_object

    def service() -> ModelApi:
        return node.models

    def need(model: str) -> mm.Model:
        m = service().find(model)
        if m is None:
            raise RpcError(RpcError.NOT_FOUND, "model not found", {"id": model, "reason": "unknown_model"})
        return m

    def model_error(exc: Exception) -> RpcError:
        reason = getattr(exc, "reason", "model")
        if reason == "bad_chunk_index":
            return RpcError(RpcError.INVALID_PARAMS, f"invalid params: 'index': {exc}")
        if reason == "unknown_model":
            return RpcError(RpcError.NOT_FOUND, str(exc), {"reason": reason})
        return RpcError(MODEL_ERROR, str(exc), {"reason": reason})

    @reg.method(
        "market_getModel",
        params=[Param("model", MODEL_REF, description="model id (0x-hex) or name")],
        summary="A registered model: manifest (format, arch, size, chunk_size, root, index, tokenizer, licence), "
        "owner, height, fee; local: pinned and chunks present on this node",
        result=OBJ,
    )
    async def market_get_model(model: str) -> dict:
        m = need(model)
        local = await trio.to_thread.run_sync(service().status, m)  # stats every chunk's file
        return {**mm.model_json(m), "local": local}

    @reg.method(
        "market_listModels",
        params=[
            Param("cursor", {"type": "string", "maxLength": 20}, required=False,
                  description="next_cursor of the previous page"),
            Param("limit", {"type": "integer", "minimum": 1, "maximum": mm.MAX_LIST_LIMIT}, required=False),
        ],
        summary="Registered models in registration order; pages with cursor",
        result=OBJ,
    )
    async def market_list_models(cursor: str | None = None, limit: int = 50) -> dict:
        try:
            items, nxt = mm.list_models(get, cursor, limit)
        except ValueError as exc:
            raise RpcError(RpcError.INVALID_PARAMS, f"invalid params: 'cursor': {exc}") from None
        return {"models": [mm.model_json(m) for m in items], "next_cursor": nxt,
                "total": mm.load_stats(get).models}

    @reg.method(
        "market_getModelChunk",
        params=[
            Param("model", MODEL_REF, description="model id (0x-hex) or name"),
            Param("index", {"type": "integer", "minimum": 0, "maximum": mm.MAX_CHUNKS}),
        ],
        summary="Chunk `index` of a model file with its Merkle proof against the manifest's root, from this "
        "node or fetched from peers and verified (-32012 + data.reason when unavailable)",
        result=OBJ,
    )
    async def market_get_model_chunk(model: str, index: int) -> dict:
        m = need(model)
        try:
            data, proof = await service().chunk(m, index)
        except ModelAccessError as exc:
            raise model_error(exc) from None
        return {
            "model_id": "0x" + m.model_id.hex(),
            "index": index,
            "chunks": m.chunk_count,
            "size": len(data),
            "root": "0x" + m.manifest["root"].hex(),
            "data": "0x" + data.hex(),
            "proof": ["0x" + h.hex() for h in proof],
        }

    @reg.method(
        "admin_pinModel",
        admin=True,
        params=[Param("model", MODEL_REF, description="model id (0x-hex) or name")],
        summary="Admin: keep a model on this node: its chunks are fetched from peers (verified, resumable) "
        "and kept from garbage collection; → the local status",
        result=OBJ,
    )
    async def admin_pin_model(model: str) -> dict:
        m = need(model)
        try:
            st = service().pin(m)
        except ModelAccessError as exc:
            raise model_error(exc) from None
        return {"model_id": "0x" + m.model_id.hex(), "name": m.name, **st}

    @reg.method(
        "admin_unpinModel",
        admin=True,
        params=[Param("model", MODEL_REF, description="model id (0x-hex) or name")],
        summary="Admin: stop keeping a model (its chunks are collected after blobs.retain_s)",
        result=OBJ,
    )
    async def admin_unpin_model(model: str) -> dict:
        m = need(model)
        return {"model_id": "0x" + m.model_id.hex(), "name": m.name, **service().unpin(m)}
