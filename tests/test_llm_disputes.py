"""``llm-generate`` jobs and their disputes (state/kinds/llm_generate.py, llm_trace.py,
state/market/llm_disputes.py) on the real state machine, with a seeded random-weight tiny Llama
registered through ``model_register``.

The miner's trace is built step by step with ``state.llm.steps.run_step`` (the same function the chain
re-runs), so a lying miner can be made to lie at exactly one step and stay consistent afterwards (the
hardest liar to catch); the honest trace is checked against ``state.llm.generate.generate``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest
from test_llm_steps import TINY as STEPS_TINY
from test_market_state import CHAIN, CLIENT, FEE, MARKET, MINER1, MINER2, PARAMS, VERIFIER, Market

import state.market as mkt
from gpu.llm.gguf_import import build_model_file
from gpu.llm.tiny import random_tensors
from state import codec
from state.errors import DecodeError, TxError
from state.kinds import get_kind
from state.kinds import llm_generate as lg
from state.kinds import llm_trace as lt
from state.kinds.base import JobParamError, KindContext
from state.kinds.encoding import array_hash, encode_array, result_leaves, result_root
from state.llm.generate import IntModel, Trace, generate, output_bytes, step_order, trace_leaf
from state.llm.modelfile import split_chunks
from state.llm.steps import Op, Sampling, StepId, dependencies, run_step
from state.market import llm_disputes as ld
from state.market import models
from state.market.bodies import TX_LLM_CHALLENGE, TX_LLM_STEP_PROOF, TX_LLM_STEPS
from state.mempool import Mempool, MempoolConfig, MempoolError
from state.merkle import merkle_proof
from state.types import MAX_TX_BYTES, MAX_WITNESS_TX_BYTES, Transaction

TINY = replace(STEPS_TINY, vocab=1500)  # the embedding spans two model-file chunks
PROMPT = [5, 17, 3]
NEW = 4
SEED = bytes(range(32))
GREEDY = {"mode": "greedy"}
SAMPLE = {"mode": "sample", "seed": SEED, "temperature": [8, 1], "top_k": 40}
LLM_MARKET = replace(MARKET, max_llm_challenges_per_job=64, llm_proof_blocks=4)
LLM_PARAMS = replace(PARAMS, market=LLM_MARKET)
WINDOW = 12


TOKENIZER = codec.encode({"tokens": ["<unk>", "<s>", "</s>"]})
FILE = build_model_file(TINY, random_tensors(TINY, 11), TOKENIZER)
CHUNKS = split_chunks(FILE)
MODEL = IntModel(TINY, FILE)
MANIFEST, _, _ = models.manifest_for_file(FILE, name="tiny-llama", arch=TINY.to_map(), tokenizer_size=len(TOKENIZER))
MODEL_ID = models.model_id(MANIFEST)


def params(sampling: dict = GREEDY, stop: list[int] | None = None, prompt: list[int] = PROMPT, new: int = NEW) -> dict:
    p = {"model": MODEL_ID, "prompt": list(prompt), "max_new_tokens": new, "sampling": sampling}
    if stop is not None:
        p["stop"] = stop
    return p


# ----------------------------------------------------------------------------------------------------
# Traces built step by step


class Run:
    """A run of the job (honest, or the miner's lie): every step output, the rows and their commitments."""

    def __init__(
        self,
        p: dict,
        tamper: Callable[[StepId, np.ndarray], np.ndarray] | None = None,
        sampling: Sampling | None = None,
        edit_rows: Callable[[np.ndarray], None] | None = None,
    ) -> None:
        cfg, prompt, n_new = TINY, p["prompt"], p["max_new_tokens"]
        smp = sampling if sampling is not None else lg.sampling_of(p)
        stop = set(p.get("stop", []))
        n_p = len(prompt)
        outs: dict[StepId, np.ndarray] = {}
        tokens: list[int] = []
        t = 0
        while True:
            for s in lt.position_steps(cfg, n_p, t):
                if s.op == Op.EMBED and t < n_p:
                    inputs, tok = [np.array([prompt[t]], dtype=np.int32)], prompt[t]
                else:
                    inputs = [outs[d] for d in dependencies(cfg, s, n_p)]
                    tok = int(inputs[0][0]) if s.op == Op.EMBED else None
                out = run_step(cfg, s, inputs, MODEL.step_weights(s, tok), smp)
                outs[s] = tamper(s, out) if tamper is not None else out
            if t >= n_p - 1:
                tokens.append(int(outs[StepId(t, 0, Op.SAMPLE)][0]))
                if tokens[-1] in stop or len(tokens) >= n_new:
                    break
            t += 1
        self.params, self.tokens, self.outs = p, tokens, outs
        self.trace = Trace(cfg, n_p, outs, t + 1)
        arr = lt.result_rows(self.trace, prompt, n_new, tokens)
        if edit_rows is not None:
            edit_rows(arr)
        self.arr = arr
        self.leaves = result_leaves(arr)
        self.root, self.hash, self.size = result_root(arr), array_hash(arr), len(encode_array(arr))
        self.digests = [lt.position_digests(self.trace, s) for s in range(self.trace.n_positions)]

    def proof(self, i: int) -> list[bytes]:
        return merkle_proof(self.leaves, i)

    def output(self, s: StepId) -> bytes:
        return output_bytes(self.outs[s])


_RUNS: dict[str, Run] = {}


def honest(p: dict) -> Run:
    k = codec.encode(p).hex()
    if k not in _RUNS:
        _RUNS[k] = Run(p)
    return _RUNS[k]


def first_bad_step(miner: Run, good: Run, t: int) -> StepId:
    """The challenger's choice: the first step of position ``t`` whose digest differs from the honest
    one (its inputs are honest), or SAMPLE when only the row's token differs."""
    steps = lt.position_steps(TINY, len(miner.params["prompt"]), t)
    for s, a, b in zip(steps, miner.digests[t], good.digests[t], strict=True):
        if a != b:
            return s
    return StepId(t, 0, Op.SAMPLE)


def first_bad_position(miner: Run, good: Run) -> int:
    return next(i for i, (a, b) in enumerate(zip(miner.leaves, good.leaves, strict=True)) if a != b)


# ----------------------------------------------------------------------------------------------------
# The market


class LlmMarket(Market):
    def __init__(self) -> None:
        super().__init__(LLM_PARAMS)
        self.ok(CLIENT, mkt.TX_MODEL_REGISTER, MANIFEST)

    def submit(self, k=CLIENT, kind: str = "llm-generate", **kw) -> bytes:  # noqa: ANN001
        args = dict(max_price=100, max_units=7, bid_window=2, deadline=5)
        args.update(kw)
        p = args.pop("params")
        tx = self.tx(k, mkt.TX_JOB_SUBMIT, mkt.job_submit_body(kind, 1, p, **args))
        (r,) = self.block(tx)
        assert r.ok, (r.reason, r.message)
        return tx.hash

    def check_invariants(self) -> None:
        super().check_invariants()
        st = self.stats()
        open_bonds = 0
        for k, v in self.s.scan(b"mkt/L/"):
            if len(k) == len(b"mkt/L/") + 33:
                d = ld.Dispute.decode(v)
                open_bonds += d.bond if d.stage != ld.CLOSED else 0
        assert open_bonds == st.dispute_bonds

    def llm_job(self, run: Run, miner=MINER1, window: int = WINDOW) -> mkt.Job:
        self.register(miner, bond=4_000, kinds=("llm-generate",))
        units = get_kind("llm-generate").work_units(run.params)
        jid = self.submit(kind="llm-generate", params=run.params, max_price=100, max_units=units,
                          challenge_window=window)
        job = self.award(jid, (miner, 50))
        r, sig = mkt.make_receipt(
            miner, CHAIN, job, units=units, started_at=1, completed_at=2, result_hash=run.hash,
            result_root=run.root, result_size=run.size, backend="cpu", device="test",
        )
        self.ok(miner, mkt.TX_RECEIPT, mkt.receipt_body(r, sig))
        return self.job(jid)

    def disputes(self, job_id: bytes) -> list[ld.Dispute]:
        return ld.load_disputes(self.s.get_object, job_id)


def challenge_body(job_id: bytes, run: Run, t: int) -> dict:
    prev = (run.leaves[t - 1], run.proof(t - 1)) if t else None
    return ld.llm_challenge_body(job_id, t, run.leaves[t], run.proof(t), prev)


def proof_body(job_id: bytes, i: int, step: StepId, miner: Run, good: Run, **kw) -> dict:
    return ld.step_proof_body(
        job_id, i, TINY, len(miner.params["prompt"]), miner.leaves, lambda s: miner.digests[s], good.output,
        step, CHUNKS, **kw,
    )


def full_dispute(m: LlmMarket, job: mkt.Job, miner: Run, good: Run, t: int, step: StepId | None = None) -> int:
    """Challenge position t, the miner answers, the challenger proves ``step`` (default: the first bad
    one). Returns the dispute index."""
    m.ok(VERIFIER, TX_LLM_CHALLENGE, challenge_body(job.job_id, miner, t))
    i = m.disputes(job.job_id)[-1].index
    m.ok(MINER1, TX_LLM_STEPS, ld.llm_steps_body(job.job_id, i, miner.digests[t]))
    step = step if step is not None else first_bad_step(miner, good, t)
    m.ok(VERIFIER, TX_LLM_STEP_PROOF, proof_body(job.job_id, i, step, miner, good))
    return i


# ----------------------------------------------------------------------------------------------------
# Kind rules and the row format


def test_rows_match_generate_and_leaves_match_the_trace() -> None:
    for smp in (GREEDY, SAMPLE):
        p = params(smp)
        run = honest(p)
        tokens, trace = generate(MODEL, PROMPT, NEW, lg.sampling_of(p))
        assert tokens == run.tokens
        assert np.array_equal(lt.result_rows(trace, PROMPT, NEW, tokens), run.arr)
        order = step_order(TINY, len(PROMPT), trace.n_positions)
        for t in range(trace.n_positions):
            steps = lt.position_steps(TINY, len(PROMPT), t)
            assert steps == [s for s in order if s.token == t]
            assert [lt.step_index(TINY, len(PROMPT), s) for s in steps] == list(range(len(steps)))
            assert len(steps) == lt.step_count(TINY, len(PROMPT), t)
            for s in steps:
                out = output_bytes(trace.outputs[s])
                assert lt.step_leaf(s, lt.output_digest(out)) == trace_leaf(s, out)
    big = StepId(70000, 300, 13, 65536)
    assert lt.step_leaf(big, b"\x01" * 32) == codec.encode([70000, 300, 13, 65536, b"\x01" * 32])
    rows = honest(params()).arr
    assert rows.shape == (len(PROMPT) + NEW - 1, lt.ROW_BYTES) and rows.dtype == np.uint8
    r = lt.Row.decode(rows[len(PROMPT) - 1].tobytes())
    assert (r.t, r.token_in, r.token_out) == (2, 3, honest(params()).tokens[0])
    assert lt.Row.decode(rows[0].tobytes()).token_out == lt.NO_TOKEN


def test_params_units_and_static_refusals() -> None:
    k = get_kind("llm-generate")
    p = params(SAMPLE, stop=[2, 9])
    k.validate(p, None)
    assert (k.work_units(p), k.unit_type, k.result_shape(p)) == (7, "token", (6, 44))
    assert k.leaf_disputes is False
    bad = [
        ({**p, "extra": 1}, "unknown_param"),
        ({k2: v for k2, v in p.items() if k2 != "sampling"}, "missing_param"),
        ({**p, "model": b"x" * 31}, "out_of_bounds"),
        ({**p, "prompt": []}, "out_of_bounds"),
        ({**p, "prompt": [1] * (lg.MAX_PROMPT + 1)}, "out_of_bounds"),
        ({**p, "prompt": [True]}, "bad_type"),
        ({**p, "max_new_tokens": 257}, "out_of_bounds"),
        ({**p, "sampling": {"mode": "beam"}}, "bad_type"),
        ({**p, "sampling": {**SAMPLE, "top_k": 65}}, "out_of_bounds"),
        ({**p, "sampling": {**SAMPLE, "temperature": [0, 1]}}, "out_of_bounds"),
        ({**p, "sampling": {**SAMPLE, "seed": b"s"}}, "out_of_bounds"),
        ({**p, "stop": [1] * 9}, "out_of_bounds"),
        ({**p, "stop": [4, 4]}, "out_of_bounds"),
    ]
    for q, reason in bad:
        with pytest.raises(JobParamError) as ei:
            k.validate(q, None)
        assert ei.value.reason == reason, (q, ei.value)
    ctx = KindContext(lambda mid: MANIFEST if mid == MODEL_ID else None)
    k.check_context(p, ctx)
    for q, reason in [
        ({**p, "model": b"\x07" * 32}, "unknown_model"),
        ({**p, "prompt": [TINY.vocab]}, "out_of_bounds"),
        ({**p, "stop": [TINY.vocab + 5]}, "out_of_bounds"),
        ({**p, "prompt": [1] * 40, "max_new_tokens": 30}, "context_too_long"),
    ]:
        with pytest.raises(JobParamError) as ei:
            k.check_context(q, ctx)
        assert ei.value.reason == reason
    with pytest.raises(JobParamError) as ei:
        k.check_context(p, KindContext(lambda mid: {**MANIFEST, "format": "other"}))
    assert ei.value.reason == "unsupported_model_format"


def test_job_submit_looks_the_model_up() -> None:
    m = LlmMarket()
    jid = m.submit(kind="llm-generate", params=params(), max_price=10, max_units=7, challenge_window=5)
    assert m.job(jid).state == mkt.QUEUED
    body = mkt.job_submit_body("llm-generate", 1, {**params(), "model": b"\x09" * 32}, max_price=10, max_units=7,
                               bid_window=2, deadline=5)
    assert m.fail(CLIENT, mkt.TX_JOB_SUBMIT, body) == "unknown_model"
    body = mkt.job_submit_body("llm-generate", 1, params(prompt=[1] * 40, new=30), max_price=10, max_units=70,
                               bid_window=2, deadline=5)
    assert m.fail(CLIENT, mkt.TX_JOB_SUBMIT, body) == "context_too_long"
    # a challenge window is refused when one dispute transaction would exceed max_challenge_work
    tight = replace(LLM_PARAMS, market=replace(LLM_MARKET, max_challenge_work=1_000))
    m.params = tight
    body = mkt.job_submit_body("llm-generate", 1, params(), max_price=10, max_units=7, bid_window=2, deadline=5,
                               challenge_window=5)
    assert m.fail(CLIENT, mkt.TX_JOB_SUBMIT, body) == "challenge_work_too_large"


# ----------------------------------------------------------------------------------------------------
# The judgement, without state


@pytest.mark.parametrize("smp", [GREEDY, SAMPLE], ids=["greedy", "sample"])
def test_every_step_of_an_honest_trace_is_judged_correct(smp: dict) -> None:
    p = params(smp)
    run = honest(p)
    mv = lg.model_view(MANIFEST)
    for t in range(run.trace.n_positions):
        for s in lt.position_steps(TINY, len(PROMPT), t):
            body = proof_body(b"\x00" * 32, 0, s, run, run)
            assert ld.judge_step_proof(mv, p, len(run.leaves), run.root, run.leaves[t], body) is None, s
            w, work = lg.step_check_bounds(mv, len(PROMPT), len(run.leaves), s)
            assert len(codec.encode(body)) <= w, s  # the bound the chain meters and sizes by holds


# ----------------------------------------------------------------------------------------------------
# Honest miner


def test_honest_miner_wins_every_challenge() -> None:
    m = LlmMarket()
    p = params(SAMPLE)
    run = honest(p)
    job = m.llm_job(run)
    supply0, v0, m0 = m.supply(), m.bal(VERIFIER), m.bal(MINER1)
    n = len(run.leaves)
    ops = [Op.ATTN, Op.EMBED, Op.SAMPLE, Op.LOGITS, Op.RESID_FFN, Op.SWIGLU, Op.DOWN, Op.O, Op.Q, Op.K, Op.V,
           Op.FINAL_NORM, Op.ATTN_NORM, Op.FFN_NORM, Op.RESID_ATTN]
    # one block: every position challenged; the next: every answer; the next: every proof
    m.block(*[(VERIFIER, TX_LLM_CHALLENGE, challenge_body(job.job_id, run, t)) for t in range(n)])
    ds = m.disputes(job.job_id)
    assert [d.position for d in ds] == list(range(n)) and all(d.stage == ld.STEPS for d in ds)
    bonds = sum(d.bond for d in ds)
    assert m.stats().dispute_bonds == bonds and m.bal(VERIFIER) == v0 - n * FEE - bonds
    res = m.block(*[(MINER1, TX_LLM_STEPS, ld.llm_steps_body(job.job_id, d.index, run.digests[d.position]))
                    for d in ds])
    assert all(r.ok for r in res), [(r.reason, r.message) for r in res]
    proofs = []
    for d in ds:
        steps = lt.position_steps(TINY, len(PROMPT), d.position)
        op = ops[d.position % len(ops)] if d.position < len(PROMPT) - 1 else [Op.SAMPLE, Op.ATTN, Op.EMBED][d.position % 3]
        step = [s for s in steps if s.op == op][-1]
        proofs.append((VERIFIER, TX_LLM_STEP_PROOF, proof_body(job.job_id, d.index, step, run, run)))
    res = m.block(*proofs)
    assert all(r.ok for r in res), [(r.reason, r.message) for r in res]
    ds = m.disputes(job.job_id)
    assert all((d.stage, d.outcome) == (ld.CLOSED, "rejected") for d in ds)
    burned = sum(d.bond * LLM_MARKET.slash_false_challenge_bps // 10_000 for d in ds)
    assert m.bal(VERIFIER) == v0 - (2 * n) * FEE - burned
    assert m.supply() == supply0 - burned and m.stats().dispute_bonds == 0
    j = m.job(job.job_id)
    assert (j.state, j.payment, j.false_challenges) == (mkt.COMPLETED, mkt.ESCROWED, n)
    m.advance(j.release_height)
    j = m.job(job.job_id)
    assert (j.payment, j.paid) == (mkt.RELEASED, 50 * 7)
    assert m.bal(MINER1) == m0 - n * FEE + 50 * 7
    assert {"llm_challenged", "llm_steps_posted", "llm_challenge_rejected"} <= {e for e, _ in m.events}


def test_payment_waits_for_an_open_dispute_and_settles_when_it_closes() -> None:
    m = LlmMarket()
    run = honest(params())
    job = m.llm_job(run, window=3)
    m.ok(VERIFIER, TX_LLM_CHALLENGE, challenge_body(job.job_id, run, 2))
    m.advance(job.release_height + 1)
    assert m.job(job.job_id).payment == mkt.ESCROWED  # held while the dispute is open
    m.ok(MINER1, TX_LLM_STEPS, ld.llm_steps_body(job.job_id, 0, run.digests[2]))
    m.ok(VERIFIER, TX_LLM_STEP_PROOF, proof_body(job.job_id, 0, StepId(2, 1, Op.ATTN, 1), run, run))
    j = m.job(job.job_id)
    assert (j.payment, j.settle_height) == (mkt.RELEASED, m.height)  # at once: the window is over


# ----------------------------------------------------------------------------------------------------
# Lying miners


def _bump(target: StepId) -> Callable[[StepId, np.ndarray], np.ndarray]:
    def tamper(s: StepId, out: np.ndarray) -> np.ndarray:
        if s == target:
            out = out.copy()
            out.flat[0] += 1
        return out

    return tamper


def _force_token(pos: int, good: Run) -> Callable[[StepId, np.ndarray], np.ndarray]:
    def tamper(s: StepId, out: np.ndarray) -> np.ndarray:
        if s == StepId(pos, 0, Op.SAMPLE):
            return np.array([(int(out[0]) + 1) % TINY.vocab], dtype=np.int32)
        return out

    return tamper


def _swap_row_token(t: int) -> Callable[[np.ndarray], None]:
    def edit(arr: np.ndarray) -> None:  # the row says another token; the steps are honest
        r = lt.Row.decode(arr[t].tobytes())
        arr[t] = np.frombuffer(replace(r, token_out=(r.token_out + 1) % TINY.vocab).encode(), np.uint8)
        if t + 1 < arr.shape[0]:
            r2 = lt.Row.decode(arr[t + 1].tobytes())
            arr[t + 1] = np.frombuffer(replace(r2, token_in=(r.token_out + 1) % TINY.vocab).encode(), np.uint8)

    return edit


LIARS = {
    # one layer's output wrong at a prompt position, everything after computed from it
    "layer_output": lambda good: Run(good.params, tamper=_bump(StepId(1, 0, Op.RESID_FFN))),
    # a K head wrong: later positions attend over it (the dispute proves K/V of earlier rows)
    "key_head": lambda good: Run(good.params, tamper=_bump(StepId(3, 1, Op.K, 1))),
    # another token sampled (the SAMPLE step lies), generation continues from it
    "token": lambda good: Run(good.params, tamper=_force_token(3, good)),
    # the row's token_out changed but the steps are honest: SAMPLE check compares with the row
    "row_token": lambda good: Run(good.params, edit_rows=_swap_row_token(4)),
    # sampled with another seed
    "sampling_seed": lambda good: Run(good.params, sampling=replace(lg.sampling_of(good.params), seed=b"\x55" * 32)),
}


@pytest.mark.parametrize("liar", sorted(LIARS))
def test_a_lying_miner_is_caught_slashed_and_the_client_refunded(liar: str) -> None:
    m = LlmMarket()
    good = honest(params(SAMPLE))
    bad = LIARS[liar](good)
    t = first_bad_position(bad, good)
    job = m.llm_job(bad)
    supply0, c0, v0 = m.supply(), m.bal(CLIENT), m.bal(VERIFIER)
    full_dispute(m, job, bad, good, t)
    j = m.job(job.job_id)
    assert (j.state, j.payment, j.failure, j.escrow, j.paid) == (mkt.FAILED, mkt.REFUNDED, "wrong_result", 0, 0)
    assert m.bal(CLIENT) == c0 + 50 * 7  # the escrow comes back in full
    slash = 4_000 * LLM_MARKET.slash_wrong_result_bps // 10_000
    reward = slash * LLM_MARKET.challenger_reward_bps // 10_000
    assert m.bal(VERIFIER) == v0 - 2 * FEE + reward  # bond back plus the reward
    assert m.miner(MINER1).bond == 4_000 - slash
    assert m.supply() == supply0 - (slash - reward)
    (d,) = m.disputes(job.job_id)
    assert (d.outcome, d.fault) == ("upheld", {"row_token": "wrong_token"}.get(liar, "wrong_step_output"))
    assert m.stats().dispute_bonds == 0


def test_inconsistent_rows_fail_the_job_at_the_challenge() -> None:
    good = honest(params())

    def stop_early(arr: np.ndarray) -> None:
        arr[4:] = 0  # claims to have stopped after a token that is no stop token

    def wrong_prompt(arr: np.ndarray) -> None:
        r = lt.Row.decode(arr[1].tobytes())
        arr[1] = np.frombuffer(replace(r, token_in=r.token_in + 1).encode(), np.uint8)

    for edit, t, fault in ((stop_early, 4, "stopped_early"), (wrong_prompt, 1, "wrong_prompt")):
        m = LlmMarket()
        bad = Run(good.params, edit_rows=edit)
        job = m.llm_job(bad)
        c0 = m.bal(CLIENT)
        m.ok(VERIFIER, TX_LLM_CHALLENGE, challenge_body(job.job_id, bad, t))
        j = m.job(job.job_id)
        assert (j.state, j.failure) == (mkt.FAILED, "wrong_result") and m.bal(CLIENT) == c0 + 50 * 7
        assert [f["fault"] for e, f in m.events if e == "llm_challenge_upheld"] == [fault]


def test_rows_after_a_stop_token_are_zero_and_cannot_be_challenged() -> None:
    good = honest(params(SAMPLE))
    j = next(i for i in range(1, NEW - 1) if good.tokens[i] not in good.tokens[:i])
    run = Run(params(SAMPLE, stop=[good.tokens[j]]))  # the run stops after the j+1-th token
    last = len(PROMPT) - 1 + j  # the position that sampled the stop token
    assert run.tokens == good.tokens[: j + 1] and not run.arr[last + 1 :].any() and run.arr[last].any()
    m = LlmMarket()
    job = m.llm_job(run)
    assert m.fail(VERIFIER, TX_LLM_CHALLENGE, challenge_body(job.job_id, run, last + 1)) == "unused_position"
    full_dispute(m, job, run, run, last, StepId(last, 0, Op.SAMPLE))
    assert m.disputes(job.job_id)[0].outcome == "rejected"


# ----------------------------------------------------------------------------------------------------
# Timeouts


def test_a_miner_that_does_not_post_its_steps_loses() -> None:
    m = LlmMarket()
    run = honest(params())
    job = m.llm_job(run)
    c0, v0 = m.bal(CLIENT), m.bal(VERIFIER)
    m.ok(VERIFIER, TX_LLM_CHALLENGE, challenge_body(job.job_id, run, 1))
    (d,) = m.disputes(job.job_id)
    assert d.deadline == m.height + LLM_MARKET.availability_response_blocks
    m.advance(d.deadline - 1)
    assert m.job(job.job_id).state == mkt.COMPLETED
    m.advance(d.deadline)
    j = m.job(job.job_id)
    assert (j.state, j.payment, j.failure) == (mkt.FAILED, mkt.REFUNDED, "unavailable")
    slash = 4_000 * LLM_MARKET.slash_unavailable_bps // 10_000
    reward = slash * LLM_MARKET.challenger_reward_bps // 10_000
    assert m.bal(CLIENT) == c0 + 50 * 7 and m.bal(VERIFIER) == v0 - FEE + reward
    assert m.disputes(job.job_id)[0].outcome == "unanswered"
    assert m.fail(MINER1, TX_LLM_STEPS, ld.llm_steps_body(job.job_id, 0, run.digests[1])) == "not_awaiting_steps"


def test_a_challenger_that_does_not_post_its_proof_loses_its_bond() -> None:
    m = LlmMarket()
    run = honest(params())
    job = m.llm_job(run, window=3)
    v0 = m.bal(VERIFIER)
    m.ok(VERIFIER, TX_LLM_CHALLENGE, challenge_body(job.job_id, run, 3))
    m.ok(MINER1, TX_LLM_STEPS, ld.llm_steps_body(job.job_id, 0, run.digests[3]))
    (d,) = m.disputes(job.job_id)
    assert d.stage == ld.PROOF and d.deadline == m.height + LLM_MARKET.llm_proof_blocks
    m.advance(d.deadline)
    (d,) = m.disputes(job.job_id)
    assert d.outcome == "abandoned"
    burned = d.bond * LLM_MARKET.slash_false_challenge_bps // 10_000
    assert m.bal(VERIFIER) == v0 - FEE - burned
    j = m.job(job.job_id)
    assert (j.payment, j.false_challenges) == (mkt.RELEASED, 1)  # the window ended meanwhile: settled
    assert m.fail(VERIFIER, TX_LLM_STEP_PROOF, proof_body(job.job_id, 0, StepId(3, 0, Op.EMBED), run, run)) in (
        "not_awaiting_proof",
    )


def test_failure_by_availability_returns_open_llm_bonds() -> None:
    m = LlmMarket()
    run = honest(params())
    job = m.llm_job(run)
    v0 = m.bal(VERIFIER)
    m.ok(VERIFIER, mkt.TX_AVAILABILITY_CHALLENGE, mkt.availability_challenge_body(job.job_id, [0]))
    m.ok(VERIFIER, TX_LLM_CHALLENGE, challenge_body(job.job_id, run, 0))  # answer due a block later
    m.advance(m.job(job.job_id).availability["deadline"])
    j = m.job(job.job_id)
    assert (j.state, j.failure) == (mkt.FAILED, "unavailable")
    assert m.disputes(job.job_id)[0].outcome == "job_closed" and m.stats().dispute_bonds == 0
    slash = 4_000 * LLM_MARKET.slash_unavailable_bps // 10_000
    assert m.bal(VERIFIER) == v0 - 2 * FEE + slash * LLM_MARKET.challenger_reward_bps // 10_000
    m.advance(m.height + LLM_MARKET.availability_response_blocks)  # the stale llm deadline does nothing
    assert m.job(job.job_id).failure == "unavailable"


# ----------------------------------------------------------------------------------------------------
# Hostile inputs


def test_hostile_inputs_are_refused_with_precise_reasons() -> None:
    m = LlmMarket()
    m.params = replace(LLM_PARAMS, market=replace(LLM_MARKET, llm_proof_blocks=40))
    run = honest(params(SAMPLE))
    job = m.llm_job(run)
    jid = job.job_id
    other = Run(params(SAMPLE, prompt=[7, 7, 7]))
    # llm_challenge
    assert m.fail(MINER1, TX_LLM_CHALLENGE, challenge_body(jid, run, 2)) == "self_challenge"
    assert m.fail(VERIFIER, TX_LLM_CHALLENGE, challenge_body(jid, other, 2)) == "bad_proof"
    body = challenge_body(jid, run, 2)
    assert m.fail(VERIFIER, TX_LLM_CHALLENGE, {**body, "position": 9}) == "bad_position"
    assert m.fail(VERIFIER, TX_LLM_CHALLENGE, {k: v for k, v in body.items() if k != "prev"}) == "prev_row_required"
    assert m.fail(VERIFIER, TX_LLM_CHALLENGE, {**challenge_body(jid, run, 0), "prev": body["prev"]}) == (
        "unexpected_prev_row"
    )
    assert m.fail(VERIFIER, mkt.TX_CHALLENGE, mkt.challenge_body(jid, 1, run.leaves[1], run.proof(1))) == (
        "not_challengeable"
    )
    assert m.invalid(VERIFIER, TX_LLM_CHALLENGE, {**body, "row": b"\x00" * 43}).reason == "invalid_body"
    m.ok(VERIFIER, TX_LLM_CHALLENGE, body)
    # llm_steps
    steps = ld.llm_steps_body(jid, 0, run.digests[2])
    assert m.fail(VERIFIER, TX_LLM_STEPS, steps) == "not_awarded_miner"
    assert m.fail(MINER1, TX_LLM_STEPS, {**steps, "dispute": 5}) == "unknown_dispute"
    assert m.fail(MINER1, TX_LLM_STEPS, {**steps, "digests": steps["digests"][:-1]}) == "wrong_step_count"
    assert m.fail(MINER1, TX_LLM_STEPS, {**steps, "digests": steps["digests"][::-1]}) == "bad_steps"
    step = StepId(2, 0, Op.EMBED)
    assert m.fail(VERIFIER, TX_LLM_STEP_PROOF, proof_body(jid, 0, step, run, run)) == "not_awaiting_proof"
    m.ok(MINER1, TX_LLM_STEPS, steps)
    assert m.fail(MINER1, TX_LLM_STEPS, steps) == "not_awaiting_steps"  # replay
    # llm_step_proof
    good = proof_body(jid, 0, StepId(2, 1, Op.ATTN, 1), run, run)
    assert m.fail(MINER2, TX_LLM_STEP_PROOF, good) == "not_challenger"
    cases = {
        "wrong_position": proof_body(jid, 0, StepId(1, 0, Op.EMBED), run, run),
        "bad_step": {**good, "step": [2, 9, int(Op.ATTN), 0]},
        "wrong_inputs": {**good, "inputs": good["inputs"][:-1]},
        "wrong_input_size": {**good, "inputs": [good["inputs"][0] + b"\x00"] + good["inputs"][1:]},
        "bad_proof": {**good, "digest": b"\x01" * 32},
        "wrong_proofs": {**good, "proofs": good["proofs"][1:]},
        "bad_row_proof": {**good, "rows": [good["rows"][0], good["rows"][1], [b"\x02" * 32] * len(good["rows"][2])]},
        "wrong_rows": {**good, "rows": [1, good["rows"][1][1:], good["rows"][2]]},
        "rows_required": {k: v for k, v in good.items() if k != "rows"},
    }
    emb = proof_body(jid, 0, StepId(2, 0, Op.EMBED), run, run)
    cases["unexpected_rows"] = {**emb, "rows": good["rows"]}
    ws = emb["weights"][0]
    assert len(CHUNKS) >= 2 and len(ws[1]) == 1
    wrong_chunk = 1 - ws[0]
    cases["bad_weights"] = {**emb, "weights": [[ws[0], [CHUNKS[wrong_chunk]], ws[2]]]}
    cases["wrong_weights"] = {**emb, "weights": []}
    # a proof built for another job (another prompt, so other roots)
    cases["bad_row_proof" + "/other_job"] = proof_body(jid, 0, StepId(2, 1, Op.ATTN, 1), other, other)
    for reason, b in cases.items():
        assert m.fail(VERIFIER, TX_LLM_STEP_PROOF, b) == reason.split("/")[0], reason
    assert m.disputes(jid)[0].stage == ld.PROOF  # refused proofs change nothing
    m.ok(VERIFIER, TX_LLM_STEP_PROOF, good)
    assert m.fail(VERIFIER, TX_LLM_STEP_PROOF, good) == "not_awaiting_proof"  # replay
    # proof of a position's step from another job id
    assert m.fail(VERIFIER, TX_LLM_STEP_PROOF, {**good, "job_id": b"\x03" * 32}) == "unknown_job"


def test_too_many_llm_challenges() -> None:
    m = LlmMarket()
    m.params = replace(LLM_PARAMS, market=replace(LLM_MARKET, max_llm_challenges_per_job=2))
    run = honest(params())
    job = m.llm_job(run)
    m.ok(VERIFIER, TX_LLM_CHALLENGE, challenge_body(job.job_id, run, 0))
    m.ok(VERIFIER, TX_LLM_CHALLENGE, challenge_body(job.job_id, run, 1))
    assert m.fail(VERIFIER, TX_LLM_CHALLENGE, challenge_body(job.job_id, run, 2)) == "too_many_llm_challenges"


# ----------------------------------------------------------------------------------------------------
# Size bounds and metering


def test_transaction_size_bounds() -> None:
    big = b"\x00" * (MAX_TX_BYTES + 100)
    k = VERIFIER
    t = Transaction.create(k, CHAIN, "transfer", 0, FEE, {"to": MINER1.public_key, "amount": 1, "pad": big})
    with pytest.raises(DecodeError) as ei:
        Transaction.decode(t.raw)
    assert ei.value.reason == "too_large"
    w = Transaction.create(k, CHAIN, TX_LLM_STEP_PROOF, 0, FEE, {"pad": big})
    assert Transaction.decode(w.raw).type == TX_LLM_STEP_PROOF  # decodes; its body is then checked
    huge = Transaction.create(k, CHAIN, TX_LLM_STEP_PROOF, 0, FEE, {"pad": b"\x00" * MAX_WITNESS_TX_BYTES})
    with pytest.raises(DecodeError):
        Transaction.decode(huge.raw)
    with pytest.raises(TxError):
        ld.check_llm_step_proof({"pad": big})
    from memstate import MemState

    from state.machine import check_body

    pool = Mempool(CHAIN, MemState({k.public_key: 10**9}), MempoolConfig(max_tx_bytes=MAX_TX_BYTES),
                   check_body=check_body)
    with pytest.raises(MempoolError) as e2:
        pool.add(t, verified=True)
    assert e2.value.reason == "too_large"
    with pytest.raises(MempoolError) as e3:
        pool.add(w, verified=True)
    assert e3.value.reason != "too_large"  # refused for its body, not its size


def test_dispute_work_is_metered_and_bounded() -> None:
    run = honest(params(SAMPLE))
    mv = lg.model_view(MANIFEST)
    k = get_kind("llm-generate")
    ctx = KindContext(lambda mid: MANIFEST)
    worst = k.dispute_work(run.params, None, ctx)
    assert 0 < worst <= LLM_MARKET.max_challenge_work
    rows = len(run.leaves)
    for t in range(rows):
        w, work = lg.position_bounds(mv, len(PROMPT), rows, t)
        assert work <= worst and w <= lg.MAX_LLM_WITNESS
    m = LlmMarket()
    job = m.llm_job(run)
    m.ok(VERIFIER, TX_LLM_CHALLENGE, challenge_body(job.job_id, run, 5))
    (d,) = m.disputes(job.job_id)
    assert d.bond == LLM_MARKET.challenge_bond + lg.position_bounds(mv, 3, rows, 5)[1] * LLM_MARKET.dispute_work_price
    m.ok(MINER1, TX_LLM_STEPS, ld.llm_steps_body(job.job_id, 0, run.digests[5]))
    body = proof_body(job.job_id, 0, StepId(5, 1, Op.ATTN, 0), run, run)
    tx = m.tx(VERIFIER, TX_LLM_STEP_PROOF, body)
    from state.machine import BlockEnv, Execution

    ex = Execution(m.s, BlockEnv(CHAIN, m.height + 1, 0, b"\xee" * 32, m.params))
    work = ld.step_proof_work(ex, tx)
    assert lg.step_check_bounds(mv, 3, rows, StepId(5, 1, Op.ATTN, 0))[1] <= work <= worst
    # a block cannot hold more step proofs than its dispute work budget
    tight = replace(LLM_PARAMS, market=replace(LLM_MARKET, max_dispute_work_per_block=ld.step_proof_work(ex, tx) - 1))
    m.params = tight
    with pytest.raises(TxError) as ei:
        m.block(tx)
    assert ei.value.reason == "block_work_exceeded"
