"""Staking transactions: static body checks and execution.

Body schemas (CBOR maps, exact key sets; ``bytes32`` = a 32-byte Ed25519 public key):

* ``validator_create {consensus_key: bytes32, commission_bps: int, self_bond: int, moniker: str}``
* ``validator_edit {commission_bps?: int, moniker?: str}`` (at least one)
* ``delegate {validator: bytes32, amount: int}`` / ``undelegate {validator: bytes32, amount: int}``
* ``redelegate {from: bytes32, to: bytes32, amount: int}``
* ``unjail {}``
* ``withdraw_rewards {validator?: bytes32}`` (absent: every delegation of the sender + its commission)

``validator`` / ``from`` / ``to`` name a validator by its OPERATOR public key (the account that sent
``validator_create``); the consensus key is only what signs votes.
"""

from __future__ import annotations

from state.errors import TxError
from state.machine import ExecFailure, Execution, TxKind, register_tx_kind
from state.params import BPS
from state.types import U64_MAX, Transaction

from .core import Session, addr, reset_missed, settle, sweep_if_empty
from .model import (
    KIND_REDELEGATION,
    KIND_UNBONDING,
    MARKER,
    Delegation,
    Redelegation,
    Unbonding,
    Validator,
    decode,
    encode,
    k_consensus,
    k_delegation,
    k_due,
    k_redel_by_del,
    k_redel_in,
    k_redelegation,
    k_unbond_by_del,
    k_unbonding,
)

TX_VALIDATOR_CREATE = "validator_create"
TX_VALIDATOR_EDIT = "validator_edit"
TX_DELEGATE = "delegate"
TX_UNDELEGATE = "undelegate"
TX_REDELEGATE = "redelegate"
TX_UNJAIL = "unjail"
TX_WITHDRAW_REWARDS = "withdraw_rewards"

MAX_MONIKER = 64

# reasons of ExecFailure (tx included, fee charged, body without effect)
REASONS = {
    "staking_disabled": "the chain runs proof of authority: staking transactions have no effect",
    "commission_too_high": "commission_bps above params.staking.max_commission_bps",
    "commission_change_too_large": "commission moves by more than max_commission_change_bps in one edit",
    "commission_change_too_soon": "the commission already changed less than epoch_blocks ago",
    "self_bond_too_low": "self-bond below the validator's minimum (min_self_bond)",
    "validator_exists": "the sender already operates a validator",
    "consensus_key_taken": "another validator uses this consensus key",
    "not_validator": "the sender operates no validator",
    "unknown_validator": "no validator with that operator key",
    "validator_tombstoned": "the validator was tombstoned for double-signing: no new stake",
    "validator_insolvent": "the validator's tokens were slashed to zero while shares remain",
    "amount_too_small": "the amount buys no share of the validator",
    "too_many_delegations": "the sender delegates to max_delegations_per_account validators already",
    "no_delegation": "the sender has no delegation to that validator",
    "insufficient_delegation": "the amount exceeds what the delegation is worth",
    "too_many_unbonding": "the sender has max_unbonding_per_account pending unbonding entries",
    "too_many_redelegations": "the sender has max_unbonding_per_account pending redelegations",
    "redelegation_in_progress": "stake redelegated INTO the source validator may not move again until due",
    "not_jailed": "the validator is not jailed",
    "tombstoned": "a tombstoned validator can never be unjailed",
    "jail_period_not_over": "the jail period has not ended",
    "nothing_to_withdraw": "the sender has no delegation or commission there",
    "insufficient_balance": "the sender cannot pay the bond or delegation",
}


# static checks --------------------------------------------------------------------------------------


def _keys(body: dict, name: str, required: set[str], optional: frozenset[str] = frozenset()) -> None:
    keys = set(body)
    if not (required <= keys <= required | optional):
        want = ", ".join(sorted(required) + [k + "?" for k in sorted(optional)])
        raise TxError(f"{name} body must be exactly {{{want}}}", "invalid_body")


