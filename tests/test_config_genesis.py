"""Config precedence and refusal of bad keys/values; genesis validation; home initialisation."""

from __future__ import annotations

import json

import pytest

from node.cli import format_ait, parse_ait
from node.config import ConfigError, load_config, render_default_toml
from node.home import Home, HomeError, init_home
from state.address import encode_address as address_of
from state.crypto import SigningKey
from state.errors import AitbcError
from state.genesis import Genesis, GenesisError


def test_precedence_file_env_cli(tmp_path) -> None:
    p = tmp_path / "config.toml"
    p.write_text("[rpc]\nport = 9000\nhost = \"127.0.0.2\"\n[node]\nmoniker = \"from-file\"\n")
    cfg = load_config(p, env={"AITBC_RPC_PORT": "9100"}, overrides={"rpc.port": 9200, "rpc.host": None})
    assert cfg.rpc.port == 9200 and cfg.rpc.host == "127.0.0.2" and cfg.node.moniker == "from-file"
    assert load_config(p, env={"AITBC_RPC_PORT": "9100"}).rpc.port == 9100
    assert load_config(p, env={}).rpc.port == 9000


@pytest.mark.parametrize(
    "text,match",
    [
        ("[rpc]\nprot = 1\n", "unknown config key 'rpc.prot'"),
        ("[rcp]\nport = 1\n", "unknown config section 'rcp'"),
        ("[rpc]\nport = \"abc\"\n", "rpc.port: expected an integer"),
        ("[rpc]\nport = 70000\n", "rpc.port: 70000 is out of range"),
        ("[rpc]\nenabled = 1\n", "rpc.enabled: expected true or false"),
        ("[node]\nlog_level = \"loud\"\n", "node.log_level"),
        ("rpc = 5\n", "must be a \\[section\\]"),
        ("[rpc\n", "invalid TOML"),
    ],
)
def test_bad_config_names_the_key(tmp_path, text: str, match: str) -> None:
    p = tmp_path / "config.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(p, env={})


def test_bad_env_value_is_refused() -> None:
    with pytest.raises(ConfigError, match="environment AITBC_MEMPOOL_MAX_TXS: mempool.max_txs"):
        load_config(None, env={"AITBC_MEMPOOL_MAX_TXS": "lots"})


def test_rendered_default_config_loads_back(tmp_path) -> None:
    p = tmp_path / "config.toml"
    cfg = load_config(None, env={})
    p.write_text(render_default_toml(cfg))
    assert load_config(p, env={}) == cfg


def test_init_dev_home_and_refuse_reinit(tmp_path) -> None:
    root = tmp_path / "home"
    summary = init_home(root, dev=True)
    home = Home(root)
    g = Genesis.load(home.genesis_path)
    assert g.chain_id == "aitbc-dev" and len(g.validators) == 1
    balances = dict(g.accounts)
    dev_pk = home.keystore.info("dev").public_key
    assert balances[dev_pk] == 1_000_000_000 * 1_000_000
    assert balances[home.miner_key().public_key] == 1_000_000 * 1_000_000  # `run --dev --miner` can bond
    assert summary["dev_miner"] == address_of(home.miner_key().public_key)
    assert (home.node_key_path.stat().st_mode & 0o777) == 0o600
    assert (home.password_file("dev").stat().st_mode & 0o777) == 0o600
    assert summary["dev_account"] == home.keystore.info("dev").address
    with pytest.raises(HomeError, match="already initialised"):
        init_home(root, dev=True)


def _genesis_obj() -> dict:
    from state.address import encode_address

    pk = SigningKey.from_seed(b"\x01" * 32).public_key
    return {
        "chain_id": "g",
        "genesis_time": 0,
        "consensus": "poa",
        "params": {"block_interval_ms": 500},
        "accounts": [{"address": encode_address(pk), "balance": "100"}],
        "validators": [{"address": encode_address(pk), "power": 1, "name": "v"}],
    }


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda g: g.update(chain_id=""), "chain_id"),
        (lambda g: g.update(consensus="pow"), "consensus"),
        (lambda g: g["params"].update(block_time=1), "unknown params"),
        (lambda g: g["params"].update(min_fee=-1), "min_fee"),
        (lambda g: g["params"].update(create_empty_blocks=1), "create_empty_blocks"),
        (lambda g: g["accounts"][0].update(balance=100), "balance must be a decimal string"),
        (lambda g: g["accounts"][0].update(address="ait1xyz"), "accounts\\[0\\].address"),
        (lambda g: g["accounts"].append(dict(g["accounts"][0])), "duplicate"),
        (lambda g: g.update(validators=[]), "non-empty"),
        (lambda g: g["validators"][0].update(power=0), "power"),
        (lambda g: g.update(extra=1), "unknown fields"),
    ],
)
def test_bad_genesis_is_refused_precisely(mutate, match: str) -> None:
    g = _genesis_obj()
    mutate(g)
    with pytest.raises(GenesisError, match=match):
        Genesis.from_json(g)


def test_genesis_hash_is_stable_and_identifies_chain(tmp_path) -> None:
    g1 = Genesis.from_json(_genesis_obj())
    p = tmp_path / "genesis.json"
    g1.save(p)
    assert Genesis.load(p).hash == g1.hash
    other = _genesis_obj()
    other["chain_id"] = "g2"
    assert Genesis.from_json(other).hash != g1.hash
    p.write_text("{not json")
    with pytest.raises(GenesisError, match="invalid JSON"):
        Genesis.load(p)
    json.loads(json.dumps(g1.to_json()))


@pytest.mark.parametrize("text,base", [("1", 1_000_000), ("0.5", 500_000), ("12.000001", 12_000_001), ("0.000001", 1)])
def test_parse_and_format_ait(text: str, base: int) -> None:
    assert parse_ait(text) == base
    assert parse_ait(format_ait(base)) == base


@pytest.mark.parametrize("text", ["1.0000001", "-1", "1e3", "abc", "1.2.3", ""])
def test_parse_ait_rejects(text: str) -> None:
    with pytest.raises(AitbcError):
        parse_ait(text)
