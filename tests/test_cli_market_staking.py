"""The market and staking CLI against a real node process: a one-validator PoS dev chain whose node also
runs the miner role (NumPy backend). Every command is `python -m node.cli …` as a user types it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nodeproc import NodeProcess, clean_env, run_cli, wait_for

from gpu.encoding import decode_array
from node.keystore import read_plain_key_file
from state.address import encode_address
from state.crypto import SigningKey


@pytest.fixture(scope="module")
def pos_miner_node(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("posmine") / "home"
    r = run_cli("init", "--dev", "--consensus", "pos", "--home", str(home), "--block-interval", "200")
    assert r.returncode == 0, r.stderr
    node = NodeProcess(home, extra_args=["--miner"])
    try:
        node.start()
        node.wait_ready()
        yield node
    finally:
        node.close()


def cli(node: NodeProcess, *args: str, timeout: float = 90) -> str:
    r = run_cli(*args, "--home", str(node.home), env=clean_env(AITBC_RPC_URL=node.url), timeout=timeout)
    assert r.returncode == 0, f"{args}: {r.stdout}\n{r.stderr}\n{node.log_tail()}"
    return r.stdout


def cli_fails(node: NodeProcess, *args: str) -> str:
    r = run_cli(*args, "--home", str(node.home), env=clean_env(AITBC_RPC_URL=node.url), timeout=90)
    assert r.returncode != 0, r.stdout
    return r.stderr


def kv_table(out: str) -> tuple[dict[str, str], str]:
    """A single-object command's key/value table (its values all start in one column) and what follows it
    after a blank line."""
    head, _, rest = out.partition("\n\n")
    lines = head.splitlines()
    rows = {ln.split(None, 1)[0]: ln.split(None, 1)[1] for ln in lines}
    columns = {ln.index(value, len(key)) for ln, (key, value) in zip(lines, rows.items(), strict=True)}
    assert len(columns) == 1, f"values not aligned:\n{out}"
    return rows, rest


def test_gpu_probe_reports_the_backend() -> None:
    r = run_cli("gpu", "probe", "--json", "--duration", "0.05", env=clean_env(AITBC_GPU_BACKEND="cpu"))
    assert r.returncode == 0, r.stderr
    p = json.loads(r.stdout)
    assert p["backend"] == "numpy" and "forced" in p["reason"].lower() or p["reason"]
    assert set(p["kinds"]) == {"matmul-u32", "hash-chain", "mlp-f32"}
    assert all(k["units_per_s"] > 0 for k in p["kinds"].values())


def test_job_lifecycle_through_the_cli(pos_miner_node: NodeProcess, tmp_path: Path) -> None:
    node = pos_miner_node
    def registered() -> bool:
        r = run_cli("miner", "status", "--home", str(node.home), env=clean_env(AITBC_RPC_URL=node.url))
        return r.returncode == 0 and "active" in r.stdout

    wait_for(registered, 60, "the miner registered")
    out = cli(node, "job", "submit", "--from", "dev", "--kind", "hash-chain",
              "--params", '{"chains": 16, "iterations": 64}', "--max-price", "0.001", "--max-units", "4",
              "--bid-window", "3", "--wait")
    assert "COMPLETED" in out, out
    job_id = out.split()[1]
    status = json.loads(cli(node, "job", "status", job_id, "--json"))
    assert status["state"] == "COMPLETED" and status["payment"] == "released"
    assert status["receipt"]["signature"]["alg"] == "ed25519"
    res = tmp_path / "result.bin"
    assert "verified" in cli(node, "job", "result", job_id, "-o", str(res))
    arr = decode_array(res.read_bytes(), max_bytes=1 << 20)
    assert arr.shape == (16, 32)
    listed = json.loads(cli(node, "job", "list", "--mine", "--from", "dev", "--json"))
    assert job_id in {j["job_id"] for j in listed["jobs"]}
    # a job nobody can serve (price below the miner's) expires: --wait reports it and exits non-zero
    r = run_cli("job", "submit", "--from", "dev", "--kind", "matmul-u32", "--params", '{"m":4,"n":4,"k":4}',
                "--max-price", "0.000001", "--max-units", "1", "--bid-window", "1", "--wait",
                "--home", str(node.home), env=clean_env(AITBC_RPC_URL=node.url), timeout=90)
    assert r.returncode == 1 and "EXPIRED" in r.stdout, r.stdout + r.stderr
    # bad input gets a precise error, not a traceback
    assert "max-units" in cli_fails(node, "job", "submit", "--from", "dev", "--kind", "matmul-u32",
                                    "--params", '{"m":4,"n":4,"k":4}', "--max-price", "1")
    err = cli_fails(node, "job", "submit", "--from", "dev", "--kind", "matmul-u32", "--params", '{"m":0}',
                    "--max-price", "1", "--max-units", "1")
    assert "error:" in err and "Traceback" not in err
    assert "32 bytes" in cli_fails(node, "job", "status", "0x1234")


def test_every_data_command_has_typed_json_and_wait_reports_progress(pos_miner_node: NodeProcess,
                                                                     tmp_path: Path) -> None:
    """`--json` on each command that prints data parses, with amounts as integers (plus `_ait` strings);
    `job submit --wait` prints the job's state changes on stderr and only the result on stdout."""
    node = pos_miner_node
    wait_for(lambda: run_cli("miner", "status", "--home", str(node.home),
                             env=clean_env(AITBC_RPC_URL=node.url)).returncode == 0, 60, "the miner registered")
    r = run_cli("job", "submit", "--from", "dev", "--kind", "hash-chain", "--params", '{"chains": 4, "iterations": 8}',
                "--max-price", "0.001", "--max-units", "4", "--bid-window", "2", "--wait", "--json",
                "--home", str(node.home), env=clean_env(AITBC_RPC_URL=node.url), timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    job = json.loads(r.stdout)
    assert job["state"] == "COMPLETED" and isinstance(job["paid"], int) and isinstance(job["paid_ait"], str)
    states = [ln.split(": ", 1)[1].split()[0] for ln in r.stderr.splitlines() if ln.startswith(f"job {job['job_id']}:")]
    assert states[0] in ("QUEUED", "RUNNING") and states[-1] == "COMPLETED", r.stderr
    assert any("job_submit" in ln and "included in block" in ln for ln in r.stderr.splitlines()), r.stderr

    def data(*args: str) -> dict | list:
        return json.loads(cli(node, *args, "--json"))

    st = data("status")
    assert isinstance(st["height"], int) and isinstance(st["finalized_height"], int)
    bal = data("wallet", "balance", "dev")
    assert isinstance(bal["balance"], int) and isinstance(bal["balance_ait"], str)
    assert data("job", "status", job["job_id"])["job_id"] == job["job_id"]
    res = data("job", "result", job["job_id"], "-o", str(tmp_path / "r.bin"))
    assert res["verified"] is True and res["shape"] == [4, 32] and res["bytes"] == (tmp_path / "r.bin").stat().st_size
    listed = data("job", "list")
    assert job["job_id"] in {j["job_id"] for j in listed["jobs"]}
    miner = data("miner", "status")
    assert miner["status"] == "active" and isinstance(miner["bond"], int) and "bond_ait" in miner
    vals = data("validator", "status")
    v = vals["validators"][0]
    assert isinstance(v["tokens"], int) and isinstance(v["power"], int)
    assert data("validator", "status", v["address"])["address"] == v["address"]
    assert isinstance(data("stake", "rewards", "--from", "dev")["delegations"], list)
    assert isinstance(data("model", "list")["models"], list)
    assert isinstance(data("keys", "list"), list)
    # human output lists rows under a header
    assert cli(node, "validator", "status").split()[:2] == ["ADDRESS", "STATUS"]
    assert cli(node, "job", "list").split()[:2] == ["JOB_ID", "STATE"]
    # ... and prints one object as an aligned key/value table, amounts in AIT (lists under it, after a blank line)
    rows, rest = kv_table(cli(node, "job", "status", job["job_id"]))
    assert rows["job_id"] == job["job_id"] and rows["state"] == "COMPLETED" and rows["payment"] == "released"
    assert rows["paid"] == f"{job['paid_ait']} AIT" and rows["max_price"] == "0.001 AIT per khash", rows
    assert rows["units"].endswith(" khash") and rows["miner"] == miner["address"]
    assert rest.split()[:3] == ["MINER", "PRICE_AIT", "HEIGHT"], rest
    rows, rest = kv_table(cli(node, "miner", "status"))
    assert rows["status"] == "active" and rows["bond"] == f"{miner['bond_ait']} AIT", rows
    assert rows["reputation"] == str(miner["reputation"]) and rest.split()[:2] == ["KIND", "PRICE_AIT_PER_UNIT"]
    rows, _ = kv_table(cli(node, "validator", "status", v["address"]))
    assert rows["address"] == v["address"] and rows["tokens"] == f"{v['tokens_ait']} AIT" and rows["power"] == str(v["power"])
    rows, _ = kv_table(cli(node, "wallet", "balance", "dev"))
    assert rows["balance"].endswith(" AIT") and rows["address"] == bal["address"]


def test_availability_challenge_through_the_cli(pos_miner_node: NodeProcess) -> None:
    """The client challenges the availability of a result in its window: the miner role publishes the
    sampled rows on chain, `job chunks` shows them verified against the receipt, the payment follows."""
    node = pos_miner_node
    out = cli(node, "job", "submit", "--from", "dev", "--kind", "matmul-u32",
              "--params", '{"m": 8, "n": 8, "k": 8}', "--max-price", "0.001", "--max-units", "1",
              "--bid-window", "2", "--challenge-window", "600")  # 2 min of 200 ms blocks: ample on a loaded machine
    job_id = out.split()[1]

    def in_window() -> bool:
        st = json.loads(cli(node, "job", "status", job_id, "--json"))
        return st["state"] == "COMPLETED" and st["payment"] == "escrowed"

    wait_for(in_window, 60, "the job receipted and in its challenge window")
    out = cli(node, "job", "challenge-availability", job_id, "--from", "dev", "--indices", "1,6", "--wait")
    assert "published" in out, out
    chunks = json.loads(cli(node, "job", "chunks", job_id))
    assert [c["index"] for c in chunks["chunks"]] == [1, 6] and all(c["verified"] for c in chunks["chunks"])
    assert chunks["open"] is None
    st = json.loads(cli(node, "job", "status", job_id, "--json"))
    assert st["availability_rounds"] == 1 and len(st["availability_answers"]) == 1
    # a second challenge may not name a row the result does not have
    err = cli_fails(node, "job", "challenge-availability", job_id, "--from", "dev", "--indices", "99")
    assert "bad_index" in err and "Traceback" not in err


def test_staking_through_the_cli(pos_miner_node: NodeProcess) -> None:
    node = pos_miner_node
    vals = json.loads(cli(node, "validator", "status", "--json"))
    assert len(vals["validators"]) == 1 and vals["validators"][0]["status"] == "active"
    operator = vals["validators"][0]["address"]
    cli(node, "stake", "delegate", "--from", "dev", "--validator", operator, "--amount", "5")
    rewards = json.loads(cli(node, "stake", "rewards", "--from", "dev", "--json"))
    (d,) = rewards["delegations"]
    assert d["validator"] == operator and int(d["amount"]) == 5_000_000
    wait_for(lambda: int(json.loads(cli(node, "stake", "rewards", "--from", "dev", "--json"))
                         ["delegations"][0]["rewards"]) > 0, 30, "rewards accrue")
    assert "withdrawn" in cli(node, "stake", "withdraw", "--from", "dev")
    cli(node, "stake", "undelegate", "--from", "dev", "--validator", operator, "--amount", "2")
    supply = node.rpc("chain_getSupply")
    assert int(supply["unbonding"]) == 2_000_000 and int(supply["bonded"]) >= 4_000_000
    # creating a validator below the minimum self-bond is refused with the chain's reason
    fresh = SigningKey.from_seed(b"\x42" * 32)
    err = cli_fails(node, "validator", "create", "--from", "dev", "--self-bond", "1",
                    "--consensus-key", encode_address(fresh.public_key))
    assert "self_bond_too_low" in err
    # the home's own consensus key already validates: refused too
    own = read_plain_key_file(node.home / "keys" / "validator_key.json")
    assert encode_address(own.public_key) == vals["validators"][0]["consensus_key"]
    assert "consensus_key_taken" in cli_fails(node, "validator", "create", "--from", "dev", "--self-bond", "1000")


def test_market_and_staking_rpc_reject_bad_input(pos_miner_node: NodeProcess) -> None:
    from nodeproc import load_dev_key

    from state import market
    from state.types import Transaction

    node = pos_miner_node
    zero = "0x" + "00" * 32
    cases = [
        ("market_getJob", {"job_id": "0x12"}, -32602, "job_id"),
        ("market_getJob", {"job_id": zero}, -32004, "not found"),
        ("market_listJobs", {"state": "DONE"}, -32602, "state"),
        ("market_listJobs", {"cursor": "abc"}, -32602, "cursor"),
        ("market_listJobs", {"client": "ait1notanaddress"}, -32602, "client"),
        ("market_getMiner", {"address": encode_address(b"\x01" * 32)}, -32004, "not found"),
        ("blob_get", {"hash": zero}, -32004, "not found"),
        ("blob_put", {"data": "0xzz"}, -32602, "data"),
        ("staking_getDelegations", {}, -32602, "exactly one"),
        ("staking_getValidator", {"address": encode_address(b"\x02" * 32)}, -32004, "not found"),
    ]
    for method, params, code, text in cases:
        err = node.rpc_error(method, **params)
        assert err["code"] == code and text in err["message"], (method, err)
    # a market transaction with out-of-bound parameters is refused before the mempool, with the reason
    key = load_dev_key(node.home)
    body = market.job_submit_body("matmul-u32", 1, {"m": 0, "n": 1, "k": 1, "seed": b"\x00" * 32},
                                  max_price=1, max_units=1, bid_window=1, deadline=1)
    nonce = node.rpc("state_getAccount", address=encode_address(key.public_key))["pending_nonce"]
    tx = Transaction.create(key, node.rpc("system_info")["chain_id"], "job_submit", nonce, 1000, body)
    err = node.rpc_error("tx_submit", tx="0x" + tx.raw.hex())
    assert err["code"] == -32010 and err["data"]["reason"] == "invalid_body", err
    assert err["data"]["detail"] == "invalid_params", err  # the body rule's own reason
    assert "matmul-u32" in err["message"] and "out_of_bounds" in err["message"], err
    assert node.alive() and node.height() > 0


async def test_websocket_job_events_follow_one_job(pos_miner_node: NodeProcess) -> None:
    import trio
    from nodeproc import load_dev_key
    from trio_websocket import open_websocket_url

    from state import market
    from state.types import Transaction

    node = pos_miner_node
    key = load_dev_key(node.home)
    info = await trio.to_thread.run_sync(node.rpc, "system_info")
    acc = await trio.to_thread.run_sync(lambda: node.rpc("state_getAccount", address=encode_address(key.public_key)))
    params = {"m": 8, "n": 8, "k": 8, "seed": b"\x07" * 32}
    body = market.job_submit_body("matmul-u32", 1, params, max_price=5000, max_units=1, bid_window=3, deadline=20)
    tx = Transaction.create(key, info["chain_id"], "job_submit", acc["pending_nonce"], 1000, body)
    job_id = "0x" + tx.hash.hex()
    with trio.fail_after(60):
        async with open_websocket_url(node.ws_url) as ws:
            await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "subscribe",
                                              "params": {"topic": "jobs", "job_id": job_id}}))
            sub = json.loads(await ws.get_message())
            assert "result" in sub, sub
            await trio.to_thread.run_sync(lambda: node.rpc("tx_submit", tx="0x" + tx.raw.hex()))
            events = []
            while "payment_released" not in events:
                msg = json.loads(await ws.get_message())
                note = msg["params"]["result"]
                assert msg["params"]["topic"] == "jobs" and note["job_id"] == job_id, msg
                events.append(note["event"])
    # submitted -> bid -> awarded -> receipt -> released, each once and in this order
    order = ["job_submitted", "bid_placed", "job_awarded", "receipt_accepted", "payment_released"]
    assert [e for e in events if e in order] == order, events


def test_metrics_expose_market_and_staking(pos_miner_node: NodeProcess) -> None:
    import httpx

    def scrape() -> str:
        return httpx.get(pos_miner_node.metrics_url, timeout=10).text

    def ready() -> str | None:
        t = scrape()
        return t if "staking_active_validators 1.0" in t else None

    text = wait_for(ready, 30, "staking metrics")
    for name in ("market_jobs{state=\"COMPLETED\"}", "market_miner_bonds_locked", "staking_bonded_total",
                 "chain_supply_total", "market_bids_submitted_total", "job_execution_seconds_count"):
        assert name in text, name
