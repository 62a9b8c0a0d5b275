"""An OpenAI-compatible endpoint on the RPC port: ``llm-generate`` jobs behind the OpenAI API shape.

Routes (non-streaming): ``POST /v1/completions``, ``POST /v1/chat/completions``, ``GET /v1/models``
(registered models this node has pinned, complete). Off by default (``[openai] enabled``).

A request becomes an ``llm-generate`` job paid from the keystore key ``openai.key`` (unlocked at start:
password from ``$AITBC_OPENAI_PASSWORD``, else ``$AITBC_PASSWORD``, else the home's password file of that
key), offering ``openai.max_price_per_token`` per token for ``len(prompt) + max_tokens`` tokens. The
prompt is tokenized with the model's own tokenizer from this node's pinned copy (chat: its chat
template); generation stops at the tokenizer's end-of-sequence token or at single-token ``stop``
strings. The answer comes when the job is COMPLETED: the result blob is fetched, checked against the
receipt's hash and Merkle root, and decoded. A job still QUEUED at ``openai.timeout_s`` is canceled
(refunded) and the request answers 504.

Errors use OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``: 400 a bad request
(``invalid_request_error``), 401 (``api_key`` set and not given, or no ``api_key`` and a non-loopback
client), 403 an Origin not allowed, 404 an unknown model or path, 402 the key cannot pay
(``insufficient_quota``), 413 a body over ``openai.max_body_bytes``, 415 not JSON, 429 rate limited (the
RPC token bucket of the address), 503 no miner took the job, too many requests in flight
(``openai.max_concurrent``) or the model still downloading, 502 the job failed, 504 timeout.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import trio

from state.errors import InvariantError

from .node_api import LlmRequestError

if TYPE_CHECKING:
    from state.crypto import SigningKey

    from .node_api import NodeApi
    from .server import RpcServer

log = logging.getLogger("aitbc.openai")

PREFIX = "/v1/"
POLL_S = 0.2
MAX_MESSAGES = 64
MAX_STOP = 4
_JSON = b"application/json"


class OpenAIError(Exception):
    """An error answered in OpenAI's shape with an HTTP status."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: list | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param
        self.headers = headers or []

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _bad(message: str, param: str | None = None, code: str = "invalid_value") -> OpenAIError:
    return OpenAIError(400, message, "invalid_request_error", code, param)


class OpenaiSettings(Protocol):
    """The ``[openai]`` settings this endpoint reads (``node.config.OpenaiSection`` satisfies it)."""

    max_concurrent: int
    max_body_bytes: int
    max_tokens: int
    max_price_per_token: int
    bid_window: int
    deadline: int
    timeout_s: float


@dataclass
class _Request:
    chat: bool
    model: str
    prompt: list[int] | None
    text: str | None
    messages: list[dict] | None
    max_tokens: int | None  # None: what fits (completions: 16, OpenAI's default)
    temperature: float | None
    top_k: int | None
    seed: Any
    stop: list[str]
    cap: int = 256  # openai.max_tokens