def _pk(body: dict, key: str, name: str) -> None:
    v = body[key]
    if type(v) is not bytes or len(v) != 32:
        raise TxError(f"{name} '{key}' must be a 32-byte public key", "invalid_body")


def _amount(body: dict, key: str, name: str) -> None:
    v = body[key]
    if type(v) is not int or not (0 < v <= U64_MAX):
        raise TxError(f"{name} '{key}' must be a positive integer of base units", "invalid_body")


def _bps(body: dict, key: str, name: str) -> None:
    v = body[key]
    if type(v) is not int or not (0 <= v <= BPS):
        raise TxError(f"{name} '{key}' must be an integer from 0 to {BPS} (basis points)", "invalid_body")


def _moniker(body: dict, name: str) -> None:
    v = body["moniker"]
    if type(v) is not str or len(v) > MAX_MONIKER or not v.isprintable():
        raise TxError(f"{name} 'moniker' must be printable text of at most {MAX_MONIKER} chars", "invalid_body")


def check_validator_create(body: dict) -> None:
    n = TX_VALIDATOR_CREATE
    _keys(body, n, {"consensus_key", "commission_bps", "self_bond", "moniker"})
    _pk(body, "consensus_key", n)
    _bps(body, "commission_bps", n)
    _amount(body, "self_bond", n)
    _moniker(body, n)


def check_validator_edit(body: dict) -> None:
    n = TX_VALIDATOR_EDIT
    _keys(body, n, set(), frozenset({"commission_bps", "moniker"}))
    if not body:
        raise TxError("validator_edit needs commission_bps or moniker", "invalid_body")
    if "commission_bps" in body:
        _bps(body, "commission_bps", n)
    if "moniker" in body:
        _moniker(body, n)


def check_delegate(body: dict, name: str = TX_DELEGATE) -> None:
    _keys(body, name, {"validator", "amount"})
    _pk(body, "validator", name)
    _amount(body, "amount", name)


def check_undelegate(body: dict) -> None:
    check_delegate(body, TX_UNDELEGATE)


def check_redelegate(body: dict) -> None:
    n = TX_REDELEGATE
    _keys(body, n, {"from", "to", "amount"})
    _pk(body, "from", n)
    _pk(body, "to", n)
    _amount(body, "amount", n)
    if body["from"] == body["to"]:
        raise TxError("redelegate 'from' and 'to' must differ", "invalid_body")


def check_unjail(body: dict) -> None:
    _keys(body, TX_UNJAIL, set())


def check_withdraw_rewards(body: dict) -> None:
    _keys(body, TX_WITHDRAW_REWARDS, set(), frozenset({"validator"}))
    if "validator" in body:
        _pk(body, "validator", TX_WITHDRAW_REWARDS)


# execution ------------------------------------------------------------------------------------------


def _session(ex: Execution) -> Session:
    if ex.env.consensus == "poa":
        raise ExecFailure("staking_disabled", "staking is disabled: this chain runs proof of authority")
    return Session(ex)


def _own_validator(s: Session, sender: bytes) -> Validator:
    v = s.validator(sender)
    if v is None:
        raise ExecFailure("not_validator", f"{addr(sender)} operates no validator")
    return v


def _check_delegation_room(s: Session, delegator: bytes) -> None:
    if len(s.account(delegator).validators) >= s.p.max_delegations_per_account:
        raise ExecFailure(
            "too_many_delegations",
            f"an account may delegate to at most {s.p.max_delegations_per_account} validators",
        )


