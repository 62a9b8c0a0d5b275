"""The pure state machine: validate and apply transactions and blocks. No I/O.

``execute_block(reader, env, txs)`` reads committed state through a :class:`StateReader` and returns a
:class:`BlockOutcome` (changed accounts, per-tx results, fees, the state-tree changes). The caller (the
chain, in ``state/chain.py``) commits it. Every peer running the same block on the same state gets the
same outcome byte for byte.

Validity in a block: a transaction must be well formed, signed, on this chain, of a known type, pay at
least ``min_fee``, carry the sender's next nonce and the sender must afford the fee; otherwise the whole
block is invalid (:class:`TxError`). A transaction that passes those checks but whose body fails (for
example a transfer larger than the balance) is still included: the fee is charged, the nonce advances
and its result records the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import codec
from .codec import sha256
from .errors import InvariantError, TxError
from .genesis import ChainParams
from .types import TX_TRANSFER, U64_MAX, Account, Transaction

ACCOUNT_KEY_PREFIX = b"acct/"


def account_state_key(public_key: bytes) -> bytes:
    """Key of an account in the state tree."""
    return sha256(ACCOUNT_KEY_PREFIX + public_key)


OBJECT_KEY_PREFIX = b"obj/"


def object_state_key(key: bytes) -> bytes:
    """Key of a generic state object (market, staking records) in the state tree."""
    return sha256(OBJECT_KEY_PREFIX + key)


class StateReader(Protocol):
    def get_account(self, public_key: bytes) -> Account | None:
        """Committed account, or None if it never existed."""
        ...

    def get_object(self, key: bytes) -> bytes | None:
        """Committed generic state object (encoded), or None."""
        ...


class ExecFailure(Exception):
    """A transaction body that failed during execution: included, fee charged, result records reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(slots=True)
class TxResult:
    """Outcome of one included transaction. ``reason`` is a stable snake_case code and is part of
    consensus (``results_hash``); ``message`` is English for people and is stored, never hashed, so
    rewording it is not a fork."""

    ok: bool
    reason: str = ""
    message: str = ""

    def to_obj(self) -> list:
        """Stored form (with the message)."""
        return [self.ok, self.reason, self.message]

    def consensus_obj(self) -> list:
        """What ``results_hash`` commits to: success and the reason code only."""
        return [self.ok, self.reason]

    @classmethod
    def from_obj(cls, obj: list) -> TxResult:
        return cls(bool(obj[0]), str(obj[1]), str(obj[2]))


@dataclass(frozen=True, slots=True)
class BlockEnv:
    """What a block's execution may know besides state: its header fields and consensus inputs."""

    chain_id: str
    height: int
    time: int
    proposer: bytes
    params: ChainParams
    # Validators whose precommit is in the block's last_commit (empty at height 1).
    last_commit_signers: frozenset[bytes] = frozenset()
    # Encoded evidence items carried by the block (structurally checked and signature-verified by the
    # chain before execution; the staking hook decides what they cost).
    evidence: tuple[bytes, ...] = ()
    consensus: str = "poa"


SUPPLY_KEY = b"sys/supply"
VALSETS_KEY = b"sys/valsets"
MAX_VALSETS_KEPT = 4


class HookError(Exception):
    """A block hook found the block invalid (e.g. evidence that may not be included)."""