class OpenAIService:
    """The ``/v1/`` routes of one node (installed in its :class:`RpcServer` by ``Node.run``)."""

    def __init__(self, node: NodeApi, cfg: OpenaiSettings, key: SigningKey) -> None:
        self.node = node
        self.cfg = cfg
        self.key = key
        self.server: RpcServer | None = None
        self._slots = trio.Semaphore(max(1, cfg.max_concurrent))
        self._submit_lock = trio.Lock()
        self.llm = node.llm()  # tokenizers (cached), job params and results of llm-generate
        self.stats = {"requests": 0, "completed": 0, "failed": 0}

    def attach(self, server: RpcServer) -> None:
        self.server = server
        server.http_routes.append((PREFIX, self.handle))

    # -- HTTP --------------------------------------------------------------------------------------------
    async def _send(self, send: Any, status: int, obj: dict, extra: list | None = None) -> None:
        data = json.dumps(obj).encode()
        headers = [(b"content-type", _JSON), (b"content-length", b"%d" % len(data)), *(extra or [])]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    async def _read_body(self, receive: Any, declared: int | None) -> bytes:
        limit = self.cfg.max_body_bytes
        if declared is not None and declared > limit:
            raise OpenAIError(413, f"request body larger than {limit} bytes", code="body_too_large")
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] != "http.request":
                raise OpenAIError(400, "client disconnected", code="disconnected")
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise OpenAIError(413, f"request body larger than {limit} bytes", code="body_too_large")
            chunks.append(chunk)
            if not msg.get("more_body", False):
                return b"".join(chunks)

    def _check_access(self, scope: Any, headers: dict[bytes, bytes]) -> None:
        from .limits import is_loopback

        server = self.server
        if server is None:
            raise InvariantError("openai: not attached to a server")
        origin = headers.get(b"origin")
        if origin is not None and server._origin_refusal(origin.decode("latin-1").strip()) is not None:
            raise OpenAIError(403, "cross-origin requests from this origin are not allowed", "permission_error",
                              "origin_not_allowed")
        client = scope.get("client")
        host = client[0] if client else None
        want = getattr(self.cfg, "api_key", "")
        auth = headers.get(b"authorization", b"").decode("latin-1")
        if want:
            given = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
            if not hmac.compare_digest(given.encode(), want.encode()):
                raise OpenAIError(401, "invalid or missing API key (Authorization: Bearer …)", "authentication_error",
                                  "invalid_api_key")
        elif not is_loopback(host) or origin is not None:
            raise OpenAIError(401, "this endpoint spends the node's funds: only loopback clients may use it "
                                   "without openai.api_key", "authentication_error", "invalid_api_key")
        rate = server._rate_for(host)
        if rate is not None:
            wait = rate(1)
            if wait is not None:
                server.dispatcher.refusals["rate_limited"] += 1
                raise OpenAIError(429, "rate limited", "rate_limit_error", "rate_limited",
                                  headers=[(b"retry-after", b"%d" % max(1, int(wait + 0.999)))])

    async def handle(self, scope: Any, receive: Any, send: Any) -> None:
        """The ASGI entry for every ``/v1/…`` HTTP request."""
        path, method = scope["path"], scope["method"]
        headers = {k.lower(): v for k, v in scope["headers"]}
        try:
            self._check_access(scope, headers)
            if path == "/v1/models":
                if method != "GET":
                    raise OpenAIError(405, "use GET", code="method_not_allowed")
                await self._send(send, 200, await self.list_models())
                return
            if path not in ("/v1/completions", "/v1/chat/completions"):
                raise OpenAIError(404, f"no route {path}", code="not_found")
            if method != "POST":
                raise OpenAIError(405, "use POST", code="method_not_allowed")
            ctype = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
            if ctype != _JSON:
                raise OpenAIError(415, "Content-Type must be application/json", code="content_type")
            try:
                declared = int(headers[b"content-length"]) if b"content-length" in headers else None
            except ValueError:
                declared = None
            timeout = self.server.limits.request_timeout_s if self.server is not None else 30.0
            with trio.move_on_after(timeout or float("inf")) as reading:
                raw = await self._read_body(receive, declared)
            if reading.cancelled_caught:
                raise OpenAIError(408, "request body not received in time", code="timeout")
            try:
                body = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                raise _bad("the body is not valid JSON", code="invalid_json") from None
            req = parse_request(body, chat=path == "/v1/chat/completions", cap=self.cfg.max_tokens)
            try:
                self._slots.acquire_nowait()
            except trio.WouldBlock:
                raise OpenAIError(503, f"too many requests in flight (openai.max_concurrent = "
                                       f"{self.cfg.max_concurrent})", "server_error", "busy") from None
            try:
                self.stats["requests"] += 1
                out = await self.complete(req)
                self.stats["completed"] += 1
            finally:
                self._slots.release()
            await self._send(send, 200, out)
        except OpenAIError as exc:
            if exc.status >= 500:
                self.stats["failed"] += 1
            await self._send(send, exc.status, exc.body(), exc.headers)

    # -- models ------------------------------------------------------------------------------------------
    async def list_models(self) -> dict:
        from state.address import encode_address
        from state.market.models import load_model

        svc, chain = self.node.models, self.node.chain
        data = []
        for mid, pinned_at in svc.pinned().items():
            m = load_model(chain.get_object, mid)
            if m is None:
                continue
            st = await trio.to_thread.run_sync(svc.status, m)
            if st["complete"]:
                data.append({"id": m.name, "object": "model", "created": int(pinned_at),
                             "owned_by": encode_address(m.owner),
                             "aitbc": {"model_id": "0x" + m.model_id.hex(), "format": m.manifest["format"],
                                       "size": m.size}})
        return {"object": "list", "data": data}

    # -- a request -> a job ------------------------------------------------------------------------------
    async def _model_and_tokenizer(self, ref: str) -> tuple[Any, Any]:
        svc = self.node.models
        m = svc.find(ref)
        if m is None or m.model_id not in svc.pinned():
            raise OpenAIError(404, f"the model {ref!r} does not exist on this node (GET /v1/models lists them)",
                              "invalid_request_error", "model_not_found", "model")
        st = await trio.to_thread.run_sync(svc.status, m)
        if not st["complete"]:
            raise OpenAIError(503, f"model {m.name} is still being fetched ({st['chunks_present']} of "
                                   f"{st['chunks']} chunks)", "server_error", "model_loading", "model")
        try:
            tok = await self.llm.tokenizer(m)
        except LlmRequestError as exc:
            raise OpenAIError(400, f"model {m.name} cannot be used from text: {exc}", code=exc.reason,
                              param="model") from None
        except Exception as exc:  # chunks missing (collected meanwhile)
            raise OpenAIError(503, f"model {m.name}: {exc}", "server_error", "model_unavailable") from None
        return m, tok

    def _prompt(self, req: _Request, m: Any, tok: Any) -> tuple[list[int], list[int]]:
        from state.kinds.llm_generate import MAX_NEW_TOKENS, MAX_PROMPT, MAX_STOP
        from state.llm.config import LlamaConfig

        try:
            if req.chat:
                if not tok.chat_template:
                    raise _bad(f"model {m.name} has no chat template: use /v1/completions", "model",
                               "no_chat_template")
                prompt = tok.encode(tok.apply_chat_template(req.messages or []))
            elif req.prompt is not None:
                prompt = list(req.prompt)
            else:
                prompt = tok.encode(req.text or "")
        except OpenAIError:
            raise
        except Exception as exc:  # a template that fails to render on these messages
            raise _bad(f"the prompt cannot be built: {exc}", "messages" if req.chat else "prompt") from None
        stop = [tok.eos_id]
        for s in req.stop:
            ids = tok.encode(s)
            if len(ids) != 1:
                raise _bad(f"stop sequence {s!r} is not one token of this model: only single-token stops are "
                           "supported", "stop")
            stop.append(ids[0])
        stop = sorted(set(stop))[:MAX_STOP]
        cfg = LlamaConfig.from_map(m.manifest["arch"])
        if not prompt:
            raise _bad("the prompt is empty", "prompt")
        if any(not 0 <= x < cfg.vocab for x in prompt):
            raise _bad(f"prompt token ids must be below the vocabulary size {cfg.vocab}", "prompt")
        if req.max_tokens is None:  # chat: as many as fit the context and the caps
            room = min(req.cap, MAX_NEW_TOKENS, cfg.max_ctx - len(prompt))
            req.max_tokens = min(16, room) if not req.chat else room
            if room < 1:
                req.max_tokens = 1  # refused below with the reason
        if len(prompt) > MAX_PROMPT or req.max_tokens > MAX_NEW_TOKENS or len(prompt) + req.max_tokens > cfg.max_ctx:
            raise _bad(f"{len(prompt)} prompt tokens + max_tokens {req.max_tokens} exceed the limits (prompt <= "
                       f"{MAX_PROMPT}, max_tokens <= {MAX_NEW_TOKENS}, both <= the model's context {cfg.max_ctx})",
                       "max_tokens", "context_length_exceeded")
        return prompt, stop

    async def _submit(self, tx_type: str, body: dict) -> bytes:
        from state.types import Transaction

        node = self.node
        chain, mp = node.chain, node.mempool
        async with self._submit_lock:
            pk = self.key.public_key
            nonce = max(chain.account(pk).nonce, mp.pending_nonce(pk))
            tx = Transaction.create(self.key, node.genesis.chain_id, tx_type, nonce, node.genesis.params.min_fee, body)
            (res,) = await node.submit_raw([tx.raw])
        if res.error is not None:
            reason = res.error.reason
            if reason == "insufficient_balance":
                raise OpenAIError(402, f"the paying key cannot cover this job: {res.error}", "insufficient_quota",
                                  "insufficient_quota")
            if reason == "invalid_params":
                raise _bad(f"the job was refused: {res.error}", code=reason)
            raise OpenAIError(503, f"{tx_type} refused by the mempool: {res.error} ({reason})", "server_error", reason)
        return tx.hash

    async def complete(self, req: _Request) -> dict:
        from state import market
        from state import market_views as mv

        m, tok = await self._model_and_tokenizer(req.model)
        prompt, stop = await trio.to_thread.run_sync(self._prompt, req, m, tok)  # templates, BPE: off the loop
        try:
            params = self.llm.job_params(m.model_id, prompt, req.max_tokens, temperature=req.temperature,
                                         top_k=req.top_k, seed=req.seed, stop=stop)
        except LlmRequestError as exc:
            raise _bad(str(exc), "temperature") from None
        units = len(prompt) + req.max_tokens
        price = self.cfg.max_price_per_token
        chain = self.node.chain
        need = price * units + self.node.genesis.params.min_fee
        if chain.account(self.key.public_key).balance < need:
            raise OpenAIError(402, f"the paying key holds less than the {need} base units this job may cost",
                              "insufficient_quota", "insufficient_quota")
        body = market.job_submit_body(self.llm.kind, self.llm.version, params, max_price=price, max_units=units,
                                      bid_window=self.cfg.bid_window, deadline=self.cfg.deadline)
        job_id = await self._submit("job_submit", body)
        get = chain.get_object
        deadline = trio.current_time() + self.cfg.timeout_s
        job = None
        while True:
            job = mv.load_job(get, job_id)
            if job is None:
                found = chain.tx_lookup(job_id)
                if found is not None and not found[3].ok:
                    res = found[3]
                    if res.reason == "insufficient_balance":
                        raise OpenAIError(402, f"job_submit failed: {res.message}", "insufficient_quota",
                                          "insufficient_quota")
                    raise OpenAIError(400, f"job_submit failed: {res.message} ({res.reason})",
                                      code=res.reason)
                if found is None and job_id not in self.node.mempool:
                    raise OpenAIError(503, "the job transaction was dropped from the mempool", "server_error",
                                      "dropped")
            elif job.state == "COMPLETED":
                break
            elif job.state in ("EXPIRED", "CANCELED"):
                raise OpenAIError(503, f"no miner took the job (state {job.state}; refunded)", "server_error",
                                  "no_miner")
            elif job.state == "FAILED":
                raise OpenAIError(502, f"the job failed ({job.failure}; refunded)", "server_error", "job_failed")
            if trio.current_time() > deadline:
                if job is not None and job.state == "QUEUED":
                    try:
                        await self._submit("job_cancel", market.job_cancel_body(job_id))
                    except OpenAIError:
                        pass
                raise OpenAIError(504, f"the job 0x{job_id.hex()} did not complete within {self.cfg.timeout_s} s",
                                  "timeout", "timeout")
            await trio.sleep(POLL_S)
        tokens, reason = await self._result_tokens(job)
        text = await trio.to_thread.run_sync(lambda: tok.decode(tokens))
        usage = {"prompt_tokens": len(prompt), "completion_tokens": len(tokens),
                 "total_tokens": len(prompt) + len(tokens)}
        ident = job_id.hex()
        extra = {"job_id": "0x" + ident, "paid": str(job.paid + (job.escrow if job.payment == "escrowed" else 0)),
                 "price_per_token": str(job.price)}
        created = int(time.time())
        if req.chat:
            return {"id": "chatcmpl-" + ident, "object": "chat.completion", "created": created, "model": m.name,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "logprobs": None, "finish_reason": reason}],
                    "usage": usage, "aitbc": extra}
        return {"id": "cmpl-" + ident, "object": "text_completion", "created": created, "model": m.name,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": reason}],
                "usage": usage, "aitbc": extra}

    async def _result_tokens(self, job: Any) -> tuple[list[int], str]:
        from state.codec import sha256
        from state.kinds.encoding import decode_array, result_root

        rec = job.receipt
        data = await self.node.blobs.fetch(rec["result_hash"])
        if data is None or sha256(data) != rec["result_hash"]:
            raise OpenAIError(502, "the job's result is not available from its miner", "server_error",
                              "result_unavailable")

        def decode() -> Any:
            arr = decode_array(data, max_bytes=len(data))
            if result_root(arr) != rec["result_root"]:
                raise OpenAIError(502, "the job's result does not match the miner's receipt", "server_error",
                                  "bad_result")
            return self.llm.result_tokens(job.params, arr)

        return await trio.to_thread.run_sync(decode)


