"""kill -9 loses nothing committed.

A dev node gets transfers continuously (batches of 200, sequential nonces) while the test records every
tx the node reports as committed (with its height) and the hash of every block it has seen. The node is
SIGKILLed twice (once at an arbitrary moment of the stream, once in the middle of sending a batch) and
restarted on the same home; everything recorded must be there unchanged, balances must add up, the chain
must go on and accept new transfers at the account's pending nonce.

A failed write (sign state, WAL or store; injected from outside by ``tests/write_fault_node.py``) stops
the node process with one line naming the reason and exit status 1; the database holds whole blocks
only, and a restart on a working disk resumes the chain.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from nodeproc import REPO, NodeProcess, init_home, load_dev_key, wait_for

from state.chain import ChainState
from state.crypto import SigningKey
from state.genesis import Genesis
from state.store import Store
from state.types import Transaction, transfer

BATCH = 200


@dataclass
class Sent:
    tx: Transaction
    to: bytes
    amount: int
    fee: int


@dataclass
class Ledger:
    """Every tx the test built, and what the node reported about the chain."""

    key: SigningKey
    chain_id: str
    fee: int
    recipients: list[bytes]
    next_nonce: int = 0
    sent: dict[str, Sent] = field(default_factory=dict)  # hash -> what was sent (submitted or not)
    included: dict[str, int] = field(default_factory=dict)  # hash -> height the node reported
    blocks: dict[int, str] = field(default_factory=dict)  # height -> block hash the node reported
    block_txs: dict[int, list[str]] = field(default_factory=dict)  # height -> its tx hashes
    counter: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def make_batch(self, n: int = BATCH) -> list[Transaction]:
        """The next ``n`` transfers, sequential nonces, each a distinct amount (so a distinct hash)."""
        with self.lock:
            out = []
            for _ in range(n):
                self.counter += 1
                to = self.recipients[self.counter % len(self.recipients)]
                amount = 1_000 + self.counter
                tx = transfer(self.key, self.chain_id, to, amount, self.next_nonce, self.fee)
                self.next_nonce += 1
                self.sent["0x" + tx.hash.hex()] = Sent(tx, to, amount, self.fee)
                out.append(tx)
            return out

    def record(self, node: NodeProcess) -> int:
        """Read the blocks the node has committed since the last call: remember each block's hash and
        the height of every sent tx in it, and check the node's tx index agrees (chain_getTransaction
        reports the first and last tx of each block committed at that height). Returns #included.

        (Looking up every tx with chain_getTransaction would cost the node one whole-block decode per tx.)
        """
        head = node.height()
        missing = [h for h in range(1, head + 1) if h not in self.blocks]
        sample: dict[str, int] = {}
        for h, r in zip(missing, node.batch([("chain_getBlock", {"height": h}) for h in missing]), strict=True):
            block = r["result"]
            self.blocks[h] = block["hash"]
            self.block_txs[h] = block["transactions"]
            with self.lock:
                ours = [t for t in block["transactions"] if t in self.sent]
            for t in ours:
                self.included[t] = h
            if ours:
                sample[ours[0]] = sample[ours[-1]] = h
        check_tx_index(node, sample)
        return len(self.included)


def check_tx_index(node: NodeProcess, expected: dict[str, int]) -> None:
    """chain_getTransaction says committed at the expected height for each hash."""
    for h, st in node.tx_statuses(list(expected)).items():
        assert st is not None and st["status"] == "committed", (h, st)
        assert st["block_height"] == expected[h], (h, st["block_height"], expected[h])


class Submitter(threading.Thread):
    """Submits batches in a loop (flow-controlled on the mempool size) until stopped or the node dies.

    ``stall_next()`` makes the next batch go out as a streamed body that stops half way until
    ``release`` is set; ``half_sent`` is set once the first half is on the wire."""

    def __init__(self, node: NodeProcess, ledger: Ledger) -> None:
        super().__init__(daemon=True)
        self.node = node
        self.ledger = ledger
        self.stop = threading.Event()
        self.stall = threading.Event()
        self.half_sent = threading.Event()
        self.release = threading.Event()
        self.batches = 0
        self.stalled: list[str] = []  # hashes of the batch cut off half way
        self.error: BaseException | None = None

    def stall_next(self) -> None:
        self.stall.set()

    def progress(self, ledger: Ledger, node: NodeProcess, included: int, batches: int) -> bool:
        """Predicate for wait_for: at least ``included`` txs committed and ``batches`` batches sent."""
        if self.error is not None:
            raise AssertionError("submitter failed") from self.error
        return ledger.record(node) >= included and self.batches >= batches

    def run(self) -> None:
        try:
            with httpx.Client(timeout=30) as http:
                while not self.stop.is_set():
                    if not self._mempool_has_room(http):
                        continue
                    txs = self.ledger.make_batch()
                    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tx_submitBatch",
                                       "params": {"txs": ["0x" + t.raw.hex() for t in txs]}}).encode()  # fmt: skip
                    if self.stall.is_set():
                        self.stalled = ["0x" + t.hash.hex() for t in txs]
                        http.post(self.node.url, content=self._stalled(body), headers={"content-type": "application/json"})
                        return
                    res = http.post(self.node.url, content=body, headers={"content-type": "application/json"}).json()
                    assert res["result"]["accepted"] == len(txs), res
                    self.batches += 1
        except httpx.TransportError:
            pass  # the node was killed
        except BaseException as exc:  # reported by the test
            self.error = exc

    def _mempool_has_room(self, http: httpx.Client) -> bool:
        """Bounded wait until the mempool holds fewer than two batches (keeps nonces inside the
        node's nonce window); False when asked to stop."""
        def room() -> bool:
            if self.stop.is_set():
                return True
            r = http.post(self.node.url, json={"jsonrpc": "2.0", "id": 1, "method": "mempool_status"})
            return r.json()["result"]["size"] < 2 * BATCH

        wait_for(room, 20, "mempool to drain", interval=0.02)
        return not self.stop.is_set()

    def _stalled(self, body: bytes):
        yield body[: len(body) // 2]
        self.half_sent.set()
        self.release.wait(15)
        yield body[len(body) // 2 :]


def verify_after_restart(node: NodeProcess, ledger: Ledger, initial_balance: int, validator: str) -> set[str]:
    """Everything recorded before the crash is still there; balances add up. Returns the committed set."""
    # a restarted node starts with an empty mempool: whatever was not committed is gone
    assert node.rpc("mempool_status")["size"] == 0
    # every block seen before: same hash, same transactions (so every tx recorded as included in it
    # is still there at the same height)
    head = node.height()
    assert head >= max(ledger.blocks)
    blocks = node.batch([("chain_getBlock", {"height": h}) for h in range(1, head + 1)])
    committed: dict[str, int] = {}
    for h, r in enumerate(blocks, start=1):
        block = r["result"]
        if h in ledger.blocks:
            assert block["hash"] == ledger.blocks[h], (h, block["hash"], ledger.blocks[h])
            assert block["transactions"] == ledger.block_txs[h], h
        committed.update((t, h) for t in block["transactions"] if t in ledger.sent)
    for t, h in ledger.included.items():
        assert committed.get(t) == h, (t, committed.get(t), h)
    # the tx index agrees: the first and last of our txs in every block, and a spread of the others
    per_block: dict[int, list[str]] = {}
    for t, h in committed.items():
        per_block.setdefault(h, []).append(t)
    sample = {t: h for h, txs in per_block.items() for t in (txs[0], txs[-1])}
    sample.update((t, h) for t, h in list(committed.items())[::97])
    check_tx_index(node, sample)

    nonces = sorted(ledger.sent[t].tx.nonce for t in committed)
    assert nonces == list(range(len(nonces))), "committed nonces must be a gap-free prefix"
    dev = node.account(ledger.key)
    assert dev["nonce"] == len(committed) == dev["pending_nonce"]
    spent = sum(ledger.sent[t].amount + ledger.sent[t].fee for t in committed)
    assert int(dev["balance"]) == initial_balance - spent
    for pk in ledger.recipients:
        assert node.balance(pk) == sum(ledger.sent[t].amount for t in committed if ledger.sent[t].to == pk)
    assert node.balance(validator) == sum(ledger.sent[t].fee for t in committed)  # fees go to the proposer
    return set(committed)


def restart(make: Callable[..., NodeProcess], home: Path) -> NodeProcess:
    node = make(home)
    assert "Traceback" not in node.log_text(), node.log_tail()
    return node


def test_kill9_loses_nothing_committed(node_factory: Callable[..., NodeProcess], tmp_path: Path) -> None:
    node = node_factory()
    home = node.home
    info = node.rpc("system_info")
    key = load_dev_key(home)
    start = node.account(key)
    assert start["nonce"] == 0
    initial = int(start["balance"])
    ledger = Ledger(key, info["chain_id"], info["params"]["min_fee"], [SigningKey.generate().public_key for _ in range(3)])

    # crash 1: at an arbitrary moment of a continuous stream of batches and blocks
    sub = Submitter(node, ledger)
    sub.start()
    wait_for(lambda: sub.progress(ledger, node, 5 * BATCH, 6), 60, "1000 committed txs")
    ledger.record(node)
    pre_crash_head = max(ledger.blocks)
    node.kill9()
    sub.join(20)
    assert not sub.is_alive() and sub.error is None, sub.error

    node = restart(node_factory, home)
    committed = verify_after_restart(node, ledger, initial, info["validator"])
    assert len(committed) >= len(ledger.included)
    node.wait_height(pre_crash_head + 2)

    # crash 2: in the middle of sending a batch, while earlier batches are still being committed
    ledger.next_nonce = node.account(key)["pending_nonce"]
    assert ledger.next_nonce == len(committed)
    sub = Submitter(node, ledger)
    sub.start()
    target = len(ledger.included) + 2 * BATCH
    wait_for(lambda: sub.progress(ledger, node, target, 3), 60, "two more batches committed")
    sub.stall_next()
    assert sub.half_sent.wait(30), "the stalled batch never started"
    ledger.record(node)
    pre_crash_head = max(ledger.blocks)
    node.kill9()
    sub.release.set()
    sub.join(20)
    assert not sub.is_alive() and sub.error is None, sub.error

    node = restart(node_factory, home)
    committed = verify_after_restart(node, ledger, initial, info["validator"])
    assert len(sub.stalled) == BATCH
    assert set(node.tx_statuses(sub.stalled).values()) == {None}  # half a request has no effect
    node.wait_height(pre_crash_head + 2)

    # the chain takes new transfers at the pending nonce after the crashes
    ledger.next_nonce = node.account(key)["pending_nonce"]
    assert ledger.next_nonce == len(committed)
    txs = ledger.make_batch(50)
    res = node.rpc("tx_submitBatch", txs=["0x" + t.raw.hex() for t in txs])
    assert res["accepted"] == 50, res
    statuses = node.wait_included(["0x" + t.hash.hex() for t in txs])
    assert all(s["status"] == "committed" for s in statuses.values())
    assert ledger.record(node) >= len(committed) + 50
    final = verify_after_restart(node, ledger, initial, info["validator"])
    assert len(final) == len(committed) + 50
    assert node.account(key)["nonce"] == ledger.next_nonce


def test_restart_after_kill_between_signing_and_commit(node_factory: Callable[..., NodeProcess]) -> None:
    """A validator killed after signing a block but before the block reached the database comes back
    with a different block for that height; it must not refuse to sign (it moves to the next round)."""
    node = node_factory()
    home = node.home
    seen = {h: node.rpc("chain_getBlock", height=h)["hash"] for h in range(1, node.height() + 1)}
    node.stop()
    state_path = home / "data" / "priv_validator_state.json"
    last = json.loads(state_path.read_text())
    head = last["height"]  # sign state and chain agree after a clean stop
    assert head >= max(seen)
    for step in (1, 3):  # killed right after the proposal / after the precommit was signed
        state_path.write_text(json.dumps({"height": head + 1, "round": 0, "step": step, "digest": "ab" * 32}))
        node = restart(node_factory, home)
        node.wait_height(head + 1)
        commit = node.rpc("chain_getCommit", height=head + 1)
        assert commit["round"] == 1, commit
        for h, bh in seen.items():
            assert node.rpc("chain_getBlock", height=h)["hash"] == bh
        node.wait_height(head + 3)
        node.stop()
        head = json.loads(state_path.read_text())["height"]


def test_two_nodes_cannot_share_a_home(node_factory: Callable[..., NodeProcess]) -> None:
    first = node_factory()
    second = node_factory(first.home, start=False)
    second.start()
    assert second.proc is not None
    rc = second.proc.wait(30)
    assert rc != 0
    log = second.log_text()
    assert "lock" in log and "another node" in log, log
    assert "Traceback" not in log, log
    # the first one is unharmed
    h = first.height()
    first.wait_height(h + 2)
    assert first.alive()


class WriteFaultNode(NodeProcess):
    """A node process whose ``nth`` write of one kind fails like a full disk (tests/write_fault_node.py)."""

    def __init__(self, home: Path, kind: str, nth: int) -> None:
        super().__init__(home)
        self.fault = [kind, str(nth)]

    @property
    def args(self) -> list[str]:
        plain = super().args  # [python, -m, node.cli, run, ...]
        return [sys.executable, str(REPO / "tests" / "write_fault_node.py"), *self.fault, "--", *plain[3:]]


@pytest.mark.parametrize(("kind", "nth"), [("signstate", 12), ("wal", 16), ("store", 6)])
def test_failed_write_stops_the_node_with_one_line_and_a_restart_resumes(
    node_factory: Callable[..., NodeProcess], tmp_path: Path, kind: str, nth: int
) -> None:
    home = init_home(tmp_path / "home")
    faulty = WriteFaultNode(home, kind, nth)
    try:
        faulty.start()
        assert faulty.proc is not None
        rc = faulty.proc.wait(60)
    finally:
        faulty.close()
    log = faulty.log_text()
    assert rc == 1, log
    assert "Traceback" not in log, log
    lines = [line for line in log.splitlines() if f"[{kind}_write]" in line]
    assert len(lines) == 1, log
    assert lines[0].startswith(f"error: fatal [{kind}_write]: ") and "No space left on device" in lines[0], log

    # the database holds whole blocks (every block up to the head, with its commit; state root = head's)
    genesis = Genesis.load(home / "genesis.json")
    store = Store(home / "data" / "db")
    try:
        chain = ChainState(store, genesis)  # checks the state tree against the head
        head = chain.head.height
        assert head >= 2, "the node failed before it made blocks"
        hashes = {h: store.block_hash(h) for h in range(1, head + 1)}
        assert all(hashes.values()) and all(chain.commit_at(h) is not None for h in hashes)
        assert store.block_hash(head + 1) is None
    finally:
        store.close()

    node = restart(node_factory, home)  # a working disk
    node.wait_height(head + 3)
    for h, bh in hashes.items():
        assert node.rpc("chain_getBlock", height=h)["hash"] == "0x" + bh.hex()
