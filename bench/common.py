"""Shared helpers for benchmarks: temporary homes, node subprocesses, a raw keep-alive HTTP client."""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from testnet.ports import free_base_port, free_port

__all__ = ["free_base_port", "free_port"]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


class NodeProc:
    """A node process in its own session; always stopped by pid."""

    def __init__(self, home: Path, rpc_port: int, log: Path) -> None:
        self.home, self.rpc_port = home, rpc_port
        self.url = f"http://127.0.0.1:{rpc_port}/rpc"
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "node.cli", "run", "--home", str(home), "--rpc-port", str(rpc_port),
             "--log-level", "warning"],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def rpc(self, method: str, **params):
        r = httpx.post(self.url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}, timeout=60)
        obj = r.json()
        if "error" in obj:
            raise RuntimeError(obj["error"])
        return obj["result"]

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}")
            try:
                if self.rpc("chain_getHead")["height"] >= 1:
                    return
            except (httpx.HTTPError, RuntimeError):
                pass
            time.sleep(0.1)
        raise TimeoutError("node not ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()


@contextmanager
def running_node(home: Path, log: Path):
    node = NodeProc(home, free_port(), log)
    try:
        node.wait_ready()
        yield node
    finally:
        node.stop()


class RawHttp:
    """Minimal keep-alive HTTP/1.1 POST client (far cheaper per request than httpx)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._connect()

    def _connect(self) -> None:
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def post(self, path: str, body: bytes) -> bytes:
        """POST and return the body; reconnects once when the server closed a kept-alive connection
        (hypercorn closes one after 1,000 requests)."""
        try:
            return self._post(path, body)
        except (ConnectionError, BrokenPipeError):
            self.sock.close()
            self._connect()
            return self._post(path, body)

    def _post(self, path: str, body: bytes) -> bytes:
        req = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        self.sock.sendall(req)
        while b"\r\n\r\n" not in self.buf:
            self.buf += self._recv()
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        while len(rest) < length:
            rest += self._recv()
        self.buf = rest[length:]
        return rest[:length]

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        return chunk

    def call(self, method: str, params: dict) -> dict:
        return json.loads(self.post("/rpc", json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                                                         "params": params}).encode()))

    def close(self) -> None:
        self.sock.close()
