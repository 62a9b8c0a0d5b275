"""Shared staking operations: the per-execution record cache, reward accounting, slashing, jailing and
validator-set computation. Used by the transactions (``txs.py``) and the block hooks (``hooks.py``)."""

from __future__ import annotations

from state.address import encode_address
from state.machine import ExecFailure, Execution
from state.params import BPS, StakingParams
from state.slashing import slash_cut

from .model import (
    K_AUTH,
    K_HIST,
    K_INDEX,
    K_SETS,
    K_TOTALS,
    KIND_REDELEGATION,
    KIND_UNBONDING,
    MARKER,
    SCALE,
    AccountInfo,
    Delegation,
    Redelegation,
    Totals,
    Unbonding,
    Validator,
    decode,
    encode,
    k_account,
    k_deleg_by_val,
    k_delegation,
    k_due,
    k_redelegation,
    k_unbonding,
    k_validator,
)


def addr(pk: bytes) -> str:
    return encode_address(pk)


class Session:
    """Decoded staking records read during one transaction or hook, written back by :meth:`flush`
    (only those whose encoding changed). Raising ExecFailure before or after flush is safe: the
    execution's journal rolls every write of a failed transaction back."""

    __slots__ = ("ex", "p", "_vals", "_raw", "_totals", "_totals_raw", "_index")

    def __init__(self, ex: Execution) -> None:
        self.ex = ex
        self.p: StakingParams = ex.env.params.staking
        self._vals: dict[bytes, Validator | None] = {}
        self._raw: dict[bytes, bytes | None] = {}
        self._totals: Totals | None = None
        self._totals_raw: bytes | None = None
        self._index: list[bytes] | None = None

    # validators ---------------------------------------------------------------------------------
    def validator(self, op: bytes) -> Validator | None:
        if op in self._vals:
            return self._vals[op]
        raw = self.ex.get_object(k_validator(op))
        v = Validator.decode(raw) if raw is not None else None
        self._vals[op] = v
        self._raw[op] = raw
        return v

    def need_validator(self, op: bytes) -> Validator:
        v = self.validator(op)
        if v is None:
            raise ExecFailure("unknown_validator", f"no validator with operator {addr(op)}")
        return v

    def add_validator(self, v: Validator) -> None:
        self._vals[v.operator] = v
        self._raw.setdefault(v.operator, None)
        idx = self.index()
        idx.append(v.operator)
        idx.sort()
        self.ex.put_object(K_INDEX, encode(idx))

    def index(self) -> list[bytes]:
        if self._index is None:
            raw = self.ex.get_object(K_INDEX)
            self._index = list(decode(raw)) if raw is not None else []  # type: ignore[arg-type]
        return self._index

    @property
    def totals(self) -> Totals:
        if self._totals is None:
            raw = self.ex.get_object(K_TOTALS)
            self._totals_raw = raw
            self._totals = Totals.decode(raw) if raw is not None else Totals()
        return self._totals

    def flush(self) -> None:
        put = self.ex.put_object
        for op, v in self._vals.items():
            if v is None:
                continue
            enc = v.encode()
            if enc != self._raw.get(op):
                put(k_validator(op), enc)
                self._raw[op] = enc
        if self._totals is not None:
            enc = self._totals.encode()
            if enc != self._totals_raw:
                put(K_TOTALS, enc)
                self._totals_raw = enc

    # delegations --------------------------------------------------------------------------------
    def delegation(self, delegator: bytes, op: bytes) -> Delegation | None:
        raw = self.ex.get_object(k_delegation(delegator, op))
        return Delegation.decode(raw) if raw is not None else None

    def account(self, delegator: bytes) -> AccountInfo:
        raw = self.ex.get_object(k_account(delegator))
        return AccountInfo.decode(raw) if raw is not None else AccountInfo([], 0, 0)

    def put_account(self, delegator: bytes, info: AccountInfo) -> None:
        empty = not info.validators and not info.unbonding and not info.redelegations
        self.ex.put_object(k_account(delegator), None if empty else info.encode())

    def put_delegation(self, delegator: bytes, op: bytes, d: Delegation, *, new: bool) -> None:
        """Write ``d``; a new delegation is added to the indexes (the caller checked the limit)."""
        self.ex.put_object(k_delegation(delegator, op), d.encode())
        if new:
            self.ex.put_object(k_deleg_by_val(op, delegator), MARKER)
            info = self.account(delegator)
            info.validators = sorted([*info.validators, op])
            self.put_account(delegator, info)

    def drop_delegation(self, delegator: bytes, op: bytes) -> None:
        self.ex.put_object(k_delegation(delegator, op), None)
        self.ex.put_object(k_deleg_by_val(op, delegator), None)
        info = self.account(delegator)
        info.validators = [x for x in info.validators if x != op]
        self.put_account(delegator, info)

    def store_delegation(self, delegator: bytes, op: bytes, d: Delegation) -> None:
        """Write an existing delegation back, dropping it once it holds no shares."""
        if d.shares == 0:
            self.drop_delegation(delegator, op)
        else:
            self.ex.put_object(k_delegation(delegator, op), d.encode())

    # validator sets -----------------------------------------------------------------------------
    def sets(self) -> list:
        raw = self.ex.get_object(K_SETS)
        return decode(raw) if raw is not None else []  # type: ignore[return-value]

    def authorities(self) -> list:
        raw = self.ex.get_object(K_AUTH)
        return decode(raw) if raw is not None else []  # type: ignore[return-value]


