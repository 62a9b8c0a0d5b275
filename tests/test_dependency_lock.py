"""requirements.lock pins every dependency exactly, and the running environment is exactly the lock.

Consensus bytes (canonical CBOR, Ed25519 verification, NumPy results, LevelDB, libp2p framing) must not
drift between nodes, so ``make setup`` installs exactly the pins in requirements.lock (regenerated with
``make lock``) and pyproject.toml states minimum versions that the locked ones satisfy.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
PYPROJECT = ROOT / "pyproject.toml"
CONSENSUS_CRITICAL = ("cbor2", "pynacl", "numpy", "plyvel", "libp2p", "rbcl", "mclbn256")
PIN = re.compile(
    r"^(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)==(?P<version>[A-Za-z0-9][A-Za-z0-9.+!_-]*)$"
)


def parse_lock(text: str) -> dict[str, str]:
    """``{canonical name: version}`` from lock text; ValueError on any line that is not ``name==version``
    (comments and blank lines aside) and on a package pinned twice."""
    pins: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = PIN.match(line)
        if m is None:
            raise ValueError(f"line {lineno}: not name==version: {raw!r}")
        Version(m["version"])  # InvalidVersion (a ValueError) if it is not a version
        name = canonicalize_name(m["name"])
        if name in pins:
            raise ValueError(f"line {lineno}: {name} pinned twice ({pins[name]} and {m['version']})")
        pins[name] = m["version"]
    return pins


def project_requirements() -> list[Requirement]:
    """The runtime dependencies and the dev extra from pyproject.toml (the gpu extra is not locked)."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]


def applies(req: Requirement) -> bool:
    """Whether ``req`` applies here without any extra (its marker, if any, holds)."""
    return req.marker is None or req.marker.evaluate({"extra": ""})


@pytest.fixture(scope="module")
def pins() -> dict[str, str]:
    return parse_lock(LOCK.read_text())


def test_parse_lock_rejects_malformed_and_duplicate_lines() -> None:
    assert parse_lock("# header\n\nPyNaCl==1.6.2\nprometheus_client==0.26.0\n") == {
        "pynacl": "1.6.2",
        "prometheus-client": "0.26.0",
    }
    for bad in (
        "cbor2>=6.1",
        "cbor2",
        "cbor2==",
        "-e .",
        "cbor2==6.3.0 ; python_version < '3.12'",
        "x==not a version",
        "x==1.0junk",
    ):
        with pytest.raises(ValueError):
            parse_lock(f"numpy==2.4.6\n{bad}\n")
    with pytest.raises(ValueError, match="pinned twice"):
        parse_lock("pynacl==1.6.2\nPyNaCl==1.6.1\n")


def test_lock_lines_are_exact_unique_pins(pins: dict[str, str]) -> None:
    # parse_lock (the fixture) already refused any other line shape and any duplicate
    assert len(pins) >= 20, "requirements.lock has suspiciously few pins"
    assert canonicalize_name("aitbc-peer") not in pins, (
        "the project itself is installed --no-deps -e ., not pinned"
    )


def test_consensus_critical_packages_are_pinned(pins: dict[str, str]) -> None:
    missing = [name for name in CONSENSUS_CRITICAL if name not in pins]
    assert not missing, f"consensus-critical packages not pinned in requirements.lock: {missing}"


def test_installed_versions_are_exactly_the_lock(pins: dict[str, str]) -> None:
    wrong = []
    for name, version in sorted(pins.items()):
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            wrong.append(f"{name}: pinned {version}, not installed")
            continue
        if Version(installed) != Version(version):
            wrong.append(f"{name}: pinned {version}, installed {installed}")
    assert not wrong, "environment differs from requirements.lock (run `make setup`):\n" + "\n".join(wrong)


def test_lock_satisfies_every_pyproject_requirement(pins: dict[str, str]) -> None:
    unmet = []
    for req in project_requirements():
        if not applies(req):
            continue
        locked = pins.get(canonicalize_name(req.name))
        if locked is None:
            unmet.append(f"{req}: not in requirements.lock")
        elif not req.specifier.contains(Version(locked), prereleases=True):
            unmet.append(f"{req}: locked at {locked}")
    assert not unmet, "requirements.lock does not satisfy pyproject.toml:\n" + "\n".join(unmet)


def test_lock_is_closed_under_dependencies(pins: dict[str, str]) -> None:
    """Everything the locked packages pull in (per their installed metadata) is itself locked at a version
    they accept, so `pip install -r requirements.lock` has nothing left to resolve."""
    unmet = []
    for name in sorted(pins):
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # reported by test_installed_versions_are_exactly_the_lock
        for req in map(Requirement, requires):
            if not applies(req):
                continue
            locked = pins.get(canonicalize_name(req.name))
            if locked is None:
                unmet.append(f"{name} needs {req}: not in requirements.lock")
            elif not req.specifier.contains(Version(locked), prereleases=True):
                unmet.append(f"{name} needs {req}: locked at {locked}")
    assert not unmet, "\n".join(unmet)


def test_cbor2_floor_has_the_strict_decoder_keywords() -> None:
    # state/codec.py decodes with loads(max_depth=, allow_indefinite=, allow_duplicate_keys=): max_depth is
    # new in 5.9.0, allow_indefinite in 6.0.0, allow_duplicate_keys in 6.1.0. With an older cbor2 every
    # decode raises TypeError, which the codec reports as malformed CBOR: the node would reject every block.
    (cbor2,) = [r for r in project_requirements() if canonicalize_name(r.name) == "cbor2"]
    assert not cbor2.specifier.contains("6.0.1"), f"pyproject admits cbor2 6.0.1: {cbor2}"
    assert cbor2.specifier.contains("6.1.0"), f"pyproject excludes cbor2 6.1.0: {cbor2}"
