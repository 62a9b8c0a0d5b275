"""The node side of ``rpc/node_api.py``: :class:`NodeRpcAdapter` implements :class:`rpc.node_api.NodeApi`
over a :class:`node.service.Node`, so ``rpc/`` never reaches into the engine, p2p service, sync or stores.

The adapter is built before the node's services start (``Node.run`` builds the routes first), so it reads
``node.engine``, ``node.p2p``, ``node.sync``, ``node.miner`` at call time, never at construction.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import trio

from state.errors import AitbcError, InvariantError

from .llm import LLM_KIND, LLM_VERSION, NodeModelSource, TokenizerCache, job_tokens, llm_params

if TYPE_CHECKING:
    from rpc.node_api import LlmApi, NetworkApi
    from state.crypto import SigningKey
    from state.genesis import Genesis
    from state.market.models import Model
    from state.types import Transaction

    from .blobs import BlobLimits, BlobStore
    from .home import Home
    from .service import Node

log = logging.getLogger("aitbc.rpc")


class NodeRpcAdapter:
    """:class:`rpc.node_api.NodeApi` over one :class:`Node` (a thin, stateless view)."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._blobs = _Blobs(node)

    # identity, configuration ------------------------------------------------------------------------
    @property
    def genesis(self) -> Genesis:
        return self._node.genesis

    @property
    def peer_id(self) -> str:
        return self._node.peer_id

    @property
    def moniker(self) -> str:
        return self._node.cfg.node.moniker

    @property
    def version(self) -> str:
        from .service import VERSION

        return VERSION

    @property
    def started_at(self) -> float:
        return self._node.started_at

    @property
    def rpc_settings(self) -> Any:
        return self._node.cfg.rpc

    @property
    def validator_key(self) -> bytes:
        return self._node.validator_key.public_key

    def is_validator(self) -> bool:
        return self._node.is_validator()

    def miner_key(self) -> bytes | None:
        miner = self._node.miner
        return miner.pk if miner is not None else None

    # state --------------------------------------------------------------------------------------------
    @property
    def chain(self) -> Any:
        chain = self._node.chain
        if chain is None:
            raise InvariantError("node not opened")
        return chain

    @property
    def mempool(self) -> Any:
        mempool = self._node.mempool
        if mempool is None:
            raise InvariantError("node not opened")
        return mempool

    def scan_objects(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        return self._node.scan_objects(prefix)

    # transactions -------------------------------------------------------------------------------------
    async def submit_raw(self, raws: Sequence[bytes]) -> Sequence[Any]:
        return await self._node.submit_raw(raws)

    async def simulate(self, tx: Transaction) -> dict:
        from state.machine import BlockEnv
        from state.simulate import simulate_tx

        node = self._node
        chain, mempool = node.chain, node.mempool
        if chain is None or mempool is None:
            raise InvariantError("node not opened")
        prior = mempool.pending_run(tx.sender, below_nonce=tx.nonce)  # read here: the mempool is loop-only

        def run() -> dict[str, Any]:
            with chain.lane:  # a consistent head: no block commits while the overlay reads
                h = chain.head
                env = BlockEnv(chain.chain_id, h.height + 1, max(int(time.time() * 1000), h.time + 1),
                               node.validator_key.public_key, chain.params, frozenset(), (), chain.genesis.consensus)
                res = simulate_tx(chain, env, tx, prior=prior)
                res["height"] = h.height
                return res

        return await trio.to_thread.run_sync(run)

    def flush_mempool(self) -> int:
        mp = self.mempool
        dropped = mp.flush()
        self._node.metrics.mempool_size.set(len(mp))
        self._node.metrics.mempool_bytes.set(mp.size_bytes)
        return dropped

    # health, sync, consensus --------------------------------------------------------------------------
    def health(self) -> dict:
        return self._node.health()

    def catching_up(self) -> bool:
        sync = self._node.sync
        return sync is not None and sync.catching_up

    def sync_status(self) -> dict | None:
        sync = self._node.sync
        return sync.status() if sync is not None else None

    def consensus_status(self) -> dict | None:
        eng = self._node.engine
        return dict(eng.status()) if eng is not None else None

    def pending_evidence(self) -> Sequence[Any]:
        eng = self._node.engine
        return list(eng.pending_evidence()) if eng is not None else []

    def validator_set(self, height: int) -> Any:
        eng = self._node.engine
        return eng.schedule.validators(height) if eng is not None else self._node.validators

    # services -----------------------------------------------------------------------------------------
    @property
    def network(self) -> NetworkApi | None:
        p2p = self._node.p2p
        return _Network(p2p) if p2p is not None else None

    @property
    def blobs(self) -> _Blobs:
        return self._blobs

    @property
    def models(self) -> Any:
        models = self._node.models
        if models is None:
            raise InvariantError("node not opened")
        return models

    def llm(self) -> LlmApi:
        return _Llm(self._node)


class _Network:
    """:class:`rpc.node_api.NetworkApi` over the p2p service."""

    def __init__(self, p2p: Any) -> None:
        self._p2p = p2p

    @property
    def peer_id(self) -> str:
        return self._p2p.peer_id

    def listen_addrs(self) -> list[str]:
        return self._p2p.listen_addrs()

    def peers(self) -> Sequence[Any]:
        return self._p2p.peers()

    def banned_peers(self) -> dict[str, Any]:
        return self._p2p.banned_peers()

    def score(self, peer_id: str) -> float:
        return self._p2p.score(peer_id)

    def check_peer_id(self, peer_id: str) -> None:
        from p2p.service import parse_peer_id

        parse_peer_id(peer_id)

    def ban(self, peer_id: str, reason: str) -> None:
        # The p2p service bans through its score: a penalty that takes the peer just below the graylist
        # threshold disconnects it and refuses it for cfg.ban_duration (then the penalty decays).
        p2p = self._p2p
        points = max(0.0, p2p.score(peer_id) - p2p.cfg.graylist_threshold) + 1.0
        p2p.penalize(peer_id, points, f"admin: {reason}")

    def unban(self, peer_id: str) -> None:
        p2p = self._p2p
        unban = getattr(p2p, "unban", None)
        if callable(unban):
            unban(peer_id)
            return
        # P2PService has no public unban yet: clear the two records its ban check reads.
        bans = getattr(p2p, "_bans", None)
        penalties = getattr(p2p, "_penalties", None)
        if not isinstance(bans, dict) or not isinstance(penalties, dict):
            raise InvariantError("the p2p service exposes no way to lift a ban")
        bans.pop(peer_id, None)
        penalties.pop(peer_id, None)


class _Blobs:
    """:class:`rpc.node_api.BlobApi` over the node's blob store (``node/blobs.py``)."""

    def __init__(self, node: Node) -> None:
        self._node = node

    def _store(self) -> BlobStore:
        store = self._node.blobs
        if store is None:
            raise InvariantError("node not opened")
        return store

    @property
    def limits(self) -> BlobLimits:
        return self._store().limits

    async def fetch(self, blob_hash: bytes) -> bytes | None:
        return await self._node.fetch_blob(blob_hash)

    def signature_ok(self, owner: bytes, blob_hash: bytes, size: int, expires: int, sig: bytes) -> bool:
        from state.crypto import verify

        from .blobs import KIND_BLOB, blob_sign_bytes

        return verify(KIND_BLOB, self._node.genesis.chain_id, owner, blob_sign_bytes(blob_hash, size, expires), sig)

    async def put_owned(self, raw: bytes, owner: bytes, *, charge: bool) -> None:
        await self._store().aput_owned(raw, owner, charge=charge)

    def usage(self, owner: bytes) -> tuple[int, int]:
        return self._store().account_usage(owner)

    async def gc(self) -> dict:
        from .blobs import gc_once

        return (await gc_once(self._node)).to_json()


class _Llm:
    """:class:`rpc.node_api.LlmApi`: ``node/llm.py`` for the OpenAI endpoint, with its own tokenizer cache."""

    kind = LLM_KIND
    version = LLM_VERSION

    def __init__(self, node: Node) -> None:
        self._tokenizers = TokenizerCache(NodeModelSource(node))

    async def tokenizer(self, m: Model) -> Any:
        return await self._tokenizers.get(m)

    def job_params(self, model_id: bytes, prompt: list[int], max_new_tokens: int, *, temperature: Any = None,
                   top_k: int | None = None, seed: Any = None, stop: list[int] | None = None) -> dict:
        return llm_params(model_id, prompt, max_new_tokens, temperature=temperature, top_k=top_k, seed=seed,
                          stop=stop)

    def result_tokens(self, params: dict, rows: Any) -> tuple[list[int], str]:
        return job_tokens(params, rows)


def unlock_key(home: Home, name: str) -> SigningKey:
    """The keystore key ``name`` of the node's home (blocking: the KDF runs): the key that pays for the
    OpenAI endpoint's jobs (``openai.key``)."""
    from .config import ConfigError
    from .keystore import read_password

    if not name:
        raise ConfigError("openai.key: name the keystore key that pays for the jobs")
    pw_file = None
    if not os.environ.get("AITBC_OPENAI_PASSWORD") and not os.environ.get("AITBC_PASSWORD"):
        f = home.password_file(name)
        if f.exists():
            pw_file = str(f)
    env = "AITBC_OPENAI_PASSWORD" if os.environ.get("AITBC_OPENAI_PASSWORD") else "AITBC_PASSWORD"
    try:
        pw = read_password(env=env, password_file=pw_file, prompt=f"Password for '{name}' (openai.key): ")
        return home.keystore.load(name, pw)
    except AitbcError as exc:
        raise ConfigError(f"openai.key {name!r}: {exc} (set AITBC_OPENAI_PASSWORD)") from None


__all__ = ["NodeRpcAdapter", "unlock_key"]
