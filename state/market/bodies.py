"""Market transaction bodies: static checks, builders, and signed result receipts.

Bodies are CBOR maps with text keys and an exact key set (optional keys may be absent). The static
checks here need no state and no chain parameters: they raise :class:`TxError` (the transaction is
refused by the mempool and would make a block invalid). Bounds that come from the chain's
``MarketParams`` are checked when the body is applied (``ExecFailure`` with a precise reason).

Receipts (DESIGN §6): the awarded miner signs the canonical encoding of the receipt map with
signature kind ``"receipt"``: ``SigningKey.sign("receipt", chain_id, codec.encode(receipt))``. The same
receipt has a JSON form (:func:`receipt_json`) that anyone can verify off-chain
(:func:`receipt_from_json` + :func:`verify_receipt`).
"""

from __future__ import annotations

from typing import Any

from .. import codec
from ..address import decode_address, encode_address
from ..crypto import KIND_RECEIPT, SigningKey, verify
from ..errors import AitbcError, TxError
from ..kinds import JobParamError, KindRules, get_kind
from ..params import BPS
from ..types import U64_MAX

TX_MINER_REGISTER = "miner_register"
TX_MINER_UPDATE = "miner_update"
TX_MINER_EXIT = "miner_exit"
TX_JOB_SUBMIT = "job_submit"
TX_JOB_CANCEL = "job_cancel"
TX_BID = "bid"
TX_RECEIPT = "receipt"
TX_CHALLENGE = "challenge"
TX_AVAILABILITY_CHALLENGE = "availability_challenge"
TX_AVAILABILITY_RESPONSE = "availability_response"
TX_MODEL_REGISTER = "model_register"  # state/market/models.py
TX_LLM_CHALLENGE = "llm_challenge"  # state/market/llm_disputes.py
TX_LLM_STEPS = "llm_steps"
TX_LLM_STEP_PROOF = "llm_step_proof"
TX_SEALED_BID = "sealed_bid"  # state/market/sealed.py
TX_SEALED_AWARD = "sealed_award"
TX_RECEIPT_ATTEST = "receipt_attest"  # state/market/attest.py
TX_ANON_IDENTITY = "anon_identity"  # state/market/anon.py
TX_ANON_BID = "anon_bid"
TX_ANON_ACCEPT = "anon_accept"
MARKET_TX_TYPES = (
    TX_MINER_REGISTER,
    TX_MINER_UPDATE,
    TX_MINER_EXIT,
    TX_JOB_SUBMIT,
    TX_JOB_CANCEL,
    TX_BID,
    TX_RECEIPT,
    TX_CHALLENGE,
    TX_AVAILABILITY_CHALLENGE,
    TX_AVAILABILITY_RESPONSE,
    TX_MODEL_REGISTER,
    TX_LLM_CHALLENGE,
    TX_LLM_STEPS,
    TX_LLM_STEP_PROOF,
    TX_SEALED_BID,
    TX_SEALED_AWARD,
    TX_RECEIPT_ATTEST,
    TX_ANON_IDENTITY,
    TX_ANON_BID,
    TX_ANON_ACCEPT,
)

MAX_PARAMS_BYTES = 4096  # encoded job params
MAX_NAME_LEN = 32  # kind names, backend
MAX_DEVICE_LEN = 128
MAX_CAPABILITY_KINDS = 16  # entries of throughput / prices maps
MAX_LEAF_BYTES = 32 * 1024
MAX_PROOF_HASHES = 64
MAX_INPUT_BYTES = 64 * 1024  # a transaction is at most 64 KiB anyway
MAX_AVAILABILITY_INDICES = 64  # static bound; the chain's max_availability_chunks is usually lower

RECEIPT_KEYS = frozenset(
    {
        "job_id",
        "provider",
        "client",
        "units",
        "unit_type",
        "unit_price",
        "price",
        "started_at",
        "completed_at",
        "result_hash",
        "result_root",
        "result_size",
        "backend",
        "device",
    }
)


def _bad(msg: str, reason: str = "invalid_body") -> TxError:
    return TxError(msg, reason)


