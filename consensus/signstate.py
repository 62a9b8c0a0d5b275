"""The validator's last-signed height/round/step, persisted BEFORE every signature so a restart can
never make it sign two different messages for the same height/round/step (like CometBFT's
priv_validator_state.json).

A failed write of the state (full disk, I/O error) raises :class:`FatalWriteError` (reason
``signstate_write``) and nothing is signed: the caller must stop, never treat it as a refusal. The file
is replaced atomically (write a temporary file, fsync, rename, fsync the directory), so after a crash
it holds the previous state or the new one."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from state.codec import sha256
from state.crypto import SigningKey
from state.errors import AitbcError, FatalWriteError

STEP_PROPOSE = 1
STEP_PREVOTE = 2
STEP_PRECOMMIT = 3


class DoubleSignError(AitbcError):
    reason = "double_sign"


@dataclass
class _Last:
    height: int = 0
    round: int = 0
    step: int = 0
    digest: str = ""


class SignState:
    """Guards a validator key: ``sign`` refuses anything that regresses or conflicts with what was
    signed before, across restarts."""

    def __init__(self, path: str | os.PathLike, key: SigningKey) -> None:
        self.path = Path(path)
        self.key = key
        self.last = _Last()
        if self.path.exists():
            try:
                obj = json.loads(self.path.read_text())
                self.last = _Last(int(obj["height"]), int(obj["round"]), int(obj["step"]), str(obj["digest"]))
            except (ValueError, KeyError, TypeError) as exc:
                raise DoubleSignError(
                    f"sign state {self.path} is unreadable ({exc}); refusing to sign. Inspect or remove it "
                    "only if you are sure this validator signed nothing at the stored height"
                ) from None

    def _persist(self, last: _Last) -> None:
        try:
            self._write_file(json.dumps(last.__dict__).encode())
        except OSError as exc:
            raise FatalWriteError.from_os(f"writing the sign state {self.path}", exc, "signstate_write") from None

    def _write_file(self, data: bytes) -> None:
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def sign(self, kind: str, chain_id: str, height: int, round_: int, step: int, sign_bytes: bytes) -> bytes:
        """Sign ``sign_bytes`` for (height, round, step) if that is safe; record it durably first.
        Raises :class:`DoubleSignError` (refused: not signing is safe) or :class:`FatalWriteError`."""
        digest = sha256(kind.encode() + b"\x00" + sign_bytes).hex()
        last = self.last
        hrs, last_hrs = (height, round_, step), (last.height, last.round, last.step)
        if hrs < last_hrs:
            raise DoubleSignError(f"refusing to sign {hrs}: already signed {last_hrs}")
        if hrs == last_hrs:
            if digest != last.digest:
                raise DoubleSignError(f"refusing to sign a different message for {hrs}")
            return self.key.sign(kind, chain_id, sign_bytes)  # Ed25519 is deterministic: same signature
        new = _Last(height, round_, step, digest)
        self._persist(new)
        self.last = new
        return self.key.sign(kind, chain_id, sign_bytes)
