"""The PyCUDA compute backend: our own kernels (``gpu/kernels/*.cu``) on CUDA device 0.

PyCUDA contexts are bound to threads, so the backend owns ONE worker thread: it creates the context
there (``Device.make_context``, then pops it), and runs every piece of GPU work there between
``ctx.push()`` and ``Context.pop()``; other threads only submit closures and wait for their futures.
Each kernel module is compiled once, when the backend starts (``SourceModule`` runs nvcc the first
time and then loads the cubin from its disk cache), and kept until :meth:`PyCudaBackend.close`, which
unloads them and detaches the context on the same thread. A backend whose kernels do not compile
(e.g. no ``nvcc`` on PATH) fails to start with :class:`BackendUnavailable`. Device buffers are freed
explicitly before the context is popped.

Compute time is measured with CUDA events from the first upload or generator launch to the end of
the download of the result.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from state.kinds.counter import derive_key
from state.kinds.mlp_f32 import S_B1, S_B2, S_W1, S_W2, S_X

from .backend import BackendInfo, BackendUnavailable
from .kernels import NAMES, source
from .kinds.base import Deadline, JobExecutionError, JobKind

T = TypeVar("T")
log = logging.getLogger("gpu.pycuda_backend")
GEN_THREADS = 256
GEN_MAX_BLOCKS = 4096
GEMM_TILE = 64
GEMM_THREADS = 256
HASH_THREADS = 128


def ensure_cache_dir() -> None:
    """Create ``$PYCUDA_CACHE_DIR`` when it is set: PyCUDA creates only its default cache folder, and with a
    missing one every ``SourceModule`` fails (it cannot write the cubin it just compiled)."""
    cache = os.environ.get("PYCUDA_CACHE_DIR")
    if cache and "PYCUDA_DISABLE_CACHE" not in os.environ:
        os.makedirs(cache, exist_ok=True)


class PyCudaBackend:
    """Runs jobs on the GPU from a dedicated thread that owns the CUDA context."""

    def __init__(self, info: BackendInfo, device_index: int = 0) -> None:
        self.info = info
        self._index = device_index
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future] | None] = (
            queue.SimpleQueue()
        )
        self._modules: dict[str, Any] = {}
        self.llm: Any = None  # gpu.llm_cuda.PyCudaLlm once its self-test passed (enable_llm)
        self.llm_reason = "the llm self-test has not run"
        self._closed = False
        self._lock = threading.Lock()
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._main, args=(ready,), name="aitbc-gpu", daemon=True)
        self._thread.start()
        ready.result()  # BackendUnavailable if the context could not be created

    # -- the GPU thread ------------------------------------------------------------------------------
    def _main(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            import pycuda.driver as drv

            drv.init()
            ctx = drv.Device(self._index).make_context()  # created current on this thread
            drv.Context.pop()
        except Exception as exc:
            ready.set_exception(BackendUnavailable(f"cannot create a CUDA context: {type(exc).__name__}: {exc}"))
            return
        self._drv, self._ctx = drv, ctx
        ctx.push()
        try:
            ensure_cache_dir()
            for module in NAMES:
                self._module(module)
        except Exception as exc:
            ready.set_exception(BackendUnavailable(f"CUDA kernels unusable: {exc}"))
            self._modules.clear()
            drv.Context.pop()
            ctx.detach()
            return
        drv.Context.pop()
        ready.set_result(None)
        while (item := self._queue.get()) is not None:
            fn, fut = item
            if not fut.set_running_or_notify_cancel():
                continue
            ctx.push()
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)
            finally:
                drv.Context.pop()
        ctx.push()
        try:
            if self.llm is not None:  # its device buffers and module, before the context goes
                self.llm.release()
            self._modules.clear()  # module unload needs the context current
        finally:
            drv.Context.pop()
            ctx.detach()

    def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the GPU thread with the context current; wait for its result."""
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise JobExecutionError("backend", "the PyCUDA backend is closed")
            self._queue.put((fn, fut))
        return fut.result()

    def close(self) -> None:
        """Stop the GPU thread, unloading modules and detaching the context (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._thread.join(timeout=30)

    # -- helpers (GPU thread only) -------------------------------------------------------------------
    def _module(self, module: str) -> Any:
        mod = self._modules.get(module)
        if mod is None:
            from pycuda.compiler import SourceModule

            try:
                mod = SourceModule(source(module), no_extern_c=True)
            except Exception as exc:
                raise JobExecutionError("backend", f"compiling {module}.cu failed: {exc}") from exc
            self._modules[module] = mod
        return mod

    def _fn(self, module: str, name: str) -> Any:
        return self._module(module).get_function(name)

    def _gen(self, kernel: str, out: Any, key: int, stream: int, count: int) -> None:
        blocks = max(1, min(GEN_MAX_BLOCKS, math.ceil(count / GEN_THREADS)))
        self._fn("counter", kernel)(
            out, np.uint64(key), np.uint64(stream), np.uint64(0), np.uint64(count),
            block=(GEN_THREADS, 1, 1), grid=(blocks, 1),
        )

    def _gemm(self, kernel: str, *args: Any, m: int, n: int) -> None:
        grid = (math.ceil(n / GEMM_TILE), math.ceil(m / GEMM_TILE))
        self._fn("gemm", kernel)(*args, block=(GEMM_THREADS, 1, 1), grid=grid)

    def _alloc(self, held: list, nbytes: int) -> Any:
        buf = self._drv.mem_alloc(max(4, nbytes))
        held.append(buf)
        return buf

    def _timed(self, body: Callable[[list], np.ndarray]) -> tuple[np.ndarray, float]:
        """Run ``body(held)`` between two events; free every buffer it allocated into ``held``."""
        drv = self._drv
        held: list = []
        start, end = drv.Event(), drv.Event()
        try:
            start.record()
            out = body(held)
            end.record()
            end.synchronize()
            return out, start.time_till(end) / 1e3
        finally:
            for buf in held:
                buf.free()

    # -- kinds ---------------------------------------------------------------------------------------
    def _matmul(self, kind: JobKind, params: dict, input: bytes | None) -> tuple[np.ndarray, float]:
        m, n, k = params["m"], params["n"], params["k"]
        host = None if "seed" in params else kind.operands(params, input)

        def body(held: list) -> np.ndarray:
            a, b, c = (self._alloc(held, 4 * s) for s in (m * k, k * n, m * n))
            if host is None:
                key = derive_key(kind.name, kind.version, params["seed"])
                self._gen("gen_u32", a, key, 0, m * k)
                self._gen("gen_u32", b, key, 1, k * n)
            else:
                self._drv.memcpy_htod(a, np.array(host[0], dtype=np.uint32, order="C"))
                self._drv.memcpy_htod(b, np.array(host[1], dtype=np.uint32, order="C"))
            self._gemm("matmul_u32", a, b, c, np.int32(m), np.int32(n), np.int32(k), m=m, n=n)
            out = np.empty((m, n), dtype=np.uint32)
            self._drv.memcpy_dtoh(out, c)
            return out

        return self._timed(body)

    def _hash_chain(self, kind: JobKind, params: dict, input: bytes | None) -> tuple[np.ndarray, float]:
        chains, iterations = params["chains"], params["iterations"]
        seed_words = np.frombuffer(params["seed"], dtype=">u4").astype(np.uint32)

        def body(held: list) -> np.ndarray:
            seed_d = self._alloc(held, 32)
            out_d = self._alloc(held, 32 * chains)
            self._drv.memcpy_htod(seed_d, seed_words)
            self._fn("sha256", "hash_chain")(
                seed_d, out_d, np.uint32(chains), np.uint32(iterations),
                block=(HASH_THREADS, 1, 1), grid=(math.ceil(chains / HASH_THREADS), 1),
            )
            words = np.empty(8 * chains, dtype=np.uint32)
            self._drv.memcpy_dtoh(words, out_d)
            return words.view(np.uint8).reshape(chains, 32).copy()

        return self._timed(body)

    def _mlp_setup(self, kind: JobKind, params: dict, input: bytes | None, held: list) -> tuple:
        """Device buffers (x, w1, b1, h, w2, b2, y) with inputs and weights in place."""
        b, i, h, o = params["batch"], params["d_in"], params["d_hidden"], params["d_out"]
        x_host = None if input is None else kind.inputs(params, input)
        key = derive_key(kind.name, kind.version, params["seed"])
        x, w1, b1, hid, w2, b2, y = (self._alloc(held, 4 * s) for s in (b * i, i * h, h, b * h, h * o, o, b * o))
        if x_host is None:
            self._gen("gen_f32", x, key, S_X, b * i)
        else:
            self._drv.memcpy_htod(x, np.array(x_host, dtype=np.float32, order="C"))
        self._gen("gen_f32", w1, key, S_W1, i * h)
        self._gen("gen_f32", b1, key, S_B1, h)
        self._gen("gen_f32", w2, key, S_W2, h * o)
        self._gen("gen_f32", b2, key, S_B2, o)
        return x, w1, b1, hid, w2, b2, y

    def _mlp_layers(self, params: dict, bufs: tuple) -> None:
        b, i, h, o = params["batch"], params["d_in"], params["d_hidden"], params["d_out"]
        x, w1, b1, hid, w2, b2, y = bufs
        self._gemm("sgemm_bias_act", x, w1, b1, hid, np.int32(b), np.int32(h), np.int32(i), np.int32(1), m=b, n=h)
        self._gemm("sgemm_bias_act", hid, w2, b2, y, np.int32(b), np.int32(o), np.int32(h), np.int32(0), m=b, n=o)

    def _mlp(self, kind: JobKind, params: dict, input: bytes | None) -> tuple[np.ndarray, float]:
        def body(held: list) -> np.ndarray:
            bufs = self._mlp_setup(kind, params, input, held)
            self._mlp_layers(params, bufs)
            out = np.empty((params["batch"], params["d_out"]), dtype=np.float32)
            self._drv.memcpy_dtoh(out, bufs[-1])
            return out

        return self._timed(body)

    _RUNNERS = {"matmul-u32": _matmul, "hash-chain": _hash_chain, "mlp-f32": _mlp}
    LLM_KIND = "llm-generate"

    # -- llm-generate: the integer matmuls on the GPU, only after its self-test (gpu/llm_cuda.py) --------
    def enable_llm(self) -> bool:
        """Run the llm self-test (a seeded tiny model's generation, every step output against NumPy, bit for
        bit); use the CUDA path for ``llm-generate`` only when it passes. The ``__dp2a`` kernels are tried
        first, then plain int32 multiply-adds (``LLM_PLAIN_MAC``). On failure logs one line and leaves
        the kind on NumPy; never raises."""
        from .llm_cuda import PyCudaLlm, llm_self_test

        why = "not run"
        for options in ([], ["-DLLM_PLAIN_MAC"]):
            engine = PyCudaLlm(self, options=options)
            try:
                why = llm_self_test(engine)
            except Exception as exc:  # anything odd disables the path, never the backend
                why = f"{type(exc).__name__}: {exc}"
            if why is None:
                self.llm, self.llm_reason = engine, f"self-test passed ({' '.join(options) or 'dp2a'})"
                log.info("llm CUDA path enabled: %s", self.llm_reason)
                return True
            try:
                engine.release()
            except Exception:  # a broken engine is dropped either way
                pass
        self.llm, self.llm_reason = None, f"llm CUDA path disabled, llm-generate runs on NumPy: {why}"
        log.warning("%s", self.llm_reason)
        return False

    def llm_ready(self) -> bool:
        """Whether ``llm-generate`` runs on the GPU (its self-test passed)."""
        return self.llm is not None

    def _execute_llm(self, kind: Any, params: dict, input: bytes | None, deadline: Deadline) -> tuple[np.ndarray, float]:
        """The kind's own run (model from its cache, digests kept) with the matmuls on the GPU; the
        generation runs on the GPU thread (PyCudaLlm.generate), the model load in the calling thread.
        Returns (rows, wall seconds of the run: host and device work are interleaved)."""
        kind.validate(params, None if input is None else len(input))
        self.llm.max_models = kind.models.max_models
        t0 = time.perf_counter()
        try:
            rows = kind.run(params, deadline, engine=self.llm).rows
        except self._drv.Error as exc:
            raise JobExecutionError("backend", f"CUDA error: {exc}") from exc
        return rows, time.perf_counter() - t0

    # -- the backend interface -----------------------------------------------------------------------
    def runs(self, kind: JobKind) -> bool:
        """Whether this backend has kernels for ``kind`` (the executor runs the others with NumPy);
        ``llm-generate`` only once its self-test passed."""
        return kind.name in self._RUNNERS or (kind.name == self.LLM_KIND and self.llm is not None)

    def execute(
        self, kind: JobKind, params: dict, input: bytes | None, deadline: Deadline
    ) -> tuple[np.ndarray, float]:
        """Run one job on the GPU thread; returns (result, device seconds)."""
        if kind.name == self.LLM_KIND and self.llm is not None:
            return self._execute_llm(kind, params, input, deadline)
        runner = self._RUNNERS.get(kind.name)
        if runner is None:
            raise JobExecutionError("backend", f"no PyCUDA kernel for kind {kind.name!r}")
        kind.validate(params, None if input is None else len(input))

        def job() -> tuple[np.ndarray, float]:
            deadline.check()  # the job may have waited for the GPU thread
            try:
                return runner(self, kind, params, input)
            except self._drv.Error as exc:
                raise JobExecutionError("backend", f"CUDA error: {exc}") from exc

        return self._call(job)

    def free_memory(self) -> int:
        return int(self._call(lambda: self._drv.mem_get_info()[0]))

    def memory_needed(self, kind: JobKind, params: dict) -> int:
        return kind.device_bytes(params)

    # -- benchmarking: the core kernels alone, inputs already on the device --------------------------
    def _core_launcher(self, kind: JobKind, params: dict, held: list) -> Callable[[], None]:
        """Put a seeded job's inputs on the device; return a function launching its core kernel(s)."""
        key = derive_key(kind.name, kind.version, params.get("seed", b"\x00" * 32))
        if kind.name == "mlp-f32":
            bufs = self._mlp_setup(kind, params, None, held)
            return lambda: self._mlp_layers(params, bufs)
        if kind.name == "matmul-u32":
            m, n, k = params["m"], params["n"], params["k"]
            a, b, c = (self._alloc(held, 4 * s) for s in (m * k, k * n, m * n))
            self._gen("gen_u32", a, key, 0, m * k)
            self._gen("gen_u32", b, key, 1, k * n)
            args = (a, b, c, np.int32(m), np.int32(n), np.int32(k))
            return lambda: self._gemm("matmul_u32", *args, m=m, n=n)
        if kind.name == "hash-chain":
            chains, iterations = params["chains"], params["iterations"]
            seed_d, out_d = self._alloc(held, 32), self._alloc(held, 32 * chains)
            self._drv.memcpy_htod(seed_d, np.frombuffer(params["seed"], dtype=">u4").astype(np.uint32))
            fn = self._fn("sha256", "hash_chain")
            grid = (math.ceil(chains / HASH_THREADS), 1)

            def launch() -> None:
                fn(seed_d, out_d, np.uint32(chains), np.uint32(iterations), block=(HASH_THREADS, 1, 1), grid=grid)

            return launch
        raise JobExecutionError("backend", f"no PyCUDA kernel for kind {kind.name!r}")

    def time_core(self, kind: JobKind, params: dict, repeats: int = 5) -> float:
        """Median seconds of the kind's core kernel(s) (GEMMs / hash kernel) over ``repeats`` launches,
        with the inputs generated on the device beforehand and nothing transferred."""
        kind.validate_params(params)

        def job() -> float:
            drv = self._drv
            held: list = []
            try:
                launch = self._core_launcher(kind, params, held)
                launch()  # warm-up
                drv.Context.synchronize()
                times = []
                for _ in range(max(1, repeats)):
                    start, end = drv.Event(), drv.Event()
                    start.record()
                    launch()
                    end.record()
                    end.synchronize()
                    times.append(start.time_till(end) / 1e3)
                return float(np.median(times))
            finally:
                for buf in held:
                    buf.free()

        return self._call(job)
