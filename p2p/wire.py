"""Wire messages of the request/response protocols and the errors of the p2p layer.

Every frame is one canonical-CBOR item (``state.codec``), length-prefixed with an unsigned varint
(``libp2p.io.msgio.VarIntLengthMsgReadWriter``) and bounded per protocol. Responses are envelopes:
``{"ok": value}`` or ``{"error": {"code": str, "message": str}}``.

Importing this module does not import libp2p.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from state import codec
from state.crypto import PUBKEY_LEN, SIG_LEN, SigningKey, verify
from state.errors import AitbcError, DecodeError

U63 = (1 << 63) - 1
MAX_HASH_BYTES = 64
MAX_REQUEST_BYTES = 4 * 1024  # every request frame of every protocol
MAX_STATUS_BYTES = 1024
MAX_PEERS_RESPONSE_BYTES = 64 * 1024
MAX_PEX_ENTRIES = 32
MAX_ADDRS_PER_PEER = 8
MAX_ADDR_CHARS = 256
#: Signature purpose of a validator proof (``state.crypto``: ``aitbc/p2p-validator/v1\0<chain id>``).
KIND_P2P_VALIDATOR = "p2p-validator"


# ------------------------------------------------------------------------------------------ errors


class P2PError(AitbcError):
    """Base of the errors raised by the p2p layer."""

    reason = "p2p"


class PeerNotConnected(P2PError):
    reason = "not_connected"


class RequestTimeout(P2PError):
    reason = "timeout"


class ProtocolUnsupported(P2PError):
    """The peer does not speak the protocol (or refused the stream)."""

    reason = "unsupported"


class RemoteError(P2PError):
    """The peer answered with an error envelope; ``code`` is its machine-readable reason."""

    reason = "remote_error"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"peer answered {code}: {message}", "remote_error")
        self.code = code


class BadResponse(P2PError):
    """The peer's answer is malformed, too large or does not match the request."""

    reason = "bad_response"


class BadRequest(P2PError):
    """An inbound request that does not follow the protocol (answered with ``bad_request``)."""

    reason = "bad_request"


# ------------------------------------------------------------------------------------------ status


def _uint(v: Any, name: str) -> int:
    if type(v) is not int or not 0 <= v <= U63:
        raise DecodeError(f"status.{name}: expected an unsigned 63-bit integer")
    return v


def _hash(v: Any, name: str) -> bytes:
    if type(v) is not bytes or len(v) > MAX_HASH_BYTES:
        raise DecodeError(f"status.{name}: expected bytes of at most {MAX_HASH_BYTES}")
    return v


@dataclass(frozen=True, slots=True)
class ValidatorProof:
    """A validator's consensus key vouching for its node's libp2p peer id, sent in the status exchange:
    ``signature`` = the key's domain-separated signature (:data:`KIND_P2P_VALIDATOR`, the chain id) over
    ``codec.encode([genesis_hash, peer_id])``. The peer id is the one the secure channel authenticated, so a
    proof replayed from another connection does not verify; whether the key is a validator now is the
    receiver's question (its validator set), asked at every status."""

    public_key: bytes
    signature: bytes

    @staticmethod
    def encoding(genesis_hash: bytes, peer_id: str) -> bytes:
        return codec.encode([genesis_hash, peer_id])

    @classmethod
    def make(cls, key: SigningKey, chain_id: str, genesis_hash: bytes, peer_id: str) -> ValidatorProof:
        return cls(key.public_key, key.sign(KIND_P2P_VALIDATOR, chain_id, cls.encoding(genesis_hash, peer_id)))

    def verify(self, chain_id: str, genesis_hash: bytes, peer_id: str) -> bool:
        return verify(KIND_P2P_VALIDATOR, chain_id, self.public_key, self.encoding(genesis_hash, peer_id),
                      self.signature)

    def to_obj(self) -> list[bytes]:
        return [self.public_key, self.signature]

    @classmethod
    def from_obj(cls, obj: Any) -> ValidatorProof:
        if (type(obj) is not list or len(obj) != 2 or type(obj[0]) is not bytes or len(obj[0]) != PUBKEY_LEN
                or type(obj[1]) is not bytes or len(obj[1]) != SIG_LEN):
            raise DecodeError(f"status.validator: expected [public key ({PUBKEY_LEN} bytes), signature ({SIG_LEN} bytes)]")
        return cls(obj[0], obj[1])


