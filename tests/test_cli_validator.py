"""`validator create` warns (stderr) and wants `--yes` when the new validator would hold 1/3 or more of the
voting power: the chain then halts whenever no node signs with its consensus key."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from nodeproc import NodeProcess, clean_env, load_dev_key, run_cli

from node.cli_staking import voting_power_warning
from state.address import encode_address
from state.crypto import SigningKey

AIT = 1_000_000


class FakeRpc:
    def __init__(self, total_power: int, power_unit: int = AIT) -> None:
        self.answers = {
            "staking_getParams": {"power_unit": str(power_unit)},
            "consensus_getValidators": {"total_power": total_power, "validators": []},
        }

    def call(self, method: str, **params: object) -> dict:
        return self.answers[method]


@pytest.mark.parametrize(
    ("others", "self_bond_ait", "warns"),
    [
        (100, 10, False),  # 10 of 110
        (100, 49, False),  # 49 of 149: the others keep 100 > 2/3 (quorum 100)
        (100, 50, True),  # exactly 1/3: the others hold 2/3, not more
        (100, 1_000, True),
        (2, 1, True),  # three equal validators: one down halts the chain
        (3, 1, False),
        (0, 5, True),  # the first validator holds everything
        (100, 0, False),  # no power at all (below power_unit)
    ],
)
def test_warning_threshold_is_the_consensus_quorum(others: int, self_bond_ait: int, warns: bool) -> None:
    w = voting_power_warning(FakeRpc(others), self_bond_ait * AIT, "ait1key")
    assert (w is not None) == warns, w
    if w:
        assert "halts" in w and "ait1key" in w and f"of {others + self_bond_ait} voting power" in w


def cli(node: NodeProcess, *args: str) -> subprocess.CompletedProcess:
    return run_cli(*args, "--home", str(node.home), env=clean_env(AITBC_RPC_URL=node.url), timeout=90)


def test_validator_create_with_a_third_of_the_power_needs_yes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run_cli("init", "--dev", "--consensus", "pos", "--home", str(home), "--block-interval", "200").returncode == 0
    node = NodeProcess(home)
    try:
        node.start()
        node.wait_ready()
        dev = load_dev_key(home)
        before = node.account(dev)
        fresh = encode_address(SigningKey.from_seed(b"\x43" * 32).public_key)
        args = ("validator", "create", "--from", "dev", "--self-bond", "1000", "--consensus-key", fresh)
        r = cli(node, *args)  # the genesis validator has power 1: this one would hold 1000 of 1001
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        warning = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
        assert len(warning) == 1 and "1000 of 1001 voting power" in warning[0] and "halts" in warning[0], r.stderr
        assert fresh in warning[0]
        errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and "--yes" in errors[0] and "confirmation_required" in errors[0], r.stderr
        assert node.account(dev)["pending_nonce"] == before["pending_nonce"]  # nothing sent
        # a refusal by the chain comes before the question (the dry run runs first)
        r = cli(node, "validator", "create", "--from", "dev", "--self-bond", "1", "--consensus-key", fresh)
        assert r.returncode == 1 and "self_bond_too_low" in r.stderr and "warning:" not in r.stderr, r.stderr
        r = cli(node, *args, "--yes")
        assert r.returncode == 0, r.stderr
        assert "warning:" in r.stderr and "created in block" in r.stdout, r.stdout + r.stderr
        v = node.rpc("staking_getValidator", address=encode_address(dev.public_key))
        assert v["consensus_key"] == fresh
    finally:
        node.close()
