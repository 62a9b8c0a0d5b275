"""The node's home directory: config.toml, genesis.json, keys/, data/ (LevelDB, sign state).

    <home>/config.toml
    <home>/genesis.json
    <home>/keys/node_key.json          libp2p identity (plain, 0600)
    <home>/keys/validator_key.json     consensus key (plain, 0600)
    <home>/keys/miner_key.json         the miner role's account key (plain, 0600; created on first use)
    <home>/keys/keystore/<name>.json   wallets (Argon2id + XChaCha20-Poly1305)
    <home>/keys/<name>.password        only for the --dev account, so dev wallets need no prompt
    <home>/data/db/                    LevelDB
    <home>/data/priv_validator_state.json
    <home>/rpc.url                     the running node's JSON-RPC URL and pid (removed on clean stop)
"""

from __future__ import annotations

import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from state.address import encode_address
from state.errors import AitbcError
from state.genesis import ChainParams, Genesis, GenesisValidator, now_ms

from .config import Config, render_default_toml
from .keystore import Keystore, read_plain_key_file, write_plain_key_file

AIT = 1_000_000
DEV_ACCOUNT = "dev"
DEV_FUNDS = 1_000_000_000 * AIT
DEV_MINER_FUNDS = 1_000_000 * AIT


class HomeError(AitbcError):
    reason = "home"


def default_home() -> Path:
    """``$AITBC_HOME``, else the platform's user data directory + ``/aitbc``."""
    env = os.environ.get("AITBC_HOME")
    if env:
        return Path(env).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "aitbc"
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "aitbc"


@dataclass(frozen=True)
class Home:
    root: Path

    @property
    def config_path(self) -> Path:
        return self.root / "config.toml"

    @property
    def genesis_path(self) -> Path:
        return self.root / "genesis.json"

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    @property
    def node_key_path(self) -> Path:
        return self.keys_dir / "node_key.json"

    @property
    def validator_key_path(self) -> Path:
        return self.keys_dir / "validator_key.json"

    @property
    def miner_key_path(self) -> Path:
        return self.keys_dir / "miner_key.json"

    @property
    def rpc_url_path(self) -> Path:
        return self.root / "rpc.url"

    def running_rpc_url(self) -> str | None:
        """The JSON-RPC URL a node running on this home wrote (``rpc.url``: URL, then its pid), or None
        when there is none or its process is gone (a stale file of a killed node)."""
        try:
            lines = self.rpc_url_path.read_text().split()
        except (OSError, UnicodeDecodeError):
            return None
        if not lines or not lines[0].startswith(("http://", "https://")):
            return None
        if len(lines) > 1:
            try:
                pid = int(lines[1])
            except ValueError:
                return None
            if not pid_alive(pid):
                return None
        return lines[0]

    def miner_key(self, *, create: bool = True):
        """The miner role's account key (plain, like the validator key: the role signs unattended);
        created on first use (unless ``create`` is false: then HomeError when there is none)."""
        if not create and not self.miner_key_path.exists():
            raise HomeError(f"{self.root} has no miner key ({self.miner_key_path}): give an ADDRESS or --from NAME",
                            reason="no_miner_key")
        if not self.miner_key_path.exists():
            return write_plain_key_file(self.miner_key_path, secrets.token_bytes(32))
        return read_plain_key_file(self.miner_key_path)

    @property
    def keystore(self) -> Keystore:
        return Keystore(self.keys_dir / "keystore")

    def password_file(self, name: str) -> Path:
        return self.keys_dir / f"{name}.password"

    def data_dir(self, cfg: Config) -> Path:
        p = Path(cfg.node.data_dir)
        return p if p.is_absolute() else self.root / p

    def is_initialised(self) -> bool:
        return self.genesis_path.exists() and self.validator_key_path.exists()


def init_home(
    root: Path,
    *,
    dev: bool = False,
    chain_id: str | None = None,
    moniker: str | None = None,
    genesis_file: Path | None = None,
    allocations: list[tuple[str, int]] | None = None,
    block_interval_ms: int | None = None,
    consensus: str = "poa",
) -> dict:
    """Create a home: keys, config.toml and genesis.json (a one-validator genesis unless
    ``genesis_file`` is given). Refuses to touch an initialised home. Returns a summary."""
    home = Home(root)
    if home.genesis_path.exists() or home.config_path.exists():
        raise HomeError(f"{root} is already initialised (config.toml or genesis.json exists)")
    root.mkdir(parents=True, exist_ok=True)
    home.keys_dir.mkdir(mode=0o700, exist_ok=True)
    node_key = write_plain_key_file(home.node_key_path, secrets.token_bytes(32))
    val_key = write_plain_key_file(home.validator_key_path, secrets.token_bytes(32))
    summary: dict = {
        "home": str(root),
        "node_key": node_key.public_key.hex(),
        "validator": encode_address(val_key.public_key),
    }
    accounts: dict[bytes, int] = {}
    if dev:
        password = secrets.token_urlsafe(18)
        info = home.keystore.new(DEV_ACCOUNT, password)
        pw = home.password_file(DEV_ACCOUNT)
        fd = os.open(pw, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        accounts[info.public_key] = DEV_FUNDS
        summary["dev_account"] = info.address
        miner = home.miner_key()  # funded so `run --dev --miner` can register at once
        accounts[miner.public_key] = DEV_MINER_FUNDS
        summary["dev_miner"] = encode_address(miner.public_key)
    for address, amount in allocations or []:
        from state.address import decode_address

        accounts[decode_address(address)] = accounts.get(decode_address(address), 0) + amount
    if genesis_file is not None:
        genesis = Genesis.load(genesis_file)
    else:
        params = ChainParams(**({"block_interval_ms": block_interval_ms} if block_interval_ms else {}))
        genesis = Genesis(
            chain_id=chain_id or ("aitbc-dev" if dev else "aitbc-local"),
            genesis_time=now_ms(),
            consensus=consensus,
            params=params,
            accounts=tuple(sorted(accounts.items())),
            validators=(GenesisValidator(val_key.public_key, 1, moniker or "validator-0"),),
        )
    genesis.save(home.genesis_path)
    cfg = Config()
    if moniker:
        cfg.node.moniker = moniker
    home.config_path.write_text(render_default_toml(cfg))
    summary["chain_id"] = genesis.chain_id
    summary["genesis_hash"] = genesis.hash.hex()
    return summary


def load_node_keys(home: Home):
    """(node key, validator key) from the home."""
    return read_plain_key_file(home.node_key_path), read_plain_key_file(home.validator_key_path)


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def rpc_client_host(host: str) -> str:
    """The host a local client dials for a server bound to ``host`` (wildcards: loopback)."""
    if host in ("0.0.0.0", "", "*"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def write_rpc_url(home: Home, host: str, port: int) -> str:
    """Record the JSON-RPC URL of the node running on ``home`` (atomically), for client commands."""
    url = f"http://{rpc_client_host(host)}:{port}/rpc"
    tmp = home.rpc_url_path.with_name(f"rpc.url.{os.getpid()}.tmp")
    tmp.write_text(f"{url}\n{os.getpid()}\n")
    os.replace(tmp, home.rpc_url_path)
    return url


def remove_rpc_url(home: Home) -> None:
    """Remove ``rpc.url`` if this process wrote it."""
    try:
        lines = home.rpc_url_path.read_text().split()
        if len(lines) > 1 and lines[1] == str(os.getpid()):
            home.rpc_url_path.unlink()
    except (OSError, UnicodeDecodeError):
        pass
