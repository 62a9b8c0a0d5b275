"""Integer Llama steps on a seeded random-weight tiny model: fast path == step functions, every step
re-checked from its dependencies, tampering refused, model file slices verified."""

from __future__ import annotations

import numpy as np
import pytest

from gpu.llm.float_reference import FloatLlama
from gpu.llm.gguf_import import build_model_file
from gpu.llm.tiny import random_tensors
from state import codec
from state.errors import AitbcError
from state.llm import steps as st
from state.llm.config import LlamaConfig, LlmError
from state.llm.generate import (
    IntModel,
    check_step,
    forward_logits,
    generate,
    output_bytes,
    step_inputs,
    step_order,
    trace_leaf,
)
from state.llm.modelfile import (
    CHUNK_SIZE,
    WRows,
    chunk_count,
    chunk_root,
    chunks_covering,
    layout,
    make_weight_slice,
    split_chunks,
    tensor_rows_range,
    weights_size,
)
from state.llm.steps import Op, Sampling, StepId, dependencies, run_step, weight_needs
from state.types import merkle_root

TINY = LlamaConfig(
    vocab=700,
    dim=48,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    head_dim=12,
    ffn_dim=80,
    max_ctx=64,
    rope_base=10000,
    norm_eps_num=1,
    norm_eps_den=100000,
    tied_embeddings=True,
    bos_id=1,
    eos_id=2,
)


@pytest.fixture(scope="module")
def small_blocks():
    """Shrink the weight budget so every matrix op is split into several row blocks."""
    old = st.WEIGHT_BUDGET
    st.WEIGHT_BUDGET = 2048
    st._plan.cache_clear()
    yield
    st.WEIGHT_BUDGET = old
    st._plan.cache_clear()


@pytest.fixture(scope="module")
def tiny(small_blocks):
    tensors = random_tensors(TINY, 7)
    data = build_model_file(TINY, tensors, codec.encode({"tokens": ["a", "b"]}))
    return TINY, tensors, data, IntModel(TINY, data)


def test_blocks_are_split(tiny):
    cfg = tiny[0]
    for op in (Op.O, Op.SWIGLU, Op.DOWN, Op.LOGITS):
        assert len(st.blocks(cfg, op)) > 1, Op(op).name


def test_config_roundtrip_and_bounds():
    m = TINY.to_map()
    assert LlamaConfig.from_map(codec.decode(codec.encode(m))) == TINY
    bad = [
        {**m, "dim": 0},
        {**m, "n_kv_heads": 3},
        {**m, "head_dim": 13},
        {**m, "max_ctx": 100000},
        {**m, "vocab": True},
        {**m, "norm_eps": [0, 1]},
        {**m, "bos": 700},
        {**m, "tied": 1},
        {k: v for k, v in m.items() if k != "eos"},
        {**m, "extra": 1},
        [1, 2],
    ]
    for b in bad:
        with pytest.raises(LlmError) as ei:
            LlamaConfig.from_map(b)
        assert isinstance(ei.value, AitbcError) and ei.value.reason == "llm_config"


