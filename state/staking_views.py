"""Read side of staking for RPC, metrics and the CLI: JSON-ready views of the staking objects, and
transaction body builders.

Every view takes ``get_object(key) -> bytes | None`` and, where it lists, ``scan(prefix) -> Iterator[(key,
value)]`` over committed objects in key order (the lead's store supplies both). Results are snake_case
dicts: public keys as ``ait1…`` addresses, amounts (and shares) as decimal strings, heights and counts
as ints. ``height`` arguments name the head height: a validator is ``active`` when it is in the set
that votes on ``height + 1`` (by default: in the latest installed set, which may start at head + 2).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

import cbor2

from .address import encode_address
from .machine import SUPPLY_KEY
from .params import StakingParams
from .staking.bodies import (  # noqa: F401  (re-exported for the CLI and tests)
    _pk,
    delegate_body,
    redelegate_body,
    undelegate_body,
    unjail_body,
    validator_create_body,
    validator_edit_body,
    withdraw_rewards_body,
)
from .staking.model import (
    K_INDEX,
    K_SETS,
    P_DELEG_BY_VAL,
    P_DELEGATION,
    P_REDEL_BY_DEL,
    P_UNBOND_BY_DEL,
    Delegation,
    Redelegation,
    Unbonding,
    Validator,
    k_delegation,
    k_redelegation,
    k_unbonding,
    k_validator,
    load_totals,
    set_at,
)

GetObject = Callable[[bytes], bytes | None]
Scan = Callable[[bytes], Iterator[tuple[bytes, bytes]]]


# validator set ---------------------------------------------------------------------------------------


def _current_set(get_object: GetObject, height: int | None) -> list:
    raw = get_object(K_SETS)
    if raw is None:
        return []
    sets = cbor2.loads(raw)
    if not sets:
        return []
    if height is None:
        return sets[-1][1]
    return set_at(sets, height + 1) or []


def active_set(get_object: GetObject, *, height: int | None = None) -> list[dict]:
    """The validator set (staked validators and hybrid authorities) voting on ``height + 1``:
    ``[{address (consensus key), operator (null for an authority), power}]``. Empty on a PoA chain."""
    return [
        {"address": encode_address(ck), "operator": encode_address(op) if op else None, "power": pw}
        for ck, pw, op in _current_set(get_object, height)
    ]


# validators --------------------------------------------------------------------------------------


def validator_view(v: Validator, params: StakingParams, active_power: int | None) -> dict:
    return {
        "address": encode_address(v.operator),
        "consensus_key": encode_address(v.consensus_key),
        "moniker": v.moniker,
        "status": v.status(active_power is not None),
        "active": active_power is not None,
        "power": active_power if active_power is not None else v.tokens // params.power_unit,
        "tokens": str(v.tokens),
        "shares": str(v.shares),
        "self_bond": str(v.self_bond),
        "min_self_bond": str(v.min_self_bond),
        "commission_bps": v.commission_bps,
        "commission_pending": str(v.commission),
        "rewards_outstanding": str(v.outstanding),
        "jailed": v.jailed,
        "jailed_until": v.jailed_until if v.jailed and not v.tombstoned else None,
        "tombstoned": v.tombstoned,
        "missed_blocks": v.missed,
        "tracked_blocks": v.tracked,
        "signed_blocks_window": params.signed_blocks_window,
        "created_height": v.created,
    }


def _operators(get_object: GetObject) -> list[bytes]:
    raw = get_object(K_INDEX)
    return list(cbor2.loads(raw)) if raw is not None else []


def get_validators(
    get_object: GetObject, *, params: StakingParams, height: int | None = None, status: str | None = None
) -> list[dict]:
    """Every staked validator (optionally only those with ``status`` active/inactive/jailed/tombstoned),
    by voting power then operator."""
    powers = {op: pw for _, pw, op in _current_set(get_object, height) if op}
    out = []
    for op in _operators(get_object):
        raw = get_object(k_validator(op))
        if raw is None:
            continue
        view = validator_view(Validator.decode(raw), params, powers.get(op))
        if status is None or view["status"] == status:
            out.append(view)
    out.sort(key=lambda x: (-int(x["tokens"]), x["address"]))
    return out


def get_validator(
    get_object: GetObject, operator: bytes | str, *, params: StakingParams, height: int | None = None
) -> dict | None:
    op = _pk(operator)
    raw = get_object(k_validator(op))
    if raw is None:
        return None
    powers = {o: pw for _, pw, o in _current_set(get_object, height) if o}
    return validator_view(Validator.decode(raw), params, powers.get(op))


# delegations and entries -------------------------------------------------------------------------


def _delegation_view(get_object: GetObject, delegator: bytes, op: bytes, d: Delegation) -> dict:
    raw = get_object(k_validator(op))
    v = Validator.decode(raw) if raw is not None else None
    return {
        "delegator": encode_address(delegator),
        "validator": encode_address(op),
        "shares": str(d.shares),
        "amount": str(v.value_of(d.shares) if v is not None else 0),
        "rewards": str(v.pending_rewards(d) if v is not None else 0),
    }


def get_delegations(
    get_object: GetObject,
    scan: Scan,
    *,
    delegator: bytes | str | None = None,
    validator: bytes | str | None = None,
    limit: int = 1000,
) -> list[dict]:
    """Delegations of ``delegator`` and/or to ``validator`` (operator), at most ``limit``:
    ``[{delegator, validator, shares, amount (shares in tokens now), rewards (pending)}]``."""
    out: list[dict] = []
    if delegator is not None:
        dk = _pk(delegator)
        if validator is not None:
            op = _pk(validator)
            raw = get_object(k_delegation(dk, op))
            return [_delegation_view(get_object, dk, op, Delegation.decode(raw))] if raw is not None else []
        prefix = P_DELEGATION + dk
        for key, raw in scan(prefix):
            out.append(_delegation_view(get_object, dk, key[len(prefix):], Delegation.decode(raw)))
            if len(out) >= limit:
                break
        return out
    if validator is None:
        raise ValueError("give a delegator or a validator")
    op = _pk(validator)
    prefix = P_DELEG_BY_VAL + op
    for key, _ in scan(prefix):
        dk = key[len(prefix):]
        raw = get_object(k_delegation(dk, op))
        if raw is not None:
            out.append(_delegation_view(get_object, dk, op, Delegation.decode(raw)))
            if len(out) >= limit:
                break
    return out


def get_unbonding(get_object: GetObject, scan: Scan, *, delegator: bytes | str) -> list[dict]:
    """Pending unbonding entries of ``delegator``: ``[{id, delegator, validator, amount, created_height,
    completes_at}]`` (paid at the end of block ``completes_at``)."""
    dk = _pk(delegator)
    prefix = P_UNBOND_BY_DEL + dk
    out = []
    for key, _ in scan(prefix):
        eid = int.from_bytes(key[len(prefix):], "big")
        raw = get_object(k_unbonding(eid))
        if raw is None:
            continue
        e = Unbonding.decode(raw)
        out.append({
            "id": eid,
            "delegator": encode_address(e.delegator),
            "validator": encode_address(e.validator),
            "amount": str(e.amount),
            "created_height": e.created,
            "completes_at": e.completes_at,
        })
    return out


def get_redelegations(get_object: GetObject, scan: Scan, *, delegator: bytes | str) -> list[dict]:
    """Pending redelegations of ``delegator`` (still slashable for faults of the source validator)."""
    dk = _pk(delegator)
    prefix = P_REDEL_BY_DEL + dk
    out = []
    for key, _ in scan(prefix):
        eid = int.from_bytes(key[len(prefix):], "big")
        raw = get_object(k_redelegation(eid))
        if raw is None:
            continue
        r = Redelegation.decode(raw)
        out.append({
            "id": eid,
            "delegator": encode_address(r.delegator),
            "from": encode_address(r.src),
            "to": encode_address(r.dst),
            "amount": str(r.amount),
            "created_height": r.created,
            "completes_at": r.completes_at,
        })
    return out


# params, supply, metrics -------------------------------------------------------------------------


def params_view(params: StakingParams) -> dict:
    """``staking_getParams``: every field; base-unit amounts as decimal strings."""
    out: dict[str, Any] = asdict(params)
    for name in ("min_self_bond", "power_unit", "block_reward"):
        out[name] = str(out[name])
    return out


def supply_view(get_object: GetObject, *, other_locked: int = 0) -> dict:
    """``chain_getSupply``: the recorded total and where it is. ``circulating`` = account balances =
    total - staking (bonded + unbonding + rewards_pending + community_pool) - ``other_locked`` (what
    other modules hold, e.g. market escrow and miner bonds, supplied by the caller)."""
    raw = get_object(SUPPLY_KEY)
    total = cbor2.loads(raw) if raw is not None else 0
    t = load_totals(get_object)
    return {
        "total": str(total),
        "bonded": str(t.bonded),
        "unbonding": str(t.unbonding),
        "rewards_pending": str(t.rewards),
        "community_pool": str(t.community_pool),
        "other_locked": str(other_locked),
        "circulating": str(total - t.locked - other_locked),
    }


def metrics_view(get_object: GetObject, *, params: StakingParams, height: int | None = None) -> dict:
    """Figures for Prometheus: bonded total, active validators, jailed and tombstoned counts, missed
    blocks in the window per active staked validator and whether each active or jailed (not tombstoned)
    validator is jailed (by consensus key address)."""
    t = load_totals(get_object)
    cur = _current_set(get_object, height)
    missed: dict[str, int] = {}
    jailed_by_key: dict[str, bool] = {}  # active or jailed (not tombstoned) validators -> jailed
    jailed = tombstoned = total = 0
    active_ops = {op for _, _, op in cur if op}
    for op in _operators(get_object):
        raw = get_object(k_validator(op))
        if raw is None:
            continue
        v = Validator.decode(raw)
        total += 1
        jailed += v.jailed and not v.tombstoned
        tombstoned += v.tombstoned
        if op in active_ops:
            missed[encode_address(v.consensus_key)] = v.missed
        if (op in active_ops or v.jailed) and not v.tombstoned:
            jailed_by_key[encode_address(v.consensus_key)] = bool(v.jailed)
    return {
        "bonded": str(t.bonded),
        "unbonding": str(t.unbonding),
        "rewards_pending": str(t.rewards),
        "community_pool": str(t.community_pool),
        "active_validators": len(cur),
        "active_power": sum(pw for _, pw, _ in cur),
        "validators": total,
        "jailed": jailed,
        "tombstoned": tombstoned,
        "missed_blocks": missed,
        "jailed_validators": jailed_by_key,
        "signed_blocks_window": params.signed_blocks_window,
    }