def _map(
    obj: Any,
    what: str,
    required: frozenset[str] | set[str],
    optional: frozenset[str] | set[str] = frozenset(),
) -> dict:
    if type(obj) is not dict:
        raise _bad(f"{what} must be a map")
    keys = set(obj.keys())
    missing = sorted(set(required) - keys)
    extra = sorted(str(k) for k in keys - set(required) - set(optional))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if extra:
            parts.append(f"unknown {extra}")
        raise _bad(f"{what}: {'; '.join(parts)}")
    return obj


def _uint(obj: dict, key: str, what: str, lo: int = 0, hi: int = U64_MAX) -> int:
    v = obj[key]
    if type(v) is not int or not lo <= v <= hi:
        raise _bad(f"{what}.{key} must be an integer in [{lo}, {hi}]")
    return v


def _bytes(
    obj: dict, key: str, what: str, length: int | None = None, max_len: int = MAX_INPUT_BYTES
) -> bytes:
    v = obj[key]
    if type(v) is not bytes:
        raise _bad(f"{what}.{key} must be bytes")
    if length is not None and len(v) != length:
        raise _bad(f"{what}.{key} must be {length} bytes, got {len(v)}")
    if len(v) > max_len:
        raise _bad(f"{what}.{key} longer than {max_len} bytes")
    return v


def _text(obj: dict, key: str, what: str, max_len: int, min_len: int = 1) -> str:
    v = obj[key]
    if type(v) is not str or not min_len <= len(v) <= max_len:
        raise _bad(f"{what}.{key} must be a string of {min_len}..{max_len} characters")
    return v


def _kind_map(obj: Any, what: str) -> dict:
    if type(obj) is not dict or len(obj) > MAX_CAPABILITY_KINDS:
        raise _bad(f"{what} must be a map of at most {MAX_CAPABILITY_KINDS} job kinds")
    for k, v in obj.items():
        if type(k) is not str or not 1 <= len(k) <= MAX_NAME_LEN:
            raise _bad(f"{what}: job kind names must be strings of 1..{MAX_NAME_LEN} characters")
        if type(v) is not int or not 0 <= v <= U64_MAX:
            raise _bad(f"{what}['{k}'] must be a non-negative integer")
    return obj


def check_capabilities(caps: Any) -> dict:
    what = "capabilities"
    _map(caps, what, {"backend", "device", "memory", "compute_capability", "throughput"})
    _text(caps, "backend", what, MAX_NAME_LEN)
    _text(caps, "device", what, MAX_DEVICE_LEN)
    _uint(caps, "memory", what)
    _text(caps, "compute_capability", what, MAX_NAME_LEN, min_len=0)
    _kind_map(caps["throughput"], "capabilities.throughput")
    return caps


# --------------------------------------------------------------------------------------------------
# Static checks (TxKind.check_body)


def check_miner_register(body: dict) -> None:
    _map(body, "miner_register body", {"bond", "capabilities", "prices"})
    _uint(body, "bond", "miner_register", lo=1)
    check_capabilities(body["capabilities"])
    _kind_map(body["prices"], "prices")


def check_miner_update(body: dict) -> None:
    _map(body, "miner_update body", set(), {"capabilities", "prices", "add_bond"})
    if not body:
        raise _bad("miner_update needs at least one of capabilities, prices, add_bond")
    if "capabilities" in body:
        check_capabilities(body["capabilities"])
    if "prices" in body:
        _kind_map(body["prices"], "prices")
    if "add_bond" in body:
        _uint(body, "add_bond", "miner_update", lo=1)


def check_miner_exit(body: dict) -> None:
    _map(body, "miner_exit body", set())


def _job_kind(name: str, version: int) -> KindRules:
    try:
        kind = get_kind(name)
    except JobParamError as exc:
        raise TxError(f"job kind '{name}': {exc} ({exc.reason})", "invalid_params") from None
    if version != kind.version:
        raise TxError(
            f"job kind '{name}' version {version} is not supported (this chain runs version {kind.version})",
            "invalid_params",
        )
    return kind