# rewards --------------------------------------------------------------------------------------------


def allocate(s: Session, v: Validator, amount: int) -> None:
    """Credit ``amount`` of rewards to validator ``v``: commission to its operator, the rest spread over
    its shares through the accumulator (O(1), whatever the number of delegations). Scaled remainders
    are carried in ``acc_rem``, so nothing is lost; a validator without shares gives the delegator part
    to the community pool."""
    t = s.totals
    com = amount * v.commission_bps // BPS
    part = amount - com
    v.commission += com
    t.rewards += com
    if v.shares == 0:
        t.community_pool += part
        return
    num = part * SCALE + v.acc_rem
    inc = num // v.shares
    v.acc_rem = num - inc * v.shares
    v.acc += inc
    v.outstanding += part
    t.rewards += part


def settle(s: Session, v: Validator, delegator: bytes, d: Delegation) -> int:
    """Pay ``delegator``'s pending rewards on ``d`` to its balance; restart its accumulator snapshot."""
    # The min never binds: increments are rounded down and remainders carried, so the shares only ever
    # claim what was added to ``outstanding`` (checked by the property tests); it is a safety net.
    amount = min(v.pending_rewards(d), v.outstanding)
    if amount:
        v.outstanding -= amount
        s.totals.rewards -= amount
        s.ex.credit(delegator, amount)
    d.acc = v.acc
    return amount


def sweep_if_empty(s: Session, v: Validator) -> None:
    """A validator left without shares owes no delegator anything: its rounding dust goes to the pool."""
    if v.shares == 0 and (v.outstanding or v.acc_rem):
        t = s.totals
        t.rewards -= v.outstanding
        t.community_pool += v.outstanding
        v.outstanding = 0
        v.acc_rem = 0


# slashing and jailing -------------------------------------------------------------------------------


