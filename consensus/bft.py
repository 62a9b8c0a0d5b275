"""The Tendermint BFT core: a pure, deterministic state machine for one height at a time.

It implements Algorithm 1 of "The latest gossip on BFT consensus" (Buchman, Kwon, Milosevic 2018)
with weighted voting power. "2f+1" below means MORE than 2/3 of the total power
(:meth:`ValidatorSet.quorum`), "f+1" means more than 1/3.

No I/O, no clock, no trio: the driver (:mod:`consensus.bft_engine`) feeds inputs

* :meth:`BftCore.start_height` — begin a height (StartRound(0));
* :meth:`BftCore.on_proposal` — a signed proposal and whether its block is valid (the driver executes
  the block against its chain, off the event loop, and passes the verdict);
* :meth:`BftCore.on_vote` — a signed prevote or precommit;
* :meth:`BftCore.on_timeout` — a timeout the core scheduled has expired;
* :meth:`BftCore.on_own_block` — the block the driver built after a :class:`RequestBlock`;

and executes the returned actions in order: :class:`RequestBlock`, :class:`Broadcast` (a message this
node signed — persist it in the WAL, then send it), :class:`ScheduleTimeout`, :class:`Decide`,
:class:`EvidenceFound` and :class:`MissingBlock` (+2/3 precommitted a block we do not have: catch up).

Signing goes through the ``signer`` callable (the driver passes a wrapper around
:meth:`SignState.sign`, which persists before signing and refuses conflicts). A signer that refuses
(:class:`DoubleSignError`) is treated as "this message is not sent" — always safe; the step still
advances. Any other error of the signer (e.g. :class:`FatalWriteError`: the sign state could not be
written) propagates: nothing is signed and the driver must stop. A core with ``signer=None`` follows
the votes and decides, but never signs (a non-validator node).

Upon-rules (line numbers of Algorithm 1), evaluated to a fixpoint after every input:

* 22/28  proposal for the current round (pol_round -1, or pol_round vr with 2f+1 prevotes of vr for it)
  while in propose: prevote it if valid and not locked on something else (lockedRound <= vr), else nil;
* 34     2f+1 prevotes of any kind in the current round while in prevote: schedule timeoutPrevote;
* 36     proposal + 2f+1 prevotes for it in the current round while in prevote or later, first time:
  lock + precommit it (if still in prevote), and remember it as the valid value;
* 44     2f+1 nil prevotes while in prevote: precommit nil;
* 47     2f+1 precommits of any kind in the current round: schedule timeoutPrecommit;
* 49     2f+1 precommits for a block in ANY round r and we hold that block, valid: decide
  (the block may have arrived in any round's proposal: a block is identified by its hash);
* 55     f+1 power sent messages for a round r > current: skip to round r (the highest such round).

Timeouts grow per round: propose = timeout_propose_ms + r * timeout_delta_ms, prevote and precommit =
timeout_vote_ms + r * timeout_delta_ms (from :class:`ChainParams`).

Memory bounds per height (n validators, current round R): one vote per validator per (round, type),
for rounds <= R plus at most ``MAX_FUTURE_ROUNDS`` distinct future rounds per validator (CometBFT's
"catch-up rounds"); proposals only for rounds <= R + 1 (or for a block that already has 2/3+
precommits), and proposals older than R - 2 are pruned unless their block is locked or valid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from state import codec
from state.crypto import KIND_PROPOSAL, KIND_VOTE, SigningKey, verify
from state.errors import AitbcError, DecodeError, InvariantError
from state.genesis import ChainParams
from state.types import PRECOMMIT, PREVOTE, Block, Commit, CommitSig, Vote, vote_sign_bytes

from .engine import proposal_sign_bytes
from .evidence import DuplicateVote
from .signstate import STEP_PRECOMMIT, STEP_PREVOTE, STEP_PROPOSE, DoubleSignError
from .validators import ValidatorSet

__all__ = [
    "NIL",
    "TIMEOUT_PROPOSE",
    "TIMEOUT_PREVOTE",
    "TIMEOUT_PRECOMMIT",
    "MAX_PROPOSAL_BYTES",
    "MAX_ROUND",
    "Step",
    "Timeouts",
    "Signer",
    "Proposal",
    "MessageRejected",
    "VoteRejected",
    "ProposalRejected",
    "RequestBlock",
    "Broadcast",
    "ScheduleTimeout",
    "Decide",
    "EvidenceFound",
    "MissingBlock",
    "Action",
    "VoteSet",
    "BftCore",
    "proposal_sign_bytes",
]

NIL = b""  # the block hash of a nil vote

TIMEOUT_PROPOSE = "propose"
TIMEOUT_PREVOTE = "prevote"
TIMEOUT_PRECOMMIT = "precommit"
TIMEOUT_KINDS = (TIMEOUT_PROPOSE, TIMEOUT_PREVOTE, TIMEOUT_PRECOMMIT)

MAX_ROUND = 1 << 31
MAX_PROPOSAL_BYTES = (32 << 20) + 4096  # a block (Block.decode's default bound) plus the envelope
MAX_FUTURE_ROUNDS = 2  # distinct rounds above the current one a validator may have votes in
KEEP_PAST_PROPOSAL_ROUNDS = 2

# (kind, height, round, sign-state step, sign bytes) -> signature
Signer = Callable[[str, int, int, int, bytes], bytes]


class Step(IntEnum):
    NEW_HEIGHT = 0
    PROPOSE = 1
    PREVOTE = 2
    PRECOMMIT = 3
    DECIDED = 4

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Round timeouts in ms; each grows by ``delta_ms`` per round."""

    propose_ms: int = 3000
    vote_ms: int = 1000
    delta_ms: int = 500

    @classmethod
    def from_params(cls, p: ChainParams) -> Timeouts:
        return cls(p.timeout_propose_ms, p.timeout_vote_ms, p.timeout_delta_ms)

    def duration(self, kind: str, round_: int) -> int:
        base = self.propose_ms if kind == TIMEOUT_PROPOSE else self.vote_ms
        return base + round_ * self.delta_ms