class Execution:
    """Overlay of state read and written while executing one block."""

    __slots__ = (
        "reader",
        "env",
        "accounts",
        "dirty",
        "fees",
        "objects",
        "journal",
        "events",
        "valset_update",
        "work_used",
    )

    def __init__(self, reader: StateReader, env: BlockEnv) -> None:
        self.reader = reader
        self.env = env
        self.accounts: dict[bytes, Account] = {}
        self.dirty: set[bytes] = set()
        self.fees = 0
        self.objects: dict[bytes, bytes | None] = {}  # written generic objects (None = deleted)
        # Undo log of the transaction body being applied: entries replayed in reverse on failure.
        self.journal: list[tuple] = []
        # Notifications for subscribers (job awarded, validator slashed, ...): [type, {fields}].
        self.events: list[tuple[str, dict]] = []
        # (from_height, [(pubkey, power)]) when this block changes the validator set.
        self.valset_update: tuple[int, list[tuple[bytes, int]]] | None = None
        # Dispute work units used by the block's metered transactions so far.
        self.work_used = 0

    def account(self, pk: bytes) -> Account:
        acc = self.accounts.get(pk)
        if acc is None:
            base = self.reader.get_account(pk)
            acc = base.copy() if base is not None else Account()
            self.accounts[pk] = acc
        return acc

    def credit(self, pk: bytes, amount: int) -> None:
        acc = self.account(pk)
        if acc.balance + amount > U64_MAX:
            raise ExecFailure("overflow", "balance would exceed 2^64-1")
        self.journal.append(("a", pk, acc.balance, pk in self.dirty))
        acc.balance += amount
        self.dirty.add(pk)

    def debit(self, pk: bytes, amount: int) -> None:
        acc = self.account(pk)
        if acc.balance < amount:
            raise ExecFailure("insufficient_balance", f"insufficient balance: {acc.balance} < {amount}")
        self.journal.append(("a", pk, acc.balance, pk in self.dirty))
        acc.balance -= amount
        self.dirty.add(pk)

    def get_object(self, key: bytes) -> bytes | None:
        if key in self.objects:
            return self.objects[key]
        return self.reader.get_object(key)

    def put_object(self, key: bytes, value: bytes | None) -> None:
        """Write (or delete, with None) a generic state object."""
        self.journal.append(("o", key, key in self.objects, self.objects.get(key)))
        self.objects[key] = value

    # supply ---------------------------------------------------------------------------------------
    def supply(self) -> int:
        """Total supply in base units: balances + everything locked (escrow, bonds, unbonding, rewards)."""
        raw = self.get_object(SUPPLY_KEY)
        return codec.decode(raw) if raw is not None else 0

    def _set_supply(self, value: int) -> None:
        if not 0 <= value <= U64_MAX:
            raise ExecFailure("overflow", "total supply out of range")
        self.put_object(SUPPLY_KEY, codec.encode(value))

    def mint(self, amount: int) -> None:
        """Create ``amount`` new base units (the caller puts them somewhere: a balance or a bond)."""
        if amount:
            self._set_supply(self.supply() + amount)

    def burn(self, amount: int) -> None:
        """Destroy ``amount`` base units the caller already took out of a balance or a bond."""
        if amount:
            self._set_supply(self.supply() - amount)

    def emit(self, event: str, **fields: object) -> None:
        """Record a notification for subscribers (not part of consensus state)."""
        self.events.append((event, fields))

    def set_validators(self, from_height: int, validators: list[tuple[bytes, int]]) -> None:
        """Install a new validator set from ``from_height`` (>= height + 2) on, in state and for the engine."""
        if from_height < self.env.height + 2:
            raise ValueError("a validator set change takes effect two blocks later at the earliest")
        vs = sorted((pk, p) for pk, p in validators if p > 0)
        if not vs:
            raise ValueError("a validator set may not be empty")
        raw = self.get_object(VALSETS_KEY)
        sets = codec.decode(raw) if raw is not None else []
        sets = [e for e in sets if e[0] < from_height][-(MAX_VALSETS_KEPT - 1):] + [[from_height, [list(v) for v in vs]]]
        self.put_object(VALSETS_KEY, codec.encode(sets))
        self.valset_update = (from_height, vs)

    def rollback(self) -> None:
        """Undo everything journaled since the journal was last cleared."""
        for entry in reversed(self.journal):
            if entry[0] == "a":
                _, pk, balance, was_dirty = entry
                self.accounts[pk].balance = balance
                if not was_dirty:
                    self.dirty.discard(pk)
            else:
                _, key, existed, old = entry
                if existed:
                    self.objects[key] = old
                else:
                    del self.objects[key]
        self.journal.clear()


# --------------------------------------------------------------------------------------------------
# Transaction kinds


@dataclass(frozen=True)
class TxKind:
    name: str
    check_body: Callable[[dict], None]
    cost: Callable[[Transaction], int]
    apply: Callable[[Execution, Transaction], None]
    # Metered kinds (market disputes): dispute work units the transaction costs, computed from the
    # overlay before it runs and counted against ``max_dispute_work_per_block``. Must not write.
    work: Callable[[Execution, Transaction], int] | None = None
    # Sponsored kinds (anonymous bids): the sender (a throwaway key) pays nothing; ``sponsor`` checks,
    # without writing, everything the transaction needs (raising TxError: it is then invalid, never
    # included, never charged), and ``apply`` moves ``tx.fee`` from the sponsor (a job's escrow) to the
    # block's fees. Such a transaction cannot fail once included. Its sender's account is not touched
    # (no nonce bump, nothing written): ``sponsor`` must refuse a replay itself (an anonymous bid: its
    # nullifier is recorded), so a throwaway key leaves nothing in state.
    sponsor: Callable[[Execution, Transaction], None] | None = None
    # A static check of the whole transaction beyond its body (an anonymous bid's sender is derived from
    # its nullifier, so the pool holds one per nullifier); run before the body check.
    check_tx: Callable[[Transaction], None] | None = None


