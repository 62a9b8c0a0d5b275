"""Generate ``zk/poseidon_constants.py`` from the npm package ``poseidon-lite`` (dev-time tool only).

Source: https://www.npmjs.com/package/poseidon-lite (https://github.com/chancehudson/poseidon-lite),
version 0.3.0, license MIT (``"license": "MIT"`` in its package.json). Its ``constants/1.js`` and
``constants/2.js`` hold circomlib's Poseidon round constants ``C`` and MDS matrix ``M`` for t=2 and t=3
(base64 big-endian integers); they are the output of the Poseidon authors' Grain-LFSR parameter script
(hadeshash ``generate_parameters_grain.sage``), the same numbers circomlib and circomlibjs use.

Usage (writes the module to stdout)::

    cd /tmp/poseidonlite && npm pack poseidon-lite@0.3.0
    python zk/circuits/tools/extract_poseidon_constants.py /tmp/poseidonlite/poseidon-lite-0.3.0.tgz \\
        > zk/poseidon_constants.py
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sys
import tarfile

R = 21888242871839275222246405745257275088548364400416034343698204186575808495617
ROUNDS = {2: (8, 56), 3: (8, 57)}  # t -> (full rounds, partial rounds)


def _parse(js: str) -> dict[str, list]:
    """The ``{C: [...], M: [[...]]}`` literal of a constants file, as JSON."""
    body = re.search(r"_default = (\{.*?\});", js, re.S)
    if body is None:
        raise SystemExit("constants literal not found")
    text = re.sub(r"\b([CM]):", r'"\1":', body.group(1).replace("'", '"'))
    return json.loads(text)


def _int(b64: str) -> int:
    value = int.from_bytes(base64.b64decode(b64), "big")
    if not 0 <= value < R:
        raise SystemExit(f"non-canonical constant {value}")
    return value


def main(tgz_path: str) -> None:
    with open(tgz_path, "rb") as f:
        raw = f.read()
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(raw).digest()).decode()
    out = []
    with tarfile.open(tgz_path) as tar:
        version = json.load(tar.extractfile("package/package.json"))["version"]  # type: ignore[arg-type]
        for t, (rf, rp) in ROUNDS.items():
            js = tar.extractfile(f"package/constants/{t - 1}.js").read().decode()  # type: ignore[union-attr]
            data = _parse(js)
            c = [_int(x) for x in data["C"]]
            m = [[_int(x) for x in row] for row in data["M"]]
            if len(c) != t * (rf + rp) or len(m) != t or any(len(row) != t for row in m):
                raise SystemExit(f"unexpected shape for t={t}")
            out.append(f"\n#: Round constants for t={t} ({rf} full + {rp} partial rounds, {t} per round).\n")
            out.append(f"C{t}: tuple[int, ...] = (\n" + "".join(f"    {hex(x)},\n" for x in c) + ")\n")
            out.append(f"#: MDS matrix for t={t} (row-major).\n")
            rows = "".join("    (\n" + "".join(f"        {hex(x)},\n" for x in row) + "    ),\n" for row in m)
            out.append(f"M{t}: tuple[tuple[int, ...], ...] = (\n{rows})\n")
    header = (
        '"""circomlib\'s Poseidon constants for t=2 and t=3 (GENERATED: do not edit).\n\n'
        f"Extracted by zk/circuits/tools/extract_poseidon_constants.py from the npm package poseidon-lite\n"
        f"{version} (MIT license; https://github.com/chancehudson/poseidon-lite), tarball integrity\n"
        f"{integrity}.\n"
        "The numbers are the Poseidon authors' Grain-LFSR parameters used by circomlib/circomlibjs.\n"
        '"""\n\nfrom __future__ import annotations\n'
    )
    sys.stdout.write(header + "".join(out))


if __name__ == "__main__":
    main(sys.argv[1])