def apply_validator_create(ex: Execution, tx: Transaction) -> None:
    s = _session(ex)
    b, p, op = tx.body, s.p, tx.sender
    if b["commission_bps"] > p.max_commission_bps:
        raise ExecFailure("commission_too_high", f"commission {b['commission_bps']} bps > max {p.max_commission_bps}")
    if b["self_bond"] < p.min_self_bond:
        raise ExecFailure("self_bond_too_low", f"self-bond {b['self_bond']} < minimum {p.min_self_bond}")
    if s.validator(op) is not None:
        raise ExecFailure("validator_exists", f"{addr(op)} already operates a validator")
    ck = b["consensus_key"]
    if ex.get_object(k_consensus(ck)) is not None:
        raise ExecFailure("consensus_key_taken", f"consensus key {addr(ck)} is used by another validator")
    _check_delegation_room(s, op)
    bond = b["self_bond"]
    ex.debit(op, bond)
    h = ex.env.height
    v = Validator(
        op, ck, b["moniker"], b["commission_bps"], bond, bond, bond, p.min_self_bond, False, 0, False, h, h,
        0, 0, 0, 0, b"", 0, 0, 0,
    )
    reset_missed(v, p)
    s.add_validator(v)
    ex.put_object(k_consensus(ck), op)
    s.put_delegation(op, op, Delegation(bond, 0), new=True)
    s.totals.bonded += bond
    s.flush()
    ex.emit("validator_created", validator=addr(op), consensus_key=addr(ck), self_bond=str(bond), height=h)


def apply_validator_edit(ex: Execution, tx: Transaction) -> None:
    s = _session(ex)
    b, p = tx.body, s.p
    v = _own_validator(s, tx.sender)
    h = ex.env.height
    if "commission_bps" in b and b["commission_bps"] != v.commission_bps:
        c = b["commission_bps"]
        if c > p.max_commission_bps:
            raise ExecFailure("commission_too_high", f"commission {c} bps > max {p.max_commission_bps}")
        if abs(c - v.commission_bps) > p.max_commission_change_bps:
            raise ExecFailure(
                "commission_change_too_large",
                f"commission may move by at most {p.max_commission_change_bps} bps per edit "
                f"(from {v.commission_bps} to {c} requested)",
            )
        if h - v.commission_changed < p.epoch_blocks:
            raise ExecFailure(
                "commission_change_too_soon",
                f"commission changed at height {v.commission_changed}; next change from height "
                f"{v.commission_changed + p.epoch_blocks}",
            )
        v.commission_bps = c
        v.commission_changed = h
    if "moniker" in b:
        v.moniker = b["moniker"]
    s.flush()


def apply_delegate(ex: Execution, tx: Transaction) -> None:
    s = _session(ex)
    op, amount, delegator = tx.body["validator"], tx.body["amount"], tx.sender
    v = s.need_validator(op)
    if v.tombstoned:
        raise ExecFailure("validator_tombstoned", f"validator {addr(op)} is tombstoned")
    if v.shares and not v.tokens:
        raise ExecFailure("validator_insolvent", f"validator {addr(op)} has shares but no tokens left")
    new_shares = amount * v.shares // v.tokens if v.shares else amount
    if new_shares == 0:
        raise ExecFailure("amount_too_small", f"{amount} base units buy no share of validator {addr(op)}")
    d = s.delegation(delegator, op)
    if d is None:
        _check_delegation_room(s, delegator)
    ex.debit(delegator, amount)
    if d is None:
        d = Delegation(0, v.acc)
        new = True
    else:
        settle(s, v, delegator, d)
        new = False
    v.tokens += amount
    v.shares += new_shares
    d.shares += new_shares
    if delegator == op:
        v.self_shares += new_shares
    s.totals.bonded += amount
    s.put_delegation(delegator, op, d, new=new)
    s.flush()


