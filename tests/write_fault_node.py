"""Test launcher: ``aitbc-peer`` with one kind of durable write failing the way a full disk fails it,
injected from outside the node (subclasses of the production classes, installed before the CLI runs):

    python tests/write_fault_node.py {signstate|wal|store} N -- <aitbc-peer arguments, e.g. run --home H>

The Nth write of that kind (counted from the start of the process) fails: a sign-state write, a synced
WAL write (a message this node signed, or an end marker) or a store batch (a block commit).
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import plyvel  # noqa: E402

import node.service as service  # noqa: E402
from consensus.signstate import SignState  # noqa: E402
from consensus.wal import WAL  # noqa: E402
from state.store import Store  # noqa: E402


def install(kind: str, nth: int) -> None:
    count = 0

    def trip() -> bool:
        nonlocal count
        count += 1
        return count == nth

    def full() -> OSError:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    class FailingSignState(SignState):
        def _write_file(self, data: bytes) -> None:
            if trip():
                raise full()
            super()._write_file(data)

    class FailingWAL(WAL):
        def _append(self, rec: bytes, *, sync: bool) -> None:
            if sync and trip():
                os.write(self._fd, rec[: len(rec) // 2])  # a torn record
                raise full()
            super()._append(rec, sync=sync)

    class FailingStore(Store):
        def _apply(self, puts: dict, *, sync: bool) -> None:
            if trip():
                raise plyvel.IOError(b"IO error: No space left on device")
            super()._apply(puts, sync=sync)

    if kind == "signstate":
        service.SignState = FailingSignState  # type: ignore[misc]
    elif kind == "wal":
        service.WAL = FailingWAL  # type: ignore[misc]
    elif kind == "store":
        service.Store = FailingStore  # type: ignore[misc]
    else:
        raise SystemExit(f"unknown write kind {kind!r}")


def main() -> int:
    argv = sys.argv[1:]
    if "--" not in argv or argv.index("--") != 2:
        print(__doc__, file=sys.stderr)
        return 2
    install(argv[0], int(argv[1]))
    from node.cli import main as cli_main

    return cli_main(argv[3:])


if __name__ == "__main__":
    sys.exit(main())
