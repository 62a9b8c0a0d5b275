"""Sealed-bid jobs through the CLI as a user runs them: `job submit --sealed --wait` on a real dev node
whose miner role bids sealed; the client's home keeps the sealing key and awards by itself."""

from __future__ import annotations

import json
import os
import stat

import pytest
from nodeproc import NodeProcess, clean_env, run_cli, wait_for


@pytest.fixture(scope="module")
def miner_node(dev_miner_node: NodeProcess) -> NodeProcess:
    """The module's dev node, once its miner role has registered (it bids on the jobs below)."""
    node = dev_miner_node
    env = clean_env(AITBC_RPC_URL=node.url)
    wait_for(lambda: "active" in run_cli("miner", "status", "--home", str(node.home), env=env).stdout, 60,
             "the miner registered")
    return node


def submit_sealed(node: NodeProcess, *extra: str, timeout: float = 120):
    """`job submit --sealed` of a small hash-chain job from the dev key, with ``extra`` options."""
    return run_cli("job", "submit", "--from", "dev", "--kind", "hash-chain", "--params",
                   '{"chains": 8, "iterations": 16}', "--max-price", "0.01", "--max-units", "2", "--sealed",
                   *extra, "--json", "--home", str(node.home), env=clean_env(AITBC_RPC_URL=node.url),
                   timeout=timeout)


def test_sealed_job_is_awarded_by_the_client_and_completes(miner_node: NodeProcess) -> None:
    node = miner_node
    env = clean_env(AITBC_RPC_URL=node.url)
    r = submit_sealed(node, "--bid-window", "6", "--sealed-bits", "12", "--sealed-deposit", "0.5",
                      "--settle-window", "20", "--wait")
    assert r.returncode == 0, r.stdout + r.stderr + node.log_tail()
    job = json.loads(r.stdout)
    assert job["state"] == "COMPLETED" and job["payment"] == "released"
    sa = job["sealed"]
    assert sa["bits"] == 12 and len(sa["bids"]) == 1 and sa["winner"] == job["miner"]
    assert "awarding bid 0 of 1" in r.stderr
    # the sealing secret stays in the home, readable by its owner only
    keys = list((node.home / "keys" / "sealed").glob("*.key"))
    assert [k.name for k in keys] == [sa["key"][2:] + ".key"]
    assert stat.S_IMODE(os.stat(keys[0]).st_mode) == 0o600
    # awarding again is refused with the chain's reason, in one line
    r = run_cli("job", "award", job["job_id"], "--from", "dev", "--home", str(node.home), env=env, timeout=60)
    assert r.returncode != 0 and "Traceback" not in r.stderr


def test_award_without_the_sealing_key_says_why(miner_node: NodeProcess, tmp_path) -> None:
    node = miner_node
    env = clean_env(AITBC_RPC_URL=node.url)
    r = submit_sealed(node, "--bid-window", "50", timeout=60)
    assert r.returncode == 0, r.stderr
    job_id = json.loads(r.stdout)["job_id"]
    for k in (node.home / "keys" / "sealed").glob("*.key"):
        k.unlink()
    r = run_cli("job", "award", job_id, "--from", "dev", "--home", str(node.home), env=env, timeout=60)
    assert r.returncode != 0 and "no sealing key" in r.stderr and "Traceback" not in r.stderr
    run_cli("job", "cancel", job_id, "--from", "dev", "--home", str(node.home), env=env, timeout=60)


def test_second_price_job_through_the_cli(miner_node: NodeProcess) -> None:
    """`--sealed --second-price`: with this node's miner the only bidder, it is paid the job's max price."""
    r = submit_sealed(miner_node, "--bid-window", "6", "--second-price", "--wait")
    assert r.returncode == 0, r.stdout + r.stderr + miner_node.log_tail()
    job = json.loads(r.stdout)
    assert job["state"] == "COMPLETED" and job["sealed"]["second_price"] is True
    assert job["sealed"]["second_tick"] is None and int(job["price"]) == 10_000  # 0.01 AIT, no runner-up
