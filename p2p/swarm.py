"""py-libp2p 0.8.1's swarm, fixed so that a closed inbound connection frees its inbound slot at once.

The cause (``libp2p/network/swarm.py``): ``Swarm._handle_inbound_connection`` takes one token of
``_inbound_limiter`` (capacity ``max_connections - min_connections``) per accepted connection and gives it
back in a ``finally`` after ``_do_handle_inbound_connection`` returns. That method, once the connection
is upgraded and registered, parks on ``await self.manager.wait_finished()`` ("intentional barrier: keep
handler alive") – it waits for the *whole swarm* to stop, not for the connection to close. So every
inbound connection ever accepted holds its token until shutdown: after ``max_connections -
min_connections`` inbound connections have come and gone, every new one is closed on accept
("Inbound connection cap reached", DEBUG only), and the node accepts no new peer at all.

:class:`SlotReleasingSwarm` overrides ``_do_handle_inbound_connection`` with the same steps, except that
the barrier waits for *this* connection to close (its ``SwarmConn.event_closed``) or for the swarm to
stop, whichever comes first. :func:`install` switches a swarm built by ``libp2p.new_host`` to it (it
adds no state, only the method).
"""

from __future__ import annotations

import logging
from typing import Any

import trio
from libp2p.abc import IMuxedConn
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.network.swarm import Swarm
from libp2p.transport.tcp.tcp import TCPListener, _multiaddr_from_socket

log = logging.getLogger("aitbc.p2p")


class _ClosingSafeTCPListener(TCPListener):
    """py-libp2p's TCP listener, whose address list skips listener sockets already closed. Upstream
    ``get_addrs`` asks every socket for its name, and ``close`` closes them before dropping them, so an
    identify request answered while the host stops (``host.get_addrs``) raised EBADF and took the whole
    libp2p service down with it."""

    def get_addrs(self) -> tuple[Any, ...]:
        return tuple(_multiaddr_from_socket(ls.socket) for ls in self.listeners if ls.socket.fileno() != -1)


class SlotReleasingSwarm(Swarm):
    """A :class:`libp2p.network.swarm.Swarm` whose inbound connection handler (and so its inbound slot)
    ends when its connection closes, not when the swarm stops; its TCP listeners survive being asked for
    their addresses while they close (:class:`_ClosingSafeTCPListener`)."""

    async def listen(self, *multiaddrs: Any) -> bool:
        ok = await super().listen(*multiaddrs)
        for listener in self.listeners.values():
            if type(listener) is TCPListener:
                listener.__class__ = _ClosingSafeTCPListener
        return ok

    async def _do_handle_inbound_connection(
        self, read_write_closer: Any, maddr: Any, failure_event: Any
    ) -> None:
        remote_maddr = self._build_remote_multiaddr(read_write_closer)
        if remote_maddr is not None and not await self.connection_gate.is_allowed(remote_maddr):
            log.debug("inbound connection from %s denied by the connection gate", remote_maddr)
            try:
                await read_write_closer.close()
                failure_event.conn_incoming_error = True
                if self.metric_send_channel is not None:
                    await self.metric_send_channel.send(failure_event)
            except Exception:
                pass
            return

        if isinstance(read_write_closer, IMuxedConn):  # pre-multiplexed transports (QUIC)
            try:
                await self.add_conn(read_write_closer, direction="inbound")
                await self._until_closed(read_write_closer)
            except Exception:
                await read_write_closer.close()
                failure_event.conn_incoming_error = True
                if self.metric_send_channel is not None:
                    await self.metric_send_channel.send(failure_event)
            return

        raw_conn = None
        try:
            raw_conn = RawConnection(read_write_closer, False)
            muxed = await self.upgrade_inbound_raw_conn(raw_conn, maddr)
            await self._until_closed(muxed)
        except Exception as exc:
            log.debug("inbound connection on %s failed: %s", maddr, exc)
            try:
                if raw_conn is not None:
                    await raw_conn.close()
                else:
                    await read_write_closer.close()
                    failure_event.conn_incoming_error = True
                    if self.metric_send_channel is not None:
                        await self.metric_send_channel.send(failure_event)
            except Exception:
                pass

    async def _until_closed(self, muxed: Any) -> None:
        """Until the swarm connection wrapping ``muxed`` has closed, or the swarm stops."""
        conn = next(
            (c for c in self.connections.get(muxed.peer_id, ()) if getattr(c, "muxed_conn", None) is muxed),
            None,
        )
        if conn is None or conn.is_closed:
            return  # refused by add_conn's limits or already gone: nothing to keep the slot for

        async with trio.open_nursery() as nursery:

            async def first(wait: Any) -> None:
                await wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(first, conn.event_closed.wait)
            nursery.start_soon(first, self.manager.wait_finished)


def install(swarm: Any) -> bool:
    """Make ``swarm`` (a plain :class:`Swarm` from ``libp2p.new_host``) a :class:`SlotReleasingSwarm`.
    False (and a warning) if it is some other class."""
    if type(swarm) is Swarm:
        swarm.__class__ = SlotReleasingSwarm
        return True
    if isinstance(swarm, SlotReleasingSwarm):
        return True
    log.warning("p2p: unexpected swarm class %s: closed inbound connections may keep their slots",
                type(swarm).__name__)
    return False
