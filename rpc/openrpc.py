"""OpenRPC 1.2.6 document generation for ``rpc.discover``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rpc.params import Param, schema_for_openrpc
from rpc.schemas import ERROR_OBJECTS, errors_for

if TYPE_CHECKING:
    from rpc.jsonrpc import MethodRegistry
    from rpc.subscriptions import SubscriptionHub

__all__ = ["OPENRPC_VERSION", "build_openrpc"]

OPENRPC_VERSION = "1.2.6"


def _param_descriptor(p: Param) -> dict[str, Any]:
    return {
        "name": p.name,
        "required": p.required,
        "schema": schema_for_openrpc(p.schema),
        "description": p.description,
    }


def _result_descriptor(schema: dict | None) -> dict[str, Any]:
    return {"name": "result", "schema": dict(schema) if schema else {}}


def _subscription_methods(hub: SubscriptionHub | None) -> list[dict[str, Any]]:
    topics = hub.topics() if hub is not None else []
    topic_names = [t.name for t in topics]
    topic_lines = []
    x_topics = []
    for t in topics:
        filters = ", ".join(f"{p.name}{'' if p.required else '?'}" for p in t.params) or "no filter params"
        topic_lines.append(f"- {t.name}: {t.summary or '(no summary)'} [{filters}]")
        x_topics.append(
            {"name": t.name, "summary": t.summary, "params": [_param_descriptor(p) for p in t.params]}
        )
    topic_schema: dict[str, Any] = {"type": "string"}
    if topic_names:
        topic_schema["enum"] = topic_names
    ws_tag = [{"name": "websocket", "description": "WebSocket-only (GET /ws)"}]
    subscribe = {
        "name": "subscribe",
        "summary": "WebSocket-only: subscribe to a topic; returns a subscription id",
        "description": (
            "WebSocket-only (connect to /ws). Params by name: 'topic' plus the topic's filter params; or by "
            "position: [topic] or [topic, {filter params}]. "
            'Notifications arrive as {"jsonrpc":"2.0","method":"subscription","params":'
            '{"subscription":id,"topic":topic,"result":payload}}. A connection that does not read '
            "its notifications fast enough is closed with code 1008 'subscriber too slow'.\nTopics:\n"
            + ("\n".join(topic_lines) or "(none registered)")
        ),
        "paramStructure": "either",
        "params": [
            {
                "name": "topic",
                "required": True,
                "schema": topic_schema,
                "description": "Topic name; the topic's filter params (see x-topics) go next to it.",
            }
        ],
        "result": {
            "name": "subscription",
            "schema": {"type": "string", "pattern": "^0x[0-9a-f]{16}$"},
        },
        "errors": errors_for("subscribe"),
        "tags": ws_tag,
        "x-topics": x_topics,
    }
    unsubscribe = {
        "name": "unsubscribe",
        "summary": "WebSocket-only: cancel a subscription made on the same connection",
        "description": "WebSocket-only (connect to /ws). Returns true if the subscription existed.",
        "paramStructure": "either",
        "params": [
            {
                "name": "subscription",
                "required": True,
                "schema": {"type": "string"},
                "description": "Id returned by subscribe.",
            }
        ],
        "result": {"name": "removed", "schema": {"type": "boolean"}},
        "errors": errors_for("unsubscribe"),
        "tags": ws_tag,
    }
    return [subscribe, unsubscribe]


def build_openrpc(
    registry: MethodRegistry,
    hub: SubscriptionHub | None = None,
    *,
    title: str = "aitbc-peer",
    version: str = "0.1.0",
    include_admin: bool = False,
) -> dict[str, Any]:
    """The OpenRPC 1.2.6 document for ``registry`` (+ the WebSocket subscription methods).

    Admin methods are listed (tagged "admin") only when ``include_admin``.
    """
    methods: list[dict[str, Any]] = []
    for m in sorted(registry.methods(), key=lambda m: m.name):
        if m.admin and not include_admin:
            continue
        entry: dict[str, Any] = {
            "name": m.name,
            "summary": m.summary,
            "paramStructure": "either",
            "params": [_param_descriptor(p) for p in m.params],
            "result": _result_descriptor(m.result),
            "errors": [dict(e) for e in m.errors] or errors_for(m.name, m.admin),
        }
        if m.admin:
            entry["tags"] = [{"name": "admin", "description": "admin method (loopback or bearer token)"}]
        methods.append(entry)
    methods.extend(_subscription_methods(hub))
    return {
        "openrpc": OPENRPC_VERSION,
        "info": {
            "title": title,
            "version": version,
            "description": "JSON-RPC 2.0 at POST /rpc and POST / (batches allowed), and over the WebSocket at "
            "/ws. Params by name (an object) or by position (an array in the order of the method's params; "
            "null for an absent optional param).",
        },
        "methods": methods,
        "components": {"errors": {str(code): dict(e) for code, e in sorted(ERROR_OBJECTS.items(), reverse=True)}},
    }
