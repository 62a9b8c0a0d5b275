"""JSON-RPC methods of proof of stake (``staking_*``) and ``chain_getSupply``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from state import market_views as mv
from state import staking_views as sv

from .errors import RpcError
from .jsonrpc import MethodRegistry
from .methods import _pubkey
from .params import Param
from .subscriptions import SubscriptionHub

if TYPE_CHECKING:
    from .node_api import NodeApi

OBJ = {"type": "object"}
ADDRESS = {"type": "string", "format": "address"}


def _addr(address: str, name: str) -> str:
    _pubkey(address, name)  # -32602 naming the param if it is not a valid address
    return address


def register_staking_methods(reg: MethodRegistry, hub: SubscriptionHub, node: NodeApi) -> None:
    chain = node.chain
    params = node.genesis.params.staking
    get = chain.get_object

    def scan(prefix: bytes):
        return node.scan_objects(prefix)

    @reg.method(
        "staking_getValidators",
        params=[Param("status", {"type": "string", "enum": ["active", "inactive", "jailed", "tombstoned"]},
                      required=False)],
        summary="Staked validators: status, power, tokens, commission, jail, missed blocks; and the active set",
        result=OBJ,
    )
    async def staking_get_validators(status: str | None = None) -> dict:
        h = chain.head.height
        return {
            "height": h,
            "validators": sv.get_validators(get, params=params, height=h, status=status),
            "active_set": sv.active_set(get, height=h),
        }

    @reg.method("staking_getValidator", params=[Param("address", ADDRESS, description="operator address")],
                summary="One staked validator", result=OBJ)
    async def staking_get_validator(address: str) -> dict:
        v = sv.get_validator(get, _addr(address, "address"), params=params, height=chain.head.height)
        if v is None:
            raise RpcError(RpcError.NOT_FOUND, "validator not found", {"address": address})
        return v

    @reg.method(
        "staking_getDelegations",
        params=[Param("delegator", ADDRESS, required=False), Param("validator", ADDRESS, required=False)],
        summary="Delegations (amount, pending rewards) of a delegator or to a validator",
        result=OBJ,
    )
    async def staking_get_delegations(delegator: str | None = None, validator: str | None = None) -> dict:
        if (delegator is None) == (validator is None):
            raise RpcError(RpcError.INVALID_PARAMS, "invalid params: give exactly one of 'delegator' or 'validator'")
        items = sv.get_delegations(
            get,
            scan,
            delegator=_addr(delegator, "delegator") if delegator else None,
            validator=_addr(validator, "validator") if validator else None,
        )
        return {"delegations": items}

    @reg.method("staking_getUnbonding", params=[Param("delegator", ADDRESS)],
                summary="Pending unbonding (and redelegation) entries of a delegator", result=OBJ)
    async def staking_get_unbonding(delegator: str) -> dict:
        d = _addr(delegator, "delegator")
        return {
            "unbonding": sv.get_unbonding(get, scan, delegator=d),
            "redelegations": sv.get_redelegations(get, scan, delegator=d),
        }

    @reg.method("staking_getParams", summary="Staking parameters from genesis", result=OBJ)
    async def staking_get_params() -> dict:
        return {"consensus": node.genesis.consensus, **sv.params_view(params)}

    @reg.method("chain_getSupply", summary="Total supply and where it is: balances, bonded, escrow, ...",
                result=OBJ)
    async def chain_get_supply() -> dict:
        market = mv.market_stats(scan)
        locked = (
            int(market["escrow_locked"]) + int(market["bonds_locked"]) + int(market["availability_bonds_locked"])
            + int(market["dispute_bonds_locked"]) + int(market["sealed_deposits_locked"])
        )
        out = sv.supply_view(get, other_locked=locked)
        out["market_escrow"] = market["escrow_locked"]
        out["miner_bonds"] = market["bonds_locked"]
        out["availability_bonds"] = market["availability_bonds_locked"]
        out["dispute_bonds"] = market["dispute_bonds_locked"]
        out["sealed_deposits"] = market["sealed_deposits_locked"]
        out["height"] = chain.head.height
        return out

    hub.register_topic("validatorSet", summary="Validator set changes (effective height, validators, powers)")
    hub.register_topic("slashes", summary="Evidence, slashes, jailing and unjailing of validators")
    hub.register_topic("staking", summary="Other staking events: validators created, unbonding completed, ...")