_STATUS_KEYS = frozenset({"chain_id", "genesis_hash", "height", "head_hash", "finalized_height"})


@dataclass(frozen=True, slots=True)
class ChainStatus:
    """What a peer says about its chain: identity (chain id, genesis hash) and its head; a validator's node
    adds its :class:`ValidatorProof` (key ``validator``, absent otherwise)."""

    chain_id: str
    genesis_hash: bytes
    height: int
    head_hash: bytes
    finalized_height: int
    validator: ValidatorProof | None = None

    def to_obj(self) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "chain_id": self.chain_id,
            "genesis_hash": self.genesis_hash,
            "height": self.height,
            "head_hash": self.head_hash,
            "finalized_height": self.finalized_height,
        }
        if self.validator is not None:
            obj["validator"] = self.validator.to_obj()
        return obj

    def encode(self) -> bytes:
        """Canonical CBOR."""
        return codec.encode(self.to_obj())

    @classmethod
    def from_obj(cls, obj: Any) -> ChainStatus:
        if type(obj) is not dict or not (set(obj) == _STATUS_KEYS or set(obj) == _STATUS_KEYS | {"validator"}):
            raise DecodeError(
                "status: expected a map with chain_id, genesis_hash, height, head_hash, finalized_height "
                "(and validator)"
            )
        chain_id = obj["chain_id"]
        if type(chain_id) is not str or not 0 < len(chain_id) <= 64:
            raise DecodeError("status.chain_id: expected a string of 1..64 characters")
        st = cls(
            chain_id=chain_id,
            genesis_hash=_hash(obj["genesis_hash"], "genesis_hash"),
            height=_uint(obj["height"], "height"),
            head_hash=_hash(obj["head_hash"], "head_hash"),
            finalized_height=_uint(obj["finalized_height"], "finalized_height"),
            validator=ValidatorProof.from_obj(obj["validator"]) if "validator" in obj else None,
        )
        if st.finalized_height > st.height:
            raise DecodeError("status: finalized_height > height")
        return st

    @classmethod
    def decode(cls, data: bytes) -> ChainStatus:
        """Strict decoding of :meth:`encode`'s output (bounded, canonical, all fields checked)."""
        return cls.from_obj(codec.decode(data, max_bytes=MAX_STATUS_BYTES))


# ------------------------------------------------------------------------------------------ envelopes


def ok(value: Any) -> dict[str, Any]:
    return {"ok": value}


def error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message[:200]}}


def open_envelope(obj: Any) -> Any:
    """The ``ok`` value of a response envelope; raises :class:`RemoteError` / :class:`BadResponse`."""
    if type(obj) is dict and len(obj) == 1:
        if "ok" in obj:
            return obj["ok"]
        if "error" in obj:
            err = obj["error"]
            if type(err) is dict and type(err.get("code")) is str and type(err.get("message", "")) is str:
                raise RemoteError(err["code"][:64], err.get("message", "")[:200])
    raise BadResponse("malformed response envelope")


def req_map(obj: Any, keys: set[str]) -> dict[str, Any]:
    if type(obj) is not dict or set(obj) != keys:
        raise BadRequest(f"expected a map with keys {sorted(keys)}")
    return obj


def req_uint(v: Any, name: str, lo: int = 0, hi: int = U63) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise BadRequest(f"{name} must be an integer in {lo}..{hi}")
    return v


def check_addr_list(v: Any, *, bad: type[P2PError]) -> list[str]:
    if type(v) is not list or len(v) > MAX_ADDRS_PER_PEER:
        raise bad(f"addrs: expected a list of at most {MAX_ADDRS_PER_PEER} strings")
    out = []
    for a in v:
        if type(a) is not str or not 0 < len(a) <= MAX_ADDR_CHARS or not a.startswith("/"):
            raise bad("addrs: expected multiaddr strings")
        out.append(a)
    return out
