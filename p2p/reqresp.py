"""Request/response of :class:`p2p.service.P2PService`: one stream per request, varint-framed canonical CBOR,
every frame bounded and every read/write under ``request_timeout``; the client side and the server
(handlers for blocks and blobs, concurrency limits).
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio
from libp2p.host.exceptions import StreamFailure
from libp2p.io.exceptions import MessageTooLarge
from libp2p.io.msgio import VarIntLengthMsgReadWriter
from libp2p.peer.id import ID

from state import codec
from state.errors import DecodeError

from .peers import parse_peer_id
from .util import _close_stream
from .wire import (
    MAX_REQUEST_BYTES,
    BadRequest,
    BadResponse,
    P2PError,
    PeerNotConnected,
    ProtocolUnsupported,
    RemoteError,
    RequestTimeout,
    error,
    ok,
    open_envelope,
    req_map,
    req_uint,
)

log = logging.getLogger("aitbc.p2p")

BLOB_MAX_CHUNK = 4 << 20  # largest blob chunk frame accepted from a peer
MAX_STEM_TX_BYTES = MAX_REQUEST_BYTES - 64  # one transaction per stem request, in one request frame
MAX_STEM_REASON = 64
STATUS_REQUESTS_PER_PEER = 2  # concurrent inbound status requests one peer may have open


class _Frames:
    """Varint-framed canonical-CBOR frames on one stream; every read and write under a timeout."""

    def __init__(self, stream: Any, timeout: float) -> None:
        self.stream = stream
        self.timeout = timeout

    async def send(self, obj: Any, max_bytes: int) -> None:
        data = codec.encode(obj)
        with trio.fail_after(self.timeout):
            await VarIntLengthMsgReadWriter(self.stream, max_msg_size=max_bytes).write_msg(data)

    async def recv(self, max_bytes: int) -> Any:
        with trio.fail_after(self.timeout):
            raw = await VarIntLengthMsgReadWriter(self.stream, max_msg_size=max_bytes).read_msg()
        return codec.decode(raw, max_bytes=max_bytes)


class ReqResp:
    """Request/response client and server (a part of P2PService)."""

    async def request_blocks(self, peer_id: str, start: int, count: int) -> list[bytes]:
        """Up to ``count`` encoded items from height ``start`` (what the peer's blocks_provider gives,
        bounded by ``cfg.max_blocks_response_bytes``; fewer when the peer has fewer)."""
        if type(start) is not int or start < 0:
            raise ValueError("start must be a non-negative int")
        if type(count) is not int or not 1 <= count <= self.cfg.max_blocks_per_request:
            raise ValueError(f"count must be in 1..{self.cfg.max_blocks_per_request}")
        val = await self._request(
            parse_peer_id(peer_id),
            "blocks",
            {"start": start, "count": count},
            max_resp=self.cfg.max_blocks_response_bytes,
        )
        if type(val) is not list or len(val) > count or any(type(x) is not bytes for x in val):
            raise BadResponse("blocks: expected a list of at most count byte strings")
        return val

    async def request_blob(self, peer_id: str, blob_hash: bytes) -> bytes | None:
        """The blob with sha256 ``blob_hash`` from a peer (None if it has none). Transferred in bounded
        chunks, at most ``cfg.max_blob_bytes``; the hash is verified before it is returned."""
        if not isinstance(blob_hash, bytes) or len(blob_hash) != 32:
            raise ValueError("blob_hash must be 32 bytes (sha256)")
        async with self._client_stream(parse_peer_id(peer_id), "blob") as fr:
            with trio.fail_after(self.cfg.request_timeout * 6):
                await fr.send({"hash": blob_hash}, MAX_REQUEST_BYTES)
                head = open_envelope(await fr.recv(1024))
                if head is None:
                    return None
                if type(head) is not dict or set(head) != {"size"} or type(head["size"]) is not int:
                    raise BadResponse("blob: malformed header")
                size = head["size"]
                if not 0 <= size <= self.cfg.max_blob_bytes:
                    raise BadResponse(f"blob: size {size} outside 0..{self.cfg.max_blob_bytes}")
                buf = bytearray()
                while len(buf) < size:
                    chunk = await fr.recv(BLOB_MAX_CHUNK + 16)
                    if type(chunk) is not bytes or not chunk or len(buf) + len(chunk) > size:
                        raise BadResponse("blob: malformed chunk")
                    buf += chunk
            data = bytes(buf)
            if hashlib.sha256(data).digest() != blob_hash:
                raise BadResponse("blob: content does not match its hash")
            return data

    async def send_stem(self, peer_id: str, tx: bytes) -> str | None:
        """Hand one transaction to a peer on the stem path (``/aitbc/<chain>/stem/1``, Dandelion-style
        relaying of sponsored transactions: it is not gossiped under our peer id). None when the peer took
        it; else its refusal reason (``already_known``, ``unsupported``, a mempool reason, …)."""
        if not isinstance(tx, bytes) or not 0 < len(tx) <= MAX_STEM_TX_BYTES:
            raise ValueError(f"a stem transaction is 1..{MAX_STEM_TX_BYTES} bytes")
        try:
            val = await self._request(parse_peer_id(peer_id), "stem", {"tx": tx}, max_resp=256)
        except RemoteError as exc:
            return exc.code
        if type(val) is not dict or set(val) != {"refused"} or not (
            val["refused"] is None or (type(val["refused"]) is str and 0 < len(val["refused"]) <= MAX_STEM_REASON)
        ):
            raise BadResponse("stem: malformed response")
        return val["refused"]

    @asynccontextmanager
    async def _client_stream(self, pid: ID, proto: str) -> AsyncIterator[_Frames]:
        if not self._running or self._host is None:
            raise P2PError("p2p service is not running")
        if not self._live_connections(pid):
            raise PeerNotConnected(f"peer {pid} is not connected")
        result = "error"
        stream = None
        try:
            try:
                with trio.fail_after(self.cfg.request_timeout):
                    stream = await self._host.new_stream(pid, [self._protos[proto]])
            except StreamFailure as exc:
                if "not supported" in str(exc.__cause__ or ""):
                    raise ProtocolUnsupported(f"{pid} does not support {self._protos[proto]}") from None
                raise P2PError(f"{proto}: could not open a stream to {pid}: {exc.__cause__ or exc}") from None
            try:
                yield _Frames(stream, self.cfg.request_timeout)
            except trio.TooSlowError:
                raise RequestTimeout(f"{proto} request to {pid} timed out") from None
            except MessageTooLarge as exc:
                raise BadResponse(f"{proto}: response too large: {exc}") from None
            except DecodeError as exc:
                raise BadResponse(f"{proto}: {exc}") from None
            except (P2PError, ValueError):
                raise
            except Exception as exc:
                raise P2PError(f"{proto} request to {pid} failed: {type(exc).__name__}: {exc}") from None
            result = "ok"
        except trio.TooSlowError:
            result = "timeout"
            raise RequestTimeout(f"{proto}: opening a stream to {pid} timed out") from None
        except RequestTimeout:
            result = "timeout"
            raise
        except ProtocolUnsupported:
            result = "unsupported"
            raise
        except (P2PError, ValueError):
            raise
        except Exception as exc:  # libp2p dial / stream errors
            raise P2PError(
                f"{proto}: could not open a stream to {pid}: {type(exc).__name__}: {exc}"
            ) from None
        finally:
            self.metrics.request(proto, result)
            if stream is not None:
                await _close_stream(stream, reset=result != "ok")

    async def _request(self, pid: ID, proto: str, req: Any, *, max_resp: int) -> Any:
        async with self._client_stream(pid, proto) as fr:
            await fr.send(req, MAX_REQUEST_BYTES)
            resp = await fr.recv(max_resp)
            return open_envelope(resp)

    def _server(
        self, proto: str, fn: Callable[[str, Any, _Frames], Awaitable[None]]
    ) -> Callable[[Any], Awaitable[None]]:
        limiter = trio.Semaphore(self.cfg.max_inbound_requests)  # all peers, this protocol
        cls = "status" if proto == "status" else "data"
        per_peer = STATUS_REQUESTS_PER_PEER if cls == "status" else self.cfg.max_requests_per_peer

        async def handler(stream: Any) -> None:
            result = "failed"
            s = "?"
            frames = _Frames(stream, self.cfg.request_timeout)
            try:
                s = stream.muxed_conn.peer_id.to_base58()
                if not self._started.is_set() or (self._is_banned(s) and proto != "status"):
                    result = "refused"
                    return
                key = (s, cls)
                mine = self._inflight.get(key, 0)
                if mine >= per_peer:
                    result = "busy"
                    await frames.send(
                        error("busy", f"at most {per_peer} concurrent requests per peer"), MAX_REQUEST_BYTES
                    )
                    return
                try:
                    limiter.acquire_nowait()
                except trio.WouldBlock:
                    result = "busy"
                    await frames.send(error("busy", "too many concurrent requests"), MAX_REQUEST_BYTES)
                    return
                self._inflight[key] = mine + 1
                try:
                    try:
                        try:
                            req = await frames.recv(MAX_REQUEST_BYTES)
                        except (MessageTooLarge, DecodeError) as exc:
                            raise BadRequest(f"malformed request: {exc}") from None
                        await fn(s, req, frames)
                        result = "served"
                    except BadRequest as exc:
                        result = "bad_request"
                        log.debug("%s: bad request from %s: %s", proto, s, exc)
                        await frames.send(error("bad_request", str(exc)), MAX_REQUEST_BYTES)
                finally:
                    limiter.release()
                    left = self._inflight.get(key, 1) - 1
                    if left > 0:
                        self._inflight[key] = left
                    else:
                        self._inflight.pop(key, None)
            except trio.TooSlowError:
                log.debug("%s: request from %s timed out", proto, s)
            except Exception as exc:
                log.debug("%s: serving %s failed: %s: %s", proto, s, type(exc).__name__, exc)
            finally:
                if result != "refused":
                    self.metrics.request(proto, result)
                await _close_stream(stream, reset=result in ("failed", "refused"))

        return handler

    async def _call_provider(self, fn: Callable[..., Any], *args: Any) -> Any:
        res = fn(*args)
        if inspect.isawaitable(res):
            res = await res
        return res

    async def _serve_blocks(self, s: str, req: Any, frames: _Frames) -> None:
        req = req_map(req, {"start", "count"})
        start = req_uint(req["start"], "start")
        count = req_uint(req["count"], "count", 1, self.cfg.max_blocks_per_request)
        try:
            items = await self._call_provider(self._blocks_provider, start, count)
            if not isinstance(items, list | tuple) or not all(
                isinstance(x, bytes | bytearray) for x in items
            ):
                raise TypeError("blocks_provider must return a list of bytes")
        except Exception as exc:
            log.warning("blocks_provider(%d, %d) failed: %s", start, count, exc)
            await frames.send(error("unavailable", "blocks are not available"), MAX_REQUEST_BYTES)
            return
        limit = self.cfg.max_blocks_response_bytes - 64
        out: list[bytes] = []
        total = 0
        for item in items[:count]:
            n = len(item) + 9  # CBOR byte-string header
            if total + n > limit:
                break
            out.append(bytes(item))
            total += n
        if items and not out:
            await frames.send(
                error("too_large", "the first item exceeds the response bound"), MAX_REQUEST_BYTES
            )
            return
        await frames.send(ok(out), self.cfg.max_blocks_response_bytes)

    async def _serve_stem(self, s: str, req: Any, frames: _Frames) -> None:
        req = req_map(req, {"tx"})
        tx = req["tx"]
        if type(tx) is not bytes or not 0 < len(tx) <= MAX_STEM_TX_BYTES:
            raise BadRequest(f"tx must be 1..{MAX_STEM_TX_BYTES} bytes")
        if self._stem_provider is None:
            await frames.send(error("unsupported", "this node relays no stem transactions"), MAX_REQUEST_BYTES)
            return
        try:
            refused = await self._call_provider(self._stem_provider, s, tx)
        except Exception as exc:
            log.warning("stem_provider failed: %s", exc)
            refused = "unavailable"
        if refused is not None:
            refused = str(refused)[:MAX_STEM_REASON] or "refused"
        await frames.send(ok({"refused": refused}), 256)

    async def _serve_blob(self, s: str, req: Any, frames: _Frames) -> None:
        req = req_map(req, {"hash"})
        h = req["hash"]
        if type(h) is not bytes or len(h) != 32:
            raise BadRequest("hash must be 32 bytes")
        if self._blob_provider is None:
            await frames.send(error("unsupported", "this node serves no blobs"), MAX_REQUEST_BYTES)
            return
        try:
            blob = await self._call_provider(self._blob_provider, h)
        except Exception as exc:
            log.warning("blob_provider failed: %s", exc)
            blob = None
        if blob is None:
            await frames.send(ok(None), 1024)
            return
        blob = bytes(blob)
        if len(blob) > self.cfg.max_blob_bytes:
            await frames.send(error("too_large", "blob exceeds max_blob_bytes"), MAX_REQUEST_BYTES)
            return
        if hashlib.sha256(blob).digest() != h:
            log.warning("blob_provider returned content that does not match %s", h.hex())
            await frames.send(error("unavailable", "stored blob is corrupt"), MAX_REQUEST_BYTES)
            return
        await frames.send(ok({"size": len(blob)}), 1024)
        step = min(self.cfg.blob_chunk_bytes, BLOB_MAX_CHUNK)
        for off in range(0, len(blob), step):
            await frames.send(blob[off : off + step], BLOB_MAX_CHUNK + 16)
