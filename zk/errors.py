"""Typed errors of zk/: every refusal carries a stable reason code."""

from __future__ import annotations

from state.errors import AitbcError


class ProofError(AitbcError):
    """A proof, commitment or key that does not verify or does not decode.

    ``reason`` is one of: ``zk_malformed`` (wrong size, non-canonical scalar or point encoding, unknown
    version), ``zk_invalid`` (well-formed but the verification equation fails), ``zk_out_of_range``
    (a value or parameter outside what the scheme allows)."""

    reason = "zk_invalid"
