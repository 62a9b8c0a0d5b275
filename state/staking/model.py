"""Staking records, their object keys and their encodings (shared by the rules and the read-side views).

Every record is canonical CBOR of a fixed-order list (compact, cheap to decode in every block). The
layout of each list is the field order of its dataclass. Keys (all under ``stk/``; ``op``, ``ck``,
``del`` are 32-byte public keys, ``id8``/``h8`` 8-byte big-endian integers):

==============================  ============================================================================
``stk/v/<op>``                  :class:`Validator` (operator = the account that created it)
``stk/index``                   sorted list of every operator (the validator index; small)
``stk/ck/<ck>``                 operator of the staked validator using consensus key ``ck`` (raw 32 bytes)
``stk/d/<del><op>``             :class:`Delegation` of ``del`` to ``op`` (scan ``stk/d/<del>`` = by delegator)
``stk/dv/<op><del>``            marker: index of delegations by validator
``stk/acct/<del>``              :class:`AccountInfo` (validators delegated to, pending entry counts)
``stk/u/<id8>``                 :class:`Unbonding` entry
``stk/ud/<del><id8>``           marker: unbonding entries by delegator
``stk/r/<id8>``                 :class:`Redelegation` entry (slashable for the source's faults until due)
``stk/rd/<del><id8>``           marker: redelegation entries by delegator
``stk/rin/<del><op>``           count of pending redelegations of ``del`` INTO ``op`` (no transitive hops)
``stk/due/<h8>``                ``[[kind, id8], ...]`` entries completing at the END of block ``h``
``stk/ev/<hash>``               height of handled evidence ``hash`` (refuses it a second time)
``stk/evx/<h8>``                evidence hashes whose records expire at height ``h`` (then too old anyway)
``stk/sets``                    recent installed sets ``[[from, [[ck, power, op|b""], ...]], ...]``
``stk/hist``                    membership history ``[[from, [ck, ...]], ...]`` over ``max_evidence_age``
``stk/auth``                    hybrid authorities ``[[pk, power], ...]`` (genesis validators)
``stk/totals``                  :class:`Totals` (bonded, unbonding, rewards, community pool, next id)
==============================  ============================================================================
"""

from __future__ import annotations

from dataclasses import astuple, dataclass

import cbor2

from state import codec

SCALE = 10**18  # fixed-point scale of the reward-per-share accumulator
MARKER = b"\x01"

K_INDEX = b"stk/index"
K_TOTALS = b"stk/totals"
K_SETS = b"stk/sets"
K_HIST = b"stk/hist"
K_AUTH = b"stk/auth"

P_VALIDATOR = b"stk/v/"
P_CONSENSUS = b"stk/ck/"
P_DELEGATION = b"stk/d/"
P_DELEG_BY_VAL = b"stk/dv/"
P_ACCOUNT = b"stk/acct/"
P_UNBONDING = b"stk/u/"
P_UNBOND_BY_DEL = b"stk/ud/"
P_REDELEGATION = b"stk/r/"
P_REDEL_BY_DEL = b"stk/rd/"
P_REDEL_IN = b"stk/rin/"
P_DUE = b"stk/due/"
P_EVIDENCE = b"stk/ev/"
P_EVIDENCE_EXPIRY = b"stk/evx/"

KIND_UNBONDING = "u"
KIND_REDELEGATION = "r"


def h8(n: int) -> bytes:
    return n.to_bytes(8, "big")


def k_validator(op: bytes) -> bytes:
    return P_VALIDATOR + op


def k_consensus(ck: bytes) -> bytes:
    return P_CONSENSUS + ck


def k_delegation(delegator: bytes, op: bytes) -> bytes:
    return P_DELEGATION + delegator + op


def k_deleg_by_val(op: bytes, delegator: bytes) -> bytes:
    return P_DELEG_BY_VAL + op + delegator


def k_account(delegator: bytes) -> bytes:
    return P_ACCOUNT + delegator


def k_unbonding(entry_id: int) -> bytes:
    return P_UNBONDING + h8(entry_id)


def k_unbond_by_del(delegator: bytes, entry_id: int) -> bytes:
    return P_UNBOND_BY_DEL + delegator + h8(entry_id)


def k_redelegation(entry_id: int) -> bytes:
    return P_REDELEGATION + h8(entry_id)


def k_redel_by_del(delegator: bytes, entry_id: int) -> bytes:
    return P_REDEL_BY_DEL + delegator + h8(entry_id)


def k_redel_in(delegator: bytes, op: bytes) -> bytes:
    return P_REDEL_IN + delegator + op


