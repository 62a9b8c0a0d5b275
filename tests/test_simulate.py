"""``state.simulate.simulate_tx`` (behind ``tx_simulate``) on a real LevelDB-backed ChainState: the dry
run agrees with what the block then does, and writes nothing."""

from __future__ import annotations

from test_chain_store import ALICE, BOB, VAL, make_genesis, produce

from state.chain import ChainState
from state.machine import BlockEnv
from state.simulate import simulate_tx
from state.store import Store
from state.types import transfer


def env(chain: ChainState) -> BlockEnv:
    h = chain.head
    return BlockEnv(chain.chain_id, h.height + 1, h.time + 1, VAL.public_key, chain.params, consensus="poa")


def test_simulate_agrees_with_the_block_and_writes_nothing(tmp_path) -> None:
    store = Store(tmp_path / "db")
    try:
        chain = ChainState(store, make_genesis())
        cid = chain.chain_id
        head, alice = chain.head, chain.account(ALICE.public_key)
        ok = transfer(ALICE, cid, BOB.public_key, 1_000, 0, 10)
        too_much = transfer(ALICE, cid, BOB.public_key, 5_000_000, 0, 10)
        sim = simulate_tx(chain, env(chain), ok)
        assert sim["ok"] and sim["stage"] == "ok" and sim["fee"] == 10 and sim["cost"] == 1_010
        assert sim["balance_before"] - sim["balance_after"] == 1_010 and sim["work"] == 0
        bad = simulate_tx(chain, env(chain), too_much)
        assert not bad["ok"] and bad["stage"] == "execute" and bad["reason"], bad  # included, fee charged
        assert bad["balance_before"] - bad["balance_after"] == 10
        # refused before execution: nothing would be charged
        gap = simulate_tx(chain, env(chain), transfer(ALICE, cid, BOB.public_key, 1, 1, 10))
        assert gap["stage"] == "check" and gap["reason"] == "bad_nonce"
        assert simulate_tx(chain, env(chain), transfer(ALICE, "other", BOB.public_key, 1, 0, 10))["reason"] == "wrong_chain"
        assert simulate_tx(chain, env(chain), transfer(ALICE, cid, BOB.public_key, 1, 0, 1))["reason"] == "fee_too_low"
        # after the sender's pending txs, the next nonce is judged on top of them
        nxt = transfer(ALICE, cid, BOB.public_key, 1, 1, 10)
        assert simulate_tx(chain, env(chain), nxt, prior=[ok])["ok"]
        # nothing was written
        assert chain.head == head and chain.account(ALICE.public_key) == alice
        assert chain.account(BOB.public_key).balance == 0
        # the block does what the dry runs said
        block = produce(chain, [ok], head.time + 1_000)
        assert chain.results_at(block.height)[0].ok
        block = produce(chain, [transfer(ALICE, cid, BOB.public_key, 5_000_000, 1, 10)], head.time + 2_000)
        res = chain.results_at(block.height)[0]
        assert not res.ok and res.reason == bad["reason"]
    finally:
        store.close()
