"""The CLI as geth and CometBFT users expect it, against real node processes (no mocks): client commands
find the node running on a home (``<home>/rpc.url``), ``--rpc`` takes a base URL, operator mistakes are
one line on stderr with a non-zero exit, ``--json`` is typed, ``--wait`` reports progress on stderr, and
``tx_simulate`` dry-runs a transaction so one that would fail is refused without spending a fee."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from nodeproc import REPO, NodeProcess, address, clean_env, free_port, load_dev_key, run_cli

from state import market
from state.types import Transaction, transfer


def one_line_error(r: subprocess.CompletedProcess) -> str:
    """The error of a failed command: exit code != 0, one `error:` line on stderr, no traceback."""
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, r.stderr
    return lines[0]


# ------------------------------------------------------------------------------ finding the node


def test_client_finds_the_node_running_on_the_home(node_factory: Callable[..., NodeProcess]) -> None:
    port = free_port()
    node = node_factory(rpc_port=port)  # --rpc-port P, not the config's port (8202)
    home = node.home
    url_file = home / "rpc.url"
    url, pid = url_file.read_text().split()
    assert url == f"http://127.0.0.1:{port}/rpc" and int(pid) == node.pid

    r = run_cli("status", "--home", str(home), "--json")  # no --rpc, no $AITBC_RPC_URL
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert isinstance(st["height"], int) and st["height"] >= 1 and st["chain_id"] == "aitbc-dev"
    # --rpc takes a base URL (geth / CometBFT style) as well as the /rpc URL
    for given in (f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/", f"127.0.0.1:{port}", node.url):
        r = run_cli("status", "--rpc", given, "--home", str(home / "elsewhere"))
        assert r.returncode == 0, (given, r.stderr)
    # $AITBC_RPC_URL keeps priority over the home's file
    r = run_cli("status", "--home", str(home), env=clean_env(AITBC_RPC_URL=f"http://127.0.0.1:{free_port()}"))
    assert "cannot reach the node" in one_line_error(r)

    # a clean stop removes the file
    node.stop()
    assert not url_file.exists()
    # a stale file of a killed node does not mislead: its pid is gone, the config's URL is used
    cfg_port = free_port()
    cfg = home / "config.toml"
    assert cfg.read_text().count("port = 8202") == 1
    cfg.write_text(cfg.read_text().replace("port = 8202", f"port = {cfg_port}"))
    node2 = NodeProcess(home, rpc_port=free_port()).start()
    try:
        node2.wait_ready()
        assert url_file.read_text().split()[1] == str(node2.pid)
        node2.kill9()
        assert url_file.exists()
        r = run_cli("status", "--home", str(home))
        err = one_line_error(r)
        assert f":{node2.rpc_port}/" not in err and f"127.0.0.1:{cfg_port}/rpc" in err, err
    finally:
        node2.close()


def test_rpc_port_in_use_is_one_clear_line(node_factory: Callable[..., NodeProcess], tmp_path: Path) -> None:
    node = node_factory()
    other = NodeProcess(tmp_path / "other", rpc_port=node.rpc_port)
    try:
        other.start()
        assert other.proc is not None
        other.proc.wait(60)
        assert other.proc.returncode == 1
        log = other.log_text()
        assert "Traceback" not in log, log
        (line,) = [ln for ln in log.splitlines() if ln.startswith("error:")]
        assert f"127.0.0.1:{node.rpc_port}" in line and "in use" in line and "rpc_port_in_use" in line, line
        assert not (tmp_path / "other" / "rpc.url").exists()
        assert node.alive() and (node.home / "rpc.url").exists()  # the running node's file is untouched
    finally:
        other.close()


# ---------------------------------------------------------------------------- operator mistakes


def test_operator_mistakes_are_one_line(dev_node: NodeProcess, tmp_path: Path) -> None:
    home = str(dev_node.home)
    dead = f"http://127.0.0.1:{free_port()}"
    assert "cannot reach the node" in one_line_error(run_cli("status", "--rpc", dead))
    assert "cannot reach the node" in one_line_error(run_cli("wallet", "balance", "dev", "--home", home, "--rpc", dead))
    assert "http(s) URL" in one_line_error(run_cli("status", "--rpc", "ftp://x"))
    err = one_line_error(run_cli("wallet", "balance", "ait1notanaddress", "--home", home, "--rpc", dev_node.url))
    assert "neither a valid ait1" in err
    for amount in ("1.2.3", "-5", "abc", "0.0000001"):
        err = one_line_error(run_cli("wallet", "send", "--from", "dev", "--to", "dev", "--amount", amount,
                                     "--home", home, "--rpc", dead))  # checked before the node is asked
        assert "amount" in err, err
    err = one_line_error(run_cli("job", "submit", "--from", "dev", "--kind", "matmul-u32", "--params", "{}",
                                 "--max-price", "1", "--max-units", "1", "--input", str(tmp_path / "missing"),
                                 "--home", home, "--rpc", dev_node.url))
    assert "missing" in err and "No such file" in err
    # no password available (stdin closed, not a terminal)
    r = subprocess.run([sys.executable, "-m", "node.cli", "keys", "new", "bob", "--home", home], cwd=REPO,
                       env=clean_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert "no password" in one_line_error(r)


def test_eof_at_a_password_prompt_is_one_line(dev_node: NodeProcess) -> None:
    """Ctrl-D at an interactive password prompt (a terminal): one line, not a traceback."""
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "node.cli", "keys", "new", "carol", "--home", str(dev_node.home)],
            cwd=REPO, env=clean_env(), stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True, text=True,
        )
        os.close(slave)
        slave = -1
        time.sleep(1.5)  # let it reach the prompt
        os.write(master, b"\x04")
        out, err = proc.communicate(timeout=60)
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    r = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert "stdin closed" in one_line_error(r)
    assert not (dev_node.home / "keys" / "keystore" / "carol.json").exists()


def test_miner_status_does_not_create_keys(dev_node: NodeProcess, tmp_path: Path) -> None:
    home = tmp_path / "plain"
    assert run_cli("init", "--home", str(home)).returncode == 0  # not --dev: no miner key
    key_file = home / "keys" / "miner_key.json"
    assert not key_file.exists()
    err = one_line_error(run_cli("miner", "status", "--home", str(home), "--rpc", dev_node.url))
    assert "no miner key" in err and "no_miner_key" in err
    assert not key_file.exists()
    r = run_cli("miner", "status", "--home", str(home), "--rpc", dev_node.url, "--json")
    assert not key_file.exists() and r.returncode != 0


# ------------------------------------------------------------------------------ JSON and progress


def test_wallet_and_status_json_is_typed_and_wait_reports_progress(dev_node: NodeProcess) -> None:
    home, url = str(dev_node.home), dev_node.url
    r = run_cli("status", "--json", "--home", home, "--rpc", url)
    st = json.loads(r.stdout)
    for k in ("height", "finalized_height", "peers"):
        assert isinstance(st[k], int), (k, st)
    assert isinstance(st["mempool"]["size"], int) and isinstance(st["catching_up"], bool)
    r = run_cli("wallet", "balance", "dev", "--json", "--home", home, "--rpc", url)
    bal = json.loads(r.stdout)
    assert isinstance(bal["balance"], int) and isinstance(bal["nonce"], int)
    assert bal["balance_ait"] == f"{bal['balance'] // 1_000_000}" or "." in bal["balance_ait"]

    r = run_cli("wallet", "send", "--from", "dev", "--to", "dev", "--amount", "1.25", "--wait", "--json",
                "--home", home, "--rpc", url)
    assert r.returncode == 0, r.stderr
    sent = json.loads(r.stdout)  # stdout is only the result
    assert sent["status"] == "committed" and isinstance(sent["block_height"], int)
    assert sent["amount"] == 1_250_000 and sent["amount_ait"] == "1.25" and isinstance(sent["fee"], int)
    # progress on stderr: inclusion, then finality
    lines = r.stderr.splitlines()
    inc = next(i for i, ln in enumerate(lines) if "included in block" in ln)
    fin = next(i for i, ln in enumerate(lines) if "final" in ln and "finalized height" in ln)
    assert inc < fin, r.stderr

    r = run_cli("keys", "list", "--home", home)
    assert r.stdout.splitlines()[0].split() == ["NAME", "ADDRESS"]
    assert isinstance(json.loads(run_cli("keys", "list", "--json", "--home", home).stdout), list)
    r = run_cli("job", "list", "--home", home, "--rpc", url)
    assert r.returncode == 0 and r.stdout.split()[:2] == ["JOB_ID", "STATE"], r.stdout
    assert isinstance(json.loads(run_cli("job", "list", "--json", "--home", home, "--rpc", url).stdout)["jobs"], list)
    r = run_cli("model", "list", "--json", "--home", home, "--rpc", url)
    assert isinstance(json.loads(r.stdout)["models"], list), r.stderr


# --------------------------------------------------------------------------------------- simulate


def test_tx_simulate_dry_runs_without_committing(dev_node: NodeProcess) -> None:
    key = load_dev_key(dev_node.home)
    info = dev_node.rpc("system_info")
    fee = info["params"]["min_fee"]
    before = dev_node.account(key)
    nonce = before["pending_nonce"]
    other = load_dev_key(dev_node.home).public_key
    ok = transfer(key, info["chain_id"], other, 5, nonce, fee)
    sim = dev_node.rpc("tx_simulate", tx="0x" + ok.raw.hex())
    assert sim["ok"] is True and sim["stage"] == "ok" and sim["reason"] == ""
    assert sim["fee"] == str(fee) and sim["cost"] == str(fee + 5) and sim["hash"] == "0x" + ok.hash.hex()
    assert int(sim["balance_before"]) - int(sim["balance_after"]) == fee  # to self: only the fee
    # a body that fails in the block (cancel a job that does not exist): reported, nothing charged
    bad = Transaction.create(key, info["chain_id"], "job_cancel", nonce, fee, market.job_cancel_body(b"\x00" * 32))
    sim = dev_node.rpc("tx_simulate", tx="0x" + bad.raw.hex())
    assert sim["ok"] is False and sim["stage"] == "execute" and sim["reason"], sim
    # refused before execution: a wrong nonce, a wrong chain
    stale = transfer(key, info["chain_id"], other, 5, nonce + 5, fee)
    sim = dev_node.rpc("tx_simulate", tx="0x" + stale.raw.hex())
    assert sim["ok"] is False and sim["stage"] == "check" and sim["reason"] == "bad_nonce", sim
    wrong = transfer(key, "another-chain", other, 5, nonce, fee)
    assert dev_node.rpc("tx_simulate", tx="0x" + wrong.raw.hex())["reason"] == "wrong_chain"
    assert dev_node.rpc("tx_simulate", tx="0x00")["stage"] == "decode"
    # nothing was pooled or committed
    dev_node.wait_height(dev_node.height() + 2)
    after = dev_node.account(key)
    assert after["nonce"] == before["nonce"] and after["pending_nonce"] == nonce
    assert after["balance"] == before["balance"]
    assert dev_node.tx_status("0x" + ok.hash.hex()) is None
    # after a pending tx of the same sender, the next nonce is judged on top of it
    first = transfer(key, info["chain_id"], other, 5, nonce, fee)
    second = transfer(key, info["chain_id"], other, 5, nonce + 1, fee)
    assert dev_node.rpc("tx_submit", tx="0x" + first.raw.hex())
    sim = dev_node.rpc("tx_simulate", tx="0x" + second.raw.hex())
    assert sim["ok"] is True, sim  # judged after `first` (pending, or committed meanwhile)
    dev_node.wait_included(["0x" + first.hash.hex()])


def test_cli_refuses_a_tx_that_would_fail_without_spending_a_fee(dev_node: NodeProcess) -> None:
    key = load_dev_key(dev_node.home)
    before = dev_node.account(key)
    r = run_cli("job", "cancel", "0x" + "00" * 32, "--from", "dev", "--home", str(dev_node.home),
                "--rpc", dev_node.url)
    err = one_line_error(r)
    assert "would fail in the block" in err and "not sent, no fee spent" in err, err
    dev_node.wait_height(dev_node.height() + 2)
    after = dev_node.account(key)
    assert after["nonce"] == before["nonce"] and after["balance"] == before["balance"]
    # the same check for a transfer: the JSON result of a good one, a refusal for an unaffordable one
    r = run_cli("wallet", "send", "--from", "dev", "--to", address(key), "--amount", "2000000000",
                "--home", str(dev_node.home), "--rpc", dev_node.url)
    assert "insufficient" in one_line_error(r)
    assert dev_node.account(key)["pending_nonce"] == before["pending_nonce"]  # nothing pooled


def test_job_submit_below_the_metered_work_is_refused_before_sending(dev_node: NodeProcess) -> None:
    """A 256³ matmul is 16 mmac: `--max-units 1` would have the miner run it all for 1 unit. The dry run
    refuses it with the chain's reason, in one line, and nothing is pooled or charged."""
    key = load_dev_key(dev_node.home)
    before = dev_node.account(key)
    r = run_cli("job", "submit", "--from", "dev", "--kind", "matmul-u32", "--params", '{"m":256,"n":256,"k":256}',
                "--max-price", "0.001", "--max-units", "1", "--home", str(dev_node.home), "--rpc", dev_node.url)
    err = one_line_error(r)
    assert "max_units_below_work" in err and "16 mmac" in err and "not sent, no fee spent" in err, err
    # the node's tx_submit refuses such a body too (the mempool reports every static body refusal as
    # invalid_body, with the chain's message)
    info = dev_node.rpc("system_info")
    body = market.job_submit_body("matmul-u32", 1, {"m": 256, "n": 256, "k": 256, "seed": b"\x01" * 32},
                                  max_price=1000, max_units=15, bid_window=2, deadline=5)
    tx = Transaction.create(key, info["chain_id"], "job_submit", before["pending_nonce"], info["params"]["min_fee"], body)
    err = dev_node.rpc_error("tx_submit", tx="0x" + tx.raw.hex())
    assert err["data"]["reason"] == "invalid_body" and "below the job's metered work of 16 mmac" in err["message"], err
    dev_node.wait_height(dev_node.height() + 2)
    after = dev_node.account(key)
    assert after["pending_nonce"] == before["pending_nonce"] and after["balance"] == before["balance"]