def check_job_submit(body: dict) -> None:
    what = "job_submit"
    _map(
        body,
        "job_submit body",
        {"kind", "version", "params", "max_price", "max_units", "bid_window", "deadline"},
        {"input", "verify", "requirements", "sealed", "attest", "anonymous"},
    )
    if "anonymous" in body:
        from .anon import check_anon_spec

        if "sealed" in body:
            raise _bad("job_submit: a job is either sealed or anonymous, not both")
        check_anon_spec(body["anonymous"])
    _text(body, "kind", what, MAX_NAME_LEN)
    if "attest" in body:
        from .attest import check_attest_spec

        check_attest_spec(body["attest"])
    if "sealed" in body:
        from .sealed import check_sealed_spec

        check_sealed_spec(body["sealed"])
    _uint(body, "version", what)
    params = body["params"]
    if type(params) is not dict or not all(type(k) is str for k in params):
        raise _bad("job_submit.params must be a map with text keys")
    if len(codec.encode(params)) > MAX_PARAMS_BYTES:
        raise _bad(f"job_submit.params encode to more than {MAX_PARAMS_BYTES} bytes")
    max_price = _uint(body, "max_price", what, lo=1)
    max_units = _uint(body, "max_units", what, lo=1)
    if max_price * max_units > U64_MAX:
        raise _bad("job_submit: max_price × max_units exceeds 2^64-1")
    _uint(body, "bid_window", what, lo=1)
    _uint(body, "deadline", what, lo=1)
    input_size: int | None = None
    if "input" in body:
        inp = body["input"]
        if type(inp) is dict and "inline" in inp:
            _map(inp, "job_submit.input", {"inline"})
            input_size = len(_bytes(inp, "inline", "job_submit.input"))
        elif type(inp) is dict and "blob" in inp:
            _map(inp, "job_submit.input", {"blob", "size"})
            _bytes(inp, "blob", "job_submit.input", 32)
            input_size = _uint(inp, "size", "job_submit.input")
        else:
            raise _bad('job_submit.input must be {"inline": bytes} or {"blob": bytes32, "size": int}')
    if "verify" in body:
        _map(body["verify"], "job_submit.verify", {"rate_bps", "challenge_window"})
        _uint(body["verify"], "rate_bps", "job_submit.verify", hi=BPS)
        _uint(body["verify"], "challenge_window", "job_submit.verify")
    if "requirements" in body:
        req = _map(body["requirements"], "job_submit.requirements", set(), {"min_memory", "backend"})
        if "min_memory" in req:
            _uint(req, "min_memory", "job_submit.requirements")
        if "backend" in req:
            _text(req, "backend", "job_submit.requirements", MAX_NAME_LEN)
    kind = _job_kind(body["kind"], body["version"])
    try:
        kind.validate(params, input_size)
    except JobParamError as exc:
        raise TxError(
            f"job params refused by kind '{kind.name}' ({exc.reason}): {exc}", "invalid_params"
        ) from None
    check_max_units(kind, params, max_units)
    if body.get("verify", {}).get("challenge_window", 0) > 0 and not challengeable(kind):
        raise TxError(
            f"job kind '{kind.name}' has no consensus-safe leaf check: its results cannot be challenged, so "
            "it takes no challenge window",
            "invalid_params",
        )


def check_max_units(kind: KindRules, params: dict, max_units: int) -> None:
    """``max_units`` must cover the job's metered work: every kind's units are a function of its params
    alone (``KindRules.work_units``: matmul dims, chains × iterations, prompt + ``max_new_tokens``), known
    at submission, and a receipt claims exactly them. Below it, the miner would run the whole job and be
    paid for ``max_units`` only, so such a job is refused outright (mempool, block, ``tx_simulate``):
    :class:`TxError` ``max_units_below_work``. ``params`` must already be valid for ``kind``."""
    work = kind.work_units(params)
    if max_units < work:
        raise TxError(
            f"max_units {max_units} is below the job's metered work of {work} {kind.unit_type} "
            f"(kind '{kind.name}'): a miner would be paid for {max_units} of them; give max_units >= {work}",
            "max_units_below_work",
        )


def challengeable(kind: KindRules) -> bool:
    """Whether results of ``kind`` can be challenged on chain: its ``check_leaf`` decides identically on
    every node — exact kinds (``deterministic``) and floating-point kinds checked within a stated
    ``tolerance`` (their leaf check is computed deterministically, see ``state/kinds/mlp_f32.py``)."""
    return bool(kind.deterministic) or getattr(kind, "tolerance", None) is not None


