"""``aitbc-peer job submit --kind llm-generate …`` and the text of ``job result`` for llm jobs.

The prompt is tokenized here with the model's own tokenizer: the tokenizer section of the model file,
fetched chunk by chunk with ``market_getModelChunk`` (each chunk proven against the manifest's root,
the manifest checked against its id, the section against its hash), and the chat template stored with
it for instruction models (on by default when the model has one; ``--no-chat`` for raw completion).
``--prompt-ids`` gives token ids directly (a model without a usable tokenizer). The job's units are
``len(prompt) + max_new_tokens`` tokens; the price per token defaults to the highest llm-generate price
an active miner asks (so any of them can win the job).
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import Any

from state.errors import AitbcError

from .cli_tx import load_signer, submit
from .cli_zk import new_owner

KIND = "llm-generate"


def _unhex(s: str) -> bytes:
    return bytes.fromhex(s[2:] if s.startswith("0x") else s)


def fetch_section(rpc: Any, view: dict, offset: int, size: int) -> bytes:
    """Bytes ``[offset, offset + size)`` of a model file, every chunk proven against the root."""
    from state.market.models import verify_chunk

    from .cli_models import _checked_manifest

    man = _checked_manifest(view)
    cs = man["chunk_size"]
    out = bytearray()
    for i in range(offset // cs, (offset + size - 1) // cs + 1):
        c = rpc.call("market_getModelChunk", model=view["model_id"], index=i)
        data = _unhex(c["data"])
        if not verify_chunk(man, i, data, [_unhex(h) for h in c["proof"]]):
            raise AitbcError(f"chunk {i} of model {view['name']} does not verify against its root")
        out += data
    start = offset - (offset // cs) * cs
    return bytes(out[start : start + size])


def fetch_tokenizer(rpc: Any, view: dict) -> Any:
    """The model's tokenizer (``gpu.llm.tokenizer.BpeTokenizer``) from its verified tokenizer section."""
    from .llm import tokenizer_from_section

    tok = view["tokenizer"]
    if tok["size"] == 0:
        raise AitbcError(f"model {view['name']} has no tokenizer section: give --prompt-ids")
    data = fetch_section(rpc, view, tok["offset"], tok["size"])
    if "0x" + hashlib.sha256(data).hexdigest() != tok["hash"]:
        raise AitbcError(f"the tokenizer section of model {view['name']} does not match its hash")
    return tokenizer_from_section(data)


def _ids(text: str, what: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(",", " ").split()]
    except ValueError:
        raise AitbcError(f"{what} must be token ids separated by commas or spaces") from None


def _default_max_price(rpc: Any) -> int:
    best = 0
    cursor = None
    for _ in range(20):  # at most 20 pages of miners
        res = rpc.call("market_listMiners", status="active", limit=500, **({"cursor": cursor} if cursor else {}))
        for m in res["miners"]:
            if KIND in m["capabilities"]["throughput"] and KIND in m["prices"]:
                best = max(best, int(m["prices"][KIND]))
        cursor = res.get("next_cursor")
        if not cursor:
            break
    if best == 0:
        raise AitbcError("no active miner offers llm-generate: give --max-price (AIT per token)")
    return best


def submit_llm(rpc: Any, args: argparse.Namespace) -> int:
    from state import market

    from .cli import format_ait, parse_ait
    from .cli_market import _wait_job
    from .llm import LlmNodeError, llm_params

    if not args.model:
        raise AitbcError("--kind llm-generate needs --model NAME|ID")
    if (args.prompt is None) == (args.prompt_ids is None):
        raise AitbcError("give --prompt TEXT or --prompt-ids IDS")
    view = rpc.call("market_getModel", model=args.model)
    vocab = view["arch"]["vocab"]
    tokenizer = None
    if args.prompt is not None:
        tokenizer = fetch_tokenizer(rpc, view)
        chat = args.chat if args.chat is not None else bool(getattr(tokenizer, "chat_template", ""))
        if chat:
            if not tokenizer.chat_template:
                raise AitbcError(f"model {view['name']} has no chat template: use --no-chat")
            prompt = tokenizer.chat_ids(args.prompt, system=args.system)
        else:
            prompt = tokenizer.encode(args.prompt)
        stop = [tokenizer.eos_id]
    else:
        prompt = _ids(args.prompt_ids, "--prompt-ids")
        stop = []
    if args.stop_ids:
        stop = _ids(args.stop_ids, "--stop-ids")
    if not prompt:
        raise AitbcError("the prompt is empty")
    if any(not 0 <= x < vocab for x in prompt + stop):
        raise AitbcError(f"token ids must be below the model's vocabulary size {vocab}")
    try:
        params = llm_params(_unhex(view["model_id"]), prompt, args.max_tokens, temperature=args.temperature,
                            top_k=args.top_k, seed=args.seed, stop=stop)
    except LlmNodeError as exc:
        raise AitbcError(str(exc)) from None
    units = len(prompt) + args.max_tokens
    max_units = args.max_units or units
    max_price = parse_ait(args.max_price, "--max-price") if args.max_price else _default_max_price(rpc)
    key = load_signer(args)
    verify = args.challenge_window or args.verify_rate_bps
    body = market.job_submit_body(
        KIND, args.version, params, max_price=max_price, max_units=max_units, bid_window=args.bid_window,
        deadline=args.deadline, verify_rate_bps=args.verify_rate_bps if verify else None,
        challenge_window=args.challenge_window if verify else None, min_memory=args.min_memory,
        backend=args.backend, attest=new_owner(args) if args.attestable else None,
    )
    st = submit(rpc, key, "job_submit", body, wait=True, timeout=args.timeout)
    job_id = st["hash"]
    print(f"job {job_id} submitted in block {st['block_height']}: {len(prompt)} prompt tokens + up to "
          f"{args.max_tokens} new, at most {format_ait(max_price)} AIT per token", flush=True)
    if not args.wait:
        return 0
    job = _wait_job(rpc, job_id, args.timeout)
    print(f"job {job_id}: {job['state']} (payment {job.get('payment')}, paid {format_ait(int(job['paid']))} AIT)",
          flush=True)
    if job["state"] != "COMPLETED":
        return 1
    tokens, reason = result_tokens(rpc, job)
    _print_tokens(tokens, reason, tokenizer, args.tokens)
    return 0


