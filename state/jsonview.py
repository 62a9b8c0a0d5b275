"""JSON views of CBOR bodies for RPC: bytes become 0x-hex, 32-byte keys named like accounts become
addresses, amounts become decimal strings."""

from __future__ import annotations

from typing import Any

from .address import encode_address

_ADDRESS_FIELDS = {"to", "from", "validator", "miner", "client", "provider", "delegator", "consensus_key"}
_AMOUNT_FIELDS = {"amount", "fee", "bond", "add_bond", "self_bond", "max_price", "price", "unit_price", "stake"}


def value_to_json(key: str, value: Any) -> Any:
    if isinstance(value, bytes):
        if key in _ADDRESS_FIELDS and len(value) == 32:
            return encode_address(value)
        return "0x" + value.hex()
    if isinstance(value, int) and not isinstance(value, bool) and key in _AMOUNT_FIELDS:
        return str(value)
    if isinstance(value, dict):
        return {k: value_to_json(k, v) for k, v in value.items()}
    if isinstance(value, list):
        return [value_to_json(key, v) for v in value]
    return value


def body_to_json(tx_type: str, body: dict) -> dict:
    return {k: value_to_json(k, v) for k, v in body.items()}