def check_job_cancel(body: dict) -> None:
    _map(body, "job_cancel body", {"job_id"})
    _bytes(body, "job_id", "job_cancel", 32)


def check_bid(body: dict) -> None:
    _map(body, "bid body", {"job_id", "price"})
    _bytes(body, "job_id", "bid", 32)
    _uint(body, "price", "bid", lo=1)


def check_receipt_map(receipt: Any) -> dict:
    """Structure of a receipt map (raises :class:`TxError` naming the field)."""
    what = "receipt"
    _map(receipt, what, RECEIPT_KEYS)
    for key in ("job_id", "provider", "client", "result_hash", "result_root"):
        _bytes(receipt, key, what, 32)
    _uint(receipt, "units", what, lo=1)
    _text(receipt, "unit_type", what, MAX_NAME_LEN)
    unit_price = _uint(receipt, "unit_price", what)
    _uint(receipt, "price", what)
    if receipt["price"] != unit_price * receipt["units"]:
        raise TxError(
            f"receipt.price {receipt['price']} != unit_price {unit_price} × units {receipt['units']}",
            "wrong_price",
        )
    started = _uint(receipt, "started_at", what)
    if _uint(receipt, "completed_at", what) < started:
        raise _bad("receipt.completed_at is before started_at")
    _uint(receipt, "result_size", what, lo=1)
    _text(receipt, "backend", what, MAX_NAME_LEN)
    _text(receipt, "device", what, MAX_DEVICE_LEN)
    return receipt


def check_receipt(body: dict) -> None:
    _map(body, "receipt body", {"receipt", "sig"})
    check_receipt_map(body["receipt"])
    _bytes(body, "sig", "receipt", 64)


def check_challenge(body: dict) -> None:
    what = "challenge"
    _map(body, "challenge body", {"job_id", "index", "leaf", "proof"}, {"input"})
    _bytes(body, "job_id", what, 32)
    _uint(body, "index", what)
    _bytes(body, "leaf", what, max_len=MAX_LEAF_BYTES)
    _proof(body["proof"], "challenge.proof")
    if "input" in body:
        _bytes(body, "input", what)


def _proof(obj: Any, what: str) -> list:
    if type(obj) is not list or len(obj) > MAX_PROOF_HASHES:
        raise _bad(f"{what} must be a list of at most {MAX_PROOF_HASHES} hashes")
    if not all(type(h) is bytes and len(h) == 32 for h in obj):
        raise _bad(f"{what} entries must be 32-byte hashes")
    return obj


def check_availability_challenge(body: dict) -> None:
    what = "availability_challenge"
    _map(body, "availability_challenge body", {"job_id", "indices"})
    _bytes(body, "job_id", what, 32)
    idx = body["indices"]
    if type(idx) is not list or not 1 <= len(idx) <= MAX_AVAILABILITY_INDICES:
        raise _bad(f"{what}.indices must be a list of 1..{MAX_AVAILABILITY_INDICES} leaf indices")
    if not all(type(i) is int and 0 <= i <= U64_MAX for i in idx) or idx != sorted(set(idx)):
        raise _bad(f"{what}.indices must be distinct non-negative integers in ascending order")


def check_availability_response(body: dict) -> None:
    what = "availability_response"
    _map(body, "availability_response body", {"job_id", "chunks"})
    _bytes(body, "job_id", what, 32)
    chunks = body["chunks"]
    if type(chunks) is not list or not 1 <= len(chunks) <= MAX_AVAILABILITY_INDICES:
        raise _bad(f"{what}.chunks must be a list of 1..{MAX_AVAILABILITY_INDICES} [index, leaf, proof]")
    last = -1
    for c in chunks:
        if type(c) is not list or len(c) != 3:
            raise _bad(f"{what}.chunks entries must be [index, leaf, proof]")
        index, leaf, proof = c
        if type(index) is not int or not last < index <= U64_MAX:
            raise _bad(f"{what}.chunks must name distinct leaf indices in ascending order")
        last = index
        if type(leaf) is not bytes or len(leaf) > MAX_LEAF_BYTES:
            raise _bad(f"{what}.chunks leaf must be bytes of at most {MAX_LEAF_BYTES}")
        _proof(proof, f"{what}.chunks proof")


