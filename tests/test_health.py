"""``GET /health`` and ``aitbc-peer status`` tell the truth: ok while blocks commit, 503 ``stalled`` when
the chain stops (a 2-validator testnet with one validator stopped), ok again when it resumes."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
from nodeproc import NodeProcess, clean_env, run_cli, wait_for


def _health(rpc_url: str) -> httpx.Response:
    return httpx.get(rpc_url.removesuffix("/rpc") + "/health", timeout=5)


def test_dev_node_reports_ok(node_factory: Callable[..., NodeProcess]) -> None:
    node = node_factory()
    node.wait_height(node.height() + 2)
    r = _health(node.url)
    body = r.json()
    assert r.status_code == 200 and body["status"] == "ok" and body["reasons"] == [], body
    assert body["height"] >= 2 and body["finalized_height"] == body["height"]
    assert 0 <= body["seconds_since_last_block"] < body["stall_after_s"]
    assert body["block_interval_s"] == 0.2 and body["stall_after_s"] == 2.0  # 10 intervals by default
    assert body["sync"]["syncing"] is False and "peers" in body
    assert "committed block" in node.log_text()  # one INFO line per block

    r = run_cli("status", "--json", env=clean_env(AITBC_RPC_URL=node.url))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["health"]["status"] == "ok"
    r = run_cli("status", env=clean_env(AITBC_RPC_URL=node.url))
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.strip().startswith("health"))
    assert line.split()[1] == "ok", r.stdout


def test_stalled_testnet_reports_503_then_recovers(make_net) -> None:
    # 2 validators of equal power: with one stopped the other cannot reach 2/3 and the chain stops.
    net = make_net(2, block_interval_ms=200, config_overrides={"node": {"stall_intervals": 4}})
    n0, n1 = net.nodes

    def status_of(n) -> tuple[int, dict] | None:
        try:
            r = _health(n.rpc_url)
        except httpx.HTTPError:
            return None
        return r.status_code, r.json()

    def healthy(n) -> bool:
        s = status_of(n)
        return s is not None and s[0] == 200 and s[1]["height"] >= 2

    wait_for(lambda: healthy(n0) and healthy(n1), 30, "both nodes healthy")
    net.stop(n1, timeout=5)

    def stalled() -> dict | None:
        s = status_of(n0)
        return s[1] if s is not None and s[0] == 503 and s[1]["status"] == "stalled" else None

    body = wait_for(stalled, 10, "/health 503 stalled on the remaining node")
    assert body["reasons"] == ["stalled"] and body["seconds_since_last_block"] > body["stall_after_s"] == 0.8
    r = run_cli("status", "--json", env=clean_env(AITBC_RPC_URL=n0.rpc_url))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["health"]["status"] == "stalled"
    r = run_cli("status", env=clean_env(AITBC_RPC_URL=n0.rpc_url))
    assert "stalled (last block" in r.stdout, r.stdout

    height = body["height"]
    net.start(n1)
    wait_for(lambda: (s := status_of(n0)) is not None and s[0] == 200 and s[1]["height"] > height,
             30, "/health ok again once the other validator is back")
