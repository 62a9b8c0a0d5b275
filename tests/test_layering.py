"""Package layering (docs/architecture.md, "Packages"), checked on the source with ``ast``:

* ``rpc/`` (``rpc/web/`` included) imports only ``rpc``, ``state`` (pure types, codec, views), the stdlib and
  third-party packages — never ``node``, ``consensus``, ``p2p``, ``gpu``, ... not even under
  ``TYPE_CHECKING`` or inside a function: what it needs from a node is ``rpc/node_api.py``'s ``NodeApi``,
  which ``node/rpc_adapter.py`` implements;
* ``state/`` imports no other package of this project but ``zk`` (pure crypto of sealed bids; ``gpu`` has its
  own test in test_state_kinds.py);
* importing every ``rpc`` module in a fresh interpreter loads no ``node``/``consensus``/``p2p``/``gpu`` module
  (only ``rpc``, ``state`` and what ``state`` may import);
* the node's adapter (and the node objects handed through it) provide every member of the protocols.
"""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Top-level packages of this project (a directory with an ``__init__.py``, plus tests/).
PROJECT = sorted({p.parent.name for p in ROOT.glob("*/__init__.py")} | {"tests"})
#: What each layer may import from the project (anything else from PROJECT is refused).
ALLOWED = {"rpc": {"rpc", "state"}, "state": {"state", "zk"}}


def _imports(path: Path, package_root: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in ``path`` (relative imports resolved)."""
    parts = list(path.relative_to(package_root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                out.append((node.lineno, node.module or ""))
            else:
                base = parts[: len(parts) - node.level + (1 if path.name == "__init__.py" else 0)]
                mod = ".".join([*base, node.module] if node.module else base)
                out.append((node.lineno, mod or "<outside the project>"))
    return out


def _violations(layer: str) -> list[str]:
    root = ROOT / layer
    bad = []
    for path in sorted(root.rglob("*.py")):
        for line, mod in _imports(path, root):
            top = mod.split(".")[0]
            if (top in PROJECT or top == "<outside the project>") and top not in ALLOWED[layer]:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {mod}")
    return bad


def test_the_scan_sees_every_package() -> None:
    assert {"rpc", "state", "node", "consensus", "p2p", "gpu"} <= set(PROJECT)
    assert (ROOT / "rpc" / "node_api.py").exists()


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports(layer: str) -> None:
    assert _violations(layer) == []


def test_the_scan_catches_what_it_should(tmp_path: Path) -> None:
    pkg = tmp_path / "rpc"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "m.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from node.service import Node\n"
        "def f():\n    import p2p.service\n    from ..views import hx\n    from ... import x\n"
    )
    mods = sorted(m for _, m in _imports(pkg / "sub" / "m.py", pkg))
    assert mods == ["<outside the project>", "node.service", "p2p.service", "rpc.views", "typing"]


CHILD = """
import importlib, json, pkgutil, sys
import rpc
for info in pkgutil.walk_packages(rpc.__path__, "rpc."):
    importlib.import_module(info.name)
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1:]))))
"""


def test_importing_rpc_loads_no_node_module() -> None:
    forbidden = [p for p in PROJECT if p not in ALLOWED["rpc"] | ALLOWED["state"]]
    proc = subprocess.run([sys.executable, "-c", CHILD, *forbidden], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def _members(protocol: type) -> set[str]:
    names = {n for n in vars(protocol) if not n.startswith("_") or n == "__contains__"}
    return names | set(getattr(protocol, "__annotations__", {}))


def _provides(impl: type, name: str) -> bool:
    """A class attribute, property or method of ``impl``, or an attribute its ``__init__`` assigns."""
    if hasattr(impl, name):
        return True
    init = ast.parse(textwrap.dedent(inspect.getsource(impl.__init__)))
    return any(isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "self"
               and n.attr == name and isinstance(n.ctx, ast.Store) for n in ast.walk(init))


def test_the_node_implements_the_interface() -> None:
    from node.config import OpenaiSection, RpcSection
    from node.models import ModelService
    from node.rpc_adapter import NodeRpcAdapter, _Blobs, _Llm, _Network
    from rpc import node_api as api
    from rpc.openai import OpenaiSettings
    from state.chain import ChainState
    from state.mempool import Mempool

    for impl, protocol in [
        (NodeRpcAdapter, api.NodeApi),
        (_Network, api.NetworkApi),
        (_Blobs, api.BlobApi),
        (_Llm, api.LlmApi),
        (ModelService, api.ModelApi),
        (ChainState, api.ChainView),
        (Mempool, api.MempoolView),
    ]:
        missing = sorted(n for n in _members(protocol) if not _provides(impl, n))
        assert missing == [], f"{impl.__name__} lacks {missing} of {protocol.__name__}"
    for section, protocol in [(RpcSection(), api.RpcSettings), (OpenaiSection(), OpenaiSettings)]:
        missing = sorted(n for n in _members(protocol) if not hasattr(section, n))
        assert missing == [], f"{type(section).__name__} lacks {missing} of {protocol.__name__}"
