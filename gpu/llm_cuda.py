"""``llm-generate`` on the PyCUDA backend: the integer matmuls, the attention over the KV cache and SwiGLU on the
GPU (``gpu/kernels/llm.cu``), bit-exact with :func:`state.llm.fixed.matmul_q8` and ``generate``'s
``_attention_heads`` and ``_swiglu``; everything else of :func:`state.llm.generate.generate` on the host.

On the device: for every product of the forward pass (Q/K/V stacked, O, gate/up stacked, down, and the
LM head) the per-row :func:`~state.llm.fixed.quant_shift` of the activations (``llm_quant_rows``) and the
exact int64 matmul with the requantisation and int32 saturation (``llm_matmul_q8``). The packed weights
(int8 ``q``, uint8 group sub-scales ``u``, int32 row scales ``m``) are uploaded once per loaded model and
kept while that model is in the kind's model cache (at most as many models as the cache holds).

Attention (``llm_attention``, heads of ``head_dim <= 256``): each generation keeps its own KV cache on the
device (per layer int32 ``[max_ctx, n_kv_heads, 2 * hd + 1]``: the key through quant_shift, the value, the
key's exponent; :func:`pack_kv_rows`), the new positions uploaded as the host cache gets them; one block per
query row and KV head computes the scores, the exp weights (``fixed._exp_r16_table`` on the device) and
the rounded weighted sum, with NumPy's int64 semantics (floor division, shifts by 64 or more).

SwiGLU (``llm_swiglu``) runs on the gate/up product's output buffer right after ``llm_matmul_q8``: only its
result comes back (the ``gate_up`` hook of ``generate``).

On the host (NumPy, the same code as ``generate``): embedding, RMSNorm (its ``isqrt`` needs integers beyond
128 bits in corner cases), RoPE, residual adds, top-k and sampling; the host KV cache is kept too
(the trace and a fallback read it).

:func:`generate_with` is ``generate`` with the matmul (and attention) passed in: with :func:`numpy_mm` it is
``generate`` itself (``tests/test_gpu.py`` checks the trace roots), with :meth:`PyCudaLlm.generate` both run
on the GPU. The backend uses the CUDA path only after :func:`llm_self_test` (a seeded tiny model with awkward
sizes: prefill over two position tiles and partial row tiles, then decode steps) gave every step output
bit for bit equal to NumPy; otherwise it logs one line and the kind runs with NumPy.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from state.llm import fixed as fx
from state.llm.config import LlamaConfig, LlmError
from state.llm.generate import (
    Attention,
    GateUpSwiGLU,
    IntModel,
    MatMul,
    Trace,
    generate,
    numpy_matmul,
    swiglu_halves,
)
from state.llm.modelfile import GROUP, encode_i32, encode_q8r, layout, tensor_spec
from state.llm.steps import Sampling

log = logging.getLogger("gpu.llm_cuda")

MODULE = "llm"
#: the extern "C" __global__ entry points of llm.cu
KERNELS = ("llm_quant_rows", "llm_matmul_q8", "llm_attention", "llm_swiglu")
#: PyCUDA ``prepare`` formats of their parameters (P: a device pointer, i: int32, q: int64), in order
ARG_FORMATS = {"llm_quant_rows": "PPPiii", "llm_matmul_q8": "PPPPPPiii", "llm_attention": "PPPPPPiiiiqq",
               "llm_swiglu": "PPPiiq"}
ATTN_MAX_HD = 256  # the attention kernel keeps a query row in shared memory
THREADS = 256  # LLM_THREADS
ROWS = 8  # LLM_ROWS: output rows per block
TB = 8  # LLM_TB: positions per block
I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1



# -- host-side launch shapes and argument packing (pure functions) --------------------------------------------


def groups(k: int) -> int:
    """Number of 32-weight groups of an inner size ``k``."""
    return -(-k // GROUP)


def padded_k(k: int) -> int:
    """Row length of the packed int8 weights and of the int16 activations: ``k`` rounded up to 32."""
    return groups(k) * GROUP


def quant_launch(t: int) -> tuple[tuple[int, int, int], tuple[int, int]]:
    """(block, grid) of ``llm_quant_rows`` for ``t`` rows: one block per row."""
    return (THREADS, 1, 1), (max(1, t), 1)


def matmul_launch(t: int, o: int) -> tuple[tuple[int, int, int], tuple[int, int]]:
    """(block, grid) of ``llm_matmul_q8`` for ``t`` positions and ``o`` output rows."""
    return (THREADS, 1, 1), (math.ceil(o / ROWS), math.ceil(t / TB))


def attention_launch(t: int, grp: int, nkv: int) -> tuple[tuple[int, int, int], tuple[int, int]]:
    """(block, grid) of ``llm_attention`` for ``t`` positions: one block per query row and KV head."""
    return (THREADS, 1, 1), (max(1, t * grp), nkv)


def swiglu_launch(t: int, f: int) -> tuple[tuple[int, int, int], tuple[int, int]]:
    """(block, grid) of ``llm_swiglu`` for ``t`` positions of ``f`` FFN units: one thread per output."""
    return (THREADS, 1, 1), (max(1, math.ceil(t * f / THREADS)), 1)


def pack_kv_rows(cache: Any, layer: int, s0: int, s1: int) -> np.ndarray:
    """Positions ``s0 .. s1 - 1`` of a :class:`state.llm.generate._Cache` layer as ``llm_attention`` reads
    them: int32 [s1 - s0, n_kv_heads, 2 * hd + 1] = (the key through quant_shift, the value, its exponent)."""
    ka, v, sk = cache.ka[layer][:, s0:s1], cache.v[layer][:, s0:s1], cache.sk[layer][:, s0:s1]
    nkv, n, hd = ka.shape
    out = np.empty((n, nkv, 2 * hd + 1), dtype=np.int32)
    out[:, :, :hd] = ka.transpose(1, 0, 2)
    out[:, :, hd : 2 * hd] = v.transpose(1, 0, 2)
    out[:, :, 2 * hd] = sk.T
    return out


def attention_constants(head_dim: int) -> tuple[int, int]:
    """``(c, ln2)`` of ``llm_attention``: ``isqrt(2**32 // hd)`` and ``ln 2`` in Q32 (``fixed.exp_tables``)."""
    return math.isqrt((1 << 32) // head_dim), int(fx.exp_tables()[2])


@dataclass(frozen=True, slots=True)
class PackedMat:
    """A q8r matrix (rows of several tensors stacked) as the kernel reads it."""

    q: np.ndarray  # int8 [O, Kp], zero padded
    u: np.ndarray  # uint8 [O, G]
    m: np.ndarray  # int32 [O], Q36
    k: int

    @property
    def o(self) -> int:
        return int(self.q.shape[0])

    @property
    def g(self) -> int:
        return int(self.u.shape[1])

    @property
    def nbytes(self) -> int:
        return self.q.nbytes + self.u.nbytes + self.m.nbytes


def pack_q8r(cfg: LlamaConfig, data: bytes, names: Sequence[str]) -> PackedMat:
    """The q8r tensors ``names`` (same inner size) of a model file, rows stacked in that order, as
    :class:`PackedMat`; the weight of row r, column k is ``q[r, k] * u[r, k // 32]`` (times ``m[r] / 2**36``)."""
    qs, us, ms = [], [], []
    k = -1
    for name in names:
        spec = tensor_spec(cfg, name)
        rows, kk = spec.shape
        if k not in (-1, kk):
            raise LlmError(f"pack_q8r: {name} has inner size {kk}, not {k}", "llm_tensor")
        k = kk
        ng = groups(kk)
        raw = np.frombuffer(data, dtype=np.uint8, count=spec.nbytes, offset=spec.offset).reshape(rows, spec.row_bytes)
        q = np.zeros((rows, ng * GROUP), dtype=np.int8)
        q[:, :kk] = raw[:, 4 + ng :].view(np.int8)
        qs.append(q)
        us.append(raw[:, 4 : 4 + ng])
        ms.append(raw[:, :4].copy().view("<i4").reshape(-1))
    return PackedMat(
        np.ascontiguousarray(np.concatenate(qs)),
        np.ascontiguousarray(np.concatenate(us)),
        np.ascontiguousarray(np.concatenate(ms), dtype=np.int32),
        k,
    )


def mat_keys(cfg: LlamaConfig) -> list[tuple[str, ...]]:
    """Every matrix (stacked tensor names) that :func:`generate_with` multiplies by, in order."""
    keys: list[tuple[str, ...]] = []
    for ly in range(cfg.n_layers):
        p = f"blk.{ly}."
        keys += [
            (p + "attn_q", p + "attn_k", p + "attn_v"),
            (p + "attn_output",),
            (p + "ffn_gate", p + "ffn_up"),
            (p + "ffn_down",),
        ]
    keys.append(("output",))
    return keys


# -- generate with the matmul passed in ---------------------------------------------------------------------


def numpy_mm(model: IntModel) -> MatMul:
    """The NumPy matmul of ``generate``: ``sat32(mat_q8(x, model.mat(*names)))`` as int64."""
    return numpy_matmul(model)


def generate_with(
    model: IntModel,
    prompt_ids: list[int],
    max_new_tokens: int,
    sampling: Sampling | None,
    stop_ids: frozenset[int] | set[int] | tuple[int, ...],
    mm: MatMul,
    record: bool = True,
    on_token: Callable[[int], None] | None = None,
    attn: Attention | None = None,
    gate_up: GateUpSwiGLU | None = None,
) -> tuple[list[int], Trace]:
    """:func:`state.llm.generate.generate` with the matmul ``mm`` (and the attention ``attn``, the gate/up
    product with SwiGLU ``gate_up``) passed in (same arguments, same result): the one forward pass of
    ``state/llm/generate.py``, those on the device."""
    return generate(model, prompt_ids, max_new_tokens, sampling, stop_ids, record=record, mm=mm, on_token=on_token,
                    attn=attn, gate_up=gate_up)


# -- seeded random models (self-test, tests, bench) -----------------------------------------------------------

#: The self-test model: inner sizes not multiples of 32 (padded groups), output sizes not multiples of 8
#: (partial row tiles), untied head; the prompt spans two position tiles.
SELFTEST_CFG = LlamaConfig(vocab=301, dim=72, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=18, ffn_dim=100,
                           max_ctx=64, rope_base=10000, norm_eps_num=1, norm_eps_den=100000,
                           tied_embeddings=False, bos_id=0, eos_id=1)
SELFTEST_PROMPT = [5, 17, 300, 42, 0, 99, 123, 7, 250, 64, 3]
SELFTEST_NEW = 4
SELFTEST_SAMPLING = Sampling(temperature_num=7, temperature_den=10, top_k=8, seed=b"\x61" * 32)


def random_model_bytes(cfg: LlamaConfig, seed: int = 1) -> bytes:
    """The weights section of a seeded random model (real weights ~ N(0, 1/in), embeddings ~ N(0, 1),
    gains ~ 1), enough for :class:`IntModel` (no tokenizer section)."""
    rng = np.random.default_rng(seed)
    parts = []
    for spec in layout(cfg):
        if spec.dtype == "i32":
            parts.append(encode_i32(rng.integers(45000, 85000, spec.shape[0], dtype=np.int64)))
            continue
        rows, k = spec.shape
        q = rng.integers(-127, 128, (rows, k), dtype=np.int8)
        u = rng.integers(128, 256, (rows, groups(k)), dtype=np.uint8)
        sd = 1.0 if spec.name in ("tok_embd", "output") else 1.0 / math.sqrt(k)
        m = np.full(rows, int(sd * 2**36 / (73.0 * 192.0)), dtype=np.int64)  # q*u has std ~73*192
        parts.append(encode_q8r(np.minimum(m, 1 << 28), u, q))
    return b"".join(parts)


# -- the CUDA path ------------------------------------------------------------------------------------------


class _DeviceModel:
    """One model's packed matrices on the device (allocations freed on the GPU thread)."""

    def __init__(self, model: IntModel) -> None:
        self.ref = weakref.ref(model)
        self.mats: dict[tuple[str, ...], tuple[Any, Any, Any, tuple[int, int]]] = {}  # q, u, m, (O, G)
        self.nbytes = 0

    def free(self) -> None:
        for q, u, m, _p in self.mats.values():
            q.free()
            u.free()
            m.free()
        self.mats.clear()


def _outside_i32(x: np.ndarray) -> bool:
    """Whether int64 rows hold a value the int32 upload cannot carry (never in ``generate``: its product
    inputs are saturated; such rows go to NumPy)."""
    return bool(x.size) and (int(x.min()) < I32_MIN or int(x.max()) > I32_MAX)


class _DeviceKV:
    """One generation's KV cache on the device: per layer int32 [max_ctx, n_kv_heads, 2 * hd + 1]
    (:func:`pack_kv_rows`), allocated on first use, positions uploaded as the host cache gets them."""

    def __init__(self, drv: Any, cfg: LlamaConfig) -> None:
        self.drv, self.cfg = drv, cfg
        self.n = [0] * cfg.n_layers
        self._bufs: list[Any] = [None] * cfg.n_layers

    def layer(self, ly: int) -> Any:
        if self._bufs[ly] is None:
            cfg = self.cfg
            self._bufs[ly] = self.drv.mem_alloc(4 * cfg.max_ctx * cfg.n_kv_heads * (2 * cfg.head_dim + 1))
        return self._bufs[ly]

    def free(self) -> None:
        for b in self._bufs:
            if b is not None:
                b.free()
        self._bufs = [None] * self.cfg.n_layers


class PyCudaLlm:
    """The CUDA path of ``llm-generate`` on a :class:`~gpu.pycuda_backend.PyCudaBackend`: compiles
    ``llm.cu`` on first use, keeps up to ``max_models`` models' weights on the device and runs
    :func:`generate_with` on the backend's GPU thread with the device matmul."""

    def __init__(self, backend: Any, *, max_models: int = 4, options: list[str] | None = None) -> None:
        self.backend = backend
        self.max_models = max(1, max_models)
        self.options = list(options or [])
        self._fns: dict[str, Any] = {}
        self._module: Any = None
        self._models: OrderedDict[int, _DeviceModel] = OrderedDict()
        self._scratch: dict[str, tuple[Any, int]] = {}
        self.uploads = 0
        self.timings: dict[str, float] = {"matmul_s": 0.0, "calls": 0, "attention_s": 0.0}
        self._exp_d: Any = None  # fixed._exp_r16_table on the device (llm_attention)

    # -- GPU thread only -------------------------------------------------------------------------------------
    def _on_gpu(self) -> bool:
        return threading.current_thread() is self.backend._thread

    def _run(self, fn: Callable[[], Any]) -> Any:
        return fn() if self._on_gpu() else self.backend._call(fn)

    def _fn(self, name: str) -> Any:
        fn = self._fns.get(name)
        if fn is None:
            if self._module is None:
                from pycuda.compiler import SourceModule

                from .kernels import source

                self._module = SourceModule(source(MODULE), no_extern_c=True, options=self.options or None)
            fn = self._module.get_function(name)
            fn.prepare(ARG_FORMATS[name])  # prepared_call packs the arguments without inspecting each one
            self._fns[name] = fn
        return fn

    def _buf(self, name: str, nbytes: int) -> Any:
        hit = self._scratch.get(name)
        if hit is not None and hit[1] >= nbytes:
            return hit[0]
        if hit is not None:
            hit[0].free()
        size = max(256, nbytes, 2 * (hit[1] if hit else 0))
        buf = self.backend._drv.mem_alloc(size)
        self._scratch[name] = (buf, size)
        return buf

    def _evict(self, keep: int | None = None) -> None:
        for key in [k for k, d in self._models.items() if d.ref() is None and k != keep]:
            self._models.pop(key).free()
        while len(self._models) > self.max_models:
            _k, dm = self._models.popitem(last=False)
            dm.free()

    def _device_model(self, model: IntModel) -> _DeviceModel:
        key = id(model)
        dm = self._models.get(key)
        if dm is not None and dm.ref() is model:
            self._models.move_to_end(key)
            return dm
        if dm is not None:  # a dead model's id was reused
            self._models.pop(key).free()
        self._evict()
        drv = self.backend._drv
        dm = _DeviceModel(model)
        try:
            for names in mat_keys(model.cfg):
                p = pack_q8r(model.cfg, model._data, names)
                q, u, m = drv.to_device(p.q), drv.to_device(p.u), drv.to_device(p.m)
                dm.mats[names] = (q, u, m, (p.o, p.g))
                dm.nbytes += p.nbytes
        except BaseException:
            dm.free()
            raise
        self._models[key] = dm
        self.uploads += 1
        self._evict(keep=key)
        return dm

    def _mm(self, model: IntModel, dm: _DeviceModel, x: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
        x = np.asarray(x, dtype=np.int64)
        if _outside_i32(x):
            return numpy_mm(model)(x, names)
        t0 = time.perf_counter()
        yd, (t, o) = self._product(dm, x, names)
        y = np.empty((t, o), dtype=np.int32)
        self.backend._drv.memcpy_dtoh(y, yd)
        self.timings["matmul_s"] += time.perf_counter() - t0
        self.timings["calls"] += 1
        return y.astype(np.int64)

    def _gate_up(self, model: IntModel, dm: _DeviceModel, x: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
        """The gate/up product and its SwiGLU on the device (``llm_swiglu`` on the product's output buffer):
        only the SwiGLU output comes back."""
        x = np.asarray(x, dtype=np.int64)
        if _outside_i32(x):
            return swiglu_halves(numpy_mm(model)(x, names))
        t0 = time.perf_counter()
        yd, (t, o) = self._product(dm, x, names)
        f = o // 2
        swd = self._buf("sw", 4 * t * f)
        block, grid = swiglu_launch(t, f)
        self._fn("llm_swiglu").prepared_call(grid, block, yd, self._exp_table(), swd, t, f, int(fx.exp_tables()[2]))
        sw = np.empty((t, f), dtype=np.int32)
        self.backend._drv.memcpy_dtoh(sw, swd)
        self.timings["matmul_s"] += time.perf_counter() - t0
        self.timings["calls"] += 1
        return sw.astype(np.int64)

    def _product(self, dm: _DeviceModel, x: np.ndarray, names: tuple[str, ...]) -> tuple[Any, tuple[int, int]]:
        """Upload ``x`` (int32-range rows) and run quant + matmul into the ``y`` scratch buffer (not read back)."""
        qd, ud, md, (o, g) = dm.mats[names]
        t, k = x.shape
        kp = g * GROUP
        drv = self.backend._drv
        xd = self._buf("x", 4 * t * k)
        ad, sd, yd = self._buf("a", 2 * t * kp), self._buf("s", 4 * t), self._buf("y", 4 * t * o)
        drv.memcpy_htod(xd, np.ascontiguousarray(x, dtype=np.int32))
        block, grid = quant_launch(t)
        self._fn("llm_quant_rows").prepared_call(grid, block, xd, ad, sd, k, kp, fx.QBITS)
        block, grid = matmul_launch(t, o)
        self._fn("llm_matmul_q8").prepared_call(grid, block, ad, sd, qd, ud, md, yd, t, o, g)
        return yd, (t, o)

    def _exp_table(self) -> Any:
        if self._exp_d is None:
            self._exp_d = self.backend._drv.to_device(np.ascontiguousarray(fx._exp_r16_table(), dtype=np.int64))
        return self._exp_d

    def _attention(self, kv: _DeviceKV, ly: int, qh: np.ndarray, pos: np.ndarray, cache: Any, n_s: int) -> np.ndarray:
        """``_attention_heads`` on the device, over its copy of the KV cache (the new positions uploaded)."""
        cfg = kv.cfg
        drv = self.backend._drv
        t0 = time.perf_counter()
        s0 = kv.n[ly]
        if n_s > s0:
            rows = pack_kv_rows(cache, ly, s0, n_s)
            drv.memcpy_htod(int(kv.layer(ly)) + s0 * rows[0].nbytes, rows)
            kv.n[ly] = n_s
        t, nh, hd = qh.shape
        grp, nkv = cfg.group, cfg.n_kv_heads
        qd = self._buf("attn_q", 4 * t * nh * hd + 4 * t)
        drv.memcpy_htod(qd, np.concatenate([np.ascontiguousarray(qh, dtype=np.int32).reshape(-1),
                                            np.asarray(pos, dtype=np.int32)]))
        ed = self._buf("attn_e", 8 * nkv * t * grp * n_s)
        od = self._buf("attn_out", 8 * t * nh * hd)
        c, ln2 = attention_constants(hd)
        block, grid = attention_launch(t, grp, nkv)
        self._fn("llm_attention").prepared_call(grid, block, qd, int(qd) + 4 * t * nh * hd, kv.layer(ly),
                                                self._exp_table(), ed, od, n_s, nkv, grp, hd, c, ln2)
        out = np.empty((t, nh * hd), dtype=np.int64)
        drv.memcpy_dtoh(out, od)
        self.timings["attention_s"] += time.perf_counter() - t0
        return out

    def forget(self, model: IntModel) -> None:
        """Free ``model``'s weights on the device now (they are re-uploaded if it runs again)."""

        def drop() -> None:
            dm = self._models.get(id(model))
            if dm is not None and dm.ref() is model:
                self._models.pop(id(model)).free()

        self._run(drop)

    @property
    def device_bytes(self) -> int:
        """Bytes of model weights held on the device."""
        return sum(dm.nbytes for dm in self._models.values())

    def release(self) -> None:
        """Free every device buffer (on the GPU thread, e.g. before the backend detaches its context)."""

        def free() -> None:
            for dm in self._models.values():
                dm.free()
            self._models.clear()
            for buf, _n in self._scratch.values():
                buf.free()
            self._scratch.clear()
            if self._exp_d is not None:
                self._exp_d.free()
                self._exp_d = None
            self._fns.clear()
            self._module = None

        self._run(free)

    # -- any thread ------------------------------------------------------------------------------------------
    def generate(
        self,
        model: IntModel,
        prompt_ids: list[int],
        max_new_tokens: int,
        sampling: Sampling | None = None,
        stop_ids: frozenset[int] | set[int] | tuple[int, ...] = (),
        record: bool = True,
        on_token: Callable[[int], None] | None = None,
    ) -> tuple[list[int], Trace]:
        """:func:`state.llm.generate.generate` with the matmuls on the GPU (runs on the GPU thread)."""

        def job() -> tuple[list[int], Trace]:
            dm = self._device_model(model)
            kv = _DeviceKV(self.backend._drv, model.cfg) if model.cfg.head_dim <= ATTN_MAX_HD else None
            try:
                attn = None if kv is None else partial(self._attention, kv)
                return generate_with(model, prompt_ids, max_new_tokens, sampling, stop_ids,
                                     lambda x, names: self._mm(model, dm, x, names), record, on_token, attn,
                                     lambda x, names: self._gate_up(model, dm, x, names))
            finally:
                if kv is not None:
                    kv.free()

        return self._run(job)

    def warm(self) -> None:
        """Compile (or load from PyCUDA's cache) the kernels now."""
        self._run(lambda: [self._fn(n) for n in KERNELS])


def trace_mismatch(want: Trace, got: Trace) -> str | None:
    """None when both traces hold the same steps with bit-identical outputs, else the first difference."""
    a, b = want.items(), got.items()
    if len(a) != len(b):
        return f"{len(b)} steps, expected {len(a)}"
    for (sa, oa), (sb, ob) in zip(a, b, strict=True):
        if sa != sb:
            return f"step {sb!r} where {sa!r} was expected"
        if oa != ob:
            return f"step {sa!r} output differs"
    return None


def llm_self_test(engine: PyCudaLlm, *, cfg: LlamaConfig = SELFTEST_CFG, seed: int = 3) -> str | None:
    """Run the seeded self-test model (prefill + decode, with the trace) with NumPy and on ``engine``;
    None when every step output is bit-identical, else why not (a CUDA error counts as a failure)."""
    model = IntModel(cfg, random_model_bytes(cfg, seed))
    want_tok, want = generate_with(model, SELFTEST_PROMPT, SELFTEST_NEW, SELFTEST_SAMPLING, (), numpy_mm(model))
    try:
        engine.warm()
        got_tok, got = engine.generate(model, SELFTEST_PROMPT, SELFTEST_NEW, SELFTEST_SAMPLING)
        engine.forget(model)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    why = trace_mismatch(want, got)
    if why is None and got_tok != want_tok:
        why = f"tokens {got_tok} != {want_tok}"
    return why


__all__ = [
    "ARG_FORMATS", "ATTN_MAX_HD", "KERNELS", "PackedMat", "attention_constants", "attention_launch", "pack_kv_rows", "swiglu_launch", "PyCudaLlm", "SELFTEST_CFG", "generate_with", "llm_self_test", "mat_keys",
    "matmul_launch", "numpy_mm", "pack_q8r", "padded_k", "quant_launch", "random_model_bytes", "trace_mismatch",
]
