"""``llm-generate`` disputes on a multi-process network: real ``aitbc-peer run --miner`` processes.

node0 is the validator and the client's node (it keeps the registered model); node1 is a miner serving the
tiny model at 50 per token, behind ``python -m testnet.faults`` so a test can make it lie; node2 is a
miner that verifies (900 per token: it never wins) and has the model too. An honest job is verified and
paid; a miner that changes one generated token (``llm_token``) or one step output (``llm_step``) is
challenged by node2 (``llm_challenge`` → ``llm_steps`` → ``llm_step_proof``), loses and is slashed, and the
client is refunded in full.
"""

from __future__ import annotations

import time

from llm_fixtures import TINY, tiny_model_file
from net_helpers import log_tails, wait_heights
from test_market_network import FAST, Client, faults_file, miner_of, set_faults, settled, wait_job

from node.blobs import signed_blob_put_params
from state import market
from state.kinds.llm_generate import LlmGenerateRules
from state.llm.modelfile import weights_size
from state.market.models import manifest_for_file, model_id
from testnet import faults

MARKET = {"miner_unbonding_blocks": 5, "availability_response_blocks": 8, "llm_proof_blocks": 8}
NAME = "tiny-llm"
PROMPT = [5, 104, 101, 108, 108, 111]
NEW = 6


def _register_model(net, c: Client) -> bytes:
    data = tiny_model_file()
    tok_size = len(data) - weights_size(TINY)
    man, chunks, index = manifest_for_file(data, name=NAME, arch=TINY.to_map(), tokenizer_size=tok_size)
    st = c.send("model_register", man)
    assert st["status"] == "committed", st
    node0 = net.nodes[0]
    expires = net.rpc(node0, "chain_getHead")["height"] + 50
    for blob in [index, *chunks]:
        net.rpc(node0, "blob_put", **signed_blob_put_params(c.key, net.chain_id, blob, expires))
    net.rpc(node0, "admin_pinModel", model=NAME)
    return model_id(man)


def _submit(c: Client, mid: bytes, *, seed: int) -> str:
    params = {"model": mid, "prompt": PROMPT + [seed], "max_new_tokens": NEW, "sampling": {"mode": "greedy"}}
    units = LlmGenerateRules().work_units(params)
    body = market.job_submit_body("llm-generate", 1, params, max_price=100, max_units=units, bid_window=10,
                                  deadline=30, verify_rate_bps=10_000, challenge_window=14)
    st = c.send("job_submit", body)
    assert st["status"] == "committed", st
    return st["hash"]


def _wait_log(net, index: int, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in net.nodes[index].log.read_text(errors="replace"):
            return
        time.sleep(0.3)
    raise AssertionError(f"node{index} never logged {text!r}\n" + log_tails([net.nodes[index]], 40))


def test_lying_llm_miners_are_challenged_and_slashed(make_net) -> None:
    net = make_net(3, block_interval_ms=250, start=False, params={**FAST, "market": MARKET}, validators=1,
                   miners=[1], verifiers=[2])
    env = {1: {"AITBC_MINER_MODELS": f"{NAME}=50"}, 2: {"AITBC_MINER_MODELS": f"{NAME}=900"},
           0: {"AITBC_RPC_ADMIN": "true"}}
    for n in net.nodes:
        net.start(n, env=env[n.index],
                  wrapper_args=faults.wrapper_args(faults_file=faults_file(net, n.index)) if n.index == 1 else None)
    wait_heights(net, net.nodes, 2, 90)
    c = Client(net, net.faucet_keys()[0])
    mid = _register_model(net, c)
    for i in (1, 2):  # both miners pin the model from node0 and bid once it is complete
        _wait_log(net, i, f"model {NAME} is complete here", 60)
    rpc = lambda m, **p: net.rpc(net.nodes[0], m, **p)  # noqa: E731
    deadline = time.monotonic() + 30
    while len([m for m in rpc("market_listMiners")["miners"]
               if "llm-generate" in m["capabilities"]["throughput"]]) < 2 and time.monotonic() < deadline:
        time.sleep(0.3)
    bond0 = int(rpc("market_getMiner", address=miner_of(net, 1))["bond"])
    # every miner has caught up with the chain (a loaded machine slows a late starter), so node1 bids in time
    wait_heights(net, net.nodes, int(rpc("chain_getHead")["finalized_height"]), 60)
    tails = lambda: log_tails(net.nodes[1:], 30)  # noqa: E731

    # 1. honest: node1 wins at 50 per token, node2 re-runs it and finds it right; paid after the window
    start = c.balance()
    job_id = _submit(c, mid, seed=1)
    job = wait_job(net, job_id, settled, 90)
    assert (job["state"], job["payment"], job["miner"]) == ("COMPLETED", "released", miner_of(net, 1)), (job, tails())
    units = len(PROMPT) + 1 + NEW
    assert int(job["paid"]) == 50 * units
    assert c.balance() == start - 50 * units - 1000
    _wait_log(net, 2, f"job {job_id[2:18]} verified: token rows correct", 10)

    # 2. one generated token changed (the steps honest): the SAMPLE step re-run on chain shows it
    # 3. one step output made up (the row's step root and the miner's llm_steps agree with it)
    for fault, seed in (("llm_token", 2), ("llm_step", 3)):
        set_faults(net, 1, **{fault: True})
        start = c.balance()
        job_id = _submit(c, mid, seed=seed)
        job = wait_job(net, job_id, settled, 120)
        assert (job["state"], job["payment"], job["failure"]) == ("FAILED", "refunded", "wrong_result"), (
            fault, job, tails())
        assert c.balance() == start - 1000, fault  # refunded in full: only the fee is gone
        want = "wrong_token" if fault == "llm_token" else "wrong_step_output"
        _wait_log(net, 2, f"closed: upheld {want}", 10)
        _wait_log(net, 1, f"job {job_id[2:18]}: posted the", 5)  # the liar answered with its digests
    set_faults(net, 1)
    miner = rpc("market_getMiner", address=miner_of(net, 1))
    assert int(miner["slashed"]) >= bond0 // 2 and miner["jobs_failed"] == 2  # half its bond, twice