def _check_transfer(body: dict) -> None:
    if body.keys() != {"to", "amount"}:
        raise TxError("transfer body must be exactly {to, amount}", "invalid_body")
    to = body["to"]
    if type(to) is not bytes or len(to) != 32:
        raise TxError("transfer 'to' must be a 32-byte public key", "invalid_body")
    amount = body["amount"]
    if type(amount) is not int or not (0 < amount <= U64_MAX):
        raise TxError("transfer 'amount' must be a positive integer of base units", "invalid_body")


def _apply_transfer(ex: Execution, tx: Transaction) -> None:
    amount = tx.body["amount"]
    ex.debit(tx.sender, amount)
    ex.credit(tx.body["to"], amount)


TX_KINDS: dict[str, TxKind] = {
    TX_TRANSFER: TxKind(TX_TRANSFER, _check_transfer, lambda tx: tx.body["amount"], _apply_transfer),
}


def register_tx_kind(kind: TxKind) -> None:
    """Add a transaction type (market and staking modules register theirs)."""
    TX_KINDS[kind.name] = kind


@dataclass(frozen=True)
class BlockHook:
    """System logic that runs in every block, outside transactions (awards, expiries, epochs, rewards).

    ``begin`` runs before the block's transactions, ``end`` after them and before leftover fees go to
    the proposer (a hook that distributes fees itself sets ``ex.fees = 0``). ``genesis`` runs once
    when the chain is created, on an empty state. Hooks run in ascending ``order``. A hook raising
    :class:`HookError` makes the block invalid; ExecFailure from a hook is a bug and also invalidates it.
    """

    name: str
    order: int = 100
    begin: Callable[[Execution], None] | None = None
    end: Callable[[Execution], None] | None = None
    genesis: Callable[[Execution, Any], None] | None = None


BLOCK_HOOKS: list[BlockHook] = []


def register_block_hook(hook: BlockHook) -> None:
    """Add (or replace, by name) a block hook."""
    BLOCK_HOOKS[:] = sorted([h for h in BLOCK_HOOKS if h.name != hook.name] + [hook], key=lambda h: (h.order, h.name))


def _run_hooks(ex: Execution, phase: str) -> None:
    for hook in BLOCK_HOOKS:
        fn = getattr(hook, phase)
        if fn is None:
            continue
        ex.journal.clear()
        try:
            fn(ex)
        except ExecFailure as exc:
            raise HookError(f"block hook {hook.name}.{phase} failed: {exc}") from None
        ex.journal.clear()


def check_tx_static(tx: Transaction, chain_id: str, params: ChainParams) -> TxKind:
    """Checks that need no state. Raises :class:`TxError` with a reason."""
    if tx.chain_id != chain_id:
        raise TxError(f"wrong chain id: expected '{chain_id}', got '{tx.chain_id}'", "wrong_chain")
    kind = TX_KINDS.get(tx.type)
    if kind is None:
        raise TxError(f"unknown transaction type '{tx.type}'", "unknown_type")
    if tx.fee < params.min_fee:
        raise TxError(f"fee too low: {tx.fee} < minimum {params.min_fee}", "fee_too_low")
    if kind.check_tx is not None:  # cheap, first
        kind.check_tx(tx)
    kind.check_body(tx.body)
    return kind


def tx_cost(tx: Transaction) -> int:
    """Total the sender must hold for ``tx`` to succeed: fee + value moved (nothing for a sponsored kind)."""
    kind = TX_KINDS.get(tx.type)
    if kind is not None and kind.sponsor is not None:
        return 0
    return tx.fee + (kind.cost(tx) if kind is not None else 0)


def check_body(tx: Transaction) -> None:
    kind = TX_KINDS.get(tx.type)
    if kind is None:
        raise TxError(f"unknown transaction type '{tx.type}'", "invalid_body")
    if kind.check_tx is not None:
        kind.check_tx(tx)
    kind.check_body(tx.body)


