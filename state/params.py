"""Consensus-critical parameter sections of genesis ``params``: ``market`` and ``staking``.

Every field is a non-negative integer (base units, blocks or basis points — 10,000 bps = 100 %) or a
bool; ``parse_section`` turns the JSON object of a section into the dataclass with precise errors.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .errors import AitbcError
from .types import U64_MAX

AIT = 1_000_000  # base units per AIT
BPS = 10_000  # basis points in 100 %
MAX_MODEL_BYTES_CAP = 1 << 40  # bound of params.market.max_model_bytes (chunk counts stay small)


class ParamsError(AitbcError):
    reason = "genesis"


@dataclass(frozen=True)
class MarketParams:
    """Rules of the compute market (jobs, bids, receipts, challenges, miner bonds)."""

    min_miner_bond: int = 100 * AIT
    miner_unbonding_blocks: int = 20
    min_bid_window: int = 1
    max_bid_window: int = 1_000
    max_deadline_blocks: int = 10_000  # from award to receipt
    max_inline_input: int = 16 * 1024
    max_blob_input: int = 16 << 20
    max_bids_per_job: int = 64
    max_challenge_window: int = 1_000
    challenge_bond: int = 10 * AIT
    slash_wrong_result_bps: int = 5_000  # of the miner's bond, for a proven wrong result
    slash_timeout_bps: int = 500  # of the miner's bond, for no receipt by the deadline
    slash_false_challenge_bps: int = BPS  # of the challenge bond, for a challenge proven false
    challenger_reward_bps: int = 5_000  # share of a slash paid to the winning challenger (rest burned)
    max_open_jobs_per_miner: int = 16  # awarded jobs a miner may hold without a receipt
    # A challenge must carry a blob input in its transaction, so a job whose blob input is larger than
    # this cannot ask for a challenge window (inline inputs are always re-checkable).
    max_challenge_input: int = 48 * 1024
    reputation_success: int = 1  # added when a job settles (payment released)
    reputation_timeout_penalty: int = 10  # subtracted when an awarded miner misses the deadline
    reputation_wrong_result_penalty: int = 100  # subtracted when a challenge proves a wrong result
    # Metered disputes (see state/market/work.py): every dispute transaction costs dispute work units
    # (DWU, about 1 µs of one core) known before it runs; a block holds at most this many.
    max_dispute_work_per_block: int = 250_000
    max_challenge_work: int = 100_000  # a job whose leaf check costs more takes no challenge window
    dispute_work_price: int = 10  # base units per DWU added to the challenge bond
    # Data availability: a client or verifier that cannot fetch a result challenges chunks of it; the
    # miner must publish them with Merkle proofs within availability_response_blocks or is slashed.
    availability_bond: int = AIT  # paid by the challenger; to the miner if it answers
    availability_response_blocks: int = 10
    max_availability_chunks: int = 8  # leaves named by one availability challenge
    max_availability_bytes: int = 32 * 1024  # chunk bytes one answer may have to carry
    max_availability_challenges_per_job: int = 4
    slash_unavailable_bps: int = 5_000  # of the miner's bond, for a result it did not make available
    # Models (state/market/models.py): the largest model file a model_register may declare, and the fee
    # (base units, burned) per started MiB of it, on top of the transaction fee.
    max_model_bytes: int = 512 << 20
    model_register_fee_per_mib: int = AIT // 100
    # llm-generate disputes (state/market/llm_disputes.py): the miner answers an llm_challenge with its step
    # digests within availability_response_blocks; the challenger then has llm_proof_blocks to post the
    # step proof. At most max_llm_challenges_per_job llm_challenges per job (open at once or not).
    llm_proof_blocks: int = 10
    max_llm_challenges_per_job: int = 8

    def validate(self) -> None:
        if self.max_challenge_work > self.max_dispute_work_per_block:
            raise ParamsError("genesis: params.market.max_challenge_work must be <= max_dispute_work_per_block")
        if self.max_availability_chunks < 1 or self.availability_response_blocks < 1:
            raise ParamsError(
                "genesis: params.market max_availability_chunks and availability_response_blocks must be >= 1"
            )
        for name in (
            "slash_wrong_result_bps",
            "slash_timeout_bps",
            "slash_false_challenge_bps",
            "challenger_reward_bps",
            "slash_unavailable_bps",
        ):
            if getattr(self, name) > BPS:
                raise ParamsError(f"genesis: params.market.{name} must be <= {BPS} (basis points)")
        if not (1 <= self.min_bid_window <= self.max_bid_window):
            raise ParamsError("genesis: params.market needs 1 <= min_bid_window <= max_bid_window")
        if self.min_miner_bond < 1 or self.max_deadline_blocks < 1 or self.max_bids_per_job < 1:
            raise ParamsError(
                "genesis: params.market min_miner_bond, max_deadline_blocks and max_bids_per_job must be >= 1"
            )
        if self.max_open_jobs_per_miner < 1:
            raise ParamsError("genesis: params.market.max_open_jobs_per_miner must be >= 1")
        if self.llm_proof_blocks < 1 or not 1 <= self.max_llm_challenges_per_job <= 255:
            raise ParamsError(
                "genesis: params.market needs llm_proof_blocks >= 1 and max_llm_challenges_per_job in [1, 255]"
            )
        if not 1 <= self.max_model_bytes <= MAX_MODEL_BYTES_CAP:
            raise ParamsError(f"genesis: params.market.max_model_bytes must be in [1, {MAX_MODEL_BYTES_CAP}]")
        for name in ("reputation_success", "reputation_timeout_penalty", "reputation_wrong_result_penalty"):
            if getattr(self, name) > 1_000_000:
                raise ParamsError(f"genesis: params.market.{name} must be <= 1000000")


@dataclass(frozen=True)
class StakingParams:
    """Rules of proof of stake (validator set, rewards, slashing). Unused by a pure PoA chain."""

    epoch_blocks: int = 100
    max_validators: int = 100
    min_self_bond: int = 1_000 * AIT
    power_unit: int = AIT  # voting power = bonded stake // power_unit
    unbonding_blocks: int = 200
    block_reward: int = AIT  # minted per block, split like fees
    proposer_bonus_bps: int = 500  # of reward + fees, to the proposer first
    max_commission_bps: int = 5_000
    max_commission_change_bps: int = 1_000  # per edit
    slash_double_sign_bps: int = 500
    slash_downtime_bps: int = 10
    signed_blocks_window: int = 100
    min_signed_bps: int = 5_000  # a validator that signed fewer of the window's commits is jailed
    jail_blocks: int = 100
    max_evidence_age: int = 1_000  # blocks
    hybrid_switch_height: int = 0  # hybrid: genesis authorities vote until this height (0 = forever)
    max_delegations_per_account: int = 64  # distinct validators one account may delegate to
    max_unbonding_per_account: int = 32  # pending unbonding (and, separately, redelegation) entries

    def validate(self) -> None:
        for name in (
            "proposer_bonus_bps",
            "max_commission_bps",
            "max_commission_change_bps",
            "slash_double_sign_bps",
            "slash_downtime_bps",
            "min_signed_bps",
        ):
            if getattr(self, name) > BPS:
                raise ParamsError(f"genesis: params.staking.{name} must be <= {BPS} (basis points)")
        if self.epoch_blocks < 1 or self.max_validators < 1 or self.power_unit < 1 or self.signed_blocks_window < 1:
            raise ParamsError(
                "genesis: params.staking epoch_blocks, max_validators, power_unit and signed_blocks_window must be >= 1"
            )
        if self.max_delegations_per_account < 1 or self.max_unbonding_per_account < 1:
            raise ParamsError(
                "genesis: params.staking max_delegations_per_account and max_unbonding_per_account must be >= 1"
            )


def parse_section(cls: type, obj: Any, where: str, *, sections: dict[str, type] | None = None) -> Any:
    """Build the frozen dataclass ``cls`` from a JSON object of ints/bools (and nested ``sections``,
    parsed the same way); unknown keys are errors; ``cls.validate()`` runs last."""
    if not isinstance(obj, dict):
        raise ParamsError(f"genesis: {where} must be an object")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(obj) - set(known))
    if unknown:
        raise ParamsError(f"genesis: unknown {where} {unknown}")
    values: dict[str, Any] = {}
    for name, f in known.items():
        if name not in obj:
            continue
        v = obj[name]
        if sections and name in sections:
            values[name] = parse_section(sections[name], v, f"{where}.{name}")
            continue
        if f.type in ("bool", bool):
            if type(v) is not bool:
                raise ParamsError(f"genesis: {where}.{name} must be true or false")
        elif type(v) is not int or v < 0 or v > U64_MAX:
            raise ParamsError(f"genesis: {where}.{name} must be a non-negative integer")
        values[name] = v
    out = cls(**values)
    out.validate()
    return out


def section_to_json(section: Any) -> dict:
    return asdict(section)