# --------------------------------------------------------------------------------------------------
# Messages


class MessageRejected(AitbcError):
    """A consensus message refused by the core. ``reason`` is one of: ``not_started``, ``wrong_height``,
    ``unknown_validator``, ``bad_signature``, ``not_proposer``, ``bad_pol_round``, ``block_mismatch``,
    ``round_too_far``, ``invalid``. The driver logs it and penalises the sender for the ones that can only
    come from a faulty or malicious peer (see ``bft_engine.PENALISED``)."""

    reason = "invalid"


class VoteRejected(MessageRejected):
    pass


class ProposalRejected(MessageRejected):
    pass


_PROPOSAL_KEYS = frozenset({"height", "round", "pol_round", "block", "proposer", "sig"})


@dataclass(frozen=True, slots=True)
class Proposal:
    """⟨PROPOSAL, h, r, v, pol_round⟩ signed by the proposer of (h, r). ``pol_round`` -1 = none.

    The signature (kind ``proposal``) is over ``proposal_sign_bytes(h, r, pol_round, block.hash)``; the
    block travels in full as its own canonical encoding (``block_raw``), nested as a byte string."""

    height: int
    round: int
    pol_round: int
    block: Block
    proposer: bytes
    sig: bytes
    block_raw: bytes = field(default=b"", repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.block_raw:
            object.__setattr__(self, "block_raw", self.block.encode())

    @property
    def block_hash(self) -> bytes:
        return self.block.hash

    def sign_bytes(self) -> bytes:
        return proposal_sign_bytes(self.height, self.round, self.pol_round, self.block.hash)

    def verify(self, chain_id: str) -> bool:
        return verify(KIND_PROPOSAL, chain_id, self.proposer, self.sign_bytes(), self.sig)

    @classmethod
    def create(
        cls, key: SigningKey, chain_id: str, height: int, round_: int, pol_round: int, block: Block
    ) -> Proposal:
        """Sign directly with ``key`` (tests and tools; validators sign through their SignState)."""
        sig = key.sign(KIND_PROPOSAL, chain_id, proposal_sign_bytes(height, round_, pol_round, block.hash))
        return cls(height, round_, pol_round, block, key.public_key, sig)

    def to_obj(self) -> dict:
        return {
            "height": self.height,
            "round": self.round,
            "pol_round": self.pol_round,
            "block": self.block_raw,
            "proposer": self.proposer,
            "sig": self.sig,
        }

    def encode(self) -> bytes:
        return codec.encode(self.to_obj())

    @classmethod
    def from_obj(cls, obj: Any, *, max_bytes: int = MAX_PROPOSAL_BYTES) -> Proposal:
        what = "proposal"
        if type(obj) is not dict or obj.keys() != _PROPOSAL_KEYS:
            raise DecodeError(f"{what}: expected a map with exactly {sorted(_PROPOSAL_KEYS)}")
        h, r, pol = obj["height"], obj["round"], obj["pol_round"]
        if type(h) is not int or not 1 <= h < (1 << 64):
            raise DecodeError(f"{what}: 'height' must be an integer >= 1")
        if type(r) is not int or not 0 <= r <= MAX_ROUND:
            raise DecodeError(f"{what}: 'round' must be an integer in [0, {MAX_ROUND}]")
        if type(pol) is not int or not -1 <= pol < r:
            raise DecodeError(f"{what}: 'pol_round' must be -1 or a round below 'round'")
        proposer, sig, raw = obj["proposer"], obj["sig"], obj["block"]
        if type(proposer) is not bytes or len(proposer) != 32:
            raise DecodeError(f"{what}: 'proposer' must be 32 bytes")
        if type(sig) is not bytes or len(sig) != 64:
            raise DecodeError(f"{what}: 'sig' must be 64 bytes")
        if type(raw) is not bytes:
            raise DecodeError(f"{what}: 'block' must be the block's encoding (bytes)")
        try:
            block = Block.decode(raw, max_bytes=max_bytes)
        except DecodeError as exc:
            raise DecodeError(f"{what}: block: {exc}", exc.reason) from None
        if block.height != h:
            raise DecodeError(f"{what}: block height {block.height} != proposal height {h}")
        return cls(h, r, pol, block, proposer, sig, raw)

    @classmethod
    def decode(cls, raw: bytes, *, max_bytes: int = MAX_PROPOSAL_BYTES) -> Proposal:
        """Strict decode (canonical CBOR, size bound first). Signature and proposer are checked by the
        core (:meth:`BftCore.check_proposal`), the block by the chain."""
        return cls.from_obj(codec.decode(raw, max_bytes=max_bytes), max_bytes=max_bytes)


# --------------------------------------------------------------------------------------------------
# Actions


@dataclass(frozen=True, slots=True)
class RequestBlock:
    """This node proposes (height, round) and has no valid value: build a block and call
    :meth:`BftCore.on_own_block` with it."""

    height: int
    round: int


@dataclass(frozen=True, slots=True)
class Broadcast:
    """A message this node just signed: write it to the WAL (synced), then send it to every peer."""

    msg: Proposal | Vote


@dataclass(frozen=True, slots=True)
class ScheduleTimeout:
    """Call :meth:`BftCore.on_timeout` with (kind, height, round) after ``ms`` milliseconds."""

    kind: str
    height: int
    round: int
    ms: int


@dataclass(frozen=True, slots=True)
class Decide:
    """``block`` is final at its height; ``commit`` holds the 2/3+ precommits of round ``commit.round``."""

    block: Block
    commit: Commit


@dataclass(frozen=True, slots=True)
class EvidenceFound:
    evidence: DuplicateVote


@dataclass(frozen=True, slots=True)
class MissingBlock:
    """2/3+ precommitted ``block_hash`` in ``round`` but this node has no valid block with that hash
    (it missed the proposal, or its own state disagrees): the driver should catch up."""

    height: int
    round: int
    block_hash: bytes


Action = RequestBlock | Broadcast | ScheduleTimeout | Decide | EvidenceFound | MissingBlock


# --------------------------------------------------------------------------------------------------
# Vote bookkeeping


class VoteSet:
    """The votes of one (height, round, type), power summed per block hash. Callers verify votes first.

    Each validator has one *first* vote here; it counts towards "2/3+ of any votes" once. A validator
    that equivocates may also have *conflicting* votes counted for other hashes (:meth:`add_conflicting`):
    Algorithm 1 counts messages per value, so 2f+1 prevotes for v include an equivocator's vote for v
    even if we saw its vote for w first — otherwise a byzantine validator could hide a real polka from
    some correct nodes forever. Safety is unaffected (quorum intersection holds whatever f byzantine
    validators sign); the core bounds which conflicting votes it keeps."""

    __slots__ = ("height", "round", "type", "quorum", "total_power", "votes", "by_hash", "power", "total")

    def __init__(self, height: int, round_: int, type_: int, validators: ValidatorSet) -> None:
        self.height = height
        self.round = round_
        self.type = type_
        self.quorum = validators.quorum()
        self.total_power = validators.total_power
        self.votes: dict[bytes, tuple[Vote, int]] = {}  # validator -> (first vote, power)
        self.by_hash: dict[bytes, dict[bytes, Vote]] = {}  # block hash -> validator -> vote
        self.power: dict[bytes, int] = {}  # block hash -> power (first and conflicting votes)
        self.total = 0  # power of the validators with a vote here (each counted once)

    def __len__(self) -> int:
        return len(self.votes)

    def get(self, validator: bytes) -> Vote | None:
        """The first vote of ``validator`` here."""
        e = self.votes.get(validator)
        return e[0] if e is not None else None

    def contains(self, vote: Vote) -> bool:
        """True if this exact vote is counted (as a first or a conflicting vote)."""
        return self.by_hash.get(vote.block_hash, {}).get(vote.validator) == vote

    def _tally(self, vote: Vote, power: int) -> None:
        self.by_hash.setdefault(vote.block_hash, {})[vote.validator] = vote
        self.power[vote.block_hash] = self.power.get(vote.block_hash, 0) + power

    def add(self, vote: Vote, power: int) -> bool:
        """Count ``vote`` as the validator's first vote; False if it already has one here."""
        if vote.validator in self.votes:
            return False
        self.votes[vote.validator] = (vote, power)
        self._tally(vote, power)
        self.total += power
        return True

    def add_conflicting(self, vote: Vote, power: int) -> bool:
        """Count an equivocating validator's vote for another hash (not towards ``total``)."""
        if vote.validator not in self.votes or vote.validator in self.by_hash.get(vote.block_hash, {}):
            return False
        self._tally(vote, power)
        return True

    def power_for(self, block_hash: bytes) -> int:
        return self.power.get(block_hash, 0)

    def has_quorum_any(self) -> bool:
        return self.total >= self.quorum

    def quorum_hash(self) -> bytes | None:
        """A block hash (NIL for nil) with more than 2/3 of the power, if any (with equivocators there
        can be two; the smallest is returned — safety never depends on which)."""
        hs = [h for h, p in self.power.items() if p >= self.quorum]
        return min(hs) if hs else None

    def quorum_hashes(self) -> list[bytes]:
        return sorted(h for h, p in self.power.items() if p >= self.quorum)

    def commit(self, block_hash: bytes) -> Commit:
        """The :class:`Commit` of the precommits for ``block_hash`` (signatures sorted by validator)."""
        sigs = sorted(
            (CommitSig(v.validator, v.sig) for v in self.by_hash.get(block_hash, {}).values()),
            key=lambda s: s.validator,
        )
        return Commit(self.height, self.round, block_hash, tuple(sigs))

    def all_votes(self) -> list[Vote]:
        """Every counted vote (first and conflicting)."""
        return [v for d in self.by_hash.values() for v in d.values()]


# --------------------------------------------------------------------------------------------------
# The core


class BftCore:
    """Tendermint consensus for one height at a time; see the module docstring."""

    def __init__(
        self,
        chain_id: str,
        timeouts: Timeouts,
        *,
        signer: Signer | None = None,
        pubkey: bytes | None = None,
    ) -> None:
        if signer is not None and pubkey is None:
            raise ValueError("a core with a signer needs the validator's public key")
        self.chain_id = chain_id
        self.timeouts = timeouts
        self.signer = signer
        self.pubkey = pubkey
        self.sign_failures = 0  # signer refusals (e.g. SignState during WAL replay), for status/logs
        self.refused_round: int | None = None  # a round of this height in which the signer refused
        self._reset(0)
        self.validators: ValidatorSet | None = None
        self._proposer_of: Callable[[int], bytes] = lambda r: b""

    # state -------------------------------------------------------------------------------------
    def _reset(self, height: int) -> None:
        self.height = height
        self.round = 0
        self.step = Step.NEW_HEIGHT
        self.locked_value: Block | None = None
        self.locked_round = -1
        self.valid_value: Block | None = None
        self.valid_round = -1
        self.decision: Block | None = None
        self.decision_commit: Commit | None = None
        self._proposals: dict[int, tuple[Proposal, bool]] = {}  # round -> (proposal, block valid)
        self._blocks: dict[bytes, tuple[Block, bool]] = {}  # block hash -> (block, valid)
        self._extra_proposals: dict[bytes, Proposal] = {}  # equivocated proposals kept for their block
        self._votes: dict[tuple[int, int], VoteSet] = {}  # (round, type) -> votes
        self._round_senders: dict[int, dict[bytes, int]] = {}  # round -> validator -> power
        self._round_power: dict[int, int] = {}
        self._future_rounds: dict[bytes, set[int]] = {}  # validator -> rounds > current it voted in
        self._precommit_quorums: dict[int, bytes] = {}  # round -> hash with 2/3+ precommits
        self._prevote_timeout_done: set[int] = set()
        self._precommit_timeout_done: set[int] = set()
        self._polka_done: set[int] = set()
        self._missing_reported: set[tuple[int, bytes]] = set()
        self._evidence_seen: set[bytes] = set()
        self._awaiting: tuple[int, int] | None = None

    @property
    def is_validator(self) -> bool:
        """True if this core signs at the current height (has a signer and power in the set)."""
        return (
            self.signer is not None
            and self.validators is not None
            and self.pubkey is not None
            and self.validators.power_of(self.pubkey) > 0
        )

    @property
    def awaiting_block(self) -> tuple[int, int] | None:
        """(height, round) this node must build a block for, if it still needs one."""
        return self._awaiting

    def proposer(self, round_: int | None = None) -> bytes:
        return self._proposer_of(self.round if round_ is None else round_)

    def proposal(self, round_: int) -> Proposal | None:
        e = self._proposals.get(round_)
        return e[0] if e is not None else None

    def block(self, block_hash: bytes) -> tuple[Block, bool] | None:
        """(block, valid) of a block this core holds for the current height."""
        return self._blocks.get(block_hash)

    def proposal_for_block(self, block_hash: bytes) -> Proposal | None:
        """The latest stored proposal carrying ``block_hash``."""
        for r in sorted(self._proposals, reverse=True):
            p = self._proposals[r][0]
            if p.block.hash == block_hash:
                return p
        return self._extra_proposals.get(block_hash)

    def vote_set(self, round_: int, type_: int) -> VoteSet | None:
        return self._votes.get((round_, type_))

    def has_vote(self, vote: Vote) -> bool:
        """True if this exact vote is already counted (cheap duplicate check before verification)."""
        vs = self._votes.get((vote.round, vote.type))
        return vs is not None and vote.height == self.height and vs.contains(vote)

    def summary(self) -> dict:
        pv = self._votes.get((self.round, PREVOTE))
        pc = self._votes.get((self.round, PRECOMMIT))
        return {
            "height": self.height,
            "round": self.round,
            "step": self.step.label,
            "locked_round": self.locked_round,
            "locked_hash": self.locked_value.hash if self.locked_value is not None else None,
            "valid_round": self.valid_round,
            "prevotes": len(pv) if pv else 0,
            "precommits": len(pc) if pc else 0,
            "prevote_power": pv.total if pv else 0,
            "precommit_power": pc.total if pc else 0,
            "sign_failures": self.sign_failures,
        }

    def gossip_messages(self) -> list[Proposal | Vote]:
        """What to re-send when consensus makes no progress (lost messages are re-sent this way; this is
        the "gossip" the algorithm's liveness assumes: a message one correct node received reaches every
        correct node): every vote this node holds for the current and previous round (its own and the
        ones it relays, e.g. those that made it skip to this round), the proposals it holds for the
        current, valid and locked rounds, and the prevotes that justify its valid and locked values
        (the POL a re-proposal needs)."""
        out: list[Proposal | Vote] = []
        if self.decision is not None or self.height == 0:
            return out
        rounds = set()
        for r in (self.round, self.valid_round, self.locked_round):
            if r >= 0 and r in self._proposals:
                rounds.add(r)
        out.extend(self._proposals[r][0] for r in sorted(rounds))
        seen: set[Vote] = set()
        for r, value in ((self.valid_round, self.valid_value), (self.locked_round, self.locked_value)):
            vs = self._votes.get((r, PREVOTE))
            if value is not None and vs is not None:
                for v in vs.all_votes():
                    if v.block_hash == value.hash and v not in seen:
                        seen.add(v)
                        out.append(v)
        for (r, _t), vs in sorted(self._votes.items()):
            if self.round - 1 <= r <= self.round:
                for v in vs.all_votes():
                    if v not in seen:
                        seen.add(v)
                        out.append(v)
        return out

    def decision_messages(self) -> list[Proposal | Vote]:
        """After a decision: the proposal carrying the decided block and the precommits that decided
        it, so peers one height behind can decide too."""
        if self.decision is None or self.decision_commit is None:
            return []
        out: list[Proposal | Vote] = []
        p = self.proposal_for_block(self.decision.hash)
        if p is not None:
            out.append(p)
        vs = self._votes.get((self.decision_commit.round, PRECOMMIT))
        if vs is not None:
            out.extend(v for v in vs.all_votes() if v.block_hash == self.decision.hash)
        return out

    # inputs ------------------------------------------------------------------------------------
    def start_height(
        self, height: int, validators: ValidatorSet, proposer_of: Callable[[int], bytes]
    ) -> list[Action]:
        """Begin ``height`` (StartRound(0)). ``proposer_of(round)`` gives the proposer's public key."""
        if height < 1:
            raise ValueError("height must be >= 1")
        self._reset(height)
        self.validators = validators
        self._proposer_of = proposer_of
        out: list[Action] = []
        self._start_round(0, out)
        self._check(out)
        return out

    def check_proposal(self, p: Proposal) -> None:
        """Cheap structural and signature checks of a proposal for the current height (the driver calls
        this before spending time validating the block). Raises :class:`ProposalRejected`."""
        if self.validators is None or self.height == 0:
            raise ProposalRejected("consensus has not started a height", "not_started")
        if p.height != self.height:
            raise ProposalRejected(f"proposal for height {p.height}, at {self.height}", "wrong_height")
        if not -1 <= p.pol_round < p.round or p.round > MAX_ROUND:
            raise ProposalRejected("pol_round must be -1 or below the round", "bad_pol_round")
        if p.block.height != p.height:
            raise ProposalRejected("block height differs from the proposal's", "block_mismatch")
        if p.round > self.round + 1 and p.block.hash not in self._precommit_quorums.values():
            raise ProposalRejected(f"proposal for round {p.round}, at round {self.round}", "round_too_far")
        if p.proposer != self._proposer_of(p.round):
            raise ProposalRejected(f"not the proposer of round {p.round}", "not_proposer")
        if not p.verify(self.chain_id):
            raise ProposalRejected("bad proposal signature", "bad_signature")

    def wants_proposal(self, p: Proposal) -> bool:
        """Whether :meth:`on_proposal` would use ``p`` (the driver skips validating the rest): the first
        proposal of its round, or a block 2/3+ precommitted that this core does not hold yet (the
        proposer equivocated and we got the other block first)."""
        if self.decision is not None or p.height != self.height:
            return False
        if p.round not in self._proposals:
            return True
        return p.block.hash in self._precommit_quorums.values() and p.block.hash not in self._blocks

    def on_proposal(self, p: Proposal, block_valid: bool) -> list[Action]:
        """A proposal; ``block_valid`` is the driver's verdict on executing the block on its chain."""
        if self.decision is not None and p.height == self.height:
            return []
        self.check_proposal(p)
        if not self.wants_proposal(p):
            return []  # first proposal per round wins (a second, different one is proposer equivocation)
        out: list[Action] = []
        if p.round in self._proposals:  # an equivocated block that 2/3+ precommitted: keep the block only
            self._blocks[p.block.hash] = (p.block, block_valid)
            self._extra_proposals[p.block.hash] = p
        else:
            self._store_proposal(p, block_valid)
        self._check(out)
        return out

    def on_vote(self, vote: Vote) -> list[Action]:
        """A prevote or precommit. Raises :class:`VoteRejected`; returns [] for a duplicate;
        returns [EvidenceFound] for a second, different vote by the same validator (not counted)."""
        if self.validators is None or self.height == 0:
            raise VoteRejected("consensus has not started a height", "not_started")
        if vote.height != self.height:
            raise VoteRejected(f"vote for height {vote.height}, at {self.height}", "wrong_height")
        if self.decision is not None:
            return []
        if vote.type not in (PREVOTE, PRECOMMIT) or vote.round > MAX_ROUND or len(vote.block_hash) not in (0, 32):
            raise VoteRejected("malformed vote", "invalid")
        power = self.validators.power_of(vote.validator)
        if power == 0:
            raise VoteRejected("vote from a validator not in the set", "unknown_validator")
        vs = self._votes.get((vote.round, vote.type))
        existing = vs.get(vote.validator) if vs is not None else None
        if existing is not None and (existing.block_hash == vote.block_hash or vs.contains(vote)):
            return []
        if existing is None and vote.round > self.round:
            fr = self._future_rounds.setdefault(vote.validator, set())
            fr.intersection_update(r for r in list(fr) if r > self.round)
            if vote.round not in fr and len(fr) >= MAX_FUTURE_ROUNDS:
                raise VoteRejected(f"vote for round {vote.round}, at round {self.round}", "round_too_far")
        if not vote.verify(self.chain_id):
            raise VoteRejected("bad vote signature", "bad_signature")
        out: list[Action] = []
        if existing is not None:
            if vs is None:
                raise InvariantError("a vote was counted without its vote set")
            ev = DuplicateVote.from_votes(existing, vote)
            key = ev.hash()
            if key not in self._evidence_seen:
                self._evidence_seen.add(key)
                out.append(EvidenceFound(ev))
            # Count it for its value too (see VoteSet), but only for values that matter, so an
            # equivocator cannot make us store unboundedly many votes: nil, a block we hold, or a value
            # already backed by more than 1/3 of the power (any value that can reach 2/3+ is).
            bh = vote.block_hash
            if bh == NIL or bh in self._blocks or vs.power_for(bh) * 3 > self.validators.total_power:
                vs.add_conflicting(vote, power)
                self._after_vote(vs, vote)
                self._check(out)
            return out
        self._add_vote(vote, power)
        if vote.validator == self.pubkey:
            self._own_vote_seen(vote)
        self._check(out)
        return out

    def on_timeout(self, kind: str, height: int, round_: int) -> list[Action]:
        """OnTimeoutPropose / OnTimeoutPrevote / OnTimeoutPrecommit (stale timeouts are ignored)."""
        out: list[Action] = []
        if height != self.height or round_ != self.round or self.decision is not None:
            return out
        if kind == TIMEOUT_PROPOSE and self.step == Step.PROPOSE:
            self._prevote(NIL, out)
        elif kind == TIMEOUT_PREVOTE and self.step == Step.PREVOTE:
            self._precommit(NIL, out)
        elif kind == TIMEOUT_PRECOMMIT:
            self._start_round(self.round + 1, out)
        else:
            return out
        self._check(out)
        return out

    def on_own_block(self, block: Block) -> list[Action]:
        """The block the driver built for a :class:`RequestBlock`; ignored if no longer wanted."""
        out: list[Action] = []
        if (
            self._awaiting != (self.height, self.round)
            or self.step != Step.PROPOSE
            or block.height != self.height
            or self.round in self._proposals
        ):
            return out
        self._awaiting = None
        self._propose(block, -1, out)
        self._check(out)
        return out

    # internals ---------------------------------------------------------------------------------
    def _sign(self, kind: str, step: int, sign_bytes: bytes) -> bytes | None:
        if not self.is_validator:
            return None
        if self.signer is None:
            raise InvariantError("a validator core without a signer")
        try:
            return self.signer(kind, self.height, self.round, step, sign_bytes)
        except DoubleSignError:  # refused: not sending is always safe (a failed write is not a refusal)
            self.sign_failures += 1
            self.refused_round = self.round
            return None

    def leave_refused_round(self) -> list[Action]:
        """If the signer refused to sign in the current round (this validator signed something for it
        before a crash that the WAL did not keep), move on to the next round: it cannot take part in
        this one, and with enough such power the round could never end. Changing rounds on one's own
        never endangers safety (the lock rules do not depend on it)."""
        out: list[Action] = []
        if self.refused_round is not None and self.refused_round == self.round and self.decision is None:
            self.refused_round = None
            self._start_round(self.round + 1, out)
            self._check(out)
        return out

    def enter_round(self, round_: int) -> list[Action]:
        """Move to ``round_`` (above the current round) on the driver's behalf: WAL replay of a round
        change the driver made before a restart (:meth:`leave_refused_round`), or a restarted validator
        whose sign state shows it already signed in ``round_`` although the WAL restored an earlier
        round (it cannot sign anything in the rounds before). Like :meth:`leave_refused_round`, safe."""
        out: list[Action] = []
        if self.decision is None and self.validators is not None and round_ > self.round:
            self._start_round(round_, out)
            self._check(out)
        return out

    def _store_proposal(self, p: Proposal, valid: bool) -> None:
        self._proposals[p.round] = (p, valid)
        known = self._blocks.get(p.block.hash)
        if known is None:
            self._blocks[p.block.hash] = (p.block, valid)
        self._note_sender(p.round, p.proposer)

    def _note_sender(self, round_: int, validator: bytes) -> None:
        senders = self._round_senders.setdefault(round_, {})
        if validator not in senders:
            if self.validators is None:
                raise InvariantError("consensus core has not started a height")
            p = self.validators.power_of(validator)
            senders[validator] = p
            self._round_power[round_] = self._round_power.get(round_, 0) + p

    def _add_vote(self, vote: Vote, power: int) -> None:
        if self.validators is None:
            raise InvariantError("consensus core has not started a height")
        key = (vote.round, vote.type)
        vs = self._votes.get(key)
        if vs is None:
            vs = self._votes[key] = VoteSet(self.height, vote.round, vote.type, self.validators)
        if not vs.add(vote, power):
            return
        if vote.round > self.round:
            self._future_rounds.setdefault(vote.validator, set()).add(vote.round)
        self._note_sender(vote.round, vote.validator)
        self._after_vote(vs, vote)

    def _after_vote(self, vs: VoteSet, vote: Vote) -> None:
        if vote.type == PRECOMMIT and vote.round not in self._precommit_quorums and vote.block_hash != NIL:
            if vs.power_for(vote.block_hash) >= vs.quorum:
                self._precommit_quorums[vote.round] = vote.block_hash

    def _own_vote_seen(self, vote: Vote) -> None:
        """Our own vote came back (WAL replay after a crash, or relayed by a peer): we sent it, so act as
        if we had just cast it — advance the step, and keep the lock a non-nil precommit implies."""
        if vote.round != self.round:
            return
        if vote.type == PREVOTE and self.step == Step.PROPOSE:
            self.step = Step.PREVOTE
            self._awaiting = None
        elif vote.type == PRECOMMIT and self.step < Step.PRECOMMIT:
            self.step = Step.PRECOMMIT
            self._awaiting = None
            if vote.block_hash != NIL:
                b = self._blocks.get(vote.block_hash)
                if b is not None and vote.round > self.locked_round:
                    self.locked_value, self.locked_round = b[0], vote.round

    def _cast(self, type_: int, block_hash: bytes, out: list[Action]) -> None:
        vs = self._votes.get((self.round, type_))
        if vs is not None and self.pubkey is not None and vs.get(self.pubkey) is not None:
            return  # already cast (our replayed or relayed vote came back first)
        step = STEP_PREVOTE if type_ == PREVOTE else STEP_PRECOMMIT
        sb = vote_sign_bytes(self.height, self.round, type_, block_hash)
        sig = self._sign(KIND_VOTE, step, sb)
        if sig is None:
            return
        if self.pubkey is None or self.validators is None:
            raise InvariantError("a signed vote without a public key or validator set")
        vote = Vote(self.height, self.round, type_, block_hash, self.pubkey, sig)
        self._add_vote(vote, self.validators.power_of(self.pubkey))
        out.append(Broadcast(vote))

    def _prevote(self, block_hash: bytes, out: list[Action]) -> None:
        self._cast(PREVOTE, block_hash, out)
        self.step = Step.PREVOTE
        self._awaiting = None

    def _precommit(self, block_hash: bytes, out: list[Action]) -> None:
        self._cast(PRECOMMIT, block_hash, out)
        self.step = Step.PRECOMMIT

    def _propose(self, block: Block, pol_round: int, out: list[Action]) -> None:
        sb = proposal_sign_bytes(self.height, self.round, pol_round, block.hash)
        sig = self._sign(KIND_PROPOSAL, STEP_PROPOSE, sb)
        if sig is None:
            return
        if self.pubkey is None:
            raise InvariantError("a signed proposal without a public key")
        p = Proposal(self.height, self.round, pol_round, block, self.pubkey, sig)
        self._store_proposal(p, True)
        out.append(Broadcast(p))

    def _start_round(self, round_: int, out: list[Action]) -> None:
        self.round = round_
        self.refused_round = None
        self.step = Step.PROPOSE
        self._awaiting = None
        self._prune_proposals()
        if self.is_validator and self._proposer_of(round_) == self.pubkey:
            if self.valid_value is not None:
                self._propose(self.valid_value, self.valid_round, out)
            else:
                self._awaiting = (self.height, round_)
                out.append(RequestBlock(self.height, round_))
        # Every node (the proposer too, in case building fails) gets a propose timeout; for a proposer
        # that proposed, it is a no-op because it has prevoted by then.
        out.append(
            ScheduleTimeout(TIMEOUT_PROPOSE, self.height, round_, self.timeouts.duration(TIMEOUT_PROPOSE, round_))
        )

    def _prune_proposals(self) -> None:
        keep_hashes = {b.hash for b in (self.locked_value, self.valid_value) if b is not None}
        keep_hashes.update(self._precommit_quorums.values())
        old = [
            r
            for r, (p, _) in self._proposals.items()
            if r < self.round - KEEP_PAST_PROPOSAL_ROUNDS and p.block.hash not in keep_hashes
        ]
        if not old:
            return
        for r in old:
            del self._proposals[r]
        live = {p.block.hash for p, _ in self._proposals.values()} | keep_hashes
        self._extra_proposals = {h: p for h, p in self._extra_proposals.items() if h in live}
        self._blocks = {h: b for h, b in self._blocks.items() if h in live}

    def _check(self, out: list[Action]) -> None:
        """Apply the upon-rules until none fires."""
        for _ in range(10_000):  # each iteration changes state; the bound is a safety net
            if self.decision is not None:
                return
            if self._try_decide(out):
                return
            if self._try_skip_round(out):
                continue
            if not self._step_rules(out):
                return

    def _try_decide(self, out: list[Action]) -> bool:
        for r in sorted(self._precommit_quorums):
            bh = self._precommit_quorums[r]
            b = self._blocks.get(bh)
            if b is not None and b[1]:
                vs = self._votes[(r, PRECOMMIT)]
                commit = vs.commit(bh)
                self.decision = b[0]
                self.decision_commit = commit
                self.step = Step.DECIDED
                self._awaiting = None
                out.append(Decide(b[0], commit))
                return True
            if (r, bh) not in self._missing_reported:
                self._missing_reported.add((r, bh))
                out.append(MissingBlock(self.height, r, bh))
        return False

    def _try_skip_round(self, out: list[Action]) -> bool:
        if self.validators is None:
            raise InvariantError("consensus core has not started a height")
        need = self.validators.total_power // 3 + 1  # more than 1/3 ("f+1")
        best = -1
        for r, p in self._round_power.items():
            if r > self.round and p >= need and r > best:
                best = r
        if best < 0:
            return False
        self._start_round(best, out)
        return True

    def _step_rules(self, out: list[Action]) -> bool:
        if self.validators is None:
            raise InvariantError("consensus core has not started a height")
        r = self.round
        quorum = self.validators.quorum()
        # 22 / 28: the proposal of this round, while in propose.
        if self.step == Step.PROPOSE:
            e = self._proposals.get(r)
            if e is not None:
                p, valid = e
                v = p.block.hash
                locked_hash = self.locked_value.hash if self.locked_value is not None else None
                if p.pol_round == -1:
                    ok = valid and (self.locked_round == -1 or locked_hash == v)
                    self._prevote(v if ok else NIL, out)
                    return True
                pol = self._votes.get((p.pol_round, PREVOTE))
                if pol is not None and pol.power_for(v) >= quorum:
                    ok = valid and (self.locked_round <= p.pol_round or locked_hash == v)
                    self._prevote(v if ok else NIL, out)
                    return True
        pv = self._votes.get((r, PREVOTE))
        # 34: 2/3+ prevotes of any kind while in prevote, first time -> timeoutPrevote.
        if self.step == Step.PREVOTE and pv is not None and pv.has_quorum_any() and r not in self._prevote_timeout_done:
            self._prevote_timeout_done.add(r)
            out.append(ScheduleTimeout(TIMEOUT_PREVOTE, self.height, r, self.timeouts.duration(TIMEOUT_PREVOTE, r)))
        # 36: proposal + 2/3+ prevotes for it while in prevote or later, first time.
        if self.step >= Step.PREVOTE and r not in self._polka_done and pv is not None:
            e = self._proposals.get(r)
            if e is not None and e[1] and pv.power_for(e[0].block.hash) >= quorum:
                self._polka_done.add(r)
                block = e[0].block
                changed = False
                if self.step == Step.PREVOTE:
                    self.locked_value, self.locked_round = block, r
                    self._precommit(block.hash, out)
                    changed = True
                if self.valid_round != r or self.valid_value is None:
                    self.valid_value, self.valid_round = block, r
                    changed = True
                if changed:
                    return True
        # 44: 2/3+ nil prevotes while in prevote.
        if self.step == Step.PREVOTE and pv is not None and pv.power_for(NIL) >= quorum:
            self._precommit(NIL, out)
            return True
        # 47: 2/3+ precommits of any kind, first time -> timeoutPrecommit.
        pc = self._votes.get((r, PRECOMMIT))
        if pc is not None and pc.has_quorum_any() and r not in self._precommit_timeout_done:
            self._precommit_timeout_done.add(r)
            out.append(
                ScheduleTimeout(TIMEOUT_PRECOMMIT, self.height, r, self.timeouts.duration(TIMEOUT_PRECOMMIT, r))
            )
        return False
