"""What the RPC layer needs from a node: the narrow, typed interface ``rpc/`` depends on.

``rpc/`` never imports ``node``, ``consensus``, ``p2p`` or ``gpu`` (``tests/test_layering.py`` checks it):
the method modules (``methods``, ``market_methods``, ``staking_methods``, ``model_methods``,
``admin_methods``, ``simulate_methods``) and the OpenAI endpoint (``openai``) receive a :class:`NodeApi`
and call only what is declared here. ``node/rpc_adapter.py::NodeRpcAdapter`` implements it over the
running :class:`node.service.Node` (reading the node's engine, p2p service, sync and stores lazily, at call
time, since they start after the routes are built). Everything crossing the interface is a ``state``
type (blocks, transactions, accounts, models, genesis), plain data, or one of the small read protocols
below, which the node's objects satisfy structurally.

Expected refusals of the node cross it as the errors defined here (each an :class:`AitbcError` with a
stable ``reason``); the node's own error classes subclass them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from state.errors import AitbcError

if TYPE_CHECKING:
    from state.genesis import Genesis
    from state.market.models import Model
    from state.types import Account, Block, Commit, Transaction


# ------------------------------------------------------------------------------------------------- errors


class ModelAccessError(AitbcError):
    """A model that is unknown, whose data cannot be obtained or does not verify, or a pin limit
    (``node.models.ModelError`` subclasses it)."""

    reason = "model"


class LlmRequestError(AitbcError):
    """A request the node's ``llm-generate`` support refuses: model not usable from text, bad sampling
    parameters (``node.llm.LlmNodeError`` subclasses it)."""

    reason = "llm"


class BlobRefused(AitbcError):
    """A blob the node's store refuses (quota, size, ...; ``node.blobs.BlobError`` subclasses it)."""

    reason = "blob"


# ------------------------------------------------------------------------------------------ chain, mempool


class HeadView(Protocol):
    """The committed head."""

    @property
    def height(self) -> int: ...
    @property
    def hash(self) -> bytes: ...
    @property
    def time(self) -> int: ...
    @property
    def state_root(self) -> bytes: ...


class ProofView(Protocol):
    def to_obj(self) -> dict: ...


class TxResultView(Protocol):
    @property
    def ok(self) -> bool: ...
    @property
    def reason(self) -> str: ...
    @property
    def message(self) -> str: ...


class ChainView(Protocol):
    """Reads of committed chain state (``state.chain.ChainState`` satisfies it)."""

    @property
    def head(self) -> HeadView: ...
    def block_at(self, height: int) -> Block | None: ...
    def block_by_hash(self, block_hash: bytes) -> Block | None: ...
    def results_at(self, height: int) -> Sequence[Any]: ...
    def commit_at(self, height: int) -> Commit | None: ...
    def tx_lookup(self, tx_hash: bytes) -> tuple[Transaction, int, int, Any] | None: ...
    @property
    def addr_index_from(self) -> int: ...
    def address_history(
        self, address: bytes, before: tuple[int, int] | None = None, limit: int = 25
    ) -> list[tuple[int, int, bytes]]:
        """Blocking (LevelDB reads): call it in a worker thread."""
        ...
    def get_account(self, public_key: bytes) -> Account | None: ...
    def account(self, public_key: bytes) -> Account: ...
    def prove_account(self, public_key: bytes) -> tuple[ProofView, HeadView, Account | None]:
        """Blocking (reads under the chain's lane): call it in a worker thread."""
        ...
    def get_object(self, key: bytes) -> bytes | None: ...


class MempoolView(Protocol):
    """Reads of the node's mempool (``state.mempool.Mempool`` satisfies it); loop-only."""

    def get(self, tx_hash: bytes) -> Transaction | None: ...
    def __contains__(self, tx_hash: object) -> bool: ...
    def pending_nonce(self, sender: bytes) -> int: ...
    def stats(self) -> dict: ...


class SubmitOutcome(Protocol):
    """One submitted transaction: its hash (``None`` when it did not decode) and the refusal, if any."""

    @property
    def hash(self) -> bytes | None: ...
    @property
    def error(self) -> AitbcError | None: ...