def reset_missed(v: Validator, p: StakingParams) -> None:
    v.missed_bits = bytes((p.signed_blocks_window + 7) // 8)
    v.missed = 0
    v.tracked = 0
    v.ring = 0


def track_signing(v: Validator, missed: bool, p: StakingParams) -> bool:
    """Record one height of the window for an active validator; True when it must be jailed."""
    w = p.signed_blocks_window
    bits = bytearray(v.missed_bits)
    if len(bits) * 8 < w:
        bits = bytearray((w + 7) // 8)
        v.missed = v.tracked = v.ring = 0
    i = v.ring
    byte, mask = i >> 3, 1 << (i & 7)
    old = bool(bits[byte] & mask)
    if missed != old:
        bits[byte] ^= mask
        v.missed += 1 if missed else -1
        v.missed_bits = bytes(bits)
    v.ring = (i + 1) % w
    if v.tracked < w:
        v.tracked += 1
    return v.tracked >= w and (w - v.missed) * BPS < p.min_signed_bps * w


def burn_tokens(s: Session, v: Validator, bps: int) -> int:
    """Remove ``bps`` of ``v``'s bonded tokens (every delegation loses pro rata). Returns the amount;
    the caller burns it from the supply."""
    amount = slash_cut(v.tokens, bps)
    v.tokens -= amount
    s.totals.bonded -= amount
    return amount


def jail(s: Session, v: Validator, reason: str, *, until: int, tombstone: bool) -> None:
    v.jailed = True
    v.jailed_until = 0 if tombstone else until
    v.tombstoned = v.tombstoned or tombstone
    reset_missed(v, s.p)
    s.ex.emit(
        "jail",
        validator=addr(v.operator),
        consensus_key=addr(v.consensus_key),
        reason=reason,
        until=None if tombstone else until,
        tombstoned=v.tombstoned,
        height=s.ex.env.height,
    )


def slash_entries(s: Session, v: Validator, infraction_height: int, bps: int) -> int:
    """Slash ``bps`` of the unbonding entries from ``v`` and of the stake redelegated away from ``v``
    that started at or after ``infraction_height`` and are still pending. Entries are found through the
    due index: they complete ``unbonding_blocks`` after they started, so only the due lists of heights
    [infraction + U, now - 1 + U] can hold them — at most max_evidence_age + 1 reads. Returns the
    amount removed (to burn)."""
    ex, p = s.ex, s.p
    now = ex.env.height
    u = p.unbonding_blocks
    burned = 0
    for due_h in range(max(infraction_height + u, now), now + u):
        raw = ex.get_object(k_due(due_h))
        if raw is None:
            continue
        for kind, eid in decode(raw):  # type: ignore[union-attr]
            if kind == KIND_UNBONDING:
                key = k_unbonding(eid)
                e = Unbonding.decode(ex.get_object(key))  # type: ignore[arg-type]
                if e.validator != v.operator or e.created < infraction_height:
                    continue
                cut = slash_cut(e.amount, bps)
                if cut:
                    e.amount -= cut
                    s.totals.unbonding -= cut
                    burned += cut
                    ex.put_object(key, e.encode())
            elif kind == KIND_REDELEGATION:
                key = k_redelegation(eid)
                r = Redelegation.decode(ex.get_object(key))  # type: ignore[arg-type]
                if r.src != v.operator or r.created < infraction_height:
                    continue
                burned += _slash_redelegation(s, r, bps)
                ex.put_object(key, r.encode())
    return burned


def _slash_redelegation(s: Session, r: Redelegation, bps: int) -> int:
    """Take ``bps`` of the shares a redelegation received back from the delegation at its destination
    (as far as it still holds them) and return the tokens they were worth."""
    dst = s.validator(r.dst)
    d = s.delegation(r.delegator, r.dst)
    if dst is None or d is None:
        return 0
    cut = min(d.shares, r.dst_shares * bps // BPS)
    r.amount -= slash_cut(r.amount, bps)
    if cut == 0:
        return 0
    settle(s, dst, r.delegator, d)
    tokens = dst.tokens if cut == dst.shares else dst.value_of(cut)
    dst.tokens -= tokens
    dst.shares -= cut
    if r.delegator == dst.operator:
        dst.self_shares -= cut
    d.shares -= cut
    r.dst_shares -= cut
    s.totals.bonded -= tokens
    s.store_delegation(r.delegator, r.dst, d)
    sweep_if_empty(s, dst)
    return tokens


# validator sets -------------------------------------------------------------------------------------


def compute_set(s: Session, for_height: int) -> list[list]:
    """The set due at ``for_height``: [[consensus_key, power, operator (b"" = authority)], ...] sorted by
    key. Staked part: the top ``max_validators`` by power (= tokens // power_unit > 0) of validators
    neither jailed nor tombstoned whose self-bond is at least their minimum, ties by consensus key.
    Hybrid before the switch height: the genesis authorities, plus that staked part; after it, the
    staked part alone — or the authorities alone while no staked validator is eligible."""
    p = s.p
    env = s.ex.env
    auth: list = []
    hybrid = env.consensus == "hybrid"
    if hybrid and (p.hybrid_switch_height == 0 or for_height < p.hybrid_switch_height):
        auth = s.authorities()
    auth_keys = {pk for pk, _ in auth}
    cands = []
    unit = p.power_unit
    for op in s.index():
        v = s.validator(op)
        if v is None or v.jailed or v.tombstoned:
            continue
        power = v.tokens // unit
        if power <= 0 or v.self_bond < v.min_self_bond or v.consensus_key in auth_keys:
            continue
        cands.append((-power, v.consensus_key, op))
    cands.sort()
    out = [[pk, pw, b""] for pk, pw in auth] + [[ck, -np, op] for np, ck, op in cands[: p.max_validators]]
    if not out and hybrid:
        out = [[pk, pw, b""] for pk, pw in s.authorities()]
    out.sort()
    return out


def _without_jailed(s: Session, cur: list) -> list:
    out = []
    for e in cur:
        v = s.validator(e[2]) if e[2] else None
        if v is None or not v.jailed:
            out.append(e)
    return out


def install_set(s: Session, *, switch: bool = False, jailing: bool = False) -> bool:
    """Install the set for height + 2 when it differs from the latest installed set: at an epoch (or
    the hybrid switch) the recomputed set; after a jailing, the latest set without the jailed
    validators (other changes wait for the epoch). Never installs an empty set. Returns True when the
    engine's set changed."""
    ex = s.ex
    h = ex.env.height
    target = h + 2
    sets = s.sets()
    cur = sets[-1][1] if sets else []
    new = _without_jailed(s, cur) if jailing else compute_set(s, target)
    if switch and all(not op for _, _, op in new):
        ex.emit("hybrid_switch_deferred", height=target, reason="no staked validator is eligible: authorities stay")
        switch = False
    if not new:
        return False  # never an empty set: the current one stays
    if new == cur:
        return False
    pairs = [(ck, pw) for ck, pw, _ in new]
    changed = pairs != [(e[0], e[1]) for e in cur]
    keep = [e for e in sets if e[0] < target]
    # keep the entry in force at h - 1 (rewards and downtime of the next block read it) and later ones
    start = 0
    for i, e in enumerate(keep):
        if e[0] <= h - 1:
            start = i
    ex.put_object(K_SETS, encode(keep[start:] + [[target, new]]))
    if changed:
        ex.set_validators(target, pairs)
        raw = ex.get_object(K_HIST)
        hist = [e for e in (decode(raw) if raw is not None else []) if e[0] < target]  # type: ignore[union-attr]
        oldest = h - s.p.max_evidence_age
        start = 0
        for i, e in enumerate(hist):
            if e[0] <= oldest:
                start = i
        ex.put_object(K_HIST, encode(hist[start:] + [[target, [ck for ck, _ in pairs]]]))
        ex.emit(
            "validator_set",
            height=target,
            validators=[{"address": addr(ck), "power": pw} for ck, pw in pairs],
        )
    if switch:
        ex.emit("hybrid_switch", height=target, validators=len(new))
    return changed

