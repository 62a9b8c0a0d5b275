"""Committed state held in dicts: what the pure state machine reads (``get_account``, ``get_object``),
the prefix ``scan`` the read side uses, and ``apply`` to take a block outcome. Shared by the
state-machine tests (no mocks: the real ``execute_block`` runs on it)."""

from __future__ import annotations

from collections.abc import Iterator

from state import codec
from state.machine import SUPPLY_KEY
from state.types import Account


class MemState:
    def __init__(self, balances: dict[bytes, int] | None = None, *, record_supply: bool = True) -> None:
        balances = balances or {}
        self.accounts: dict[bytes, Account] = {pk: Account(b, 0) for pk, b in balances.items()}
        self.objects: dict[bytes, bytes] = {}
        if record_supply and balances:
            self.objects[SUPPLY_KEY] = codec.encode(sum(balances.values()))

    def get_account(self, pk: bytes) -> Account | None:
        return self.accounts.get(pk)

    def get_object(self, key: bytes) -> bytes | None:
        return self.objects.get(key)

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        for k in sorted(k for k in self.objects if k.startswith(prefix)):
            yield k, self.objects[k]

    def apply(self, outcome) -> None:
        for pk, acc in outcome.accounts.items():
            self.accounts[pk] = acc.copy()
        for k, v in outcome.objects.items():
            if v is None:
                self.objects.pop(k, None)
            else:
                self.objects[k] = v
