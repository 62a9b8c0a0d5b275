"""The chain: committed state + block building, validation and atomic commit.

``ChainState`` joins the pure state machine (``state/machine.py``), the state tree (``state/smt.py``)
and the store. Building and validating a block never change committed state; ``commit`` writes the
block, its commit, tx index, state changes, tree nodes and the new head in one synced WriteBatch.
CPU-heavy calls (``build_block``, ``validate_block``, ``prove``, ``commit``) are meant to run in a
worker thread, serialised by ``self.lane`` (one at a time), so the trio loop stays responsive.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cbor2

from . import codec, rules  # noqa: F401  (rules: registers the market and staking tx kinds and hooks)
from .codec import sha256
from .errors import AitbcError, BlockError
from .evidence import DuplicateVote
from .genesis import Genesis
from .machine import (
    SUPPLY_KEY,
    VALSETS_KEY,
    BlockEnv,
    BlockOutcome,
    HookError,
    TxResult,
    account_state_key,
    execute_block,
    execute_genesis,
    object_state_key,
)
from .smt import SmtProof, SparseMerkleTree, TreeUpdate
from .store import (
    K_ADDR_INDEX_FROM,
    K_GENESIS,
    K_HEAD,
    P_ACCOUNT,
    P_ADDR_TX,
    P_BLOCK,
    P_COMMIT,
    P_HASH_BY_HEIGHT,
    P_OBJECT,
    P_RESULTS,
    P_TREE,
    P_TX,
    Head,
    Store,
    StoreError,
    h8,
)
from .types import EMPTY_HASH, Account, Block, BlockHeader, Commit, Transaction, merkle_root

log = logging.getLogger("aitbc.chain")


@dataclass
class PendingBlock:
    """A block executed against the current head but not committed."""

    block: Block
    outcome: BlockOutcome
    tree_update: TreeUpdate
    build_seconds: float = 0.0
    commit_seconds: float = 0.0


def validators_hash(validators: Sequence[tuple[bytes, int]]) -> bytes:
    """Hash of a validator set: SHA-256 of the canonical list of [pubkey, power], sorted by key."""
    return sha256(codec.encode([[pk, p] for pk, p in sorted(validators)]))


#: Body fields that name an account besides the sender (transfer ``to``; staking ``validator``,
#: redelegation ``from``/``to``): a transaction is in the history of each of them.
_NAMED_FIELDS = ("to", "from", "validator")


def named_accounts(tx: Transaction) -> set[bytes]:
    """The accounts a transaction belongs to in the node's history index: its sender and the 32-byte
    keys of :data:`_NAMED_FIELDS` in its body."""
    out = {tx.sender}
    body = tx.body
    if isinstance(body, dict):
        for f in _NAMED_FIELDS:
            v = body.get(f)
            if type(v) is bytes and len(v) == 32:
                out.add(v)
    return out


class ChainState:
    """Committed chain state on top of a :class:`Store`."""

    def __init__(self, store: Store, genesis: Genesis) -> None:
        self.store = store
        self.genesis = genesis
        self.chain_id = genesis.chain_id
        self.params = genesis.params
        self.lane = threading.Lock()
        rules.market.set_cost_params(genesis.params.market)  # mempool cost of a challenge = its bond
        self._block_cache: dict[bytes, Block] = {}  # small FIFO of decoded blocks for RPC reads
        stored = store.genesis_hash()
        if stored is not None and stored != genesis.hash:
            raise StoreError(
                f"the database belongs to another chain (genesis {stored.hex()[:16]}…, "
                f"this genesis.json is {genesis.hash.hex()[:16]}…); use another --home"
            )
        # Caches every tree node down to depth 19 (~1M entries) once touched: reads below it hit LevelDB.
        self.tree = SparseMerkleTree(store.get, prefix=P_TREE, cache_size=1_000_000)
        if stored is None:
            self._init_genesis()
        head = store.head()
        if head is None:
            raise StoreError("the database has a genesis but no head (database damaged)")
        self.head: Head = head
        if self.tree.root != head.state_root:
            raise StoreError("state tree root does not match the head's state root (database damaged)")
        raw = store.get(K_ADDR_INDEX_FROM)
        if raw is None:  # a database from before the history index: its history starts after its head
            raw = h8(head.height + 1)
            store.write_batch({K_ADDR_INDEX_FROM: raw})
        self.addr_index_from = int.from_bytes(raw, "big")

    # genesis -----------------------------------------------------------------------------------
    def _init_genesis(self) -> None:
        g = self.genesis
        puts: dict[bytes, bytes | None] = {}
        outcome = execute_genesis(self, self._env(0, g.genesis_time, b"\x00" * 32), g)
        for pk, acc in outcome.accounts.items():
            puts[P_ACCOUNT + pk] = acc.encode()
        for key, value in outcome.objects.items():
            puts[P_OBJECT + key] = value
        upd = self.tree.compute_update(outcome.state_changes)
        puts.update({k: v for k, v in upd.writes.items()})
        head = Head(0, g.hash, g.genesis_time, upd.root)
        puts[K_HEAD] = head.encode()
        puts[K_GENESIS] = g.hash
        puts[K_ADDR_INDEX_FROM] = h8(1)
        puts[P_HASH_BY_HEIGHT + h8(0)] = g.hash
        self.store.write_batch(puts)
        self.tree.apply(upd)
        log.info("initialised genesis %s (chain %s, %d accounts)", g.hash.hex()[:16], g.chain_id, len(g.accounts))

    # StateReader ---------------------------------------------------------------------------------
    def get_account(self, public_key: bytes) -> Account | None:
        return self.store.account(public_key)

    def get_object(self, key: bytes) -> bytes | None:
        return self.store.object(key)

    def account(self, public_key: bytes) -> Account:
        """Committed account (zero account if unknown)."""
        return self.store.account(public_key) or Account()

    # building and validating ------------------------------------------------------------------------
    def _env(
        self,
        height: int,
        time_ms: int,
        proposer: bytes,
        last_commit: Commit | None = None,
        evidence: tuple[bytes, ...] = (),
    ) -> BlockEnv:
        signers = frozenset(s.validator for s in last_commit.signatures) if last_commit is not None else frozenset()
        return BlockEnv(
            self.chain_id, height, time_ms, proposer, self.params, signers, evidence, self.genesis.consensus
        )

    def check_evidence(self, items: Sequence[bytes]) -> list[DuplicateVote]:
        """Decode block evidence and verify its signatures (membership and age are the staking rules')."""
        out: list[DuplicateVote] = []
        seen: set[bytes] = set()
        for i, raw in enumerate(items):
            try:
                ev = DuplicateVote.decode(raw)
                for v in (ev.vote_a, ev.vote_b):
                    if not v.verify(self.chain_id):
                        raise BlockError("a signature does not verify")
            except AitbcError as exc:
                raise BlockError(f"evidence {i} is invalid: {exc}") from None
            if ev.hash() in seen:
                raise BlockError(f"evidence {i} is a duplicate within the block")
            seen.add(ev.hash())
            out.append(ev)
        return out

    def validator_sets(self) -> list[tuple[int, list[tuple[bytes, int]]]]:
        """Validator sets installed by the staking rules: (from_height, [(pubkey, power)]), oldest first."""
        raw = self.store.object(VALSETS_KEY)
        if raw is None:
            return []
        return [(h, [(pk, p) for pk, p in vs]) for h, vs in cbor2.loads(raw)]

    def supply(self) -> int:
        """The recorded total supply (base units) at the head."""
        raw = self.store.object(SUPPLY_KEY)
        return cbor2.loads(raw) if raw is not None else 0

    def prove_object(self, key: bytes) -> tuple[SmtProof, Head, bytes | None]:
        """State-tree proof of a generic object, with the head it belongs to and the object."""
        with self.lane:
            return self.tree.prove(object_state_key(key)), self.head, self.store.object(key)

    def build_block(
        self,
        txs: Sequence[Transaction],
        *,
        proposer: bytes,
        time_ms: int,
        last_commit: Commit | None,
        validators_hash: bytes,
        next_validators_hash: bytes,
        is_verified: Callable[[Transaction], bool] | None = None,
        evidence: Sequence[bytes] = (),
    ) -> PendingBlock:
        """Execute ``txs`` on the head (leaving out those that would make the block invalid) and
        return the proposed block with its outcome. Changes nothing. ``evidence`` items the rules refuse
        (too old, already punished) are left out."""
        with self.lane:
            head = self.head
            height = head.height + 1
            time_ms = max(time_ms, head.time + 1)
            ev = tuple(self._admissible_evidence(evidence, height, time_ms, proposer, last_commit))
            outcome = execute_block(
                self,
                self._env(height, time_ms, proposer, last_commit, ev),
                txs,
                is_verified=is_verified,
                skip_invalid=True,
            )
            upd = self.tree.compute_update(outcome.state_changes)
            header = BlockHeader(
                chain_id=self.chain_id,
                height=height,
                time=time_ms,
                prev_hash=head.hash,
                tx_root=merkle_root([t.hash for t in outcome.included]),
                state_root=upd.root,
                results_hash=outcome.results_hash(),
                proposer=proposer,
                validators_hash=validators_hash,
                next_validators_hash=next_validators_hash,
                last_commit_hash=last_commit.hash() if last_commit is not None else EMPTY_HASH,
                evidence_hash=merkle_root(list(ev)),
            )
            block = Block(header, tuple(outcome.included), last_commit, ev)
            return PendingBlock(block, outcome, upd)

    def validate_block(
        self, block: Block, *, is_verified: Callable[[Transaction], bool] | None = None
    ) -> PendingBlock:
        """Check ``block`` extends the head and re-execute it; :class:`BlockError` says what is wrong.
        Signatures of ``last_commit`` are checked by consensus (it knows the validator set)."""
        with self.lane:
            h = block.header
            head = self.head
            if h.chain_id != self.chain_id:
                raise BlockError(f"block for chain '{h.chain_id}', expected '{self.chain_id}'")
            if h.height != head.height + 1:
                raise BlockError(f"block height {h.height} does not extend head {head.height}")
            if h.prev_hash != head.hash:
                raise BlockError("block prev_hash does not match the head")
            if h.time <= head.time:
                raise BlockError("block time is not after the previous block's time")
            if len(block.txs) > self.params.max_block_txs:
                raise BlockError(f"block has {len(block.txs)} txs > max {self.params.max_block_txs}")
            if sum(len(t.raw) for t in block.txs) > self.params.max_block_bytes:
                raise BlockError("block transactions exceed max_block_bytes")
            if h.tx_root != merkle_root([t.hash for t in block.txs]):
                raise BlockError("tx_root does not match the block's transactions")
            expected_lc = block.last_commit.hash() if block.last_commit is not None else EMPTY_HASH
            if h.last_commit_hash != expected_lc:
                raise BlockError("last_commit_hash does not match the block's last commit")
            if h.height > 1 and block.last_commit is None:
                raise BlockError("block above height 1 must carry the previous height's commit")
            if block.last_commit is not None and (
                block.last_commit.height != head.height or block.last_commit.block_hash != head.hash
            ):
                raise BlockError("last_commit is not for the previous block")
            if h.evidence_hash != merkle_root(list(block.evidence)):
                raise BlockError("evidence_hash does not match the block's evidence")
            self.check_evidence(block.evidence)
            env = self._env(h.height, h.time, h.proposer, block.last_commit, block.evidence)
            try:
                outcome = execute_block(self, env, block.txs, is_verified=is_verified)
            except HookError as exc:
                raise BlockError(f"block rules: {exc}") from None
            except Exception as exc:  # TxError and friends: one bad tx invalidates the block
                raise BlockError(f"invalid transaction in block: {exc}") from None
            if h.results_hash != outcome.results_hash():
                raise BlockError("results_hash does not match re-execution")
            upd = self.tree.compute_update(outcome.state_changes)
            if h.state_root != upd.root:
                raise BlockError("state_root does not match re-execution")
            return PendingBlock(block, outcome, upd)

    def _admissible_evidence(
        self, items: Sequence[bytes], height: int, time_ms: int, proposer: bytes, last_commit: Commit | None
    ) -> list[bytes]:
        """The evidence items (in order, deduplicated) that a block at ``height`` may carry: each is tried
        alone against the rules, so one refused item never invalidates the proposal."""
        out: list[bytes] = []
        for raw in dict.fromkeys(items):
            try:
                self.check_evidence([raw])
                execute_block(self, self._env(height, time_ms, proposer, last_commit, tuple(out) + (raw,)), [])
            except (AitbcError, HookError) as exc:
                log.info("evidence %s left out of block %d: %s", sha256(raw).hex()[:16], height, exc)
                continue
            out.append(raw)
        return out

    # commit ------------------------------------------------------------------------------------
    def commit(self, pending: PendingBlock, commit: Commit) -> Head:
        """Persist ``pending`` with the commit that finalized it, atomically and durably. If the write
        fails, :class:`FatalWriteError` (``store_write``) propagates and nothing here changes (head,
        tree): the store holds the previous block, never part of this one; the caller must stop."""
        with self.lane:
            block = pending.block
            if block.header.prev_hash != self.head.hash or block.height != self.head.height + 1:
                raise BlockError("pending block no longer extends the head")
            if commit.block_hash != block.hash or commit.height != block.height:
                raise BlockError("commit is not for this block")
            height = block.height
            hb = h8(height)
            puts: dict[bytes, bytes | None] = {
                P_BLOCK + block.hash: block.encode(),
                P_HASH_BY_HEIGHT + hb: block.hash,
                P_COMMIT + hb: commit.encode(),
                P_RESULTS + hb: codec.encode([r.to_obj() for r in pending.outcome.results]),
            }
            for i, (tx, res) in enumerate(zip(block.txs, pending.outcome.results, strict=True)):
                puts[P_TX + tx.hash] = codec.encode([height, i, tx.raw, res.to_obj()])
                pos = hb + i.to_bytes(4, "big")
                for who in named_accounts(tx):
                    puts[P_ADDR_TX + who + pos] = tx.hash
            for pk, acc in pending.outcome.accounts.items():
                puts[P_ACCOUNT + pk] = acc.encode()
            for key, value in pending.outcome.objects.items():
                puts[P_OBJECT + key] = value
            puts.update(pending.tree_update.writes)
            head = Head(height, block.hash, block.header.time, block.header.state_root)
            puts[K_HEAD] = head.encode()
            self.store.write_batch(puts, sync=True)
            self.tree.apply(pending.tree_update)
            self.head = head
            return head

    # reads -------------------------------------------------------------------------------------
    def block_at(self, height: int) -> Block | None:
        bh = self.store.block_hash(height)
        if bh is None or height == 0:
            return None
        return self.block_by_hash(bh)

    def block_by_hash(self, block_hash: bytes) -> Block | None:
        cached = self._block_cache.get(block_hash)
        if cached is not None:
            return cached
        raw = self.store.block_raw(block_hash)
        if raw is None:
            return None
        block = Block.decode(raw, max_bytes=len(raw))
        if len(self._block_cache) >= 64:
            self._block_cache.pop(next(iter(self._block_cache)))
        self._block_cache[block_hash] = block
        return block

    def block_raw_at(self, height: int) -> bytes | None:
        bh = self.store.block_hash(height)
        return self.store.block_raw(bh) if bh is not None else None

    def commit_at(self, height: int) -> Commit | None:
        raw = self.store.commit_raw(height)
        return Commit.decode(raw) if raw is not None else None

    def results_at(self, height: int) -> list[TxResult]:
        raw = self.store.results_raw(height)
        return [TxResult.from_obj(r) for r in cbor2.loads(raw)] if raw is not None else []

    def address_history(
        self, address: bytes, before: tuple[int, int] | None = None, limit: int = 25
    ) -> list[tuple[int, int, bytes]]:
        """``(height, index, tx hash)`` of committed transactions that name ``address`` (sender or a
        :data:`_NAMED_FIELDS` field), newest first, before ``(height, index)``; from
        ``addr_index_from`` on (a node-local index written with each block, not part of the state)."""
        return self.store.address_txs(address, before, limit)

    def tx_lookup(self, tx_hash: bytes) -> tuple[Transaction, int, int, TxResult] | None:
        """(tx, height, index, result) of a committed transaction (one index read, no block decode)."""
        entry = self.store.tx_entry(tx_hash)
        if entry is None:
            return None
        height, index, raw, result = entry
        return Transaction.decode(raw), height, index, TxResult.from_obj(result)

    def prove_account(self, public_key: bytes) -> tuple[SmtProof, Head, Account | None]:
        """State-tree proof, the head it belongs to and the account, read together under the lane."""
        with self.lane:
            return self.tree.prove(account_state_key(public_key)), self.head, self.store.account(public_key)
