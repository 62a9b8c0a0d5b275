"""Node configuration: TOML file < ``AITBC_*`` environment variables < CLI flags.

Every key has a type and a default; unknown sections or keys and values of the wrong type are refused
with the key's full name (``rpc.port: expected an integer``).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from state.errors import AitbcError


class ConfigError(AitbcError):
    reason = "config"


#: ``AITBC_*`` variables read by the CLI itself, not config keys (AITBC_RPC_URL would otherwise be
#: taken for the unknown key ``rpc.url``).
CLIENT_ENV_VARS = frozenset(
    {"AITBC_HOME", "AITBC_RPC_URL", "AITBC_PASSWORD", "AITBC_IMPORT_PASSWORD", "AITBC_OPENAI_PASSWORD"}
)


@dataclass
class NodeSection:
    moniker: str = "aitbc-node"
    log_level: str = "info"
    data_dir: str = "data"  # relative to home
    stall_intervals: int = 10  # /health reports "stalled" after this many block intervals without a block


@dataclass
class RpcSection:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8202
    admin: bool = False
    admin_token: str = ""
    admin_loopback: bool = True  # loopback clients (without an Origin header) need no admin token
    max_body_bytes: int = 4 << 20
    max_batch: int = 1000
    # Limits (rpc/limits.py; README "Configuration"): connections, time, rate, browsers, subscriptions.
    max_connections: int = 1024
    max_connections_per_ip: int = 32
    max_ws_connections: int = 512
    max_ws_per_ip: int = 16
    idle_timeout_s: int = 15
    ws_idle_timeout_s: int = 300
    request_timeout_s: int = 30
    rate_limit: int = 50  # calls per second per address (0: unlimited)
    rate_burst: int = 200
    loopback_exempt: bool = True  # loopback clients skip per-IP caps and the rate limit
    cors_origins: list[str] = field(default_factory=list)  # browser origins allowed ("*": any)
    allowed_hosts: list[str] = field(default_factory=list)  # Host names besides localhost, IPs, rpc.host ("*": any)
    fd_reserve: int = 1024  # file descriptors kept free for the node's own files
    max_subscriptions_per_connection: int = 64
    max_subscriptions: int = 10_000


@dataclass
class BlobsSection:
    """The blob store (node/blobs.py): quotas and expiry of ``blob_put`` uploads and cached blobs."""

    max_total_bytes: int = 1 << 30  # uploads + cached blobs (the miner's own results are never refused)
    max_count: int = 4096
    max_account_bytes: int = 64 << 20
    max_account_count: int = 64
    min_balance: int = 1_000_000  # base units an uploader's account must hold (1 AIT)
    sig_max_blocks: int = 100  # a blob_put signature expires at most this many blocks ahead
    grace_s: int = 600  # an upload must be referenced by a live job of its owner within this
    retain_s: int = 3600  # kept this long after its last live job (settled), or after the miner wrote it
    gc_interval_s: int = 60


@dataclass
class P2pSection:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8200
    bootstrap: list[str] = field(default_factory=list)
    persistent_peers: list[str] = field(default_factory=list)  # always redialed, never crowded out
    target_peers: int = 8
    max_peers: int = 32
    outbound_slots: int = -1  # of max_peers, kept for our own dials; -1: a quarter of max_peers
    max_requests_per_peer: int = 4
    # Prove our validator key in the status exchange (peers keep validators a slot); false behind sentries.
    prove_validator: bool = True
    validator_probation_slots: int = 2  # extra connections a validator may use to prove itself when full


@dataclass
class MempoolSection:
    max_txs: int = 100_000
    max_bytes: int = 64 << 20
    nonce_window: int = 1024
    max_per_sender: int = 4096
    replace_bump_percent: int = 10
    # txs behind a nonce gap ("queued"): their own budget and lifetime (state/mempool.py)
    max_queued: int = 0  # pool-wide; 0: max_txs // 8
    max_queued_bytes: int = 0  # pool-wide; 0: max_bytes // 8
    max_queued_per_sender: int = 64
    queued_lifetime_s: int = 180


@dataclass
class ValidatorSection:
    enabled: bool = True


@dataclass
class MinerSection:
    enabled: bool = False  # `aitbc-peer run --miner` sets it
    bond: int = 100_000_000  # base units locked by miner_register (if not registered yet)
    prices: list[str] = field(default_factory=list)  # "kind=unit price in base units"; empty: every kind at 1000
    max_concurrent: int = 1  # jobs executed at once
    verify: bool = False  # re-execute a sample of other miners' results and challenge wrong ones
    job_time_limit_s: int = 300
    # llm-generate: "model name or 0x-id=price per token in base units"; pinned at start, bid on when complete
    models: list[str] = field(default_factory=list)
    model_cache_bytes: int = 4 << 30  # loaded models kept in memory (LRU; ~9 x the file size each)
    # bid on anonymous-bid jobs: registers a bidding identity, proves with snarkjs (skipped without it)
    anonymous: bool = True


@dataclass
class OpenaiSection:
    """The OpenAI-compatible endpoint (``/v1/…`` on the RPC port, ``rpc/openai.py``): requests become
    ``llm-generate`` jobs paid from the keystore key ``key`` (password: $AITBC_OPENAI_PASSWORD, else
    $AITBC_PASSWORD, else the home's password file of that key)."""

    enabled: bool = False
    key: str = ""  # keystore key name paying for the jobs
    api_key: str = ""  # clients must send "Authorization: Bearer <api_key>"; empty: loopback clients only
    max_price_per_token: int = 1000  # base units offered per token (the job's max_price)
    max_tokens: int = 256  # cap of max_tokens per request
    timeout_s: int = 120  # a request not settled by then answers 504
    max_concurrent: int = 4  # requests in flight (more: 503)
    max_body_bytes: int = 64 << 10
    bid_window: int = 2  # blocks
    deadline: int = 60  # blocks from award to receipt


@dataclass
class WebSection:
    """The web explorer and marketplace app at ``/`` of the RPC port (``rpc/web``): static pages that use the
    public JSON-RPC and WebSocket API only, served wherever the RPC listens (loopback by default)."""

    enabled: bool = True


@dataclass
class Config:
    node: NodeSection = field(default_factory=NodeSection)
    rpc: RpcSection = field(default_factory=RpcSection)
    p2p: P2pSection = field(default_factory=P2pSection)
    mempool: MempoolSection = field(default_factory=MempoolSection)
    validator: ValidatorSection = field(default_factory=ValidatorSection)
    miner: MinerSection = field(default_factory=MinerSection)
    blobs: BlobsSection = field(default_factory=BlobsSection)
    openai: OpenaiSection = field(default_factory=OpenaiSection)
    web: WebSection = field(default_factory=WebSection)

    # ---------------------------------------------------------------------------------------------
    def set(self, dotted: str, value: Any, *, source: str) -> None:
        """Set ``section.key`` from ``source`` (for error messages), converting strings from env/CLI."""
        try:
            section_name, key = dotted.split(".", 1)
        except ValueError:
            raise ConfigError(f"{source}: '{dotted}' is not a section.key name") from None
        section = getattr(self, section_name, None)
        if section is None or section_name.startswith("_"):
            raise ConfigError(f"{source}: unknown config section '{section_name}'")
        ftypes = {f.name: f.type for f in fields(section)}
        if key not in ftypes:
            raise ConfigError(f"{source}: unknown config key '{dotted}'")
        setattr(section, key, _coerce(dotted, ftypes[key], value, source))

    def validate(self) -> None:
        for name, lo, hi in (("rpc.port", 0, 65535), ("p2p.port", 0, 65535)):
            sec, key = name.split(".")
            v = getattr(getattr(self, sec), key)
            if not lo <= v <= hi:
                raise ConfigError(f"{name}: {v} is out of range {lo}..{hi}")
        if self.node.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError("node.log_level: must be one of debug, info, warning, error")
        for name in ("mempool.max_txs", "mempool.max_bytes", "rpc.max_body_bytes", "rpc.max_batch",
                     "rpc.max_connections", "rpc.max_connections_per_ip", "rpc.max_ws_connections",
                     "rpc.max_ws_per_ip", "rpc.rate_burst", "rpc.max_subscriptions_per_connection",
                     "rpc.max_subscriptions", "blobs.max_total_bytes", "blobs.max_count",
                     "blobs.max_account_bytes", "blobs.max_account_count", "blobs.sig_max_blocks",
                     "blobs.gc_interval_s", "miner.model_cache_bytes", "openai.max_price_per_token",
                     "openai.max_tokens", "openai.timeout_s", "openai.max_concurrent", "openai.max_body_bytes",
                     "openai.bid_window", "openai.deadline", "node.stall_intervals"):  # fmt: skip
            sec, key = name.split(".")
            if getattr(getattr(self, sec), key) <= 0:
                raise ConfigError(f"{name}: must be positive")
        for name in ("rpc.idle_timeout_s", "rpc.ws_idle_timeout_s", "rpc.request_timeout_s", "rpc.rate_limit",
                     "rpc.fd_reserve", "blobs.min_balance", "blobs.grace_s", "blobs.retain_s"):  # fmt: skip
            sec, key = name.split(".")
            if getattr(getattr(self, sec), key) < 0:
                raise ConfigError(f"{name}: must not be negative")


def _coerce(name: str, ftype: Any, value: Any, source: str) -> Any:
    t = ftype if isinstance(ftype, str) else getattr(ftype, "__name__", str(ftype))
    from_text = isinstance(value, str) and source != "config.toml"
    if t == "bool":
        if isinstance(value, bool):
            return value
        if from_text and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(f"{source}: {name}: expected true or false, got {value!r}")
    if t == "int":
        if type(value) is int:
            return value
        if from_text and value.strip().lstrip("-").isdigit():
            return int(value)
        raise ConfigError(f"{source}: {name}: expected an integer, got {value!r}")
    if t == "str":
        if isinstance(value, str):
            return value
        raise ConfigError(f"{source}: {name}: expected a string, got {value!r}")
    if t.startswith("list"):
        if isinstance(value, list) and all(isinstance(x, str) for x in value):
            return value
        if from_text:
            return [x.strip() for x in value.split(",") if x.strip()]
        raise ConfigError(f"{source}: {name}: expected a list of strings, got {value!r}")
    raise ConfigError(f"{source}: {name}: unsupported type {t}")


def load_config(
    path: str | os.PathLike | None, *, env: dict[str, str] | None = None, overrides: dict[str, Any] | None = None
) -> Config:
    """Defaults, then the TOML file (if it exists), then ``AITBC_<SECTION>_<KEY>``, then ``overrides``."""
    cfg = Config()
    if path is not None and Path(path).exists():
        try:
            data = tomllib.loads(Path(path).read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
        for section, values in data.items():
            if not isinstance(values, dict):
                raise ConfigError(f"config.toml: top-level key '{section}' must be a [section]")
            for key, value in values.items():
                cfg.set(f"{section}.{key}", value, source="config.toml")
    env = os.environ if env is None else env
    sections = {f.name for f in fields(Config)}
    for var, value in env.items():
        if not var.startswith("AITBC_") or var in CLIENT_ENV_VARS:
            continue
        rest = var[len("AITBC_") :].lower()
        section, _, key = rest.partition("_")
        if section in sections and key:
            cfg.set(f"{section}.{key}", value, source=f"environment {var}")
    for dotted, value in (overrides or {}).items():
        if value is not None:
            cfg.set(dotted, value, source="command line")
    cfg.validate()
    return cfg


def render_default_toml(cfg: Config) -> str:
    """config.toml text with every key and its current value."""
    out = ["# aitbc-peer configuration. Environment AITBC_<SECTION>_<KEY> and CLI flags override these.\n"]
    for f in fields(cfg):
        section = getattr(cfg, f.name)
        out.append(f"\n[{f.name}]\n")
        for sf in fields(section):
            v = getattr(section, sf.name)
            if isinstance(v, bool):
                s = "true" if v else "false"
            elif isinstance(v, int):
                s = str(v)
            elif isinstance(v, list):
                s = "[" + ", ".join(f'"{x}"' for x in v) + "]"
            else:
                s = '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
            out.append(f"{sf.name} = {s}\n")
    return "".join(out)