# ------------------------------------------------------------------------------------------------ consensus


class ValidatorView(Protocol):
    @property
    def public_key(self) -> bytes: ...
    @property
    def power(self) -> int: ...
    @property
    def name(self) -> str: ...


class ValidatorSetView(Protocol):
    @property
    def total_power(self) -> int: ...
    @property
    def hash(self) -> bytes: ...
    @property
    def validators(self) -> Sequence[ValidatorView]: ...


class VoteView(Protocol):
    @property
    def block_hash(self) -> bytes | None: ...


class EvidenceView(Protocol):
    """A duplicate vote seen by the engine."""

    @property
    def validator(self) -> bytes: ...
    @property
    def height(self) -> int: ...
    @property
    def round(self) -> int: ...
    @property
    def type(self) -> Any: ...
    @property
    def vote_a(self) -> VoteView: ...
    @property
    def vote_b(self) -> VoteView: ...
    def hash(self) -> bytes: ...


# ------------------------------------------------------------------------------------------------- network


class PeerStatusView(Protocol):
    @property
    def height(self) -> int: ...
    @property
    def finalized_height(self) -> int: ...


class PeerView(Protocol):
    """A connected peer."""

    @property
    def peer_id(self) -> str: ...
    @property
    def addrs(self) -> Sequence[str]: ...
    @property
    def status(self) -> PeerStatusView | None: ...
    @property
    def score(self) -> float: ...
    @property
    def direction(self) -> str: ...
    @property
    def handshake(self) -> Any: ...
    @property
    def connected_since(self) -> Any: ...


class NetworkApi(Protocol):
    """The node's p2p network (present only when p2p is enabled)."""

    @property
    def peer_id(self) -> str: ...
    def listen_addrs(self) -> list[str]: ...
    def peers(self) -> Sequence[PeerView]: ...
    def banned_peers(self) -> dict[str, Any]: ...
    def score(self, peer_id: str) -> float: ...
    def check_peer_id(self, peer_id: str) -> None:
        """Raise ``ValueError`` (with the reason) when ``peer_id`` is not a well-formed peer id."""
        ...
    def ban(self, peer_id: str, reason: str) -> None:
        """Disconnect the peer and refuse it for the ban duration."""
        ...
    def unban(self, peer_id: str) -> None:
        """Lift the peer's ban and its penalties."""
        ...


# --------------------------------------------------------------------------------------------- blobs, models


class BlobLimitsView(Protocol):
    @property
    def sig_max_blocks(self) -> int: ...
    @property
    def min_balance(self) -> int: ...
    @property
    def grace_s(self) -> float: ...


class BlobApi(Protocol):
    """The node's blob store (job inputs and results)."""

    @property
    def limits(self) -> BlobLimitsView: ...
    async def fetch(self, blob_hash: bytes) -> bytes | None:
        """A blob from this node, else from connected peers (verified, then stored)."""
        ...
    def signature_ok(self, owner: bytes, blob_hash: bytes, size: int, expires: int, sig: bytes) -> bool:
        """Whether ``sig`` is ``owner``'s ``blob_put`` signature over (hash, size, expires)."""
        ...
    async def put_owned(self, raw: bytes, owner: bytes, *, charge: bool) -> None:
        """Store ``raw`` for ``owner`` (charged to its quota unless ``charge`` is false); raises
        :class:`BlobRefused`."""
        ...
    def usage(self, owner: bytes) -> tuple[int, int]:
        """(bytes, blobs) stored for ``owner``."""
        ...
    async def gc(self) -> dict:
        """One garbage-collection pass now: its stats as JSON."""
        ...


class ModelApi(Protocol):
    """Registered models and this node's pins (``node.models.ModelService`` satisfies it); errors are
    :class:`ModelAccessError`."""

    def find(self, ref: str) -> Model | None: ...
    def status(self, m: Model) -> dict:
        """Local status (pinned, chunks present); blocking: stats every chunk's file."""
        ...
    async def chunk(self, m: Model, index: int) -> tuple[bytes, list[bytes]]: ...
    def pin(self, m: Model) -> dict: ...
    def unpin(self, m: Model) -> dict: ...
    def is_owner_ref(self, owner: bytes, blob_hash: bytes) -> bool:
        """Whether ``blob_hash`` is the index or a chunk of a model of ``owner`` (blocking)."""
        ...
    def pinned(self) -> dict[bytes, float]:
        """Pinned model ids and the time each was pinned."""
        ...


