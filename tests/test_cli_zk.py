"""Private receipt attestations through the CLI as users run them, on a real dev node whose miner role
does the job: `job submit --attestable --wait`, `zk prove-receipt` (snarkjs), `zk verify` in separate
processes (tampered files refused with the reason), and `zk attest` to the on-chain rule (a replay is
refused with `nullifier_used`)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from nodeproc import NodeProcess, clean_env, run_cli, wait_for
from zk_tools import requires_snarkjs

pytestmark = requires_snarkjs


@pytest.fixture(scope="module")
def paid(dev_miner_node: NodeProcess) -> tuple[NodeProcess, dict]:
    """The module's dev node and an attestable job its miner was paid for."""
    node = dev_miner_node
    env = clean_env(AITBC_RPC_URL=node.url)
    wait_for(lambda: "active" in run_cli("miner", "status", "--home", str(node.home), env=env).stdout, 60,
             "the miner registered")
    r = run_cli("job", "submit", "--from", "dev", "--kind", "hash-chain", "--params", '{"chains": 8, "iterations": 16}',
                "--max-price", "0.01", "--max-units", "2", "--attestable", "--wait", "--json",
                "--home", str(node.home), env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr + node.log_tail()
    job = json.loads(r.stdout)
    assert job["state"] == "COMPLETED" and job["payment"] == "released"
    return node, job


def cli(node: NodeProcess, *args: str, timeout: float = 120):
    return run_cli(*args, "--home", str(node.home), env=clean_env(AITBC_RPC_URL=node.url), timeout=timeout)


def test_attestable_job_is_in_the_receipt_tree_and_its_secret_stays_home(paid) -> None:
    node, job = paid
    att = job["attest"]
    assert isinstance(att["leaf_index"], int)
    tree = node.rpc("zk_receiptTree")
    assert tree["depth"] == 20 and tree["size"] > att["leaf_index"]
    assert node.rpc("zk_receiptRoot", root=tree["root"])["known"] is True
    keys = list((node.home / "keys" / "attest").glob("*.key"))
    assert att["owner"][2:] + ".key" in [k.name for k in keys]
    assert all(stat.S_IMODE(os.stat(k).st_mode) == 0o600 for k in keys)
    r = cli(node, "job", "status", job["job_id"])
    assert r.returncode == 0 and f"receipt tree leaf {att['leaf_index']}" in r.stdout, r.stdout + r.stderr


def test_prove_then_verify_elsewhere_and_tampering_is_refused(paid, tmp_path: Path) -> None:
    node, job = paid
    out = tmp_path / "att.json"
    r = cli(node, "zk", "prove-receipt", job["job_id"], "--min-units", "1", "--scope", "shop",
            "--message", "challenge-42", "--out", str(out))
    assert r.returncode == 0, r.stderr
    att = json.loads(out.read_text())
    assert job["job_id"][2:] not in out.read_text() and att["scope"] == "shop" and att["message"] == "challenge-42"
    # a separate process, with only the file and a node to ask about the root
    r = run_cli("zk", "verify", str(out), "--rpc", node.url, env=clean_env())
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["valid"] is True and res["kind"] == "hash-chain" and res["min_units"] == 1
    r = run_cli("zk", "verify", str(out), "--offline", env=clean_env())
    assert r.returncode == 0 and json.loads(r.stdout)["valid"] is True, r.stderr
    # more units than proven, another scope or message: the proof no longer holds
    for field, value in (("min_units", 2), ("scope", "other"), ("message", "challenge-43"), ("kind", "matmul-u32")):
        bad = tmp_path / f"bad-{field}.json"
        bad.write_text(json.dumps({**att, field: value}))
        r = run_cli("zk", "verify", str(bad), "--rpc", node.url, env=clean_env())
        assert r.returncode == 1 and json.loads(r.stdout)["reason"] == "zk_invalid", (field, r.stdout, r.stderr)
    # a root the chain never had (with a proof made for it) is refused by the root check, not only the proof
    bad = tmp_path / "bad-root.json"
    bad.write_text(json.dumps({**att, "root": "0x" + "00" * 31 + "01"}))
    r = run_cli("zk", "verify", str(bad), "--rpc", node.url, env=clean_env())
    assert r.returncode == 1 and json.loads(r.stdout)["reason"] == "zk_invalid"
    bad.write_text("{not json")
    r = run_cli("zk", "verify", str(bad), "--rpc", node.url, env=clean_env())
    assert r.returncode != 0 and "cannot read the attestation" in r.stderr and "Traceback" not in r.stderr


def test_more_units_than_the_receipt_cannot_be_proven(paid) -> None:
    node, job = paid
    r = cli(node, "zk", "prove-receipt", job["job_id"], "--min-units", str(job["receipt"]["units"] + 1))
    assert r.returncode != 0 and "fewer than --min-units" in r.stderr and "Traceback" not in r.stderr


def test_attest_on_chain_records_the_nullifier_once(paid, tmp_path: Path) -> None:
    node, job = paid
    keys = json.loads(cli(node, "keys", "show", "dev", "--json").stdout)
    dev = keys["address"]
    out = tmp_path / "onchain.json"
    r = cli(node, "zk", "prove-receipt", job["job_id"], "--scope", "rule", "--for", dev, "--out", str(out))
    assert r.returncode == 0, r.stderr
    att = json.loads(out.read_text())
    r = cli(node, "zk", "attest", str(out), "--from", "dev")
    assert r.returncode == 0, r.stdout + r.stderr
    used = node.rpc("zk_getNullifier", scope="0x" + b"rule".hex(), nullifier=att["nullifier"])
    assert used["used"] is True and used["height"] >= 1
    r = cli(node, "zk", "attest", str(out), "--from", "dev")
    assert r.returncode != 0 and "nullifier_used" in r.stderr and "Traceback" not in r.stderr
    # an attestation bound to another address cannot be posted by dev
    other = tmp_path / "other.json"
    r = cli(node, "zk", "prove-receipt", job["job_id"], "--scope", "rule2", "--out", str(other))
    assert r.returncode == 0, r.stderr
    r = cli(node, "zk", "attest", str(other), "--from", "dev")
    assert r.returncode != 0 and "--for" in r.stderr


def test_a_job_without_attestable_says_why(paid) -> None:
    node, _ = paid
    r = cli(node, "job", "submit", "--from", "dev", "--kind", "hash-chain", "--params",
            '{"chains": 8, "iterations": 16}', "--max-price", "0.01", "--max-units", "2", "--json")
    assert r.returncode == 0, r.stderr
    job_id = json.loads(r.stdout)["job_id"]
    r = cli(node, "zk", "prove-receipt", job_id)
    assert r.returncode != 0 and "--attestable" in r.stderr and "Traceback" not in r.stderr
