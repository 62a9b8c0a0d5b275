"""Evidence of validator misbehaviour: the type lives in ``state.evidence`` (blocks carry it)."""

from state.evidence import MAX_EVIDENCE_BYTES, DuplicateVote, EvidenceError

__all__ = ["MAX_EVIDENCE_BYTES", "DuplicateVote", "EvidenceError"]