def _take_shares(s: Session, v: Validator, delegator: bytes, d: Delegation, amount: int) -> int:
    """Remove the shares worth ``amount`` tokens (rounded UP, so the delegations left never lose) from
    ``d``; returns the tokens taken (``amount``, or everything when the last shares leave)."""
    value = v.value_of(d.shares)
    if amount > value:
        raise ExecFailure(
            "insufficient_delegation", f"delegation to {addr(v.operator)} is worth {value}, {amount} requested"
        )
    settle(s, v, delegator, d)
    shares = -(-amount * v.shares // v.tokens)  # ceil; <= d.shares because amount <= value
    tokens = v.tokens if shares == v.shares else amount
    v.tokens -= tokens
    v.shares -= shares
    d.shares -= shares
    if delegator == v.operator:
        v.self_shares -= shares
    s.totals.bonded -= tokens
    sweep_if_empty(s, v)
    return tokens


def _due_append(s: Session, height: int, kind: str, eid: int) -> None:
    key = k_due(height)
    raw = s.ex.get_object(key)
    lst = decode(raw) if raw is not None else []
    lst.append([kind, eid])  # type: ignore[union-attr]
    s.ex.put_object(key, encode(lst))


def apply_undelegate(ex: Execution, tx: Transaction) -> None:
    s = _session(ex)
    op, amount, delegator = tx.body["validator"], tx.body["amount"], tx.sender
    v = s.need_validator(op)
    d = s.delegation(delegator, op)
    if d is None:
        raise ExecFailure("no_delegation", f"no delegation to validator {addr(op)}")
    info = s.account(delegator)
    if info.unbonding >= s.p.max_unbonding_per_account:
        raise ExecFailure(
            "too_many_unbonding", f"{info.unbonding} unbonding entries pending (max {s.p.max_unbonding_per_account})"
        )
    tokens = _take_shares(s, v, delegator, d, amount)
    s.store_delegation(delegator, op, d)
    h = ex.env.height
    done = h + s.p.unbonding_blocks
    t = s.totals
    eid = t.next_id
    t.next_id += 1
    t.unbonding += tokens
    ex.put_object(k_unbonding(eid), Unbonding(delegator, op, tokens, h, done).encode())
    ex.put_object(k_unbond_by_del(delegator, eid), MARKER)
    _due_append(s, done, KIND_UNBONDING, eid)
    info = s.account(delegator)  # re-read: store_delegation may have changed it
    info.unbonding += 1
    s.put_account(delegator, info)
    s.flush()


def apply_redelegate(ex: Execution, tx: Transaction) -> None:
    s = _session(ex)
    b, delegator = tx.body, tx.sender
    src = s.need_validator(b["from"])
    dst = s.need_validator(b["to"])
    amount = b["amount"]
    if dst.tombstoned:
        raise ExecFailure("validator_tombstoned", f"validator {addr(dst.operator)} is tombstoned")
    d_src = s.delegation(delegator, src.operator)
    if d_src is None:
        raise ExecFailure("no_delegation", f"no delegation to validator {addr(src.operator)}")
    if ex.get_object(k_redel_in(delegator, src.operator)) is not None:
        raise ExecFailure(
            "redelegation_in_progress",
            f"stake redelegated into {addr(src.operator)} may move again only when that redelegation completes",
        )
    info = s.account(delegator)
    if info.redelegations >= s.p.max_unbonding_per_account:
        raise ExecFailure(
            "too_many_redelegations",
            f"{info.redelegations} redelegations pending (max {s.p.max_unbonding_per_account})",
        )
    if dst.shares and not dst.tokens:
        raise ExecFailure("validator_insolvent", f"validator {addr(dst.operator)} has shares but no tokens left")
    d_dst = s.delegation(delegator, dst.operator)
    if d_dst is None:
        _check_delegation_room(s, delegator)
    tokens = _take_shares(s, src, delegator, d_src, amount)
    new_shares = tokens * dst.shares // dst.tokens if dst.shares else tokens
    if new_shares == 0:
        raise ExecFailure("amount_too_small", f"{tokens} base units buy no share of validator {addr(dst.operator)}")
    s.store_delegation(delegator, src.operator, d_src)
    if d_dst is None:
        d_dst = Delegation(0, dst.acc)
        new = True
    else:
        settle(s, dst, delegator, d_dst)
        new = False
    dst.tokens += tokens
    dst.shares += new_shares
    d_dst.shares += new_shares
    if delegator == dst.operator:
        dst.self_shares += new_shares
    t = s.totals
    t.bonded += tokens
    s.put_delegation(delegator, dst.operator, d_dst, new=new)
    h = ex.env.height
    done = h + s.p.unbonding_blocks
    eid = t.next_id
    t.next_id += 1
    ex.put_object(
        k_redelegation(eid), Redelegation(delegator, src.operator, dst.operator, tokens, new_shares, h, done).encode()
    )
    ex.put_object(k_redel_by_del(delegator, eid), MARKER)
    rin = k_redel_in(delegator, dst.operator)
    raw = ex.get_object(rin)
    ex.put_object(rin, encode((decode(raw) if raw is not None else 0) + 1))  # type: ignore[operator]
    _due_append(s, done, KIND_REDELEGATION, eid)
    info = s.account(delegator)
    info.redelegations += 1
    s.put_account(delegator, info)
    s.flush()


def apply_unjail(ex: Execution, tx: Transaction) -> None:
    s = _session(ex)
    v = _own_validator(s, tx.sender)
    h = ex.env.height
    if v.tombstoned:
        raise ExecFailure("tombstoned", "a validator tombstoned for double-signing can never be unjailed")
    if not v.jailed:
        raise ExecFailure("not_jailed", "the validator is not jailed")
    if h < v.jailed_until:
        raise ExecFailure("jail_period_not_over", f"jailed until height {v.jailed_until} (now {h})")
    if v.self_bond < v.min_self_bond:
        raise ExecFailure("self_bond_too_low", f"self-bond {v.self_bond} < minimum {v.min_self_bond}")
    v.jailed = False
    v.jailed_until = 0
    s.flush()
    ex.emit("unjail", validator=addr(v.operator), consensus_key=addr(v.consensus_key), height=h)


def apply_withdraw_rewards(ex: Execution, tx: Transaction) -> None:
    s = _session(ex)
    sender = tx.sender
    if "validator" in tx.body:
        ops = [tx.body["validator"]]
        s.need_validator(ops[0])
    else:
        ops = list(s.account(sender).validators)
        if s.validator(sender) is not None and sender not in ops:
            ops.append(sender)
    found = False
    paid = 0
    for op in ops:
        v = s.need_validator(op)
        d = s.delegation(sender, op)
        if d is not None:
            found = True
            paid += settle(s, v, sender, d)
            ex.put_object(k_delegation(sender, op), d.encode())
        if op == sender:
            found = True
            if v.commission:
                ex.credit(sender, v.commission)
                s.totals.rewards -= v.commission
                paid += v.commission
                v.commission = 0
    if not found:
        where = addr(ops[0]) if "validator" in tx.body else "any validator"
        raise ExecFailure("nothing_to_withdraw", f"no delegation to or commission from {where}")
    s.flush()
    ex.emit("rewards_withdrawn", delegator=addr(sender), amount=str(paid), height=ex.env.height)


TX_KINDS = [
    TxKind(TX_VALIDATOR_CREATE, check_validator_create, lambda tx: tx.body["self_bond"], apply_validator_create),
    TxKind(TX_VALIDATOR_EDIT, check_validator_edit, lambda tx: 0, apply_validator_edit),
    TxKind(TX_DELEGATE, check_delegate, lambda tx: tx.body["amount"], apply_delegate),
    TxKind(TX_UNDELEGATE, check_undelegate, lambda tx: 0, apply_undelegate),
    TxKind(TX_REDELEGATE, check_redelegate, lambda tx: 0, apply_redelegate),
    TxKind(TX_UNJAIL, check_unjail, lambda tx: 0, apply_unjail),
    TxKind(TX_WITHDRAW_REWARDS, check_withdraw_rewards, lambda tx: 0, apply_withdraw_rewards),
]


def register() -> None:
    for kind in TX_KINDS:
        register_tx_kind(kind)