def test_layout_and_slices(tiny):
    cfg, _, data, _ = tiny
    specs = layout(cfg)
    assert specs[0].offset == 0 and sum(s.nbytes for s in specs) == weights_size(cfg)
    assert all(a.offset + a.nbytes == b.offset for a, b in zip(specs, specs[1:], strict=False))
    root = chunk_root(data)
    assert root == merkle_root(split_chunks(data)) and len(data) > CHUNK_SIZE
    off, ln = tensor_rows_range(cfg, "blk.1.ffn_down", 3, 9)
    assert list(chunks_covering(off, ln)) == list(range(off // CHUNK_SIZE, (off + ln - 1) // CHUNK_SIZE + 1))
    chunks = split_chunks(data)
    # a slice straddling a chunk boundary
    spec = next(s for s in specs if s.offset < CHUNK_SIZE < s.offset + s.nbytes and s.dtype == "q8r")
    r = (CHUNK_SIZE - spec.offset) // spec.row_bytes - 1
    sl = make_weight_slice(cfg, data, spec.name, r, r + 2, chunks)
    assert len(sl.chunks) == 2
    rows = sl.verify(cfg, root, len(data))
    full = IntModel(cfg, data).weights.rows(spec.name, r, r + 2)
    assert np.array_equal(rows.q, full.q) and np.array_equal(rows.scale, full.scale)
    bad_chunk = bytearray(sl.chunks[0])
    bad_chunk[-1] ^= 1
    with pytest.raises(LlmError):
        type(sl)(sl.name, sl.row0, sl.row1, sl.first_chunk, (bytes(bad_chunk), sl.chunks[1]), sl.proofs).verify(
            cfg, root, len(data)
        )
    with pytest.raises(LlmError):
        sl.verify(cfg, bytes(32), len(data))
    with pytest.raises(LlmError):
        type(sl)(sl.name, sl.row0, sl.row1, sl.first_chunk + 1, sl.chunks, sl.proofs).verify(cfg, root, len(data))
    with pytest.raises(LlmError):  # rows that the carried chunks do not hold
        type(sl)(sl.name, 0, 2, sl.first_chunk, sl.chunks, sl.proofs).verify(cfg, root, len(data))
    assert chunk_count(len(data)) == len(chunks)


PROMPT = [1, 17, 250, 3, 99, 640, 5, 42]


def _check_all(model: IntModel, trace, prompt, sampling) -> int:
    cfg = model.cfg
    n = 0
    for step in trace.order():
        inputs = step_inputs(model, trace, step, prompt)
        tok = int(inputs[0][0]) if step.op == Op.EMBED else None
        w = model.step_weights(step, tok)
        out = trace.outputs[step]
        assert out.dtype == np.int32, step
        assert check_step(cfg, step, inputs, w, out, sampling), step
        n += 1
    return n


@pytest.mark.parametrize("sampling", [Sampling(), Sampling(7, 10, 5, b"seed")])
def test_every_step_rechecks(tiny, sampling):
    cfg, _, _, model = tiny
    toks, trace = generate(model, PROMPT, 6, sampling)
    assert len(toks) == 6
    assert trace.n_positions == len(PROMPT) + 5
    assert set(trace.outputs) == set(trace.order())
    n = _check_all(model, trace, PROMPT, sampling)
    assert n == len(step_order(cfg, len(PROMPT), trace.n_positions))
    sample_steps = [s for s in trace.order() if s.op == Op.SAMPLE]
    assert [int(trace.outputs[s][0]) for s in sample_steps] == toks
    # deterministic: same root twice
    toks2, trace2 = generate(model, PROMPT, 6, sampling)
    assert toks2 == toks and trace2.root() == trace.root()
    assert trace.leaves()[0] == trace_leaf(trace.order()[0], output_bytes(trace.outputs[trace.order()[0]]))


def test_step_by_step_equals_fast_path(tiny):
    """Run the whole forward from run_step alone (no fast path) and compare every output."""
    cfg, _, _, model = tiny
    sampling = Sampling()
    _, trace = generate(model, PROMPT, 3, sampling)
    mine: dict[StepId, np.ndarray] = {}
    toks = list(PROMPT)
    for step in trace.order():
        if step.op == Op.EMBED:
            tok = toks[step.token] if step.token < len(PROMPT) else int(mine[StepId(step.token - 1, 0, Op.SAMPLE)][0])
            inputs = [np.array([tok], dtype=np.int32)]
        else:
            tok = None
            inputs = [mine[d] for d in dependencies(cfg, step, len(PROMPT))]
        mine[step] = run_step(cfg, step, inputs, model.step_weights(step, tok), sampling)
        assert np.array_equal(mine[step], trace.outputs[step]), step


def test_sampling_temperature_changes_with_seed(tiny):
    _, _, _, model = tiny
    outs = {tuple(generate(model, PROMPT, 8, Sampling(20, 1, 20, bytes([i])), record=False)[0]) for i in range(4)}
    assert len(outs) > 1


def test_tampering_refused(tiny):
    cfg, _, _, model = tiny
    sampling = Sampling()
    _, trace = generate(model, PROMPT, 2, sampling)
    for step in [StepId(3, 1, Op.ATTN, 1), StepId(2, 0, Op.SWIGLU, 1), StepId(len(PROMPT) - 1, 0, Op.LOGITS, 0)]:
        inputs = step_inputs(model, trace, step, PROMPT)
        w = model.step_weights(step)
        out = trace.outputs[step]
        assert check_step(cfg, step, inputs, w, out)
        bad = output_bytes(out)
        bad = bad[:-1] + bytes([bad[-1] ^ 1])
        assert not check_step(cfg, step, inputs, w, bad)
        assert not check_step(cfg, step, inputs, w, out.astype(np.float32))
        # one changed weight row
        if w:
            w0 = w[0]
            q = w0.q.copy()
            q[0, 0] = np.int8(q[0, 0] + 1 if q[0, 0] < 100 else q[0, 0] - 1)
            w_bad = [WRows(w0.name, w0.row0, w0.scale, q), *w[1:]]
            assert not check_step(cfg, step, inputs, w_bad, out)
            # rows of another block or tensor are refused
            other = model.weights.rows(w0.name, w0.row0 + 1, w0.row0 + 1 + w0.q.shape[0]) if w0.row0 + 1 + w0.q.shape[0] <= model.weights.tensor(w0.name).q.shape[0] else None
            if other is not None:
                assert not check_step(cfg, step, inputs, [other, *w[1:]], out)
        # a changed input changes the output
        if inputs:
            x = inputs[0].copy()
            x[0] += 12345
            assert not check_step(cfg, step, [x, *inputs[1:]], w, out)
        # wrong input count
        assert not check_step(cfg, step, inputs[:-1], w, out)


def test_check_step_with_verified_slices(tiny):
    cfg, _, data, model = tiny
    root, size = chunk_root(data), len(data)
    _, trace = generate(model, PROMPT, 2)
    chunks = split_chunks(data)
    for step in [StepId(4, 1, Op.Q, 2), StepId(5, 0, Op.DOWN, 0), StepId(0, 0, Op.EMBED), StepId(7, 0, Op.FINAL_NORM)]:
        inputs = step_inputs(model, trace, step, PROMPT)
        tok = int(inputs[0][0]) if step.op == Op.EMBED else None
        slices = [make_weight_slice(cfg, data, n, r0, r1, chunks) for n, r0, r1 in weight_needs(cfg, step, tok)]
        w = [s.verify(cfg, root, size) for s in slices]
        assert check_step(cfg, step, inputs, w, trace.outputs[step])


def test_no_float_in_outputs_and_bounds(tiny):
    cfg, _, _, model = tiny
    _, trace = generate(model, PROMPT, 2)
    assert all(v.dtype == np.int32 for v in trace.outputs.values())
    with pytest.raises(LlmError):
        generate(model, [], 1)
    with pytest.raises(LlmError):
        generate(model, [cfg.vocab], 1)
    with pytest.raises(LlmError):
        generate(model, [1] * 60, 10)
    with pytest.raises(LlmError):
        Sampling(1, 1, 65, b"")
    with pytest.raises(LlmError):
        run_step(cfg, StepId(cfg.max_ctx, 0, Op.EMBED), [np.array([1], np.int32)], [])


def test_stop_ids(tiny):
    _, _, _, model = tiny
    toks, _ = generate(model, PROMPT, 10, record=False)
    stop = toks[2]
    toks2, trace = generate(model, PROMPT, 10, stop_ids={stop})
    assert toks2 == toks[: toks.index(stop) + 1]
    assert trace.n_positions == len(PROMPT) + len(toks2) - 1


def test_close_to_float_reference(tiny):
    cfg, tensors, _, model = tiny
    tokens = list(np.random.default_rng(3).integers(0, cfg.vocab, 40))
    tokens = [int(x) for x in tokens]
    ref = FloatLlama(cfg, tensors).forward(tokens)
    got = forward_logits(model, tokens).astype(np.float64) / 65536
    assert np.mean(np.argmax(ref, 1) == np.argmax(got, 1)) >= 0.9
    rel = np.abs(got - ref).max() / np.abs(ref).max()
    assert rel < 0.05, rel


def test_group_dot_is_exact_at_the_bounds():
    """The fast path's float32 group product equals the exact integer product at |a| = 2**14, |q| = 127,
    u = 255 and the largest inner size (8192), for one and several positions, with a partial last group."""
    from state.llm import fixed as fx
    from state.llm.generate import _Mat, group_dot
    from state.llm.modelfile import GROUP

    rng = np.random.default_rng(5)
    for k in (48, 1536, 8192):
        ng = -(-k // GROUP)
        q8 = 127 * rng.choice([-1, 1], (6, k))
        q8[0], q8[1] = 127, -127
        u = np.full((6, ng), 255, dtype=np.int64)
        u[5] = rng.integers(0, 256, ng)
        w = q8 * np.repeat(u, GROUP, axis=1)[:, :k]
        a = rng.choice([-(1 << 14), 1 << 14, (1 << 14) - 1, 1 - (1 << 14)], (4, k))
        a[0], a[1] = 1 << 14, -(1 << 14)
        qp = np.zeros((6, ng * GROUP), dtype=np.float32)
        qp[:, :k] = q8
        m = _Mat(np.ones(6, np.int64), w.astype(np.int16), np.ascontiguousarray(qp.reshape(6, ng, GROUP).transpose(1, 0, 2)),
                 np.ascontiguousarray(u.T, dtype=np.float64))
        exact = a.astype(np.int64) @ w.T.astype(np.int64)  # int64: |acc| <= 2**42
        assert exact[0, 0] == k * (1 << 14) * 127 * 255  # the bound itself (2**42 at k = 8192)
        for t in (1, 4):
            assert np.array_equal(group_dot(a[:t], m), exact[:t])
        assert np.array_equal(fx.exact_dot(a, w), exact)


def test_on_token_sees_each_token_and_can_stop_the_generation(tiny):
    """A miner's deadline is checked between tokens: ``on_token`` sees every token before the next
    forward pass, and what it raises stops the generation there."""
    _, _, _, model = tiny
    full, _ = generate(model, [1, 2, 3], 6)
    seen: list[int] = []
    generate(model, [1, 2, 3], 6, on_token=seen.append)
    assert seen == full[:-1]  # the last token needs no further pass

    class Stop(Exception):
        pass

    def stop_after_two(tok: int) -> None:
        seen.append(tok)
        if len(seen) == 2:
            raise Stop

    seen.clear()
    with pytest.raises(Stop):
        generate(model, [1, 2, 3], 6, on_token=stop_after_two)
    assert seen == full[:2]