# --------------------------------------------------------------------------------------------------
# Costs (value the sender must hold beyond the fee; mempool admission)

_COST_PARAMS: list[Any] = []


def set_cost_params(market_params: Any) -> None:
    """Tell the mempool's cost function this chain's ``MarketParams`` (the challenge and availability
    bonds are chain parameters rather than body fields). Defaults to ``MarketParams()``."""
    _COST_PARAMS[:] = [market_params]


def _cost_params() -> Any:
    if not _COST_PARAMS:
        from ..params import MarketParams

        return MarketParams()
    return _COST_PARAMS[0]


def _challenge_bond() -> int:
    """The fixed part of a challenge bond (the metered part depends on the job; see ``work.py``)."""
    return _cost_params().challenge_bond


def body_cost(tx_type: str, body: dict) -> int:
    """Value a market transaction locks (escrow, bond, challenge bond); 0 for the others."""
    if tx_type == TX_JOB_SUBMIT:  # an anonymous job also escrows its bids' fees (state/market/anon.py)
        an = body.get("anonymous")
        return body["max_price"] * body["max_units"] + (an["max_bids"] * an["bid_fee"] if an else 0)
    if tx_type == TX_MINER_REGISTER:
        return body["bond"]
    if tx_type == TX_MINER_UPDATE:
        return body.get("add_bond", 0)
    if tx_type in (TX_CHALLENGE, TX_LLM_CHALLENGE):
        return _challenge_bond()
    if tx_type == TX_AVAILABILITY_CHALLENGE:
        return _cost_params().availability_bond
    return 0


# --------------------------------------------------------------------------------------------------
# Builders (shared by node, CLI and tests)


def capabilities(
    backend: str,
    device: str,
    memory: int,
    compute_capability: str = "",
    throughput: dict[str, int] | None = None,
) -> dict:
    return {
        "backend": backend,
        "device": device,
        "memory": memory,
        "compute_capability": compute_capability,
        "throughput": dict(throughput or {}),
    }


def miner_register_body(bond: int, capabilities: dict, prices: dict[str, int] | None = None) -> dict:
    return {"bond": bond, "capabilities": capabilities, "prices": dict(prices or {})}


def miner_update_body(
    *, capabilities: dict | None = None, prices: dict[str, int] | None = None, add_bond: int | None = None
) -> dict:
    body: dict = {}
    if capabilities is not None:
        body["capabilities"] = capabilities
    if prices is not None:
        body["prices"] = dict(prices)
    if add_bond is not None:
        body["add_bond"] = add_bond
    return body


def miner_exit_body() -> dict:
    return {}


def job_submit_body(
    kind: str,
    version: int,
    params: dict,
    *,
    max_price: int,
    max_units: int,
    bid_window: int,
    deadline: int,
    inline_input: bytes | None = None,
    blob_input: tuple[bytes, int] | None = None,
    verify_rate_bps: int | None = None,
    challenge_window: int | None = None,
    min_memory: int | None = None,
    backend: str | None = None,
    sealed: dict | None = None,
    attest: bytes | None = None,
    anonymous: dict | None = None,
) -> dict:
    """A ``job_submit`` body. ``blob_input`` is (sha256 of the input bytes, their length). A verify
    policy is included when either ``verify_rate_bps`` or ``challenge_window`` is given. ``sealed``
    (``{bits, key, deposit, settle_window}``) makes it a sealed-bid job (state/market/sealed.py); ``attest``
    (an owner commitment) makes its paid receipt attestable (state/market/attest.py)."""
    if inline_input is not None and blob_input is not None:
        raise ValueError("a job has either an inline input or a blob input, not both")
    body: dict = {
        "kind": kind,
        "version": version,
        "params": params,
        "max_price": max_price,
        "max_units": max_units,
        "bid_window": bid_window,
        "deadline": deadline,
    }
    if inline_input is not None:
        body["input"] = {"inline": bytes(inline_input)}
    elif blob_input is not None:
        body["input"] = {"blob": bytes(blob_input[0]), "size": int(blob_input[1])}
    if verify_rate_bps is not None or challenge_window is not None:
        body["verify"] = {"rate_bps": verify_rate_bps or 0, "challenge_window": challenge_window or 0}
    req: dict = {}
    if min_memory is not None:
        req["min_memory"] = min_memory
    if backend is not None:
        req["backend"] = backend
    if req:
        body["requirements"] = req
    if sealed is not None:
        body["sealed"] = dict(sealed)
    if attest is not None:
        body["attest"] = bytes(attest)
    if anonymous is not None:
        body["anonymous"] = dict(anonymous)
    return body


