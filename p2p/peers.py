"""The peer table of :class:`p2p.service.P2PService`: admission into slots, bans, application penalties
and scores, disconnect bookkeeping and periodic maintenance (graylist, reconciliation with the swarm).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio
from libp2p.abc import INetConn
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from multiaddr import Multiaddr

from .identity import b58decode, b58encode
from .wire import ChainStatus

log = logging.getLogger("aitbc.p2p")

GOODBYE_GRACE = 1.0  # seconds a refused peer stays connected to learn our status (no gossip)
MAX_GOODBYES = 8  # more refused peers at once are dropped without a grace period
SHORT_CONNECTION = 30.0  # seconds; a connection lost sooner counts as a failed dial (backoff grows)


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """A connected peer as :meth:`P2PService.peers` reports it."""

    peer_id: str
    addrs: list[str]  # dialable multiaddrs we know for it, with /p2p/<id>
    status: ChainStatus | None  # last status it told us (None until the handshake succeeded)
    score: float  # gossipsub score incl. application penalties; below graylist_threshold -> dropped
    connected_since: float  # unix time
    direction: str  # "inbound" | "outbound" | "unknown"
    handshake: str  # "pending" | "ok" | "observer" (no status protocol) | "failed" (being dropped)
    protected: bool = False  # a bootstrap or persistent peer, or a proven validator: outside the slot limits
    validator: bytes | None = None  # the current validator key it proved at its last status


@dataclass
class _PeerState:
    pid: ID
    direction: str
    connected_since: float = field(default_factory=time.time)
    connected_mono: float = field(default_factory=time.monotonic)
    status: ChainStatus | None = None
    handshake: str = "pending"
    handshake_done: trio.Event = field(default_factory=trio.Event)
    last_status_at: float = 0.0
    pubsub_retry_at: float = 0.0  # time.monotonic() of the last repair of a missing gossip stream
    protected: bool = False  # bootstrap / persistent / a proven validator: outside the slot limits
    probation: bool = False  # admitted beyond the limits to prove a validator key at its status


@dataclass
class _KnownPeer:
    addrs: list[str]  # transport multiaddrs without /p2p
    bootstrap: bool = False  # configured (bootstrap or persistent): never evicted, protected
    persistent: bool = False  # dialed whenever not connected, whatever target_peers says
    failures: int = 0
    next_dial: float = 0.0  # time.monotonic()
    learned_at: float = field(default_factory=time.monotonic)


def parse_peer_id(peer_id: str) -> ID:
    """A libp2p peer id from its base58 text; ValueError if it is not one."""
    if not isinstance(peer_id, str) or not 10 <= len(peer_id) <= 128:
        raise ValueError(f"invalid peer id {peer_id!r}")
    try:
        raw = b58decode(peer_id)
    except Exception:
        raise ValueError(f"invalid peer id {peer_id!r}") from None
    # identity (0x00) or sha2-256 (0x12) multihash with a matching length byte
    if len(raw) < 3 or raw[0] not in (0x00, 0x12) or raw[1] != len(raw) - 2 or b58encode(raw) != peer_id:
        raise ValueError(f"invalid peer id {peer_id!r}")
    return ID(raw)


def _split_p2p(addr: str) -> tuple[str, str]:
    """``/ip4/…/tcp/…/p2p/<id>`` -> (peer id, transport multiaddr); ValueError otherwise."""
    try:
        info = info_from_p2p_addr(Multiaddr(addr))
    except Exception as exc:
        raise ValueError(f"invalid peer multiaddr {addr!r} (need …/p2p/<peer id>): {exc}") from None
    transport = [str(a) for a in info.addrs if str(a)]
    if not transport:
        raise ValueError(f"peer multiaddr {addr!r} has no transport part")
    return info.peer_id.to_base58(), transport[0]


class PeerTable:
    """Peers, slots, bans and scoring (a part of P2PService)."""

    def peers(self) -> list[PeerInfo]:
        out = []
        for s, st in sorted(self._peers.items(), key=lambda kv: kv[1].connected_since):
            k = self._known.get(s)
            out.append(
                PeerInfo(
                    peer_id=s,
                    addrs=[f"{a}/p2p/{s}" for a in (k.addrs if k else [])],
                    status=st.status,
                    score=self.score(s),
                    connected_since=st.connected_since,
                    direction=st.direction,
                    handshake=st.handshake,
                    protected=st.protected,
                    validator=self._validator_peers.get(s),
                )
            )
        return out

    def score(self, peer_id: str) -> float:
        """The peer's score: gossipsub's (invalid messages, misbehaviour) plus application penalties."""
        if self._router is not None and self._router.scorer is not None:
            try:
                return float(self._router.scorer.score(parse_peer_id(peer_id), list(self._by_name)))
            except ValueError:
                pass
        return -self._app_penalty(peer_id)

    def penalize(self, peer_id: str, points: float, reason: str) -> None:
        """Lower a peer's score by ``points`` (decaying with ``cfg.penalty_half_life``). When its score
        falls below ``cfg.graylist_threshold`` it is disconnected and banned for ``cfg.ban_duration``."""
        if not math.isfinite(points) or points < 0:
            raise ValueError("points must be a finite non-negative number")
        parse_peer_id(peer_id)
        self._add_penalty(peer_id, points, reason, logging.INFO)

    def _add_penalty(self, s: str, points: float, reason: str, level: int) -> None:
        self._penalties[s] = (self._app_penalty(s) + points, time.monotonic())
        score = self.score(s)
        log.log(level, "penalize %s by %.1f (%s): score %.1f", s, points, reason, score)
        if score < self.cfg.graylist_threshold and s not in self._bans:
            self._reject(s, f"score {score:.1f} below graylist threshold after: {reason}")

    def banned_peers(self) -> dict[str, str]:
        """Peers currently refused and not dialed, with the reason."""
        now = time.monotonic()
        return {p: r for p, (until, r) in self._bans.items() if until > now}

    def on_peer_disconnected(self, callback: Callable[[str], None]) -> None:
        """``callback(peer_id)`` when the last connection to a handshaking/handshaken peer closes."""
        self._disconnect_callbacks.append(callback)

    def connected(self, peer_id: str) -> bool:
        return peer_id in self._peers

    def _is_banned(self, s: str) -> bool:
        ban = self._bans.get(s)
        if ban is None:
            return False
        if ban[0] <= time.monotonic():
            del self._bans[s]
            return False
        return True

    def _app_penalty(self, s: str) -> float:
        p = self._penalties.get(s)
        if p is None:
            return 0.0
        points, at = p
        return points * 0.5 ** ((time.monotonic() - at) / self.cfg.penalty_half_life)

    def _reject(self, s: str, reason: str) -> None:
        """Ban ``s`` for cfg.ban_duration and disconnect it."""
        self._bans[s] = (time.monotonic() + self.cfg.ban_duration, reason)
        log.warning("disconnecting peer %s: %s (banned for %.0f s)", s, reason, self.cfg.ban_duration)
        self._forget(s)  # at once: it is no longer a peer, whatever the swarm's teardown takes (~0.2 s)
        self._spawn(self._drop, s)

    def _dismiss(self, s: str, reason: str) -> None:
        """Disconnect ``s`` at once without banning it (e.g. it missed the handshake timeout)."""
        log.info("dropping peer %s: %s", s, reason)
        self._forget(s)
        self._spawn(self._drop, s, False)

    async def _drop(self, s: str, goodbye: bool = True) -> None:
        """Disconnect a refused peer after a short goodbye window in which it may still ask for our
        status (so a peer on another chain learns why and stops redialing); no gossip meanwhile."""
        if self._host is None or s in self._dropping:
            return
        self._dropping.add(s)
        try:
            if goodbye and len(self._dropping) <= MAX_GOODBYES:
                await trio.sleep(GOODBYE_GRACE)
            with trio.move_on_after(5):
                try:
                    await self._host.disconnect(parse_peer_id(s))
                except Exception as exc:
                    log.debug("disconnect %s: %s", s, exc)
        finally:
            self._dropping.discard(s)

    def _live_connections(self, pid: ID) -> list[Any]:
        try:
            conns = self._host.get_network().get_connections(pid)
        except Exception:
            return []
        return [c for c in conns if not getattr(c, "is_closed", False)]

    def _direction_of(self, pid: ID) -> str:
        """"outbound" if any live connection to ``pid`` is one we dialed, else "inbound"/"unknown"."""
        names = set()
        for c in self._live_connections(pid):
            name = getattr(getattr(c, "direction", None), "name", None)
            if isinstance(name, str):
                names.add(name.lower())
        if "outbound" in names:
            return "outbound"
        return "inbound" if "inbound" in names else "unknown"

    def _slot_refusal(self, s: str, direction: str) -> str | None:
        """Why ``s`` gets no slot now (None: it does). Protected peers (bootstrap, persistent) always get
        one and do not count; of the rest, at most ``max_peers``, of which at most ``max_inbound_peers``
        not dialed by us: idle identities that cost nothing cannot take the slots of our own dials."""
        if s in self._protected:
            return None
        unprotected = [st for st in self._peers.values() if not st.protected and not st.probation]
        if len(unprotected) >= self.cfg.max_peers:
            return f"max_peers ({self.cfg.max_peers}) reached"
        if direction != "outbound":
            inbound = sum(1 for st in unprotected if st.direction != "outbound")
            if inbound >= self.cfg.max_inbound_peers:
                return f"all {self.cfg.max_inbound_peers} inbound slots taken"
        return None

    def _admit(self, s: str, pid: ID, direction: str) -> _PeerState | None:
        """Track a newly connected peer and start its handshake; None if it is refused."""
        if s == self.peer_id or self._nursery is None or self._closing:
            return None
        st = self._peers.get(s)
        if st is not None:
            return st
        if s in self._dropping:
            return None  # being disconnected
        if self._is_banned(s):
            log.debug("refusing banned peer %s (%s)", s, self._bans[s][1])
            self._spawn(self._drop, s)
            return None
        if direction == "unknown":
            direction = self._direction_of(pid)
        refusal = self._slot_refusal(s, direction)
        probation = False
        if refusal is not None and self._is_validator is not None and (
            sum(1 for p in self._peers.values() if p.probation) < self.cfg.validator_probation_slots
        ):
            probation = True  # it may be a validator: kept only if its status proves it
            log.debug("admitting %s peer %s on probation (%s)", direction, s, refusal)
        elif refusal is not None:
            log.debug("refusing %s peer %s: %s", direction, s, refusal)
            self._spawn(self._drop, s)
            return None
        st = _PeerState(pid=pid, direction=direction, probation=probation, protected=s in self._protected)
        self._peers[s] = st
        self.metrics.set_peers(len(self._peers))
        log.debug("peer %s connected (%s)", s, direction)
        self._spawn(self._handshake, s, st)
        return st

    def _on_connected(self, conn: INetConn) -> None:
        try:
            pid = conn.muxed_conn.peer_id
        except Exception:
            return
        name = getattr(getattr(conn, "direction", None), "name", None)
        direction = name.lower() if isinstance(name, str) else "unknown"
        st = self._admit(pid.to_base58(), pid, direction)
        if st is not None and (st.direction == "unknown" or direction == "outbound"):
            st.direction = direction

    def _on_disconnected(self, conn: INetConn) -> None:
        try:
            pid = conn.muxed_conn.peer_id
        except Exception:
            return
        if self._live_connections(pid):
            return
        self._forget(pid.to_base58())

    def _forget(self, s: str) -> None:
        st = self._peers.pop(s, None)
        if st is None:
            return
        self._validator_peers.pop(s, None)  # proven again at its next status, if it comes back
        st.handshake_done.set()
        self._gossip_budgets.pop(s, None)
        self._budget_logged.pop(s, None)
        self.metrics.set_peers(len(self._peers))
        lived = time.monotonic() - st.connected_mono
        log.debug("peer %s disconnected after %.1f s", s, lived)
        k = self._known.get(s)
        if k is not None:
            k.failures = k.failures + 1 if lived < SHORT_CONNECTION else 0
            k.next_dial = max(k.next_dial, time.monotonic() + self._backoff(k.failures))
        self._wake.set()
        if not self._closing:
            for cb in list(self._disconnect_callbacks):
                try:
                    cb(s)
                except Exception:
                    log.exception("on_peer_disconnected callback failed")

    def _backoff(self, failures: int) -> float:
        base = min(self.cfg.reconnect_backoff_max, self.cfg.reconnect_backoff_min * 2 ** min(failures, 30))
        return base * random.uniform(0.8, 1.2)

    async def _maintenance_loop(self) -> None:
        while True:
            await trio.sleep(self.cfg.heartbeat_interval)
            try:
                self._maintain()
            except Exception:
                log.exception("p2p maintenance failed")

    def _maintain(self) -> None:
        """Expire bans and penalties, drop graylisted peers, repair gossip streams, reconcile peers."""
        now = time.monotonic()
        for s in [s for s, (until, _r) in self._bans.items() if until <= now]:
            del self._bans[s]
        for s in [s for s in self._penalties if self._app_penalty(s) < 0.01]:
            del self._penalties[s]
        for s in list(self._peers):
            sc = self.score(s)
            if sc < self.cfg.graylist_threshold:
                self._reject(s, f"score {sc:.1f} below graylist threshold {self.cfg.graylist_threshold}")
        # A connected peer without our outbound gossip stream (its registration gave up, e.g. the
        # handshake outlasted the gate's wait) would silently miss every message: repair it.
        for st in self._peers.values():
            if (
                st.handshake != "pending"
                and st.pid not in self._pubsub.peers
                and now - st.connected_mono > 5.0
                and now - st.pubsub_retry_at > 30.0
            ):
                st.pubsub_retry_at = now
                self._spawn(self._repair_gossip_stream, st.pid)
        # Reconcile with the swarm (a notification may have been missed around start-up).
        connected = {p.to_base58(): p for p in self._host.get_connected_peers()}
        for s in [s for s in self._peers if s not in connected]:
            self._forget(s)
        for s, pid in connected.items():
            if s not in self._peers and s not in self._dropping and self._live_connections(pid):
                self._admit(s, pid, "unknown")
        self.metrics.set_peers(len(self._peers))

    async def _repair_gossip_stream(self, pid: ID) -> None:
        log.debug("opening the missing gossip stream to %s", pid)
        with trio.move_on_after(self.cfg.handshake_timeout):
            try:
                await self._pubsub.ensure_peer_stream(pid, timeout=self.cfg.handshake_timeout)
            except Exception as exc:
                log.debug("gossip stream to %s: %s", pid, exc)