def result_tokens(rpc: Any, job: dict, output: str | None = None) -> tuple[list[int], str]:
    """Fetch an llm job's result (hash and root checked against the receipt): its generated tokens and
    finish reason; with ``output`` also write the result blob there."""
    from gpu.encoding import decode_array, result_root

    from .llm import job_tokens

    rec = job.get("receipt")
    if not rec:
        raise AitbcError(f"job {job['job_id']} has no receipt yet (state {job['state']})")
    res = rpc.call("blob_get", hash=rec["result_hash"])
    data = _unhex(res["data"])
    if "0x" + hashlib.sha256(data).hexdigest() != rec["result_hash"]:
        raise AitbcError("the result fetched does not match the receipt's result hash")
    arr = decode_array(data, max_bytes=len(data))
    if "0x" + result_root(arr).hex() != rec["result_root"]:
        raise AitbcError("the result's Merkle root does not match the receipt (miner fault)")
    if output:
        Path(output).write_bytes(data)
    params = {"prompt": job["params"]["prompt"], "stop": job["params"].get("stop", [])}
    return job_tokens(params, arr)


def _print_tokens(tokens: list[int], reason: str, tokenizer: Any, ids: bool) -> None:
    if ids or tokenizer is None:
        print(" ".join(str(t) for t in tokens))
    else:
        print(tokenizer.decode(tokens))
    print(f"[{len(tokens)} tokens, finish_reason {reason}]")


def print_llm_result(rpc: Any, job: dict, args: argparse.Namespace) -> int:
    """``job result`` of an llm job: the generated text (``--tokens``: the ids); ``-o`` keeps the blob."""
    tokens, reason = result_tokens(rpc, job, args.output)
    tokenizer = None
    as_json = getattr(args, "json", False)
    if not args.tokens or as_json:
        view = rpc.call("market_getModel", model=job["params"]["model"])
        try:
            tokenizer = fetch_tokenizer(rpc, view)
        except AitbcError as exc:
            if not as_json:
                print(f"(no text: {exc}; token ids follow)")
    if as_json:
        from .cli_tx import print_json

        print_json({"job_id": job["job_id"], "tokens": tokens, "finish_reason": reason,
                    "text": tokenizer.decode(tokens) if tokenizer is not None else None,
                    **({"path": args.output} if args.output else {})})
        return 0
    _print_tokens(tokens, reason, tokenizer, args.tokens)
    return 0


def add_llm_submit_options(j: argparse.ArgumentParser) -> None:
    g = j.add_argument_group("llm-generate")
    g.add_argument("--model", help="model name or 0x-id (llm-generate)")
    g.add_argument("--prompt", help="prompt text, tokenized with the model's tokenizer")
    g.add_argument("--prompt-ids", help="prompt as token ids (comma or space separated)")
    g.add_argument("--system", help="system message (chat)")
    g.add_argument("--chat", action=argparse.BooleanOptionalAction, default=None,
                   help="apply the model's chat template (default: when it has one)")
    g.add_argument("--max-tokens", type=int, default=64, help="new tokens at most")
    g.add_argument("--temperature", help="sampling temperature (default: greedy)")
    g.add_argument("--top-k", type=int, help="sample among the k best tokens (default 64)")
    g.add_argument("--seed", help="sampling seed (any text or 0x + 32 bytes hex; default random)")
    g.add_argument("--stop-ids", help="stop token ids (default: the tokenizer's end-of-sequence token)")
    g.add_argument("--tokens", action="store_true", help="print token ids instead of text")


__all__ = ["add_llm_submit_options", "fetch_tokenizer", "print_llm_result", "result_tokens", "submit_llm"]
