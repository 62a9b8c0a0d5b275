"""The compute market (DESIGN §6): miners, jobs, bids, awards, receipts, settlement and challenges.

Importing this package registers the market transaction kinds and its block hook with
``state.machine``. Modules:

- :mod:`state.market.records` — stored records (:class:`Job`, :class:`Miner`, :class:`Stats`), states,
  object keys and due lists;
- :mod:`state.market.bodies` — body schemas and static checks, body builders, signed receipts
  (:func:`make_receipt`, :func:`receipt_json`, :func:`verify_receipt`);
- :mod:`state.market.ledger` — the records one transaction reads and writes, and the money moves
  (escrow, bonds, slashes, settlement, failing a job) every rule shares;
- :mod:`state.market.rules` — how miner, job, bid and receipt transactions and the end-of-block hook
  change state;
- :mod:`state.market.disputes` — metered challenges of wrong results and availability challenges.
- :mod:`state.market.models` — models as on-chain objects: the ``model_register`` manifest, its checks,
  rule and record, and the chunk index and proofs of a model file.

Life of a job: ``job_submit`` locks ``max_price × max_units`` (QUEUED, escrowed) → miners ``bid`` until
``bid_close_height`` → at the end of that block the best bid wins (lowest price, then higher reputation,
then earliest), the escrow above ``price × max_units`` is refunded (RUNNING), or with no eligible bid
the job EXPIRES with a full refund → the miner's signed ``receipt`` by ``deadline_height`` makes it
COMPLETED: ``price × units`` is paid (released) at once, or at the end of its challenge window when the
job asked for one, and the rest is refunded → a proven wrong leaf during the window fails the job
(refunded), slashes the miner and rewards the challenger; a missed deadline fails the job (refunded) and
slashes the miner's bond; a result the miner does not publish when challenged for availability fails the
job (refunded) and slashes the miner. The client may ``job_cancel`` while QUEUED.
"""

from __future__ import annotations

from .bodies import (
    MARKET_TX_TYPES,
    RECEIPT_KEYS,
    TX_AVAILABILITY_CHALLENGE,
    TX_AVAILABILITY_RESPONSE,
    TX_BID,
    TX_CHALLENGE,
    TX_JOB_CANCEL,
    TX_JOB_SUBMIT,
    TX_MINER_EXIT,
    TX_MINER_REGISTER,
    TX_MINER_UPDATE,
    TX_MODEL_REGISTER,
    TX_RECEIPT,
    ReceiptJsonError,
    availability_challenge_body,
    availability_response_body,
    bid_body,
    body_cost,
    capabilities,
    challenge_body,
    challengeable,
    check_receipt_map,
    job_cancel_body,
    job_submit_body,
    make_receipt,
    miner_exit_body,
    miner_register_body,
    miner_update_body,
    receipt_body,
    receipt_encoding,
    receipt_from_json,
    receipt_id,
    receipt_json,
    receipt_map,
    set_cost_params,
    sign_receipt,
    verify_receipt,
)
from .records import (
    ACTIVE,
    CANCELED,
    COMPLETED,
    ESCROWED,
    EXITED,
    EXITING,
    EXPIRED,
    FAIL_TIMEOUT,
    FAIL_UNAVAILABLE,
    FAIL_WRONG_RESULT,
    FAILED,
    JOB_STATES,
    QUEUED,
    REFUNDED,
    RELEASED,
    RUNNING,
    STATS_KEY,
    Bid,
    Job,
    Miner,
    Stats,
    decode_job,
    decode_miner,
    job_key,
    miner_key,
)
from .rules import MARKET_HOOK, award_order, market_end_block, register

register()

__all__ = [
    "ACTIVE",
    "CANCELED",
    "COMPLETED",
    "ESCROWED",
    "EXITED",
    "EXITING",
    "EXPIRED",
    "FAILED",
    "FAIL_TIMEOUT",
    "FAIL_UNAVAILABLE",
    "FAIL_WRONG_RESULT",
    "JOB_STATES",
    "MARKET_HOOK",
    "MARKET_TX_TYPES",
    "QUEUED",
    "RECEIPT_KEYS",
    "REFUNDED",
    "RELEASED",
    "RUNNING",
    "STATS_KEY",
    "TX_AVAILABILITY_CHALLENGE",
    "TX_AVAILABILITY_RESPONSE",
    "TX_BID",
    "TX_CHALLENGE",
    "TX_JOB_CANCEL",
    "TX_JOB_SUBMIT",
    "TX_MINER_EXIT",
    "TX_MINER_REGISTER",
    "TX_MINER_UPDATE",
    "TX_MODEL_REGISTER",
    "TX_RECEIPT",
    "Bid",
    "Job",
    "Miner",
    "ReceiptJsonError",
    "Stats",
    "availability_challenge_body",
    "availability_response_body",
    "award_order",
    "bid_body",
    "body_cost",
    "capabilities",
    "challenge_body",
    "challengeable",
    "check_receipt_map",
    "decode_job",
    "decode_miner",
    "job_cancel_body",
    "job_key",
    "job_submit_body",
    "make_receipt",
    "market_end_block",
    "miner_exit_body",
    "miner_key",
    "miner_register_body",
    "miner_update_body",
    "receipt_body",
    "receipt_encoding",
    "receipt_from_json",
    "receipt_id",
    "receipt_json",
    "receipt_map",
    "register",
    "set_cost_params",
    "sign_receipt",
    "verify_receipt",
]
