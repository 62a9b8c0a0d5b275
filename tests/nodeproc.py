"""Run real ``aitbc-peer`` node processes from tests.

* :func:`free_port` finds a free loopback port.
* :class:`NodeProcess` starts ``python -m node.cli run --dev --home H --rpc-port P --p2p-port Q`` in its
  own session with output to a log file next to the home, waits until it serves blocks, talks JSON-RPC
  to it, and stops it (SIGTERM, bounded, then SIGKILL) or kills it (SIGKILL). With ``wrapper_args``
  (see ``testnet/faults.py``) it starts ``python -m testnet.faults ARGS -- run …``: a byzantine node.
* :func:`wait_for` polls a condition with a bound; :func:`run_cli` runs a CLI command with a timeout.

Every wait is bounded. The fixtures in ``conftest.py`` kill every process started through them by pid,
whatever happens in the test.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from node.keystore import Keystore
from state.address import encode_address
from state.crypto import SigningKey
from testnet.ports import free_port

REPO = Path(__file__).resolve().parent.parent
POLL = 0.05  # seconds between polls
FAST_BLOCK_MS = 200  # block interval of the homes the tests create with init_home()

T = TypeVar("T")


# ----------------------------------------------------------------------------------------------- utils




def clean_env(**extra: str) -> dict[str, str]:
    """The environment for child processes: no AITBC_* leaking in from the caller, unbuffered output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AITBC_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def wait_for(predicate: Callable[[], T], timeout: float, what: str = "condition", interval: float = POLL) -> T:
    """Poll ``predicate`` until it returns something truthy (returned) or ``timeout`` seconds pass
    (AssertionError naming ``what``)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """``python -m node.cli ARGS`` with captured text output."""
    return subprocess.run(
        [sys.executable, "-m", "node.cli", *args],
        cwd=REPO,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def init_home(home: Path, block_interval_ms: int = FAST_BLOCK_MS) -> Path:
    """``aitbc-peer init --dev`` with a short block interval."""
    r = run_cli("init", "--dev", "--home", str(home), "--block-interval", str(block_interval_ms))
    assert r.returncode == 0, r.stderr
    return home


def dev_password(home: Path) -> str:
    return (home / "keys" / "dev.password").read_text().strip()


def load_dev_key(home: Path) -> SigningKey:
    """The funded dev account's key, from the home's keystore."""
    return Keystore(home / "keys" / "keystore").load("dev", dev_password(home))


def address(key_or_pubkey: SigningKey | bytes) -> str:
    pk = key_or_pubkey.public_key if isinstance(key_or_pubkey, SigningKey) else key_or_pubkey
    return encode_address(pk)


# ------------------------------------------------------------------------------------------------- RPC


class RpcError(Exception):
    """A JSON-RPC error answer."""

    def __init__(self, method: str, error: dict) -> None:
        super().__init__(f"{method}: [{error.get('code')}] {error.get('message')} {error.get('data', '')}")
        self.code = error.get("code")
        self.message = error.get("message", "")
        self.data = error.get("data")


class NodeProcess:
    """One node process on a home directory (created by ``run --dev`` if missing)."""

    _counter = itertools.count()

    def __init__(
        self,
        home: Path,
        rpc_port: int | None = None,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        wrapper_args: list[str] | None = None,
    ) -> None:
        self.home = Path(home)
        self.rpc_port = rpc_port or free_port()
        self.p2p_port = free_port()
        self.extra_args = list(extra_args or [])
        self.extra_env = dict(env or {})
        self.wrapper_args = list(wrapper_args or [])  # testnet.faults options: run a byzantine node
        self.url = f"http://127.0.0.1:{self.rpc_port}/rpc"
        self.ws_url = f"ws://127.0.0.1:{self.rpc_port}/ws"
        self.metrics_url = f"http://127.0.0.1:{self.rpc_port}/metrics"
        self.log_path = self.home.parent / f"{self.home.name}-node{next(self._counter)}.log"
        self.proc: subprocess.Popen | None = None
        self._log = None
        self._http = httpx.Client(timeout=10.0)
        self._ids = itertools.count(1)

    # lifecycle --------------------------------------------------------------------------------------
    @property
    def args(self) -> list[str]:
        entry = ["testnet.faults", *self.wrapper_args, "--"] if self.wrapper_args else ["node.cli"]
        return [
            sys.executable, "-m", *entry, "run", "--dev", "--home", str(self.home),
            "--rpc-port", str(self.rpc_port), "--p2p-port", str(self.p2p_port), *self.extra_args,
        ]  # fmt: skip

    def start(self) -> NodeProcess:
        assert self.proc is None, "already started"
        self.home.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # closed in _reap()
        self.proc = subprocess.Popen(
            self.args,
            cwd=REPO,
            env=clean_env(**self.extra_env),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def wait_ready(self, timeout: float = 30.0) -> dict:
        """Poll chain_getHead until the node answers with height >= 1; returns the head."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise AssertionError(
                    f"node exited with {self.proc.returncode if self.proc else None} before it was ready:\n"
                    + self.log_tail()
                )
            try:
                head = self.rpc("chain_getHead")
                if head["height"] >= 1:
                    return head
            except (httpx.HTTPError, RpcError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"node not ready within {timeout} s:\n" + self.log_tail())
            time.sleep(POLL)

    def stop(self, timeout: float = 10.0) -> float:
        """SIGTERM and wait (bounded); SIGKILL if it does not exit. Returns the seconds it took."""
        if not self.alive():
            self._reap()
            return 0.0
        assert self.proc is not None
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise AssertionError(f"node did not exit within {timeout} s of SIGTERM:\n" + self.log_tail()) from None
        elapsed = time.monotonic() - t0
        self._reap()
        return elapsed

    def kill9(self) -> None:
        """SIGKILL the process (its whole session) and reap it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
                pass
        self._reap()

    def _reap(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def close(self) -> None:
        """Teardown: kill if still running, release the HTTP client."""
        try:
            self.kill9()
        finally:
            self._http.close()

    # RPC --------------------------------------------------------------------------------------------
    def post(self, body: bytes | str, **kw: Any) -> httpx.Response:
        """POST raw bytes to /rpc."""
        if isinstance(body, str):
            body = body.encode()
        return self._http.post(self.url, content=body, headers={"content-type": "application/json"}, **kw)

    def call(self, method: str, **params: Any) -> dict:
        """The whole JSON-RPC response object."""
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
        resp = self._http.post(self.url, json=body)
        assert resp.status_code == 200, (resp.status_code, resp.text[:500])
        return resp.json()

    def rpc(self, method: str, **params: Any) -> Any:
        """The result; :class:`RpcError` for an error answer."""
        obj = self.call(method, **params)
        if "error" in obj:
            raise RpcError(method, obj["error"])
        return obj["result"]

    def rpc_error(self, method: str, **params: Any) -> dict:
        """The error object of a call that must fail."""
        obj = self.call(method, **params)
        assert "error" in obj, f"{method} unexpectedly succeeded: {obj.get('result')!r}"[:500]
        return obj["error"]

    # chain helpers ----------------------------------------------------------------------------------
    def height(self) -> int:
        return self.rpc("chain_getHead")["height"]

    def account(self, who: SigningKey | bytes | str) -> dict:
        addr = who if isinstance(who, str) else address(who)
        return self.rpc("state_getAccount", address=addr)

    def balance(self, who: SigningKey | bytes | str) -> int:
        return int(self.account(who)["balance"])

    def tx_status(self, tx_hash: str) -> dict | None:
        try:
            return self.rpc("chain_getTransaction", hash=tx_hash)
        except RpcError as exc:
            if exc.code == -32004:
                return None
            raise

    def batch(self, calls: list[tuple[str, dict]]) -> list[dict]:
        """One JSON-RPC batch request; the response objects in the order of ``calls``."""
        out: list[dict] = []
        for i in range(0, len(calls), 500):
            chunk = calls[i : i + 500]
            body = [{"jsonrpc": "2.0", "id": j, "method": m, "params": p} for j, (m, p) in enumerate(chunk)]
            resp = self._http.post(self.url, json=body)
            assert resp.status_code == 200, (resp.status_code, resp.text[:500])
            by_id = {r["id"]: r for r in resp.json()}
            out.extend(by_id[j] for j in range(len(chunk)))
        return out

    def tx_statuses(self, hashes: list[str]) -> dict[str, dict | None]:
        """hash -> chain_getTransaction result (None when the node does not know the tx)."""
        out: dict[str, dict | None] = {}
        for h, r in zip(hashes, self.batch([("chain_getTransaction", {"hash": h}) for h in hashes]), strict=True):
            if "error" in r:
                assert r["error"]["code"] == -32004, r["error"]
                out[h] = None
            else:
                out[h] = r["result"]
        return out

    def wait_included(self, hashes: list[str], timeout: float = 30.0) -> dict[str, dict]:
        """Wait until every tx in ``hashes`` is committed or failed; returns hash -> status."""
        done: dict[str, dict] = {}
        todo = list(hashes)

        def check() -> bool:
            nonlocal todo
            last = self.tx_status(todo[-1])  # cheap probe first: each lookup decodes a whole block
            if last is None or last["status"] == "pending":
                return False
            left = []
            for h, st in self.tx_statuses(todo).items():
                if st is not None and st["status"] != "pending":
                    done[h] = st
                else:
                    left.append(h)
            todo = left
            return not todo

        wait_for(check, timeout, f"{len(hashes)} txs to be included", interval=0.1)
        return done

    def wait_height(self, height: int, timeout: float = 15.0) -> int:
        return wait_for(lambda: (h := self.height()) >= height and h, timeout, f"height {height}")

    def __repr__(self) -> str:
        return f"NodeProcess(home={self.home}, rpc={self.rpc_port}, pid={self.proc.pid if self.proc else None})"
