"""JSON-RPC methods of the compute market (``market_*``) and blobs (``blob_*``)."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import trio

from state import market_views as mv
from state.errors import InvariantError
from state.kinds import get_kind

from .errors import RpcError
from .jsonrpc import MethodRegistry
from .methods import _pubkey as _pk
from .node_api import BlobRefused
from .params import Param
from .subscriptions import SubscriptionHub

if TYPE_CHECKING:
    from .node_api import NodeApi

OBJ = {"type": "object"}
HASH = {"type": "string", "format": "hash32"}
ADDRESS = {"type": "string", "format": "address"}
STATES = ["QUEUED", "RUNNING", "COMPLETED", "FAILED", "CANCELED", "EXPIRED"]
LIMIT = {"type": "integer", "minimum": 1, "maximum": mv.MAX_LIMIT}
CURSOR = {"type": "string", "maxLength": 80}


def _id(h: str) -> bytes:
    return bytes.fromhex(h[2:])


def register_market_methods(reg: MethodRegistry, hub: SubscriptionHub, node: NodeApi) -> None:
    chain = node.chain
    chain_id = node.genesis.chain_id
    get = chain.get_object

    def scan(prefix: bytes):
        return node.scan_objects(prefix)

    def not_found(what: str, key: str) -> RpcError:
        return RpcError(RpcError.NOT_FOUND, f"{what} not found", {"id": key})

    @reg.method("market_getJob", params=[Param("job_id", HASH, description="the job_submit tx hash")],
                summary="A job: state, payment, parameters, bids, award, receipt", result=OBJ)
    async def market_get_job(job_id: str) -> dict:
        job = mv.get_job(get, _id(job_id), chain_id=chain_id)
        if job is None:
            raise not_found("job", job_id)
        return job

    @reg.method(
        "market_listJobs",
        params=[
            Param("state", {"type": "string", "enum": STATES}, required=False),
            Param("client", ADDRESS, required=False),
            Param("miner", ADDRESS, required=False),
            Param("kind", {"type": "string", "maxLength": 64}, required=False),
            Param("cursor", CURSOR, required=False, description="next_cursor of the previous page"),
            Param("limit", LIMIT, required=False),
        ],
        summary="Jobs in submission order, filtered; pages with cursor",
        result=OBJ,
    )
    async def market_list_jobs(
        state: str | None = None,
        client: str | None = None,
        miner: str | None = None,
        kind: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> dict:
        try:
            items, nxt = mv.list_jobs(
                scan,
                state=state,
                client=_pk(client, "client") if client else None,
                miner=_pk(miner, "miner") if miner else None,
                kind=kind,
                cursor=cursor,
                limit=limit,
                get_object=get,
                chain_id=chain_id,
            )
        except ValueError as exc:
            raise RpcError(RpcError.INVALID_PARAMS, f"invalid params: {exc}") from None
        return {"jobs": items, "next_cursor": nxt}

    @reg.method("market_getBids", params=[Param("job_id", HASH)], summary="Bids on a job, in arrival order",
                result={"type": "array"})
    async def market_get_bids(job_id: str) -> list:
        bids = mv.get_bids(get, _id(job_id))
        if bids is None:
            raise not_found("job", job_id)
        return bids

    @reg.method("market_getReceipt", params=[Param("job_id", HASH)],
                summary="The miner's signed receipt of a job (DESIGN §6 shape)", result=OBJ)
    async def market_get_receipt(job_id: str) -> dict:
        r = mv.get_receipt(get, _id(job_id), chain_id=chain_id)
        if r is None:
            raise not_found("receipt", job_id)
        return r

    @reg.method("market_getMiner", params=[Param("address", ADDRESS)],
                summary="A miner: bond, status, capabilities, prices, reputation", result=OBJ)
    async def market_get_miner(address: str) -> dict:
        m = mv.get_miner(get, _pk(address, "address"))
        if m is None:
            raise not_found("miner", address)
        return m

    @reg.method(
        "market_listMiners",
        params=[
            Param("status", {"type": "string", "enum": ["active", "exiting", "exited"]}, required=False),
            Param("cursor", CURSOR, required=False),
            Param("limit", LIMIT, required=False),
        ],
        summary="Registered miners in address order; pages with cursor",
        result=OBJ,
    )
    async def market_list_miners(status: str | None = None, cursor: str | None = None, limit: int = 50) -> dict:
        try:
            items, nxt = mv.list_miners(scan, cursor, limit, status=status)
        except ValueError as exc:
            raise RpcError(RpcError.INVALID_PARAMS, f"invalid params: {exc}") from None
        return {"miners": items, "next_cursor": nxt}

    @reg.method(
        "market_getAvailableChunks",
        params=[Param("job_id", HASH)],
        summary="Result chunks the miner published on chain to answer availability challenges, with their "
        "Merkle proofs against the receipt's result_root",
        result=OBJ,
    )
    async def market_get_available_chunks(job_id: str) -> dict:
        job = mv.load_job(get, _id(job_id))
        if job is None:
            raise not_found("job", job_id)
        chunks = []
        for tx_hash in job.availability_answers:
            found = chain.tx_lookup(tx_hash)
            if found is None:
                raise InvariantError(f"availability answer {tx_hash.hex()} is not in the tx index")
            tx, height = found[0], found[1]
            for index, leaf, proof in tx.body["chunks"]:
                chunks.append(
                    {
                        "index": index,
                        "leaf": "0x" + leaf.hex(),
                        "proof": ["0x" + h.hex() for h in proof],
                        "tx_hash": "0x" + tx_hash.hex(),
                        "height": height,
                    }
                )
        return {
            "job_id": job_id,
            "result_root": "0x" + job.receipt["result_root"].hex() if job.receipt else None,
            "leaf_count": get_kind(job.kind).leaf_count(job.params),
            "open": mv.availability_json(job),
            "chunks": chunks,
        }

    @reg.method("market_stats", summary="Jobs by state, escrow and bonds locked, open bids", result=OBJ)
    async def market_stats() -> dict:
        return mv.market_stats(scan)

    # blobs --------------------------------------------------------------------------------------
    max_blob = node.genesis.params.market.max_blob_input
    BLOB_REJECTED = -32011  # blob_put refused: data.reason (README "JSON-RPC")

    @reg.method("blob_get", params=[Param("hash", HASH, description="sha256 of the blob")],
                summary="A blob (job input or result) from this node, else fetched from peers and verified",
                result=OBJ)
    async def blob_get(hash: str) -> dict:
        data = await node.blobs.fetch(_id(hash))
        if data is None:
            raise not_found("blob", hash)
        return {"hash": hash, "size": len(data), "data": "0x" + data.hex()}

    @reg.method(
        "blob_put",
        params=[
            Param("data", {"type": "string", "format": "hex", "maxBytes": max_blob}),
            Param("owner", ADDRESS, required=False, description="the uploading account: holds blobs.min_balance"),
            Param("expires", {"type": "integer", "minimum": 0, "maximum": 2**63}, required=False,
                  description="last height at which this upload is accepted (at most blobs.sig_max_blocks ahead)"),
            Param("sig", {"type": "string", "format": "hex", "maxBytes": 64}, required=False,
                  description="owner's Ed25519 signature, kind 'blob_put', over CBOR {hash, size, expires}"),
        ],
        summary="Store a blob on this node (served to peers by hash), e.g. a job input: signed by a funded "
        "account, bounded by quotas, collected unless a live job of the owner refers to it (-32011 + data.reason)",
        result=OBJ,
    )
    async def blob_put(data: str, owner: str | None = None, expires: int | None = None,
                       sig: str | None = None) -> dict:
        def reject(reason: str, message: str, **extra: object) -> RpcError:
            return RpcError(BLOB_REJECTED, f"blob rejected: {message}", {"reason": reason, **extra})

        store = node.blobs
        if owner is None or expires is None or sig is None:
            raise reject("unsigned", "blob_put needs 'owner', 'expires' and 'sig' (a signature by a funded account)")
        pk = _pk(owner, "owner")
        lim = store.limits
        head = chain.head.height
        if expires < head:
            raise reject("expired", f"the upload expired at height {expires} (head {head})", head=head)
        if expires > head + lim.sig_max_blocks:
            raise reject("expiry_too_far", f"'expires' may be at most {lim.sig_max_blocks} blocks ahead (head {head})",
                         head=head)
        signature = bytes.fromhex(sig[2:])

        def check() -> tuple[bytes, bytes, bool]:  # hex decode, hash and verify leave the loop (16 MiB)
            raw = bytes.fromhex(data[2:])
            h = hashlib.sha256(raw).digest()
            return raw, h, store.signature_ok(pk, h, len(raw), expires, signature)

        raw, h, good = await trio.to_thread.run_sync(check)
        if not good:
            raise reject("bad_signature", "the signature does not verify for this owner, blob and expiry")
        balance = chain.account(pk).balance
        if balance < lim.min_balance:
            raise reject("unfunded", f"the owner holds {balance} base units; uploading needs {lim.min_balance}",
                         min_balance=str(lim.min_balance))
        models = node.models  # a registered model's index and chunks are not charged to its owner
        charge = not await trio.to_thread.run_sync(models.is_owner_ref, pk, h)
        try:
            await store.put_owned(raw, pk, charge=charge)
        except BlobRefused as exc:
            raise reject(exc.reason, str(exc)) from None
        used, count = store.usage(pk)
        return {"hash": "0x" + h.hex(), "size": len(raw), "owner": owner, "account_bytes": used,
                "account_blobs": count, "grace_s": lim.grace_s}

    from .model_methods import register_model_methods

    register_model_methods(reg, node)

    hub.register_topic(
        "jobs",
        params=[Param("job_id", HASH, required=False, description="only this job's events")],
        matcher=lambda flt, key: "job_id" not in flt or flt["job_id"].lower() == key,
        summary="Market events: job submitted, awarded, completed, settled, failed, expired, canceled",
    )
