"""Discovery of :class:`p2p.service.P2PService`: the address book (bootstrap entries and peers learned by peer
exchange), the dial loop (target_peers, exponential backoff with jitter) and the peer exchange protocol.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import trio
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo as Libp2pPeerInfo
from multiaddr import Multiaddr

from .peers import _KnownPeer, parse_peer_id
from .reqresp import _Frames
from .util import _guarded
from .wire import (
    MAX_PEERS_RESPONSE_BYTES,
    MAX_PEX_ENTRIES,
    BadRequest,
    BadResponse,
    P2PError,
    check_addr_list,
    ok,
    req_map,
)

log = logging.getLogger("aitbc.p2p")


class Discovery:
    """Address book, dialing and peer exchange (a part of P2PService)."""

    def _announce(self) -> list[str]:
        if self.cfg.announce_addrs:
            return list(self.cfg.announce_addrs)[:8]
        out = []
        for a in self._host.get_transport_addrs() if self._host is not None else []:
            text = str(a)
            if "/ip4/0.0.0.0/" in text or "/ip6/::/" in text:
                continue
            out.append(text)
        return out[:8]

    def _learn(self, s: str, addrs: list[str]) -> int:
        """Remember dialable transport addresses of peer ``s``; 1 if it is new to us."""
        if s == self.peer_id or self._is_banned(s):
            return 0
        clean = []
        for a in addrs:
            try:
                ma = Multiaddr(a)
                protos = [p.name for p in ma.protocols()]
                if "p2p" in protos:
                    if ma.get_peer_id() != s:
                        continue
                    ma = ma.decapsulate(Multiaddr(f"/p2p/{s}"))
                if "tcp" not in protos or (
                    "ip4" not in protos and "ip6" not in protos and "dns4" not in protos
                ):
                    continue
                text = str(ma)
            except Exception:
                continue
            if text and text not in clean:
                clean.append(text)
        if not clean:
            return 0
        k = self._known.get(s)
        if k is not None:
            if not k.bootstrap:
                k.addrs = clean[:8]
            return 0
        if len(self._known) >= self.cfg.max_known_peers:
            victims = [p for p, v in self._known.items() if not v.bootstrap and p not in self._peers]
            if not victims:
                return 0
            victim = max(victims, key=lambda p: (self._known[p].failures, -self._known[p].learned_at))
            del self._known[victim]
        self._known[s] = _KnownPeer(addrs=clean[:8])
        return 1

    def _pex_entries(self, exclude: str) -> list[dict[str, Any]]:
        out = []
        for s, st in self._peers.items():
            k = self._known.get(s)
            if s == exclude or k is None or not k.addrs or st.handshake != "ok":
                continue
            out.append({"id": s, "addrs": [f"{a}/p2p/{s}" for a in k.addrs[:4]]})
        random.shuffle(out)
        return out[:MAX_PEX_ENTRIES]

    async def _dial_loop(self) -> None:
        while True:
            self._wake = trio.Event()
            try:
                next_due = self._dial_due()
            except Exception:
                log.exception("p2p dial loop failed")
                next_due = time.monotonic() + 5.0
            with trio.move_on_after(max(0.02, next_due - time.monotonic())):
                await self._wake.wait()

    def _trusted_peers(self) -> int:
        """Connected peers an attacker cannot pick for us: those we dialed, and protected ones."""
        return sum(1 for st in self._peers.values() if st.direction == "outbound" or st.protected)

    def _dial_due(self) -> float:
        """Start dials: persistent peers whenever they are not connected; others while fewer than
        ``target_peers`` outbound or protected peers are connected (inbound peers do not count: a node
        full of inbound strangers keeps dialing peers of its own choice) and a slot is free. Returns
        the time the next dial falls due."""
        now = time.monotonic()
        next_due = now + 5.0
        cands = [
            (s, k)
            for s, k in self._known.items()
            if s not in self._peers
            and s not in self._dialing
            and s not in self._dropping
            and k.addrs
            and not self._is_banned(s)
        ]
        unprotected = sum(1 for st in self._peers.values() if not st.protected and not st.probation)
        dialing = len(self._dialing)
        need = min(
            self.cfg.target_peers - self._trusted_peers() - dialing,
            self.cfg.max_peers - unprotected - dialing,
        )
        due = [(s, k) for s, k in cands if k.next_dial <= now]
        due.sort(key=lambda sk: (not sk[1].persistent, not sk[1].bootstrap, sk[1].failures, random.random()))
        for s, k in due:
            if not k.persistent:
                if need <= 0:
                    break
                need -= 1
            self._dialing.add(s)
            self._spawn(self._dial, s)
        later = [k.next_dial for _s, k in cands if k.next_dial > now and (k.persistent or need > 0)]
        if later:
            next_due = min(next_due, min(later))
        return next_due

    async def _dial(self, s: str) -> None:
        k = self._known.get(s)
        try:
            if k is None:
                return
            pid = parse_peer_id(s)
            network = self._host.get_network()
            if hasattr(network, "unblock_peer"):
                network.unblock_peer(pid)  # libp2p's own 60 s negative cache; we keep our own backoff
            with trio.fail_after(self.cfg.dial_timeout):
                await self._host.connect(Libp2pPeerInfo(pid, [Multiaddr(a) for a in k.addrs]))
        except (Exception, trio.TooSlowError) as exc:
            if k is not None:
                k.failures += 1
                delay = self._backoff(k.failures - 1)
                k.next_dial = time.monotonic() + delay
                log.log(
                    logging.INFO if k.bootstrap and k.failures == 1 else logging.DEBUG,
                    "dial %s failed (%s: %s); retry in %.1f s",
                    s,
                    type(exc).__name__,
                    exc,
                    delay,
                )
        else:
            log.debug("dialed %s", s)
        finally:
            self._dialing.discard(s)
            self._wake.set()

    async def _pex_loop(self) -> None:
        while True:
            await trio.sleep(self.cfg.pex_interval * random.uniform(0.8, 1.2))
            if self._trusted_peers() >= self.cfg.target_peers:
                continue
            ready = [(s, st) for s, st in self._peers.items() if st.handshake == "ok"]
            if ready:
                s, st = random.choice(ready)
                await _guarded(self._exchange_peers, s, st.pid)

    async def _exchange_peers(self, s: str, pid: ID) -> None:
        try:
            val = await self._request(
                pid, "peers", {"addrs": self._announce()}, max_resp=MAX_PEERS_RESPONSE_BYTES
            )
            if type(val) is not list or len(val) > MAX_PEX_ENTRIES:
                raise BadResponse("peers: expected a list")
            learned = 0
            for e in val:
                if type(e) is not dict or set(e) != {"id", "addrs"} or type(e["id"]) is not str:
                    raise BadResponse("peers: malformed entry")
                addrs = check_addr_list(e["addrs"], bad=BadResponse)
                try:
                    parse_peer_id(e["id"])
                except ValueError:
                    raise BadResponse("peers: malformed peer id") from None
                learned += self._learn(e["id"], addrs)
            if learned:
                log.debug("learned %d peer(s) from %s", learned, s)
                self._wake.set()
        except P2PError as exc:
            log.debug("peer exchange with %s failed: %s", s, exc)

    async def _serve_peers(self, s: str, req: Any, frames: _Frames) -> None:
        req = req_map(req, {"addrs"})
        addrs = check_addr_list(req["addrs"], bad=BadRequest)
        if self._learn(s, addrs):
            self._wake.set()
        await frames.send(ok(self._pex_entries(exclude=s)), MAX_PEERS_RESPONSE_BYTES)
