"""The consensus rules of job kinds live in ``state.kinds``; ``state`` never imports ``gpu``.

* importing ``state.market`` (in a fresh interpreter) loads no ``gpu`` module;
* no module under ``state/`` imports ``gpu``, not even inside a function (AST scan);
* every executable kind of ``gpu.kinds`` is the rules class of ``state.kinds`` with execution added.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import gpu.kinds
import state.kinds

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import json, sys
import state.market, state.kinds
print(json.dumps(sorted(m for m in sys.modules if m == "gpu" or m.startswith("gpu."))))
"""


def test_state_market_imports_no_gpu() -> None:
    proc = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def _imported_modules(tree: ast.AST) -> list[str]:
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append(node.module)
    return out


def test_no_gpu_import_under_state() -> None:
    bad = [
        f"{path.relative_to(ROOT)}: {mod}"
        for path in sorted((ROOT / "state").rglob("*.py"))
        for mod in _imported_modules(ast.parse(path.read_text(), str(path)))
        if mod == "gpu" or mod.startswith("gpu.")
    ]
    assert bad == []


def test_gpu_kinds_extend_the_state_rules() -> None:
    assert set(gpu.kinds.KINDS) <= set(state.kinds.KINDS)
    for name, kind in gpu.kinds.KINDS.items():
        rules = state.kinds.get_kind(name)
        assert isinstance(kind, type(rules)), name
        assert kind.describe() == rules.describe()
    assert gpu.kinds.JobParamError is state.kinds.JobParamError


def test_rules_match_execution_on_a_small_job() -> None:
    """The rules object alone (no gpu) accepts the executable kind's leaves and meters identically."""
    params = {"batch": 3, "d_in": 5, "d_hidden": 4, "d_out": 2, "seed": bytes(range(32))}
    rules, kind = state.kinds.get_kind("mlp-f32"), gpu.kinds.get_kind("mlp-f32")
    y = kind.execute_numpy(params, None)
    assert rules.work_units(params) == kind.work_units(params)
    assert rules.leaf_count(params) == 3 and rules.result_encoded_size(params) == kind.result_encoded_size(params)
    assert all(rules.check_leaf(params, None, i, y[i].astype("<f4").tobytes()) for i in range(3))
