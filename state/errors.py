"""Typed errors of the state layer. Each carries a short machine-readable ``reason``."""

from __future__ import annotations


class AitbcError(Exception):
    """Base of every error this project raises on purpose."""

    reason: str = "error"

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class DecodeError(AitbcError):
    """Bytes that are not a valid canonical encoding of the expected object."""

    reason = "decode"


class AddressError(AitbcError, ValueError):
    """A malformed ``ait1…`` address."""

    reason = "address"


class SignatureError(AitbcError):
    """A signature that does not verify."""

    reason = "signature"


class TxError(AitbcError):
    """A transaction refused by validation (mempool or block execution)."""

    reason = "invalid_tx"


class BlockError(AitbcError):
    """A block refused by validation."""

    reason = "invalid_block"


class InvariantError(AitbcError):
    """An internal invariant that cannot fail unless the code has a bug (or an object is used before
    it is started). Raised instead of ``assert``, which ``python -O`` removes."""

    reason = "invariant"
