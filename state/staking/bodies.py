"""Transaction body builders for the staking transactions (CLI, tests, benches). Keys may be given as
32 raw bytes or as ``ait1…`` addresses; the result is the body dict ``Transaction.create`` signs."""

from __future__ import annotations

from typing import Any

from state.address import decode_address


def _pk(value: bytes | str) -> bytes:
    """A public key given as 32 bytes or as an ``ait1…`` address."""
    if isinstance(value, str):
        return decode_address(value)
    if type(value) is not bytes or len(value) != 32:
        raise ValueError("expected a 32-byte public key or an ait1… address")
    return value


def validator_create_body(consensus_key: bytes | str, commission_bps: int, self_bond: int, moniker: str = "") -> dict:
    return {
        "consensus_key": _pk(consensus_key),
        "commission_bps": commission_bps,
        "self_bond": self_bond,
        "moniker": moniker,
    }


def validator_edit_body(*, commission_bps: int | None = None, moniker: str | None = None) -> dict:
    body: dict[str, Any] = {}
    if commission_bps is not None:
        body["commission_bps"] = commission_bps
    if moniker is not None:
        body["moniker"] = moniker
    return body


def delegate_body(validator: bytes | str, amount: int) -> dict:
    return {"validator": _pk(validator), "amount": amount}


def undelegate_body(validator: bytes | str, amount: int) -> dict:
    return {"validator": _pk(validator), "amount": amount}


def redelegate_body(src: bytes | str, dst: bytes | str, amount: int) -> dict:
    return {"from": _pk(src), "to": _pk(dst), "amount": amount}


def unjail_body() -> dict:
    return {}


def withdraw_rewards_body(validator: bytes | str | None = None) -> dict:
    return {} if validator is None else {"validator": _pk(validator)}