def apply_tx(ex: Execution, tx: Transaction, *, verified: bool = False) -> TxResult:
    """Apply one transaction to the overlay. Raises :class:`TxError` if it makes the block invalid."""
    kind = check_tx_static(tx, ex.env.chain_id, ex.env.params)
    if not verified and not tx.verify_signature():
        raise TxError("invalid transaction signature", "bad_signature")
    sender = ex.account(tx.sender)
    if tx.nonce != sender.nonce:
        raise TxError(f"bad nonce: account nonce is {sender.nonce}, tx nonce {tx.nonce}", "bad_nonce")
    if kind.sponsor is not None:
        kind.sponsor(ex, tx)
    elif sender.balance < tx.fee:
        raise TxError(f"cannot pay fee: balance {sender.balance} < fee {tx.fee}", "insufficient_fee_balance")
    work = 0
    if kind.work is not None:
        work = kind.work(ex, tx)
        budget = ex.env.params.market.max_dispute_work_per_block
        if ex.work_used + work > budget:
            raise TxError(
                f"block dispute work budget exhausted: {ex.work_used} + {work} > {budget} units",
                "block_work_exceeded",
            )
    ex.work_used += work
    if kind.sponsor is None:
        sender.balance -= tx.fee
        sender.nonce += 1
        ex.dirty.add(tx.sender)
    ex.fees += tx.fee
    ex.journal.clear()
    try:
        kind.apply(ex, tx)
    except ExecFailure as exc:
        if kind.sponsor is not None:  # its sponsor check missed a refusal: a bug, not a fee-free failure
            raise InvariantError(f"sponsored {tx.type} failed after its check: {exc}") from None
        ex.rollback()  # a failed body leaves no partial writes; fee and nonce stay charged
        return TxResult(False, exc.reason, str(exc))
    ex.journal.clear()
    return TxResult(True)


@dataclass
class BlockOutcome:
    results: list[TxResult]
    accounts: dict[bytes, Account]
    fees: int
    state_changes: dict[bytes, bytes | None] = field(default_factory=dict)
    skipped: list[tuple[Transaction, TxError]] = field(default_factory=list)
    included: list[Transaction] = field(default_factory=list)
    objects: dict[bytes, bytes | None] = field(default_factory=dict)
    events: list[tuple[str, dict]] = field(default_factory=list)
    valset_update: tuple[int, list[tuple[bytes, int]]] | None = None

    def results_hash(self) -> bytes:
        from .types import merkle_root

        return merkle_root([codec.encode(r.consensus_obj()) for r in self.results])


def execute_block(
    reader: StateReader,
    env: BlockEnv,
    txs: Iterable[Transaction],
    *,
    is_verified: Callable[[Transaction], bool] | None = None,
    skip_invalid: bool = False,
) -> BlockOutcome:
    """Execute ``txs`` on top of ``reader``. With ``skip_invalid`` (block building) a transaction that
    would make the block invalid is left out and reported in ``skipped``; otherwise it raises."""
    ex = Execution(reader, env)
    _run_hooks(ex, "begin")
    results: list[TxResult] = []
    included: list[Transaction] = []
    skipped: list[tuple[Transaction, TxError]] = []
    for tx in txs:
        verified = is_verified(tx) if is_verified is not None else False
        if skip_invalid:
            # apply_tx raises before it changes anything, so a skipped tx leaves no trace.
            try:
                results.append(apply_tx(ex, tx, verified=verified))
            except TxError as exc:
                skipped.append((tx, exc))
                continue
        else:
            results.append(apply_tx(ex, tx, verified=verified))
        included.append(tx)
    _run_hooks(ex, "end")
    if ex.fees:
        ex.credit(env.proposer, ex.fees)
    changed = {pk: ex.accounts[pk] for pk in ex.dirty}
    state_changes: dict[bytes, bytes | None] = {
        account_state_key(pk): sha256(acc.encode()) for pk, acc in changed.items()
    }
    for key, value in ex.objects.items():
        state_changes[object_state_key(key)] = sha256(value) if value is not None else None
    return BlockOutcome(
        results, changed, ex.fees, state_changes, skipped, included, dict(ex.objects), ex.events, ex.valset_update
    )


def execute_genesis(reader: StateReader, env: BlockEnv, genesis: Any) -> BlockOutcome:
    """Create the genesis state: allocations, the supply record, then every hook's ``genesis``."""
    ex = Execution(reader, env)
    for pk, bal in genesis.accounts:
        ex.credit(pk, bal)
    ex.mint(genesis.total_supply)
    for hook in BLOCK_HOOKS:
        if hook.genesis is not None:
            hook.genesis(ex, genesis)
            ex.journal.clear()
    changed = {pk: ex.accounts[pk] for pk in ex.dirty}
    state_changes: dict[bytes, bytes | None] = {
        account_state_key(pk): sha256(acc.encode()) for pk, acc in changed.items()
    }
    for key, value in ex.objects.items():
        state_changes[object_state_key(key)] = sha256(value) if value is not None else None
    return BlockOutcome([], changed, 0, state_changes, [], [], dict(ex.objects), ex.events, ex.valset_update)
