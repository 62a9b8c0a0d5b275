"""Staking block hooks: genesis, evidence (begin), downtime, rewards, unbonding and epochs (end)."""

from __future__ import annotations

from state.errors import AitbcError
from state.evidence import DuplicateVote
from state.machine import BlockHook, Execution, HookError, register_block_hook
from state.params import BPS
from state.slashing import settle_slash

from .core import (
    Session,
    addr,
    allocate,
    burn_tokens,
    install_set,
    jail,
    reset_missed,
    slash_entries,
    track_signing,
)
from .model import (
    K_AUTH,
    K_HIST,
    K_INDEX,
    K_SETS,
    K_TOTALS,
    KIND_UNBONDING,
    MARKER,
    AccountInfo,
    Delegation,
    Redelegation,
    Totals,
    Unbonding,
    Validator,
    decode,
    encode,
    k_account,
    k_consensus,
    k_deleg_by_val,
    k_delegation,
    k_due,
    k_evidence,
    k_evidence_expiry,
    k_redel_by_del,
    k_redel_in,
    k_redelegation,
    k_unbond_by_del,
    k_unbonding,
    k_validator,
    set_at,
)

HOOK_ORDER = 200  # after the market's hooks: rewards take every fee of the block


# genesis --------------------------------------------------------------------------------------------


def genesis(ex: Execution, g) -> None:  # noqa: ANN001
    """Record the genesis set (evidence membership). PoS: every genesis validator becomes a staked
    validator (operator = consensus key = its key, self-bond = power x power_unit minted as bonded
    stake, commission 0), so the staked set equals the engine's genesis set. Hybrid: the genesis
    validators become the authorities."""
    vals = sorted((v.public_key, v.power, v.name) for v in g.validators)
    ex.put_object(K_HIST, encode([[1, [pk for pk, _, _ in vals]]]))
    if g.consensus == "poa":
        return
    p = ex.env.params.staking
    if g.consensus == "hybrid":
        ex.put_object(K_AUTH, encode([[pk, pw] for pk, pw, _ in vals]))
        ex.put_object(K_SETS, encode([[1, [[pk, pw, b""] for pk, pw, _ in vals]]]))
        return
    totals = Totals()
    for pk, pw, name in vals:
        bond = pw * p.power_unit
        ex.mint(bond)
        v = Validator(
            pk, pk, name, 0, bond, bond, bond, min(p.min_self_bond, bond), False, 0, False, 0, 0,
            0, 0, 0, 0, b"", 0, 0, 0,
        )
        reset_missed(v, p)
        ex.put_object(k_validator(pk), v.encode())
        ex.put_object(k_consensus(pk), pk)
        ex.put_object(k_delegation(pk, pk), Delegation(bond, 0).encode())
        ex.put_object(k_deleg_by_val(pk, pk), MARKER)
        ex.put_object(k_account(pk), AccountInfo([pk], 0, 0).encode())
        totals.bonded += bond
    ex.put_object(K_INDEX, encode([pk for pk, _, _ in vals]))
    ex.put_object(K_TOTALS, totals.encode())
    ex.put_object(K_SETS, encode([[1, [[pk, pw, pk] for pk, pw, _ in vals]]]))


# begin: evidence ------------------------------------------------------------------------------------


def begin(ex: Execution) -> None:
    """Forget evidence records that expire now, then judge the block's evidence. Inadmissible evidence
    (already handled, too old, from a future height, signer not a validator at its height) makes the
    block invalid (HookError); block building leaves such items out beforehand."""
    env = ex.env
    h = env.height
    exp_key = k_evidence_expiry(h)
    raw = ex.get_object(exp_key)
    if raw is not None:
        for ev_hash in decode(raw):  # type: ignore[union-attr]
            ex.put_object(k_evidence(ev_hash), None)
        ex.put_object(exp_key, None)
    if not env.evidence:
        return
    s = Session(ex)
    p = s.p
    hist_raw = ex.get_object(K_HIST)
    hist = decode(hist_raw) if hist_raw is not None else None
    for raw_ev in env.evidence:
        try:
            ev = DuplicateVote.decode(raw_ev)
        except AitbcError as exc:
            raise HookError(f"evidence does not decode: {exc}") from None
        ev_hash = ev.hash()
        tag = f"evidence {ev_hash.hex()[:16]}"
        if ex.get_object(k_evidence(ev_hash)) is not None:
            raise HookError(f"{tag} was already handled")
        if ev.height > h:
            raise HookError(f"{tag} is for height {ev.height}, above the block's height {h}")
        if h - ev.height > p.max_evidence_age:
            raise HookError(f"{tag} is too old: height {ev.height}, max age {p.max_evidence_age} blocks")
        if hist is not None:
            members = set_at(hist, ev.height)  # type: ignore[arg-type]
            if members is None or ev.validator not in members:
                raise HookError(f"{tag}: {addr(ev.validator)} was not a validator at height {ev.height}")
        ex.put_object(k_evidence(ev_hash), encode(ev.height))
        exp = k_evidence_expiry(ev.height + p.max_evidence_age + 1)
        raw = ex.get_object(exp)
        ex.put_object(exp, encode([*(decode(raw) if raw is not None else []), ev_hash]))  # type: ignore[misc]
        op = ex.get_object(k_consensus(ev.validator)) if env.consensus != "poa" else None
        v = s.validator(op) if op is not None else None
        if v is None or v.tombstoned:
            # PoA, an authority (no stake), or already tombstoned: recorded, nothing more to take
            ex.emit("evidence", consensus_key=addr(ev.validator), height=ev.height, hash="0x" + ev_hash.hex(),
                    included_at=h, slashed=False)
            continue
        bps = p.slash_double_sign_bps
        amount = burn_tokens(s, v, bps) + slash_entries(s, v, ev.height, bps)
        settle_slash(ex, amount)
        ex.emit("slash", validator=addr(v.operator), consensus_key=addr(v.consensus_key), reason="double_sign",
                amount=str(amount), height=h, infraction_height=ev.height)
        jail(s, v, "double_sign", until=0, tombstone=True)
        install_set(s, jailing=True)
    s.flush()


