"""Byzantine behaviour for tests and testnets, injected from outside the node's code paths.

The node has no fault switches. This module subclasses its components at their seams and installs the
subclasses in a node process before it starts:

* :class:`DoubleSigningEngine` — a :class:`~consensus.bft_engine.BftEngine` whose validator sends, after
  each of its own prevotes, a second, different prevote for the same height and round (nil when the
  first named a block, else a made-up block hash), signed with its key directly, bypassing
  ``SignState``: a double-signing validator whose equivocation honest nodes turn into evidence.
* :class:`FaultyMiner` — a :class:`~node.miner.MinerService` whose behaviour is read from a JSON faults
  file before each action, so a test can change a running miner by rewriting the file::

      {"corrupt": bool, "silent": bool, "false_challenge": bool, "withhold": bool, "llm_token": bool,
       "llm_step": bool}

  ``corrupt``: a consistent but wrong result (row 0 altered; blob, hash and root all match it) — a
  lying miner; ``silent``: bids but never executes what it is awarded; ``false_challenge``: as a
  verifier, challenges leaf 0 of a result whatever it holds; ``withhold``: computes and signs receipts
  honestly but serves its result blobs to no one (:meth:`~node.miner.MinerService.serves_blob`).
  ``llm_token`` (llm-generate jobs): the last generated token of the rows is another one, the steps are
  honest (only re-running the SAMPLE step shows it); ``llm_step``: one step output digest of the last
  prompt position is made up and the row's step root follows it, and the miner answers an
  ``llm_challenge`` with those digests (consistent with its receipt; only re-running the step shows it).
  A missing or unreadable file, or a missing key, means honest.

Entry point (what ``tests/nodeproc.py`` and ``testnet/network.py`` start for a faulty node)::

    python -m testnet.faults [--double-sign] [--faults-file PATH] [--clock-skew-ms N] -- <aitbc-peer arguments>

It installs the wrappers (:func:`install`: the classes ``node.service`` and ``node.miner`` instantiate
are replaced by the subclasses) and runs the normal ``node.cli.main``. Nothing in the node imports this
module.
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # as node.cli.main does, but before the miner module below loads NumPy (BLAS)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from consensus.bft import NIL, Proposal  # noqa: E402
from consensus.bft_engine import BftEngine  # noqa: E402
from node.miner import MinerService  # noqa: E402
from state.codec import sha256  # noqa: E402
from state.types import PREVOTE, Vote  # noqa: E402

FAULTS = ("corrupt", "silent", "false_challenge", "withhold", "llm_token", "llm_step")


# --------------------------------------------------------------------------------------------- consensus


class DoubleSigningEngine(BftEngine):
    """A validator that equivocates: every own prevote is followed by a conflicting one."""

    async def publish_own(self, msg: Proposal | Vote) -> None:
        await super().publish_own(msg)
        if isinstance(msg, Vote) and msg.type == PREVOTE and self.key is not None:
            other = NIL if msg.block_hash != NIL else sha256(b"byzantine/%d/%d" % (msg.height, msg.round))
            await super().publish_own(Vote.create(self.key, self.chain_id, msg.height, msg.round, PREVOTE, other))


# ------------------------------------------------------------------------------------------------- miner


def read_faults(path: Path | None) -> dict[str, bool]:
    """The faults switched on in ``path`` (see the module docstring); {} when there is no usable file."""
    if path is None:
        return {}
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(obj, dict):
        return {}
    return {k: bool(obj.get(k)) for k in FAULTS}


def write_faults(path: Path, **faults: bool) -> None:
    """Switch ``faults`` on (all others off) for the :class:`FaultyMiner` reading ``path``."""
    unknown = set(faults) - set(FAULTS)
    if unknown:
        raise ValueError(f"unknown faults {sorted(unknown)}; known: {list(FAULTS)}")
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(faults))
    tmp.replace(path)  # atomic: the miner never reads half a file


def corrupt_result(arr: np.ndarray) -> np.ndarray:
    """A wrong copy of a result, differing in row 0 only: the lowest bit of its first byte flipped for
    integer results; for floating-point results its first element moved by 2^20 (far beyond the
    tolerance of any job the tests run)."""
    out = np.array(arr, copy=True)
    if np.issubdtype(out.dtype, np.floating):
        out.reshape(-1)[0] += out.dtype.type(1 << 20)
    else:
        out.reshape(-1).view(np.uint8)[0] ^= 1
    return out


class FaultyMiner(MinerService):
    """A miner (and verifier) that misbehaves as its faults file says, checked before each action."""

    faults_file: Path | None = None  # set by install(); per instance it can be overridden

    def fault(self, name: str) -> bool:
        return read_faults(self.faults_file).get(name, False)

    def answers_job(self, job: Any) -> bool:
        return not self.fault("silent") and super().answers_job(job)

    _llm_lies: dict[bytes, dict[int, list[bytes]]]

    def produce_result(self, job: Any, res: Any) -> tuple[bytes, bytes, bytes]:
        if job.kind == "llm-generate" and (self.fault("llm_token") or self.fault("llm_step")):
            return self._llm_lie(job, res)
        if not self.fault("corrupt"):
            return super().produce_result(job, res)
        from gpu.encoding import encode_array, result_root

        wrong = corrupt_result(res.array)
        encoded = encode_array(wrong)
        return encoded, sha256(encoded), result_root(wrong)

    def _llm_lie(self, job: Any, res: Any) -> tuple[bytes, bytes, bytes]:
        from dataclasses import replace

        from gpu.encoding import encode_array, result_root
        from gpu.kinds import get_kind
        from state.kinds import llm_trace as lt

        kind: Any = get_kind(job.kind)
        rows = np.array(res.array, copy=True)
        p = len(job.params["prompt"])
        if self.fault("llm_token"):  # the last processed row samples another token
            t = max(i for i in range(rows.shape[0]) if not lt.is_zero(rows[i].tobytes()))
            r = lt.Row.decode(rows[t].tobytes())
            vocab = kind.source.model_config(job.params["model"])[0].vocab
            rows[t] = np.frombuffer(replace(r, token_out=(r.token_out + 1) % vocab).encode(), np.uint8)
        else:  # one made-up step output at the last prompt position; the step root follows it
            t = p - 1
            cfg = kind.source.model_config(job.params["model"])[0]
            digests = list(kind.position_digests(job.params, t))
            digests[1] = sha256(b"made up" + digests[1])
            if not hasattr(self, "_llm_lies"):
                self._llm_lies = {}
            self._llm_lies[job.job_id] = {t: digests}
            r = lt.Row.decode(rows[t].tobytes())
            rows[t] = np.frombuffer(replace(r, step_root=lt.step_root(cfg, p, t, digests)).encode(), np.uint8)
        encoded = encode_array(rows)
        return encoded, sha256(encoded), result_root(rows)

    def llm_step_digests(self, job: Any, t: int) -> list[bytes]:
        lie = getattr(self, "_llm_lies", {}).get(job.job_id, {})
        return lie[t] if t in lie else super().llm_step_digests(job, t)

    def serves_blob(self, job_id: bytes) -> bool:
        return not self.fault("withhold") and super().serves_blob(job_id)

    async def find_wrong_leaf(self, job: Any) -> dict | None:
        if self.fault("false_challenge"):  # dispute leaf 0, right or wrong
            from gpu.encoding import result_leaves

            theirs, data = await self.fetch_result(job)
            return self.challenge_body(job, result_leaves(theirs), 0, data)
        return await super().find_wrong_leaf(job)


# ----------------------------------------------------------------------------------------------- install


def skew_clock(skew_ms: int) -> None:
    """Shift this process's wall clock (``time.time``/``time.time_ns``, what block times come from) by
    ``skew_ms``; monotonic clocks (timeouts) are untouched, as on a host whose clock is off."""
    import time as _time

    if not skew_ms:
        return
    real_time, real_time_ns = _time.time, _time.time_ns
    _time.time = lambda: real_time() + skew_ms / 1000.0
    _time.time_ns = lambda: real_time_ns() + skew_ms * 1_000_000


def install(*, double_sign: bool = False, faults_file: Path | None = None, clock_skew_ms: int = 0) -> None:
    """Make the node of this process byzantine: replace the classes it instantiates (the engine in
    ``node.service``, the miner role in ``node.miner``) by the faulty subclasses, and skew its clock.
    Call before the node starts."""
    import node.miner
    import node.service

    skew_clock(clock_skew_ms)
    if double_sign:
        if node.service.BftEngine is not BftEngine:
            raise RuntimeError("node.service no longer instantiates consensus.bft_engine.BftEngine by that name")
        node.service.BftEngine = DoubleSigningEngine
    if faults_file is not None:
        if node.miner.MinerService is not MinerService:
            raise RuntimeError("node.miner no longer instantiates MinerService by that name")
        FaultyMiner.faults_file = Path(faults_file).resolve()
        node.miner.MinerService = FaultyMiner


def wrapper_args(
    *, double_sign: bool = False, faults_file: Path | str | None = None, clock_skew_ms: int = 0
) -> list[str]:
    """``[python -m testnet.faults, options…, --]``-style arguments that put a node process behind this
    module (empty when no fault is asked for: the node runs as ``python -m node.cli``)."""
    args: list[str] = []
    if double_sign:
        args.append("--double-sign")
    if faults_file is not None:
        args += ["--faults-file", str(faults_file)]
    if clock_skew_ms:
        args += ["--clock-skew-ms", str(int(clock_skew_ms))]
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print("usage: python -m testnet.faults [--double-sign] [--faults-file PATH] [--clock-skew-ms N] -- "
              "<aitbc-peer args>",
              file=sys.stderr)
        return 2
    cut = argv.index("--")
    p = argparse.ArgumentParser(prog="python -m testnet.faults", description=__doc__.split("\n\n")[0])
    p.add_argument("--double-sign", action="store_true", help="the validator double-signs its prevotes")
    p.add_argument("--faults-file", type=Path, help="JSON faults file read by the miner before each action")
    p.add_argument("--clock-skew-ms", type=int, default=0, help="shift the wall clock by this many ms")
    args = p.parse_args(argv[:cut])
    install(double_sign=args.double_sign, faults_file=args.faults_file, clock_skew_ms=args.clock_skew_ms)
    from node.cli import main as node_main

    return node_main(argv[cut + 1 :])


if __name__ == "__main__":
    sys.exit(main())