def job_cancel_body(job_id: bytes) -> dict:
    return {"job_id": job_id}


def bid_body(job_id: bytes, price: int) -> dict:
    return {"job_id": job_id, "price": price}


def challenge_body(
    job_id: bytes, index: int, leaf: bytes, proof: list[bytes], input: bytes | None = None
) -> dict:
    body = {"job_id": job_id, "index": index, "leaf": bytes(leaf), "proof": [bytes(h) for h in proof]}
    if input is not None:
        body["input"] = bytes(input)
    return body


def availability_challenge_body(job_id: bytes, indices: list[int]) -> dict:
    return {"job_id": job_id, "indices": sorted(set(int(i) for i in indices))}


def availability_response_body(job_id: bytes, chunks: list[tuple[int, bytes, list[bytes]]]) -> dict:
    """``chunks``: (leaf index, leaf bytes, Merkle proof against the receipt's ``result_root``)."""
    return {
        "job_id": job_id,
        "chunks": [[int(i), bytes(leaf), [bytes(h) for h in proof]] for i, leaf, proof in sorted(chunks, key=lambda c: c[0])],
    }


# --------------------------------------------------------------------------------------------------
# Receipts


def receipt_map(
    *,
    job_id: bytes,
    provider: bytes,
    client: bytes,
    units: int,
    unit_type: str,
    unit_price: int,
    started_at: int,
    completed_at: int,
    result_hash: bytes,
    result_root: bytes,
    result_size: int,
    backend: str,
    device: str,
) -> dict:
    """The receipt map (``price`` = ``unit_price × units``)."""
    return {
        "job_id": job_id,
        "provider": provider,
        "client": client,
        "units": units,
        "unit_type": unit_type,
        "unit_price": unit_price,
        "price": unit_price * units,
        "started_at": started_at,
        "completed_at": completed_at,
        "result_hash": result_hash,
        "result_root": result_root,
        "result_size": result_size,
        "backend": backend,
        "device": device,
    }


def receipt_encoding(receipt: dict) -> bytes:
    """What is signed and hashed: the canonical CBOR of the receipt map (without the signature)."""
    return codec.encode(receipt)


def receipt_id(receipt: dict) -> bytes:
    return codec.sha256(receipt_encoding(receipt))


def sign_receipt(key: SigningKey, chain_id: str, receipt: dict) -> bytes:
    return key.sign(KIND_RECEIPT, chain_id, receipt_encoding(receipt))


def make_receipt(
    key: SigningKey,
    chain_id: str,
    job: Any,
    *,
    units: int,
    started_at: int,
    completed_at: int,
    result_hash: bytes,
    result_root: bytes,
    result_size: int,
    backend: str,
    device: str,
    unit_type: str | None = None,
) -> tuple[dict, bytes]:
    """Build and sign the receipt for ``job`` (a :class:`state.market.Job`, awarded to ``key``):
    returns ``(receipt_map, sig)``, ready for :func:`receipt_body`. ``unit_type`` defaults to the job
    kind's."""
    if unit_type is None:
        unit_type = get_kind(job.kind).unit_type
    r = receipt_map(
        job_id=job.job_id,
        provider=key.public_key,
        client=job.client,
        units=units,
        unit_type=unit_type,
        unit_price=job.price,
        started_at=started_at,
        completed_at=completed_at,
        result_hash=result_hash,
        result_root=result_root,
        result_size=result_size,
        backend=backend,
        device=device,
    )
    return r, sign_receipt(key, chain_id, r)


def receipt_body(receipt: dict, sig: bytes) -> dict:
    return {"receipt": receipt, "sig": sig}


def verify_receipt(chain_id: str, receipt: dict, sig: bytes) -> bool:
    """True iff ``receipt`` is well formed and ``sig`` is its provider's receipt signature on
    ``chain_id``. Never raises."""
    try:
        check_receipt_map(receipt)
    except TxError:
        return False
    if type(sig) is not bytes:
        return False
    return verify(KIND_RECEIPT, chain_id, receipt["provider"], receipt_encoding(receipt), sig)


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


