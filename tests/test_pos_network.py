"""Proof of stake on multi-process networks: bonding into the set, double-sign slashing, downtime jailing
and unjailing, leaving by undelegation, and the hybrid PoA -> PoS switch.

Every node is an `aitbc-peer run` process on loopback; every wait is bounded; every process is stopped
by pid (the make_net fixture).
"""

from __future__ import annotations

import json
import time

from net_helpers import FAST, assert_no_fork, head, wait_heights

from node.home import Home
from node.keystore import read_plain_key_file
from state import staking
from state.address import encode_address
from state.crypto import SigningKey
from state.types import Transaction
from testnet import faults
from testnet.network import Network, NodeInfo

AIT = 1_000_000
STAKING = {
    "epoch_blocks": 8,
    "min_self_bond": AIT // 2,
    "power_unit": AIT // 10,
    "unbonding_blocks": 10,
    "signed_blocks_window": 16,
    "min_signed_bps": 5_000,
    "jail_blocks": 12,
    "max_evidence_age": 500,
}


def send(net: Network, node: NodeInfo, key: SigningKey, tx_type: str, body: dict, timeout: float = 30) -> dict:
    acc = net.rpc(node, "state_getAccount", address=encode_address(key.public_key))
    tx = Transaction.create(key, net.chain_id, tx_type, acc["pending_nonce"], 1000, body)
    h = net.rpc(node, "tx_submit", tx="0x" + tx.raw.hex())["hash"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = net.rpc(node, "chain_getTransaction", hash=h)
        if st["status"] != "pending":
            return st
        time.sleep(0.1)
    raise AssertionError(f"{tx_type} not included within {timeout} s")


def until(what: str, pred, timeout: float = 90, every: float = 0.25):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = pred()
        except Exception as exc:  # a node restarting: try again
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def active_keys(net: Network, node: NodeInfo, height: int | None = None) -> set[str]:
    args = {"height": height} if height is not None else {}
    return {v["address"] for v in net.rpc(node, "consensus_getValidators", **args)["validators"]}


class WsCollector:
    """Collects WebSocket notifications of some topics from one node, in a background thread."""

    def __init__(self, url: str, topics: list[str]) -> None:
        import threading

        import trio

        self.url, self.topics = url, topics
        self.notes: list[dict] = []
        self.subscribed = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)
        self._thread.start()
        assert self.subscribed.wait(30), "WebSocket subscription failed"

    async def _main(self) -> None:
        import trio
        from trio_websocket import open_websocket_url

        async with open_websocket_url(self.url) as ws:
            for i, topic in enumerate(self.topics):
                await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": i, "method": "subscribe",
                                                  "params": {"topic": topic}}))
                assert "result" in json.loads(await ws.get_message())
            self.subscribed.set()
            while not self._stop.is_set():
                with trio.move_on_after(0.2):
                    msg = json.loads(await ws.get_message())
                    if msg.get("method") == "subscription":
                        self.notes.append(msg["params"])

    def stop(self) -> list[dict]:
        self._stop.set()
        self._thread.join(10)
        return self.notes


def validator_key(n: NodeInfo) -> SigningKey:
    return read_plain_key_file(Home(n.home).validator_key_path)


def validator(net: Network, node: NodeInfo, operator: str) -> dict:
    return net.rpc(node, "staking_getValidator", address=operator)


def signers(net: Network, node: NodeInfo, height: int) -> set[str]:
    return {s["validator"] for s in net.rpc(node, "chain_getCommit", height=height)["signatures"]}