# end: downtime, rewards, unbonding, epochs ----------------------------------------------------------


def end(ex: Execution) -> None:
    env = ex.env
    if env.consensus == "poa":
        return
    s = Session(ex)
    p = s.p
    h = env.height
    sets = s.sets()
    prev = set_at(sets, h - 1) if h > 1 else None
    signers = env.last_commit_signers
    jailed = False
    if prev:
        for ck, _, op in prev:
            if not op:
                continue  # authorities have no stake: no downtime tracking
            v = s.validator(op)
            if v is None or v.jailed:
                continue
            if track_signing(v, ck not in signers, p):
                amount = burn_tokens(s, v, p.slash_downtime_bps)
                settle_slash(ex, amount)
                ex.emit("slash", validator=addr(op), consensus_key=addr(ck), reason="downtime", amount=str(amount),
                        height=h, infraction_height=h)
                jail(s, v, "downtime", until=h + p.jail_blocks, tombstone=False)
                jailed = True
    distribute(s, prev, set_at(sets, h))
    complete_due(s, h)
    switch = env.consensus == "hybrid" and p.hybrid_switch_height > 0 and h + 2 == p.hybrid_switch_height
    if h % p.epoch_blocks == 0 or switch:
        install_set(s, switch=switch)
    elif jailed:
        install_set(s, jailing=True)
    s.flush()


def distribute(s: Session, prev: list | None, current: list | None) -> None:
    """Mint block_reward, take the block's fees and split them (integer math):

    * ``proposer_bonus_bps`` of the pool to the proposer;
    * the rest to the validators that signed the previous commit (``last_commit_signers``, powers of
      the set that height ran with), pro rata to power, jailed ones excluded;
    * the rounding remainder of that split goes to the proposer too; with no eligible signer (height
      1) the proposer gets everything;
    * a proposer that is jailed or not found in the current set forfeits its part to the community pool.

    A staked validator's part is split into commission and the delegators' part (see ``allocate``);
    a hybrid authority's part is credited to its account at once (it has no stake or delegators)."""
    ex = s.ex
    p = s.p
    fees = ex.fees
    ex.fees = 0
    ex.mint(p.block_reward)
    pool = fees + p.block_reward
    if pool == 0:
        return
    eligible = []
    total = 0
    signers = ex.env.last_commit_signers
    for ck, pw, op in prev or ():
        if ck not in signers:
            continue
        if op:
            v = s.validator(op)
            if v is None or v.jailed:
                continue
        eligible.append((ck, pw, op))
        total += pw
    bonus = pool * p.proposer_bonus_bps // BPS if total else pool
    rest = pool - bonus
    paid = 0
    for ck, pw, op in eligible:
        amount = rest * pw // total
        if amount:
            _give(s, ck, op, amount)
            paid += amount
    proposer = ex.env.proposer
    prop_op = None
    for ck, _, op in current or ():
        if ck == proposer:
            prop_op = op
            break
    left = pool - paid
    if prop_op is None:
        s.totals.community_pool += left
    else:
        _give(s, proposer, prop_op, left)


def _give(s: Session, ck: bytes, op: bytes, amount: int) -> None:
    if not op:
        s.ex.credit(ck, amount)  # hybrid authority
        return
    v = s.validator(op)
    if v is None or v.jailed:
        s.totals.community_pool += amount
    else:
        allocate(s, v, amount)


def complete_due(s: Session, h: int) -> None:
    """Pay the unbonding entries due at ``h`` and retire the redelegation entries due at ``h``."""
    ex = s.ex
    key = k_due(h)
    raw = ex.get_object(key)
    if raw is None:
        return
    t = s.totals
    for kind, eid in decode(raw):  # type: ignore[union-attr]
        if kind == KIND_UNBONDING:
            ukey = k_unbonding(eid)
            e = Unbonding.decode(ex.get_object(ukey))  # type: ignore[arg-type]
            if e.amount:
                ex.credit(e.delegator, e.amount)
            t.unbonding -= e.amount
            ex.put_object(ukey, None)
            ex.put_object(k_unbond_by_del(e.delegator, eid), None)
            info = s.account(e.delegator)
            info.unbonding -= 1
            s.put_account(e.delegator, info)
            ex.emit("unbonded", delegator=addr(e.delegator), validator=addr(e.validator), amount=str(e.amount),
                    height=h)
        else:
            rkey = k_redelegation(eid)
            r = Redelegation.decode(ex.get_object(rkey))  # type: ignore[arg-type]
            ex.put_object(rkey, None)
            ex.put_object(k_redel_by_del(r.delegator, eid), None)
            rin = k_redel_in(r.delegator, r.dst)
            n = decode(ex.get_object(rin)) - 1  # type: ignore[arg-type, operator]
            ex.put_object(rin, encode(n) if n > 0 else None)
            info = s.account(r.delegator)
            info.redelegations -= 1
            s.put_account(r.delegator, info)
    ex.put_object(key, None)


HOOK = BlockHook("staking", HOOK_ORDER, begin=begin, end=end, genesis=genesis)


def register() -> None:
    register_block_hook(HOOK)
