"""The status handshake of :class:`p2p.service.P2PService`: both sides exchange :class:`ChainStatus` on every
new connection and every ``status_interval``; a peer on another chain or genesis is banned; gossip with a
peer waits for its handshake (the pubsub gate).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import trio
from libp2p.peer.id import ID

from state.errors import DecodeError

from .peers import _PeerState, parse_peer_id
from .reqresp import _Frames
from .util import _guarded
from .wire import (
    MAX_REQUEST_BYTES,
    MAX_STATUS_BYTES,
    BadRequest,
    BadResponse,
    ChainStatus,
    P2PError,
    ProtocolUnsupported,
    RemoteError,
    ValidatorProof,
    error,
    ok,
)

log = logging.getLogger("aitbc.p2p")

MISMATCH_PREFIXES = ("genesis mismatch", "chain id mismatch")
HANDSHAKE_PENALTY = 5.0  # score points for a peer that connects but never completes the status exchange
MAX_PEERS_PER_VALIDATOR = 2  # protected peers one validator key may vouch for (its node and a sentry)
BAD_PROOF_PENALTY = 20.0  # score points for a validator proof that does not verify (forged or replayed)


class StatusHandshake:
    """Status exchange and handshake (a part of P2PService)."""

    async def request_status(self, peer_id: str) -> ChainStatus:
        """Exchange status with a connected peer (it learns ours); notifies on_peer_status listeners."""
        pid = parse_peer_id(peer_id)
        status = await self._exchange_status(pid)
        st = self._peers.get(peer_id)
        if st is not None and not self._accept_status(peer_id, st, status):
            raise P2PError(f"peer {peer_id} was refused at its status (disconnected)")
        return status

    def on_peer_status(self, callback: Callable[[str, ChainStatus], None]) -> None:
        """``callback(peer_id, status)`` whenever a peer's status is learned or changes (sync; keep it
        quick, e.g. ``send_nowait`` into a channel)."""
        self._status_callbacks.append(callback)

    def _our_status(self) -> ChainStatus:
        try:
            s = self._status_provider()
            return ChainStatus(self.chain_id, self.genesis_hash, s.height, s.head_hash, s.finalized_height,
                               self._validator_proof)
        except Exception as exc:
            log.warning("status_provider failed: %s", exc)
            raise P2PError(f"our status is unavailable: {exc}") from None

    def _mismatch(self, status: ChainStatus) -> str | None:
        if status.chain_id != self.chain_id:  # (cannot happen over our own protocol id)
            return f"chain id mismatch (theirs {status.chain_id!r}, ours {self.chain_id!r})"
        if status.genesis_hash != self.genesis_hash:
            return f"genesis mismatch (theirs {status.genesis_hash.hex()[:16]}…, ours {self.genesis_hash.hex()[:16]}…)"
        return None

    def _accept_status(self, s: str, st: _PeerState, status: ChainStatus) -> bool:
        reason = self._mismatch(status)
        if reason is not None:
            self._reject(s, reason)
            return False
        if not self._check_validator(s, st, status.validator):
            return False
        st.last_status_at = time.monotonic()
        if st.handshake != "ok":
            st.handshake = "ok"
            st.handshake_done.set()
        if status != st.status:
            st.status = status
            for cb in list(self._status_callbacks):
                try:
                    cb(s, status)
                except Exception:
                    log.exception("on_peer_status callback failed")
        return True

    def _check_validator(self, s: str, st: _PeerState, proof: ValidatorProof | None) -> bool:
        """Protect a peer that proves a current validator's key; unprotect one that no longer does; drop a
        peer on probation that does not (False). A proof that does not verify for this peer id is a lie."""
        pk = None
        if proof is not None and self._is_validator is not None:
            if not proof.verify(self.chain_id, self.genesis_hash, s):
                self._add_penalty(s, BAD_PROOF_PENALTY, "a validator proof that does not verify", logging.INFO)
            elif self._is_validator(proof.public_key) and sum(
                1 for o, k in self._validator_peers.items() if k == proof.public_key and o != s
            ) < MAX_PEERS_PER_VALIDATOR:
                pk = proof.public_key
        if pk is not None:
            if self._validator_peers.get(s) != pk:
                log.info("peer %s proved validator %s: protected", s, pk.hex()[:16])
            self._validator_peers[s] = pk
            st.protected, st.probation = True, False
            return True
        if self._validator_peers.pop(s, None) is not None:
            log.info("peer %s no longer proves a validator key: unprotected", s)
            st.protected = s in self._protected
        if st.probation and self._peers.get(s) is st:
            self._dismiss(s, "admitted beyond the slot limits on probation, and proved no validator key")
            return False
        return True

    async def _exchange_status(self, pid: ID) -> ChainStatus:
        val = await self._request(pid, "status", self._our_status().to_obj(), max_resp=MAX_STATUS_BYTES + 64)
        try:
            return ChainStatus.from_obj(val)
        except DecodeError as exc:
            raise BadResponse(f"status: {exc}") from None

    async def _handshake(self, s: str, st: _PeerState) -> None:
        """Exchange status with a new peer. A peer that has not completed the exchange (in either
        direction) within ``handshake_timeout`` is dropped: it must not hold a slot for nothing."""
        status: ChainStatus | None = None
        refused = False
        try:
            with trio.move_on_after(self.cfg.handshake_timeout):
                while status is None and self._peers.get(s) is st and st.handshake == "pending":
                    try:
                        status = await self._exchange_status(st.pid)
                    except ProtocolUnsupported:
                        st.handshake = "observer"
                        log.info("peer %s does not speak %s: observer (gossip only)", s, self._protos["status"])
                    except RemoteError as exc:
                        if exc.code == "banned":
                            self._refused_by(s, str(exc))
                            refused = True
                            break
                        if exc.code != "busy":
                            log.debug("status handshake with %s: %s", s, exc)
                            break
                        await trio.sleep(0.2)  # it serves too many requests right now: ask again
                    except P2PError as exc:
                        log.debug("status handshake with %s failed: %s", s, exc)
                        break
            if status is not None and self._peers.get(s) is st:
                self._accept_status(s, st, status)
        finally:
            st.handshake_done.set()
        if st.probation and st.handshake == "observer" and self._peers.get(s) is st:
            self._dismiss(s, "on probation, and it speaks no status protocol to prove a validator key")
            return
        if st.handshake == "pending" and self._peers.get(s) is st:
            st.handshake = "failed"
            if refused:
                self._dismiss(s, "it refuses us")
                return
            self._add_penalty(s, HANDSHAKE_PENALTY, "no status exchange", logging.DEBUG)
            if self._peers.get(s) is st:
                self._dismiss(s, f"no status exchange within {self.cfg.handshake_timeout:g} s")
            return
        if st.handshake == "ok" and self.cfg.peer_exchange and self._peers.get(s) is st:
            await self._exchange_peers(s, st.pid)

    def _refused_by(self, s: str, why: str) -> None:
        """The peer has banned us: do not redial it for a ban period (it disconnects us anyway)."""
        k = self._known.get(s)
        if k is not None:
            k.next_dial = time.monotonic() + self.cfg.ban_duration
        log.info("peer %s refuses us (%s); not redialing it for %.0f s", s, why, self.cfg.ban_duration)

    async def _gate(self, pid: ID) -> bool:
        """Pubsub may talk to ``pid`` once its handshake concluded without a mismatch."""
        s = pid.to_base58()
        with trio.move_on_after(self.cfg.handshake_timeout):
            await self._started.wait()
            st = self._peers.get(s) or self._admit(s, pid, "unknown")
            if st is None:
                return False
            await st.handshake_done.wait()
        return s in self._peers and not self._is_banned(s)

    async def _serve_status(self, s: str, req: Any, frames: _Frames) -> None:
        try:
            theirs = ChainStatus.from_obj(req)
        except DecodeError as exc:
            raise BadRequest(str(exc)) from None
        if self._is_banned(s):
            # Goodbye window: a peer on another chain gets our status (and so bans us in turn); any
            # other banned peer is told so, and stops redialing for a while.
            reason = self._bans.get(s, (0.0, ""))[1]
            if reason.startswith(MISMATCH_PREFIXES):
                await frames.send(ok(self._our_status().to_obj()), MAX_STATUS_BYTES + 64)
            else:
                await frames.send(error("banned", "you are banned for a while"), MAX_REQUEST_BYTES)
            return
        st = self._peers.get(s) or self._admit(s, parse_peer_id(s), "unknown")
        await frames.send(ok(self._our_status().to_obj()), MAX_STATUS_BYTES + 64)
        if st is not None and self._peers.get(s) is st:
            self._accept_status(s, st, theirs)

    async def _status_loop(self) -> None:
        while True:
            await trio.sleep(self.cfg.status_interval)
            async with trio.open_nursery() as n:
                for s, st in list(self._peers.items()):
                    if st.handshake == "observer":
                        continue
                    if time.monotonic() - st.last_status_at < self.cfg.status_interval / 2:
                        continue  # it told us its status recently (its own request)
                    n.start_soon(_guarded, self._refresh_status, s, st)

    async def _refresh_status(self, s: str, st: _PeerState) -> None:
        was = st.handshake
        try:
            status = await self._exchange_status(st.pid)
        except ProtocolUnsupported:
            if was == "failed":
                st.handshake = "observer"
            return
        except RemoteError as exc:
            if exc.code == "banned":
                self._refused_by(s, str(exc))
            return
        except P2PError as exc:
            log.debug("status refresh from %s failed: %s", s, exc)
            return
        if self._peers.get(s) is st and self._accept_status(s, st, status):
            if was != "ok" and self.cfg.peer_exchange:
                await self._exchange_peers(s, st.pid)
