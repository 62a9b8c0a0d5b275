"""Transfer load for a local network: signs transfers from the faucet accounts, submits them in
batches spread over the nodes at a target rate, follows inclusion in blocks and reports counts and
submit-to-finalized latency percentiles."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from state.crypto import SigningKey
from state.types import transfer

from .network import Network


@dataclass
class LoadReport:
    submitted: int = 0
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    committed: int = 0
    latencies: list[float] = field(default_factory=list)
    first_submit: float = 0.0
    last_commit: float = 0.0
    block_times: list[int] = field(default_factory=list)

    @property
    def tps(self) -> float:
        span = self.last_commit - self.first_submit
        return self.committed / span if span > 0 else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]

    def block_interval(self) -> float:
        t = self.block_times
        return statistics.median([(b - a) / 1000 for a, b in zip(t, t[1:], strict=False)]) if len(t) > 1 else 0.0

    def to_dict(self) -> dict:
        return {
            "submitted": self.submitted,
            "accepted": self.accepted,
            "rejected": sum(self.rejected.values()),
            "rejected_by_reason": self.rejected,
            "committed": self.committed,
            "committed_tps": round(self.tps, 1),
            "latency_p50_s": round(self.percentile(50), 3),
            "latency_p90_s": round(self.percentile(90), 3),
            "latency_p99_s": round(self.percentile(99), 3),
            "block_interval_s": round(self.block_interval(), 3),
        }


def run_load(net: Network, *, tps: float, seconds: float, tick: float = 0.1, settle: float = 30.0,
             node_indices: list[int] | None = None, to: bytes | None = None,
             progress: Callable[[str], None] | None = None) -> LoadReport:
    """Submit ``tps`` transfers per second for ``seconds`` and follow them until included; ``progress``
    gets a line about once a second (submitted, committed, pending, rejected)."""
    nodes = [net.nodes[i] for i in (node_indices or range(len(net.nodes)))]
    client = httpx.Client(timeout=30)

    def call(url: str, method: str, **params):
        obj = client.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).json()
        if "error" in obj:
            raise RuntimeError(f"{method}: {obj['error']}")
        return obj["result"]

    keys: list[SigningKey] = net.faucet_keys()
    from state.address import encode_address

    nonces = {k.public_key: call(nodes[0].rpc_url, "state_getAccount", address=encode_address(k.public_key))[
        "pending_nonce"] for k in keys}
    sink = to or SigningKey.from_seed(b"\x5a" * 32).public_key
    total = int(tps * seconds)
    txs = []
    for i in range(total):
        k = keys[i % len(keys)]
        txs.append(transfer(k, net.chain_id, sink, 1, nonces[k.public_key], 1000))
        nonces[k.public_key] += 1
    rep = LoadReport()
    pending: dict[str, float] = {}
    watch = nodes[0].rpc_url
    height = call(watch, "chain_getHead")["finalized_height"]

    def poll() -> None:
        nonlocal height
        head = call(watch, "chain_getHead")["finalized_height"]
        while height < head:
            height += 1
            b = call(watch, "chain_getBlock", height=height)
            rep.block_times.append(b["time"])
            for h in b["transactions"]:
                t = pending.pop(h, None)
                if t is not None:
                    rep.committed += 1
                    rep.latencies.append(max(0.0, b["time"] / 1000 - t))
                    rep.last_commit = max(rep.last_commit, b["time"] / 1000)

    last_report = time.monotonic()

    def report(final: bool = False) -> None:
        nonlocal last_report
        if progress is None or (not final and time.monotonic() - last_report < 1.0):
            return
        last_report = time.monotonic()
        rejected = sum(rep.rejected.values())
        line = f"load: submitted {rep.submitted}/{total}, committed {rep.committed}, pending {len(pending)}"
        progress(line + (f", rejected {rejected}" if rejected else ""))

    per_tick = max(1, round(tps * tick))
    rep.first_submit = time.time()
    next_tick = time.monotonic()
    for i in range(0, total, per_tick):
        batch = txs[i : i + per_tick]
        node = nodes[(i // per_tick) % len(nodes)]
        now = time.time()
        res = call(node.rpc_url, "tx_submitBatch", txs=["0x" + t.raw.hex() for t in batch])
        rep.submitted += len(batch)
        for t, r in zip(batch, res["results"], strict=True):
            if "error" in r:
                reason = r["error"]["reason"]
                rep.rejected[reason] = rep.rejected.get(reason, 0) + 1
            else:
                rep.accepted += 1
                pending["0x" + t.hash.hex()] = now
        poll()
        report()
        next_tick += tick
        delay = next_tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    deadline = time.monotonic() + settle
    while pending and time.monotonic() < deadline:
        poll()
        report()
        time.sleep(0.1)
    report(final=True)
    client.close()
    return rep


def format_report(rep: LoadReport) -> str:
    return json.dumps(rep.to_dict(), indent=2)
