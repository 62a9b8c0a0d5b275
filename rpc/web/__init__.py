"""The web explorer and marketplace app served at ``/`` of the RPC port (``[web] enabled``).

A single page of plain static files (HTML, CSS, ES-module JavaScript in ``static/``, no build step) that
talks to the node only through the public API a remote client has: JSON-RPC at ``POST /rpc`` and
``newHeads`` notifications over the WebSocket at ``/ws``. Pages are hash routes (``#/block/12``).

Serving (raw ASGI, in front of Quart like ``/rpc``):

* ``GET /`` — ``index.html``, ``Cache-Control: no-cache`` with an ETag (``304`` on ``If-None-Match``).
* ``GET /web/<version>/<file>`` — the other files; ``<version>`` is a digest of every static file, so they
  are cached for a year as ``immutable`` and a new build gets new URLs. Another version, a name that is
  not one of the shipped files (anything with a ``/``, ``..``, a leading dot, …) is ``404``: the table of
  files is built at start, no path from a request ever reaches the file system.
* ``GET`` and ``HEAD`` only (others ``405``). Every answer carries a strict Content-Security-Policy (scripts,
  styles and connections only from the page's own origin; no inline script or style, no frames, no forms),
  ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer`` and ``X-Frame-Options: DENY``.

The page's own requests carry ``Origin: http://<host>`` (browsers send it on every POST and WebSocket);
with the app attached the server accepts such same-origin requests besides ``rpc.cors_origins``
(:meth:`rpc.server.RpcServer._origin_refusal`). They are still browser requests: ``admin_*`` needs the
token, state-changing methods need ``Content-Type: application/json``, and the ``Host`` check against DNS
rebinding runs before any of it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rpc.server import RpcServer

__all__ = ["ASSET_PREFIX", "CSP", "WebApp", "attach"]

ASSET_PREFIX = "/web/"
#: The page may load scripts, styles, images and make connections (fetch, WebSocket) to its own origin only.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".json": b"application/json",
    ".txt": b"text/plain; charset=utf-8",
}
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}")
_VERSION_MARK = b"{{ASSETS}}"  # in index.html: replaced by /web/<version>
_SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


@dataclass(frozen=True)
class _File:
    body: bytes
    content_type: bytes
    etag: bytes


def _load_static() -> dict[str, bytes]:
    root = resources.files(__name__) / "static"
    out: dict[str, bytes] = {}
    for entry in root.iterdir():
        name = entry.name
        if entry.is_file() and _NAME.fullmatch(name) and any(name.endswith(ext) for ext in _TYPES):
            out[name] = entry.read_bytes()
    if "index.html" not in out:
        raise FileNotFoundError("rpc/web/static/index.html is missing from the package")
    return out


def _content_type(name: str) -> bytes:
    return _TYPES[name[name.rindex("."):]]


class WebApp:
    """The static files in memory and the raw-ASGI handler that serves them."""

    def __init__(self, files: dict[str, bytes] | None = None) -> None:
        raw = _load_static() if files is None else files
        digest = hashlib.sha256()
        for name in sorted(raw):
            digest.update(name.encode() + b"\0" + hashlib.sha256(raw[name]).digest())
        self.version = digest.hexdigest()[:16]
        self.asset_base = f"{ASSET_PREFIX}{self.version}/"
        index = raw["index.html"].replace(_VERSION_MARK, self.asset_base.rstrip("/").encode())
        self.index = self._file("index.html", index)
        self.assets = {name: self._file(name, body) for name, body in raw.items() if name != "index.html"}

    @staticmethod
    def _file(name: str, body: bytes) -> _File:
        etag = b'"' + hashlib.sha256(body).hexdigest()[:32].encode() + b'"'
        return _File(body, _content_type(name), etag)

    def lookup(self, path: str) -> tuple[_File, bytes] | None:
        """The file for a request path and its Cache-Control, or None (404)."""
        if path == "/":
            return self.index, b"no-cache"
        if not path.startswith(self.asset_base):
            return None
        f = self.assets.get(path[len(self.asset_base):])  # exact names only: no '/', no '..'
        return (f, b"public, max-age=31536000, immutable") if f is not None else None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        method = scope["method"]
        found = self.lookup(scope["path"])
        if found is None:
            return await _plain(send, 404, b"not found\n")
        if method not in ("GET", "HEAD"):
            return await _plain(send, 405, b"method not allowed; use GET\n", [(b"allow", b"GET, HEAD")])
        f, cache = found
        inm = None
        for name, value in scope["headers"]:
            if name == b"if-none-match":
                inm = value
        headers = [(b"etag", f.etag), (b"cache-control", cache), *_SECURITY_HEADERS]
        if inm is not None and f.etag in [v.strip() for v in inm.split(b",")]:
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        headers += [(b"content-type", f.content_type), (b"content-length", b"%d" % len(f.body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else f.body})


async def _plain(send: Any, status: int, body: bytes, extra: list | None = None) -> None:
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"%d" % len(body)),
               *_SECURITY_HEADERS, *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def attach(server: RpcServer) -> WebApp:
    """Serve the app on ``server``: ``GET /`` and ``/web/…``, and accept the page's same-origin requests."""
    app = WebApp()
    server.http_routes.append((ASSET_PREFIX, app))
    server.index_route = app
    server.allow_same_origin = True
    return app