class LlmApi(Protocol):
    """``llm-generate`` support for the OpenAI endpoint: tokenizers from local models, job parameters and
    results. Errors are :class:`LlmRequestError`."""

    @property
    def kind(self) -> str: ...
    @property
    def version(self) -> int: ...
    async def tokenizer(self, m: Model) -> Any:
        """The model's own tokenizer (``encode``, ``decode``, ``apply_chat_template``, ``chat_template``,
        ``eos_id``), from this node's pinned copy."""
        ...
    def job_params(self, model_id: bytes, prompt: list[int], max_new_tokens: int, *, temperature: Any = None,
                   top_k: int | None = None, seed: Any = None, stop: list[int] | None = None) -> dict: ...
    def result_tokens(self, params: dict, rows: Any) -> tuple[list[int], str]:
        """(generated tokens, finish reason) of a decoded ``llm-generate`` result."""
        ...


# ------------------------------------------------------------------------------------------------ the node


class RpcSettings(Protocol):
    """The ``[rpc]`` settings the method modules read."""

    @property
    def max_subscriptions_per_connection(self) -> int: ...
    @property
    def max_subscriptions(self) -> int: ...


class NodeApi(Protocol):
    """Everything the JSON-RPC methods and the OpenAI endpoint need from a node."""

    # identity, configuration
    @property
    def genesis(self) -> Genesis: ...
    @property
    def peer_id(self) -> str: ...
    @property
    def moniker(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def started_at(self) -> float: ...
    @property
    def rpc_settings(self) -> RpcSettings: ...
    @property
    def validator_key(self) -> bytes:
        """This node's validator public key (it may not be in the set)."""
        ...
    def is_validator(self) -> bool:
        """Whether the validator key votes on the next height."""
        ...
    def miner_key(self) -> bytes | None:
        """The miner's public key with the miner role, else ``None``."""
        ...

    # state
    @property
    def chain(self) -> ChainView: ...
    @property
    def mempool(self) -> MempoolView: ...
    def scan_objects(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) of committed state objects whose key starts with ``prefix``, in key order."""
        ...

    # transactions
    async def submit_raw(self, raws: Sequence[bytes]) -> Sequence[SubmitOutcome]:
        """Decode, verify and pool transactions (gossiped to peers when accepted)."""
        ...
    async def simulate(self, tx: Transaction) -> dict:
        """Dry-run ``tx`` on the head state after the sender's pooled txs (``state.simulate.simulate_tx``);
        the result with ``height`` (amounts as ints)."""
        ...
    def flush_mempool(self) -> int:
        """Drop every pooled transaction; how many."""
        ...

    # health, sync, consensus
    def health(self) -> dict: ...
    def catching_up(self) -> bool: ...
    def sync_status(self) -> dict | None:
        """Range-sync status, ``None`` without p2p."""
        ...
    def consensus_status(self) -> dict | None:
        """The engine's height, round, step, proposer (public key); ``None`` before it runs."""
        ...
    def pending_evidence(self) -> Sequence[EvidenceView]: ...
    def validator_set(self, height: int) -> ValidatorSetView: ...

    # services
    @property
    def network(self) -> NetworkApi | None:
        """``None`` when p2p is disabled."""
        ...
    @property
    def blobs(self) -> BlobApi: ...
    @property
    def models(self) -> ModelApi: ...
    def llm(self) -> LlmApi:
        """A new ``llm-generate`` support object (it keeps its own tokenizer cache)."""
        ...


__all__ = [
    "BlobApi",
    "BlobLimitsView",
    "BlobRefused",
    "ChainView",
    "EvidenceView",
    "HeadView",
    "LlmApi",
    "LlmRequestError",
    "MempoolView",
    "ModelAccessError",
    "ModelApi",
    "NetworkApi",
    "NodeApi",
    "PeerView",
    "RpcSettings",
    "SubmitOutcome",
    "ValidatorSetView",
]
