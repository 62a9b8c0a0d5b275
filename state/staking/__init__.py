"""Proof of stake: validators, delegations, rewards, slashing and the validator set.

Importing this package registers the staking transaction kinds (``txs.py``: validator_create,
validator_edit, delegate, undelegate, redelegate, unjail, withdraw_rewards) and the ``staking`` block
hook (``hooks.py``, order 200). Records and keys: ``model.py``; shared operations: ``core.py``; the
read side for RPC is ``state/staking_views.py``.

Consensus modes. ``poa``: staking txs fail with ``staking_disabled``; the hook only judges and records
evidence (event ``evidence``); no reward is minted and fees go to the proposer as before. ``pos``:
every genesis validator is a staked validator (operator = consensus key, self-bond = power x
power_unit, minted as bonded stake; its minimum self-bond is min(min_self_bond, that bond)).
``hybrid``: the genesis validators are authorities (their genesis power, no stake) voting beside the
top staked validators until ``hybrid_switch_height``; the block at switch - 2 installs the staked set
from the switch height (authorities stay, event ``hybrid_switch_deferred``, while none is eligible).

Stake (Cosmos-style shares). A validator has ``tokens`` and ``shares``; a delegation holds shares
worth ``shares * tokens // total_shares``. Delegating ``a`` buys ``a * shares // tokens`` shares
(rounded down); undelegating ``a`` burns ``ceil(a * shares / tokens)`` shares (rounded up), so the
remaining delegations never lose by rounding. Slashing lowers ``tokens`` only: every delegation loses
pro rata in O(1). Undelegated tokens enter an unbonding entry paid at the END of block ``start +
unbonding_blocks`` (per-height due index); entries (and redelegations) that started at or after a
double-sign's height are slashed with the validator. A redelegation moves stake at once; it stays
slashable for the source validator's earlier faults until it completes and may not hop again before.

Validator set. At the end of every block whose height is a multiple of ``epoch_blocks`` the set for
``height + 2`` is the top ``max_validators`` by power (``tokens // power_unit`` > 0) of validators not
jailed/tombstoned with self-bond >= their minimum, ties by consensus key; installed with
``ex.set_validators`` only when it differs from the latest installed set. A jailing installs the latest
set minus the jailed validators from ``height + 2`` at once; other changes wait for the epoch. The
set is never empty (when nothing is eligible the current set stays). The epoch reads one record per
registered validator and never a delegation.

Rewards (integer math only). Every block mints ``block_reward`` and takes the block's fees:
``pool = reward + fees``. ``proposer_bonus_bps`` of the pool goes to the proposer; the rest is split
pro rata to voting power among the validators of the previous height's set that signed its commit
(``env.last_commit_signers``), jailed ones excluded. The remainder of that integer division goes to
the proposer as well; with no eligible signer (height 1) the proposer gets the whole pool; a jailed or
unknown proposer's part goes to the community pool. A staked validator's part: ``commission_bps`` to
its operator (``commission``), the rest to its delegators through a reward-per-share accumulator
(``acc``, scaled by 10^18; the division remainder is carried in ``acc_rem`` to the next block, so no
unit is lost); a validator without shares gives the delegators' part to the community pool, and so
does a validator whose last share leaves (its rounding dust). A hybrid authority's part is credited to
its account at once. Rewards reach balances only on ``withdraw_rewards`` or when a delegation changes
(pending rewards are settled first).

Supply. ``ex.supply()`` == sum of balances + bonded + unbonding + rewards (outstanding + commission)
+ community pool (the ``stk/totals`` record, :class:`Totals`) + other modules' locks. Minted rewards
and genesis bonds raise the supply; slashes are burned from it.

Downtime. Each block updates, for every staked validator of the previous height's set, a missed-bit
ring of ``signed_blocks_window`` heights kept in its record; once a full window is tracked, fewer than
``min_signed_bps`` signed jails it for ``jail_blocks`` (and slashes ``slash_downtime_bps`` of its
bonded tokens); ``unjail`` is allowed from then on if its self-bond is still at its minimum; it rejoins
at the next epoch. Double-sign evidence (begin of block) slashes ``slash_double_sign_bps``, jails and
tombstones for good.
"""

from __future__ import annotations

from . import hooks, txs
from .bodies import (
    delegate_body,
    redelegate_body,
    undelegate_body,
    unjail_body,
    validator_create_body,
    validator_edit_body,
    withdraw_rewards_body,
)
from .core import compute_set, install_set
from .model import SCALE, Totals, load_totals
from .txs import (
    REASONS,
    TX_DELEGATE,
    TX_REDELEGATE,
    TX_UNDELEGATE,
    TX_UNJAIL,
    TX_VALIDATOR_CREATE,
    TX_VALIDATOR_EDIT,
    TX_WITHDRAW_REWARDS,
)

TX_TYPES = (
    TX_VALIDATOR_CREATE,
    TX_VALIDATOR_EDIT,
    TX_DELEGATE,
    TX_UNDELEGATE,
    TX_REDELEGATE,
    TX_UNJAIL,
    TX_WITHDRAW_REWARDS,
)

txs.register()
hooks.register()

__all__ = [
    "REASONS",
    "SCALE",
    "TX_DELEGATE",
    "TX_REDELEGATE",
    "TX_TYPES",
    "TX_UNDELEGATE",
    "TX_UNJAIL",
    "TX_VALIDATOR_CREATE",
    "TX_VALIDATOR_EDIT",
    "TX_WITHDRAW_REWARDS",
    "Totals",
    "compute_set",
    "delegate_body",
    "redelegate_body",
    "undelegate_body",
    "unjail_body",
    "validator_create_body",
    "validator_edit_body",
    "withdraw_rewards_body",
    "install_set",
    "load_totals",
]
