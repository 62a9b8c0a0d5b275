"""A short chaos run (testnet/chaos.py): four real node processes under load, each in its own network
namespace, while a seeded schedule kills, stops, restarts, partitions and skews them, with a
double-signing validator. The runner checks the safety properties; this test asserts its report.
(The long run is a benchmark: BENCHMARKS.md.) Every process it starts is stopped by pid in its finally."""

from __future__ import annotations

import os
import shutil

from net_helpers import free_base_port

from testnet.chaos import FAULT_KINDS, ChaosConfig, run


def test_short_chaos_run_keeps_every_safety_property(tmp_path) -> None:
    netns = os.geteuid() == 0 and shutil.which("ip") is not None
    cfg = ChaosConfig(
        nodes=4, duration_s=45, seed=7, block_interval_ms=700, tps=4, byzantine=True,
        faults=FAULT_KINDS if netns else tuple(k for k in FAULT_KINDS if k != "partition"),
        hold_s=(0.5, 2.0), gap_s=(0.2, 1.0), netns=netns, directory=tmp_path / "net",
        base_port=free_base_port(4),
    )
    rep = run(cfg)
    assert rep.ok, rep.text()
    assert rep.forks == 0 and rep.txs_lost == 0
    assert rep.faults_total >= 4, rep.text()
    assert rep.txs_committed > 20 and rep.heights_checked > 10, rep.text()
    assert rep.max_resume_s > 0  # every heal was followed by new finality, and it was measured
