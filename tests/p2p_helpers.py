"""Helpers for tests/test_p2p.py, and (run as a script) the child node of the two-process test.

``python tests/p2p_helpers.py SEED_HEX [BOOTSTRAP_MULTIADDR]`` starts a P2PService, prints one JSON line
``{"peer_id": …, "addrs": […]}`` and then answers every ``tx`` gossip message with a ``receipt`` message
``{"echo": data, "from": origin}`` until it is killed.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # when run as a script
    sys.path.insert(0, str(REPO))

from p2p import ChainStatus, P2PConfig, P2PService  # noqa: E402
from state import codec  # noqa: E402
from state.crypto import SigningKey  # noqa: E402

CHAIN = "p2ptest"
GENESIS = hashlib.sha256(b"p2ptest genesis").digest()


class FakeChain:
    """Status, blocks and blobs for a service under test."""

    def __init__(self, height: int = 10, genesis: bytes = GENESIS) -> None:
        self.genesis = genesis
        self.height = height
        self.blobs: dict[bytes, bytes] = {}
        self.block_calls: list[tuple[int, int]] = []
        self.blocks_override: Callable[[int, int], Any] | None = None

    def status(self) -> ChainStatus:
        head = hashlib.sha256(b"block %d" % self.height).digest()
        return ChainStatus(CHAIN, self.genesis, self.height, head, max(0, self.height - 1))

    def blocks(self, start: int, count: int) -> list[bytes]:
        self.block_calls.append((start, count))
        if self.blocks_override is not None:
            return self.blocks_override(start, count)
        end = min(self.height + 1, start + count)
        return [codec.encode([b"block-%d" % h, b"commit-%d" % h]) for h in range(start, end)]

    def blob(self, h: bytes) -> bytes | None:
        return self.blobs.get(h)


def fast_config(**kw: Any) -> P2PConfig:
    """Short timers for tests on loopback."""
    base: dict[str, Any] = dict(
        heartbeat_interval=0.5,
        status_interval=1.0,
        reconnect_backoff_min=0.1,
        reconnect_backoff_max=1.0,
        pex_interval=1.0,
        handshake_timeout=5.0,
        request_timeout=5.0,
        dial_timeout=5.0,
    )
    base.update(kw)
    return P2PConfig(**base)


def make_service(
    seed: int,
    *,
    chain: FakeChain | None = None,
    bootstrap: list[str] | tuple[str, ...] = (),
    validators: dict[str, Any] | None = None,
    max_bytes: dict[str, int] | None = None,
    registry: Any = None,
    validator_key: SigningKey | None = None,
    is_validator: Callable[[bytes], bool] | None = None,
    stem_provider: Callable[[str, bytes], Any] | None = None,
    **cfg: Any,
) -> tuple[P2PService, FakeChain]:
    chain = chain or FakeChain()
    svc = P2PService(
        fast_config(bootstrap=list(bootstrap), **cfg),
        SigningKey.from_seed(bytes([seed]) * 32),
        CHAIN,
        chain.genesis,
        status_provider=chain.status,
        blocks_provider=chain.blocks,
        blob_provider=chain.blob,
        metrics_registry=registry,
        validator_key=validator_key,
        is_validator=is_validator,
        stem_provider=stem_provider,
    )
    validators = validators or {}
    for kind in ("tx", "vote", "block", "receipt"):
        svc.register_topic(kind, validators.get(kind), (max_bytes or {}).get(kind))
    return svc, chain


async def wait_until(pred: Callable[[], Any], limit: float = 10.0, what: str = "condition") -> Any:
    """Poll a condition that has no event to await (peer tables, scores), bounded by ``limit`` seconds."""
    try:
        with trio.fail_after(limit):
            while True:
                v = pred()
                if v:
                    return v
                await trio.sleep(0.02)
    except trio.TooSlowError:
        raise AssertionError(f"timed out after {limit} s waiting for {what}") from None


async def in_mesh(svc: P2PService, kind: str, peer: P2PService) -> None:
    with trio.fail_after(10):
        await svc.wait_for_mesh(kind, peer.peer_id)


def handshaken(svc: P2PService, *peers: P2PService) -> bool:
    table = {p.peer_id: p for p in svc.peers()}
    return all(p.peer_id in table and table[p.peer_id].handshake == "ok" for p in peers)


async def raw_request(svc: P2PService, peer: P2PService, proto: str, payload: bytes) -> Any:
    """Send raw bytes as one request frame and return the decoded response (for malformed requests)."""
    from libp2p.custom_types import TProtocol
    from libp2p.io.msgio import VarIntLengthMsgReadWriter

    from p2p.config import protocol_name
    from p2p.service import parse_peer_id

    with trio.fail_after(10):
        stream = await svc._host.new_stream(
            parse_peer_id(peer.peer_id), [TProtocol(protocol_name(CHAIN, proto))]
        )
        try:
            await VarIntLengthMsgReadWriter(stream, max_msg_size=1 << 20).write_msg(payload)
            raw = await VarIntLengthMsgReadWriter(stream, max_msg_size=1 << 20).read_msg()
        finally:
            await stream.close()
    return codec.decode(raw)


@asynccontextmanager
async def plain_libp2p_host(seed: int) -> AsyncIterator[tuple[Any, Any]]:
    """A stock py-libp2p host with gossipsub and none of our protocols: ``(host, pubsub)``."""
    import libp2p
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, GossipSub
    from libp2p.pubsub.pubsub import Pubsub
    from libp2p.tools.anyio_service import background_trio_service
    from multiaddr import Multiaddr

    host = libp2p.new_host(key_pair=create_new_key_pair(bytes([seed]) * 32))
    router = GossipSub(
        protocols=[PROTOCOL_ID_V11], degree=4, degree_low=2, degree_high=8, heartbeat_interval=1
    )
    pubsub = Pubsub(host, router)
    async with background_trio_service(pubsub), background_trio_service(router):
        async with host.run(listen_addrs=[Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            try:
                yield host, pubsub
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    for pid in list(host.get_connected_peers()):
                        await host.disconnect(pid)


# ---------------------------------------------------------------------------------------- child node


async def _child(seed_hex: str, bootstrap: list[str]) -> None:
    chain = FakeChain(height=7)
    svc = P2PService(
        fast_config(bootstrap=bootstrap),
        SigningKey.from_seed(bytes.fromhex(seed_hex)),
        CHAIN,
        chain.genesis,
        status_provider=chain.status,
        blocks_provider=chain.blocks,
    )
    svc.register_topic("tx", None)
    svc.register_topic("receipt", None)
    txs = svc.subscribe("tx")
    async with trio.open_nursery() as nursery:
        await nursery.start(svc.run)
        print(json.dumps({"peer_id": svc.peer_id, "addrs": svc.listen_addrs()}), flush=True)
        async for origin, data in txs:
            await svc.publish("receipt", codec.encode({"echo": data, "from": origin}))


if __name__ == "__main__":
    import logging

    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    trio.run(_child, sys.argv[1], sys.argv[2:])