def test_pos_join_double_sign_downtime_and_leave(make_net) -> None:
    # genesis validators: power 10 = 1 AIT staked each (a slash must not round their power to zero)
    net = make_net(5, block_interval_ms=250, start=False, consensus="pos", validators=4, validator_power=10,
                   params={**FAST, "staking": STAKING})
    byz = net.nodes[3]
    for n in net.nodes:
        net.start(n, wrapper_args=faults.wrapper_args(double_sign=True) if n is byz else None)
    n0 = net.nodes[0]
    wait_heights(net, net.nodes[:3], 2, 90)
    keys = {n.index: validator_key(n) for n in net.nodes}
    addr = {i: encode_address(k.public_key) for i, k in keys.items()}
    assert active_keys(net, n0, 1) == {addr[i] for i in range(4)}  # genesis: 4 staked validators

    # 1. the double-signer: evidence lands in a block; slashed, jailed and tombstoned on every node alike
    v3 = until("double-sign slash", lambda: (v := validator(net, n0, addr[3]))["status"] == "tombstoned" and v)
    assert int(v3["tokens"]) < AIT  # 5 % of its 1 AIT stake burned
    # every node applied the same slash (compare once each has the evidence block)
    fields = ("status", "tokens", "shares", "self_bond", "jailed", "tombstoned")

    def slashed_view(n: NodeInfo) -> str | None:
        v = validator(net, n, addr[3])
        return json.dumps({f: v[f] for f in fields}) if v["tombstoned"] else None

    views = {until(f"node{n.index} applies the slash", lambda n=n: slashed_view(n)) for n in net.nodes[:3]}
    assert len(views) == 1, views
    until("the double-signer leaves the set", lambda: addr[3] not in active_keys(net, n0))
    net.stop(byz, timeout=5)

    # 2. a new validator bonds (operator: a faucet account, consensus key: node4's) and joins at the epoch
    ws = WsCollector(n0.rpc_url.replace("http://", "ws://").replace("/rpc", "/ws"), ["validatorSet", "slashes"])
    op = net.faucet_keys()[0]
    st = send(net, n0, op, "validator_create",
              staking.validator_create_body(keys[4].public_key, 500, 2 * AIT, "node4"))
    assert st["status"] == "committed", st
    until("node4 in the active set", lambda: addr[4] in active_keys(net, n0))
    joined = head(net, n0)
    until("node4 signs commits", lambda: any(addr[4] in signers(net, n0, h) for h in range(joined, head(net, n0) + 1)))
    until("node4 proposes", lambda: any(net.rpc(n0, "chain_getBlock", height=h)["proposer"] == addr[4]
                                        for h in range(joined, head(net, n0) + 1)))
    me = validator(net, n0, encode_address(op.public_key))
    assert me["status"] == "active" and me["power"] == 20

    # 3. downtime: node2 stops; it is jailed for missing the window's commits; the chain goes on (4 of 5)
    net.stop(net.nodes[2], timeout=5)
    v2 = until("node2 jailed for downtime", lambda: (v := validator(net, n0, addr[2]))["status"] == "jailed" and v,
               timeout=120)
    assert int(v2["tokens"]) < AIT
    until("node2 leaves the set", lambda: addr[2] not in active_keys(net, n0))
    # subscribers saw both: the set change that brought node4 in, and node2's downtime slash and jailing
    notes = ws.stop()
    sets = [n["result"] for n in notes if n["topic"] == "validatorSet" and n["result"]["event"] == "validator_set"]
    assert any(addr[4] in {v["address"] for v in s["validators"]} for s in sets), notes
    slashes = [n["result"] for n in notes if n["topic"] == "slashes"]
    assert any(e["event"] == "slash" and e["reason"] == "downtime" and e["consensus_key"] == addr[2] for e in slashes)
    assert any(e["event"] == "jail" and e["consensus_key"] == addr[2] for e in slashes), slashes
    net.start(net.nodes[2])
    wait_heights(net, [net.nodes[2]], head(net, n0), 90)
    # its operator (the genesis key) needs coins for fees; too early an unjail is refused with a reason;
    # after jail_blocks it works and node2 rejoins
    from state.types import transfer

    fund = transfer(net.faucet_keys()[5], net.chain_id, keys[2].public_key, 10 * AIT, 0, 1000)
    net.rpc(n0, "tx_submit", tx="0x" + fund.raw.hex())
    until("operator funded", lambda: int(net.rpc(n0, "state_getAccount", address=addr[2])["balance"]) > 0)
    early = send(net, n0, keys[2], "unjail", staking.unjail_body())
    if early["status"] == "failed":
        assert early["result"]["reason"]
        jailed_until = validator(net, n0, addr[2])["jailed_until"]
        until("jail period over", lambda: head(net, n0) >= jailed_until, timeout=60)
        st = send(net, n0, keys[2], "unjail", staking.unjail_body())
        assert st["status"] == "committed", st["result"]
    until("node2 back in the set", lambda: addr[2] in active_keys(net, n0), timeout=90)
    back = head(net, n0)
    until("node2 signs again", lambda: any(addr[2] in signers(net, n0, h) for h in range(back, head(net, n0) + 1)))

    # 4. the new validator undelegates below the minimum self-bond: it leaves at the next epoch
    st = send(net, n0, op, "undelegate", staking.undelegate_body(op.public_key, 2 * AIT - AIT // 4))
    assert st["status"] == "committed", st
    until("node4 leaves the set", lambda: addr[4] not in active_keys(net, n0))
    unb = net.rpc(n0, "staking_getUnbonding", delegator=encode_address(op.public_key))["unbonding"]
    assert unb and int(unb[0]["amount"]) == 2 * AIT - AIT // 4

    # supply: genesis + one block reward per block - what the two slashes burned, on every live node
    live = [n for n in net.nodes if n is not byz]
    genesis_total = 64 * 1_000_000 * AIT + 4 * AIT  # faucet accounts + the four genesis self-bonds

    def supply_matches(n: NodeInfo) -> bool:
        before = head(net, n)
        sup = net.rpc(n, "chain_getSupply")
        burned = sum(AIT - int(validator(net, n, addr[i])["tokens"]) for i in (2, 3))
        return before == sup["height"] and int(sup["total"]) == genesis_total + sup["height"] * AIT - burned

    for n in live:
        until(f"node{n.index}'s supply accounts for every unit", lambda n=n: supply_matches(n), timeout=30)
    assert_no_fork(net, live)


def test_hybrid_switches_from_authorities_to_stake_without_a_pause(make_net) -> None:
    switch = 40
    net = make_net(4, block_interval_ms=250, start=False, consensus="hybrid", validators=3,
                   params={**FAST, "staking": {**STAKING, "hybrid_switch_height": switch, "epoch_blocks": 8}})
    for n in net.nodes:
        net.start(n)
    n0 = net.nodes[0]
    wait_heights(net, net.nodes, 2, 90)
    keys = {n.index: validator_key(n) for n in net.nodes}
    addr = {i: encode_address(k.public_key) for i, k in keys.items()}
    assert active_keys(net, n0, 1) == {addr[i] for i in range(3)}  # the authorities
    # three staked validators: node3 (new) and node0/node1 bonding their own consensus keys
    faucet = net.faucet_keys()
    for i, idx in enumerate((3, 0, 1)):
        st = send(net, n0, faucet[i], "validator_create",
                  staking.validator_create_body(keys[idx].public_key, 0, 2 * AIT, f"staked{idx}"))
        assert st["status"] == "committed", st
    assert head(net, n0) < switch - 8, "the chain got too close to the switch height before staking"
    until("the switch height", lambda: head(net, n0) >= switch + 3, timeout=120)
    after = active_keys(net, n0)
    assert after == {addr[3], addr[0], addr[1]}
    assert addr[2] not in after  # the authority without stake is out
    # no pause across the switch: block times around it stay within 3 intervals (+ scheduling slack)
    times = [net.rpc(n0, "chain_getBlock", height=h)["time"] for h in range(switch - 3, switch + 4)]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert max(gaps) <= 3 * 250 + 500, gaps
    assert_no_fork(net)
