"""Genesis: chain id, time, consensus params, initial allocations and the validator set.

``genesis.json`` is the human-edited form; its hash (SHA-256 of the canonical CBOR of the normalised
document) identifies the chain, and peers with another genesis hash are refused.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import codec
from .address import decode_address, encode_address
from .errors import AddressError, AitbcError
from .params import MarketParams, ParamsError, StakingParams, parse_section
from .types import U64_MAX

CONSENSUS_KINDS = ("poa", "pos", "hybrid")


class GenesisError(AitbcError):
    reason = "genesis"


@dataclass(frozen=True)
class ChainParams:
    """Consensus-critical parameters, fixed by genesis."""

    block_interval_ms: int = 1000
    max_block_bytes: int = 8 << 20
    max_block_txs: int = 20_000
    min_fee: int = 1_000
    create_empty_blocks: bool = True
    timeout_propose_ms: int = 3000
    timeout_vote_ms: int = 1000
    timeout_delta_ms: int = 500
    market: MarketParams = field(default_factory=MarketParams)
    staking: StakingParams = field(default_factory=StakingParams)

    @classmethod
    def from_json(cls, obj: Any) -> ChainParams:
        try:
            return parse_section(cls, obj, "params", sections=_SECTIONS)
        except ParamsError as exc:
            raise GenesisError(str(exc)) from None

    def validate(self) -> None:
        if self.block_interval_ms < 10:
            raise GenesisError("genesis: params.block_interval_ms must be at least 10")
        if self.max_block_txs < 1 or self.max_block_bytes < 1024:
            raise GenesisError("genesis: params.max_block_txs must be >= 1 and max_block_bytes >= 1024")

    def to_json(self) -> dict:
        return asdict(self)


_SECTIONS: dict[str, type] = {"market": MarketParams, "staking": StakingParams}


@dataclass(frozen=True)
class GenesisValidator:
    public_key: bytes
    power: int
    name: str = ""


@dataclass(frozen=True)
class Genesis:
    chain_id: str
    genesis_time: int  # ms
    consensus: str
    params: ChainParams
    accounts: tuple[tuple[bytes, int], ...]
    validators: tuple[GenesisValidator, ...]
    hash: bytes = field(default=b"", compare=False)

    def __post_init__(self) -> None:
        if not self.hash:
            object.__setattr__(self, "hash", codec.sha256(codec.encode(self.to_obj())))

    def to_obj(self) -> dict:
        """Canonical CBOR-ready form (what the genesis hash covers)."""
        return {
            "chain_id": self.chain_id,
            "genesis_time": self.genesis_time,
            "consensus": self.consensus,
            "params": self.params.to_json(),
            "accounts": [[pk, bal] for pk, bal in self.accounts],
            "validators": [[v.public_key, v.power, v.name] for v in self.validators],
        }

    def to_json(self) -> dict:
        return {
            "chain_id": self.chain_id,
            "genesis_time": self.genesis_time,
            "consensus": self.consensus,
            "params": self.params.to_json(),
            "accounts": [{"address": encode_address(pk), "balance": str(bal)} for pk, bal in self.accounts],
            "validators": [
                {"address": encode_address(v.public_key), "power": v.power, "name": v.name} for v in self.validators
            ],
        }

    @property
    def total_supply(self) -> int:
        return sum(b for _, b in self.accounts)

    @classmethod
    def from_json(cls, obj: Any) -> Genesis:
        if not isinstance(obj, dict):
            raise GenesisError("genesis: expected a JSON object")
        allowed = {"chain_id", "genesis_time", "consensus", "params", "accounts", "validators"}
        unknown = sorted(set(obj) - allowed)
        if unknown:
            raise GenesisError(f"genesis: unknown fields {unknown}")
        chain_id = obj.get("chain_id")
        if not isinstance(chain_id, str) or not (1 <= len(chain_id) <= 64) or not chain_id.isprintable():
            raise GenesisError("genesis: 'chain_id' must be a printable string of 1-64 chars")
        gt = obj.get("genesis_time")
        if type(gt) is not int or gt < 0:
            raise GenesisError("genesis: 'genesis_time' must be a non-negative integer (ms)")
        consensus = obj.get("consensus", "poa")
        if consensus not in CONSENSUS_KINDS:
            raise GenesisError(f"genesis: 'consensus' must be one of {CONSENSUS_KINDS}")
        params = ChainParams.from_json(obj.get("params", {}))
        accounts: list[tuple[bytes, int]] = []
        seen: set[bytes] = set()
        raw_accounts = obj.get("accounts", [])
        if not isinstance(raw_accounts, list):
            raise GenesisError("genesis: 'accounts' must be a list")
        for i, a in enumerate(raw_accounts):
            if not isinstance(a, dict) or set(a) != {"address", "balance"}:
                raise GenesisError(f"genesis: accounts[{i}] must be {{address, balance}}")
            try:
                pk = decode_address(a["address"])
            except AddressError as exc:
                raise GenesisError(f"genesis: accounts[{i}].address: {exc}") from None
            bal = a["balance"]
            if not isinstance(bal, str) or not bal.isdigit() or int(bal) > U64_MAX:
                raise GenesisError(f"genesis: accounts[{i}].balance must be a decimal string of base units")
            if pk in seen:
                raise GenesisError(f"genesis: accounts[{i}]: duplicate address")
            seen.add(pk)
            accounts.append((pk, int(bal)))
        if sum(b for _, b in accounts) > U64_MAX:
            raise GenesisError("genesis: total supply exceeds 2^64-1 base units")
        raw_vals = obj.get("validators", [])
        if not isinstance(raw_vals, list) or not raw_vals:
            raise GenesisError("genesis: 'validators' must be a non-empty list")
        vals: list[GenesisValidator] = []
        vseen: set[bytes] = set()
        for i, v in enumerate(raw_vals):
            if not isinstance(v, dict) or not {"address"} <= set(v) <= {"address", "power", "name"}:
                raise GenesisError(f"genesis: validators[{i}] must be {{address, power?, name?}}")
            try:
                pk = decode_address(v["address"])
            except AddressError as exc:
                raise GenesisError(f"genesis: validators[{i}].address: {exc}") from None
            power = v.get("power", 1)
            if type(power) is not int or not (1 <= power <= 1 << 40):
                raise GenesisError(f"genesis: validators[{i}].power must be a positive integer")
            name = v.get("name", "")
            if not isinstance(name, str) or len(name) > 64:
                raise GenesisError(f"genesis: validators[{i}].name must be a string of at most 64 chars")
            if pk in vseen:
                raise GenesisError(f"genesis: validators[{i}]: duplicate validator")
            vseen.add(pk)
            vals.append(GenesisValidator(pk, power, name))
        return cls(chain_id, gt, consensus, params, tuple(accounts), tuple(vals))

    @classmethod
    def load(cls, path: str | Path) -> Genesis:
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as exc:
            raise GenesisError(f"cannot read genesis file {p}: {exc.strerror}") from None
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GenesisError(f"{p}: invalid JSON: {exc}") from None
        try:
            return cls.from_json(obj)
        except GenesisError as exc:
            raise GenesisError(f"{p}: {exc}") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n")


def now_ms() -> int:
    return int(time.time() * 1000)