# ---------------------------------------------------------------------------------------------- parsing


def _num(body: dict, key: str, lo: float, hi: float) -> float | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
        raise _bad(f"'{key}' must be a number in [{lo}, {hi}]", key)
    return v


def _int(body: dict, key: str, lo: int, hi: int) -> int | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise _bad(f"'{key}' must be an integer in [{lo}, {hi}]", key)
    return v


def parse_request(body: Any, *, chat: bool, cap: int) -> _Request:
    """Validate an OpenAI request body (400 with the offending param otherwise)."""
    if not isinstance(body, dict):
        raise _bad("the body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not 1 <= len(model) <= 66:
        raise _bad("'model' is required: a model name or 0x-id", "model", "missing_model")
    if body.get("stream"):
        raise _bad("streaming is not supported", "stream", "unsupported")
    if body.get("n", 1) != 1:
        raise _bad("only n = 1 is supported", "n", "unsupported")
    for key in ("echo", "logprobs", "suffix", "tools", "functions"):
        if body.get(key):
            raise _bad(f"'{key}' is not supported", key, "unsupported")
    max_tokens = _int(body, "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens", 1, cap)
    temperature = _num(body, "temperature", 0, 2)
    top_p = _num(body, "top_p", 0, 1)
    if top_p is not None and top_p not in (0, 1):
        raise _bad("top_p is not supported (use top_k)", "top_p", "unsupported")
    top_k = _int(body, "top_k", 1, 64)
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | str)):
        raise _bad("'seed' must be an integer", "seed")
    stop = body.get("stop") or []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or len(stop) > MAX_STOP or not all(isinstance(s, str) and s for s in stop):
        raise _bad(f"'stop' must be a string or at most {MAX_STOP} strings", "stop")
    prompt: list[int] | None = None
    text: str | None = None
    messages: list[dict] | None = None
    if chat:
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not 1 <= len(msgs) <= MAX_MESSAGES:
            raise _bad(f"'messages' must be a list of 1..{MAX_MESSAGES} messages", "messages")
        messages = []
        for msg in msgs:
            if not isinstance(msg, dict) or msg.get("role") not in ("system", "user", "assistant", "developer"):
                raise _bad("each message needs a role (system, user, assistant) and content", "messages")
            content = msg.get("content")
            if isinstance(content, list):  # [{"type": "text", "text": …}, …]
                parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
                if len(parts) != len(content) or not all(isinstance(p, str) for p in parts):
                    raise _bad("only text message content is supported", "messages")
                content = "".join(parts)
            if not isinstance(content, str):
                raise _bad("message content must be text", "messages")
            role = "system" if msg["role"] == "developer" else msg["role"]
            messages.append({"role": role, "content": content})
    else:
        p = body.get("prompt")
        if isinstance(p, list) and len(p) == 1 and isinstance(p[0], str | list):
            p = p[0]
        if isinstance(p, str):
            text = p
        elif isinstance(p, list) and p and all(isinstance(x, int) and not isinstance(x, bool) for x in p):
            prompt = p
        else:
            raise _bad("'prompt' must be a string or a list of token ids", "prompt")
    if temperature is not None and temperature == 0:
        temperature = None  # greedy
    elif temperature is None:
        temperature = 1.0  # OpenAI's default
    return _Request(chat, model, prompt, text, messages, max_tokens, temperature, top_k, seed, stop, cap)


__all__ = ["OpenAIError", "OpenAIService", "OpenaiSettings", "parse_request"]
