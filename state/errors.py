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


class FatalWriteError(AitbcError):
    """A durable write failed: the block store (reason ``store_write``), the consensus WAL
    (``wal_write``) or the validator's sign state (``signstate_write``). Never caught and continued: the
    node stops (the store holds the previous block or the next, never half of one; nothing is signed or
    sent on top of the failed write) and a restart on a working disk resumes. ``reason`` is the stable
    code; the message names it too, so the one line the node prints on exit carries it."""

    reason = "write_failed"

    @classmethod
    def wrap(cls, what: str, detail: str, reason: str) -> FatalWriteError:
        return cls(f"fatal [{reason}]: {what} failed: {detail}; stopping (restart once the disk is fixed)", reason)

    @classmethod
    def from_os(cls, what: str, exc: OSError, reason: str) -> FatalWriteError:
        return cls.wrap(what, exc.strerror or str(exc) or type(exc).__name__, reason)