def k_due(height: int) -> bytes:
    return P_DUE + h8(height)


def k_evidence(ev_hash: bytes) -> bytes:
    return P_EVIDENCE + ev_hash


def k_evidence_expiry(height: int) -> bytes:
    return P_EVIDENCE_EXPIRY + h8(height)


def encode(obj: object) -> bytes:
    return codec.encode(obj)


def decode(raw: bytes) -> object:
    """Decode a record this module wrote (state is trusted: no canonical re-check)."""
    return cbor2.loads(raw)


class _Record:
    """Fixed-order list encoding of a dataclass."""

    def encode(self) -> bytes:
        return codec.encode(list(astuple(self)))  # type: ignore[call-overload]

    @classmethod
    def decode(cls, raw: bytes):  # noqa: ANN206
        return cls(*cbor2.loads(raw))


@dataclass(slots=True)
class Validator(_Record):
    operator: bytes
    consensus_key: bytes
    moniker: str
    commission_bps: int
    tokens: int  # bonded tokens backing all shares (slashing lowers it: every delegation loses pro rata)
    shares: int  # total delegation shares
    self_shares: int  # the operator's own shares (self-bond = self_shares * tokens // shares)
    min_self_bond: int  # params.min_self_bond, or a genesis validator's smaller genesis bond
    jailed: bool
    jailed_until: int  # unjail allowed from this height (downtime); 0 when tombstoned/never jailed
    tombstoned: bool
    created: int
    commission_changed: int  # height of the last commission change (one change per epoch)
    acc: int  # cumulative delegator reward per share, scaled by SCALE
    acc_rem: int  # reward (scaled units) not yet spread over shares: carried into the next increment
    outstanding: int  # rewards owed to delegators, not yet withdrawn (>= sum of pending)
    commission: int  # the operator's pending commission
    missed_bits: bytes  # ring of the last signed_blocks_window heights (bit set = missed)
    missed: int  # set bits in missed_bits
    tracked: int  # heights tracked in the active set since the last reset (capped at the window)
    ring: int  # next ring position

    @property
    def self_bond(self) -> int:
        return self.self_shares * self.tokens // self.shares if self.shares else 0

    def power(self, power_unit: int) -> int:
        return self.tokens // power_unit

    def value_of(self, shares: int) -> int:
        """Tokens that ``shares`` of this validator are worth now (rounded down)."""
        return shares * self.tokens // self.shares if self.shares else 0

    def pending_rewards(self, d: Delegation) -> int:
        return d.shares * (self.acc - d.acc) // SCALE

    def status(self, active: bool) -> str:
        if self.tombstoned:
            return "tombstoned"
        if self.jailed:
            return "jailed"
        return "active" if active else "inactive"


@dataclass(slots=True)
class Delegation(_Record):
    shares: int
    acc: int  # the validator's accumulator when rewards were last settled


@dataclass(slots=True)
class AccountInfo(_Record):
    validators: list  # operators this account delegates to (bounded by max_delegations_per_account)
    unbonding: int  # pending unbonding entries
    redelegations: int  # pending redelegation entries


@dataclass(slots=True)
class Unbonding(_Record):
    delegator: bytes
    validator: bytes
    amount: int  # paid at completes_at (double-sign slashing of the validator may lower it first)
    created: int
    completes_at: int


@dataclass(slots=True)
class Redelegation(_Record):
    delegator: bytes
    src: bytes
    dst: bytes
    amount: int  # tokens moved
    dst_shares: int  # shares received at dst (a slash of src removes a fraction of these)
    created: int
    completes_at: int


@dataclass(slots=True)
class Totals(_Record):
    bonded: int = 0  # sum of every validator's tokens
    unbonding: int = 0  # sum of pending unbonding entries
    rewards: int = 0  # undistributed rewards: sum of outstanding + commission over validators
    community_pool: int = 0  # rounding dust and rewards nobody may claim
    next_id: int = 1  # next unbonding/redelegation entry id

    @property
    def locked(self) -> int:
        """Everything staking holds outside balances (what ex.supply() counts beyond them)."""
        return self.bonded + self.unbonding + self.rewards + self.community_pool


# validator-set entries -------------------------------------------------------------------------------


def set_at(entries: list, height: int) -> list | None:
    """The entry list of the set in force at ``height`` (entries are [from, members], ascending)."""
    found = None
    for frm, members in entries:
        if frm <= height:
            found = members
        else:
            break
    return found


def load_totals(get) -> Totals:  # noqa: ANN001
    raw = get(K_TOTALS)
    return Totals.decode(raw) if raw is not None else Totals()