def receipt_json(receipt: dict, sig: bytes, chain_id: str | None = None) -> dict:
    """The DESIGN §6 JSON shape of a signed receipt (amounts as decimal strings, ids 0x-hex, accounts
    as ``ait1`` addresses). ``chain_id``, when given, is included for off-chain verification."""
    out: dict[str, Any] = {
        "receipt_id": _hex(receipt_id(receipt)),
        "job_id": _hex(receipt["job_id"]),
        "provider": encode_address(receipt["provider"]),
        "client": encode_address(receipt["client"]),
        "units": receipt["units"],
        "unit_type": receipt["unit_type"],
        "unit_price": str(receipt["unit_price"]),
        "price": str(receipt["price"]),
        "started_at": receipt["started_at"],
        "completed_at": receipt["completed_at"],
        "result_hash": _hex(receipt["result_hash"]),
        "result_root": _hex(receipt["result_root"]),
        "result_size": receipt["result_size"],
        "backend": receipt["backend"],
        "device": receipt["device"],
        "signature": {"alg": "ed25519", "key_id": encode_address(receipt["provider"]), "sig": _hex(sig)},
    }
    if chain_id is not None:
        out["chain_id"] = chain_id
    return out


class ReceiptJsonError(AitbcError, ValueError):
    reason = "bad_receipt"


def _from_hex(v: Any, field_name: str, length: int) -> bytes:
    if type(v) is not str or not v.startswith("0x"):
        raise ReceiptJsonError(f"receipt field '{field_name}' must be a 0x-hex string")
    try:
        b = bytes.fromhex(v[2:])
    except ValueError:
        raise ReceiptJsonError(f"receipt field '{field_name}' is not valid hex") from None
    if len(b) != length:
        raise ReceiptJsonError(f"receipt field '{field_name}' must be {length} bytes")
    return b


def receipt_from_json(obj: Any) -> tuple[dict, bytes]:
    """Parse :func:`receipt_json` output back into ``(receipt_map, sig)``; checks that ``receipt_id``
    and ``signature.key_id`` agree with the content. Raises :class:`ReceiptJsonError`."""
    if type(obj) is not dict:
        raise ReceiptJsonError("receipt must be a JSON object")
    try:
        sig_obj = obj["signature"]
        if type(sig_obj) is not dict or sig_obj.get("alg") != "ed25519":
            raise ReceiptJsonError("receipt signature must be {alg: 'ed25519', key_id, sig}")
        r: dict[str, Any] = {}
        for k in ("job_id", "result_hash", "result_root"):
            r[k] = _from_hex(obj[k], k, 32)
        for k in ("provider", "client"):
            r[k] = decode_address(obj[k])
        for k in ("units", "started_at", "completed_at", "result_size"):
            if type(obj[k]) is not int:
                raise ReceiptJsonError(f"receipt field '{k}' must be an integer")
            r[k] = obj[k]
        for k in ("unit_price", "price"):
            if type(obj[k]) is not str or not obj[k].isdigit():
                raise ReceiptJsonError(f"receipt field '{k}' must be a decimal string")
            r[k] = int(obj[k])
        for k in ("unit_type", "backend", "device"):
            if type(obj[k]) is not str:
                raise ReceiptJsonError(f"receipt field '{k}' must be a string")
            r[k] = obj[k]
        sig = _from_hex(sig_obj["sig"], "signature.sig", 64)
        if decode_address(sig_obj["key_id"]) != r["provider"]:
            raise ReceiptJsonError("receipt signature.key_id is not the provider")
    except KeyError as exc:
        raise ReceiptJsonError(f"receipt is missing field {exc.args[0]!r}") from None
    except AitbcError as exc:
        if isinstance(exc, ReceiptJsonError):
            raise
        raise ReceiptJsonError(f"receipt: {exc}") from None
    if "receipt_id" in obj and _from_hex(obj["receipt_id"], "receipt_id", 32) != receipt_id(r):
        raise ReceiptJsonError("receipt_id does not match the receipt's content")
    return r, sig
