"""README.md's shell snippets, run as a user types them, against real node processes.

The README is parsed at test time (``tests/readme_snippets.py``), so an edited or added snippet is covered
without touching this file, or makes :func:`test_every_shell_block_is_run_or_listed` fail until it is:

* every ```sh block is either run by one of the tests below (``CLAIMS``: the test runs the block that
  contains that command) or consists only of lines in ``SKIPPED`` (each with its reason);
* each line of a claimed block runs with ``bash -c`` (``set -o pipefail``), ``.venv/bin`` first on
  ``PATH``, ``AITBC_HOME`` = the test's home and ``AITBC_RPC_URL`` = the test's node, after the
  rewrites in ``SUBSTITUTIONS``; it must exit as ``CHECKS`` says (0 unless its README comment says
  otherwise) and print what its check asserts (a line without a check must print something);
* every wait is bounded: each line has a subprocess timeout, nodes are waited for by polling with a bound,
  and every process started here is killed by pid in a ``finally``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from nodeproc import REPO, NodeProcess, clean_env, init_home, run_cli, wait_for
from readme_snippets import Block, Line, parse, parse_file, starts_with, words
from zk_tools import requires_snarkjs

from testnet.network import Network
from testnet.ports import free_base_port

README = REPO / "README.md"
LINE_TIMEOUT = 120.0  # seconds any one README line may take

#: Rewrites applied, in order, to every line before it runs (regex -> replacement; ``{name}`` is filled
#: from the test's context, ``\1`` is the regex group). Nothing else is changed.
SUBSTITUTIONS: dict[str, str] = {
    # the test node's RPC address (a free port) instead of the default 127.0.0.1:8202
    r"127\.0\.0\.1:8202": "{rpc_hostport}",
    # the job id that the README's `job submit` line printed
    r"0x…": "{job_id}",
    # testnet: a lighter load than the README's 500 tx/s for 20 s (2-core CI machines)
    r"--tps 500 --seconds 20": "--tps 50 --seconds 3",
    # testnet/up: free ports and 250 ms blocks instead of the defaults (26600, 1 s)
    r"^(testnet/up)\b": r"\1 --base-port {base_port} --block-interval 0.25",
    # every testnet command: the network lives in tmp_path, not in ./testnet-data of the checkout
    r"^(testnet/\w+)\b": r"\1 --dir {testnet_dir}",
}

#: README lines that are not run (a command prefix, matched on word boundaries after any VAR=value), each
#: with the reason. A block made only of these lines is covered by this list.
SKIPPED: dict[str, str] = {
    "make run": "starts a long-running dev node on ~/.local/share/aitbc and port 8202; each test starts the "
    "same node (`run --dev`, with `--miner` for the market block) on a temporary home and a free port",
    "make test": "runs the whole test suite, this module included",
    "sudo testnet/chaos": "needs root (network namespaces) and runs for minutes; tests/test_chaos.py runs "
    "the chaos runner",
    ".venv/bin/python -m bench.node_throughput": "a benchmark that runs for minutes (see BENCHMARKS.md)",
}

#: test -> a command of the README block it runs (the block must be the only one containing it)
CLAIMS: dict[str, str] = {
    "test_quick_start_client": "aitbc-peer wallet send",
    "test_compute_market": "aitbc-peer gpu probe",
    "test_sealed_bids": "aitbc-peer job submit --from dev --kind hash-chain --params '{\"chains\":8,\"iterations\":16}' "
    "--max-price 0.01 --max-units 2 --sealed",
    "test_receipt_attestations": "aitbc-peer zk prove-receipt",
    "test_proof_of_stake": "aitbc-peer validator create",
    "test_local_testnet": "testnet/up",
}


# --------------------------------------------------------------------------------------------- running


@dataclass
class Run:
    """One README line as it ran."""

    line: Line
    command: str  # after SUBSTITUTIONS
    rc: int
    out: str
    err: str
    ctx: dict[str, str]
    cwd: Path

    def __str__(self) -> str:
        return (f"{self.line}\n  ran: {self.command}\n  exit {self.rc}\n  stdout:\n{self.out[-3000:]}"
                f"\n  stderr:\n{self.err[-3000:]}")


@dataclass
class Check:
    fn: Callable[[Run], None]
    rc: int = 0  # the exit status the README promises


CHECKS: dict[str, Check] = {}


def check(prefix: str, rc: int = 0) -> Callable[[Callable[[Run], None]], Callable[[Run], None]]:
    """Register the assertions on what the README line starting with ``prefix`` prints."""

    def deco(fn: Callable[[Run], None]) -> Callable[[Run], None]:
        CHECKS[prefix] = Check(fn, rc)
        return fn

    return deco


def skip_reason(line: Line) -> str | None:
    for prefix, reason in SKIPPED.items():
        if starts_with(line.command, prefix):
            return reason
    return None


def check_for(line: Line) -> Check | None:
    keys = [k for k in CHECKS if starts_with(line.command, k)]
    return CHECKS[max(keys, key=len)] if keys else None


def substitute(command: str, ctx: dict[str, str]) -> str:
    for pattern, template in SUBSTITUTIONS.items():
        command = re.sub(pattern, lambda m, t=template: m.expand(t.format(**ctx)), command)
    return command


def claims(blocks: list[Block]) -> dict[str, list[Block]]:
    """test -> the blocks containing its CLAIMS command (exactly one when the README is covered)."""
    return {test: [b for b in blocks if any(starts_with(ln.command, key) for ln in b.lines)]
            for test, key in CLAIMS.items()}


def coverage_problems(blocks: list[Block]) -> list[str]:
    """Why the shell blocks are not all covered (run by a test, or made of SKIPPED lines); [] when they are."""
    problems = []
    claimed: set[int] = set()
    for test, found in claims(blocks).items():
        if len(found) == 1:
            claimed.add(found[0].lineno)
        else:
            problems.append(f"{test} runs the README block containing {CLAIMS[test]!r}, but {len(found)} "
                            f"blocks contain it: {'; '.join(map(str, found))}")
    for b in blocks:
        unlisted = [str(ln) for ln in b.lines if skip_reason(ln) is None]
        if unlisted and b.lineno not in claimed:
            problems.append(f"{b} is neither run nor listed: run it in a test (CLAIMS) or add these lines to "
                            f"SKIPPED with a reason: {unlisted}")
    return problems


def claimed_block(test: str) -> Block:
    blocks = parse_file(README)
    found = claims(blocks)[test]
    assert len(found) == 1, coverage_problems(blocks)
    return found[0]


@dataclass
class Session:
    """Runs README lines with one environment and working directory."""

    env: dict[str, str]
    cwd: Path
    ctx: dict[str, str] = field(default_factory=dict)
    node: NodeProcess | None = None  # its log goes into failure messages
    after_each: Callable[[], None] | None = None
    runs: list[Run] = field(default_factory=list)
    skipped: list[tuple[Line, str]] = field(default_factory=list)

    def run_block(self, block: Block, timeouts: dict[str, float] | None = None) -> list[Run]:
        assert block.lines, f"{block} is empty"
        for line in block.lines:
            reason = skip_reason(line)
            if reason is not None:
                self.skipped.append((line, reason))
                continue
            timeout = next((t for k, t in (timeouts or {}).items() if starts_with(line.command, k)), LINE_TIMEOUT)
            self.run_line(line, timeout)
        assert self.runs, f"nothing of {block} ran"
        return self.runs

    def run_line(self, line: Line, timeout: float) -> Run:
        command = substitute(line.command, self.ctx)
        try:
            r = subprocess.run(["bash", "-c", "set -o pipefail\n" + command], cwd=self.cwd, env=self.env,
                               capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{line}\n  ran: {command}\n  did not finish within {timeout} s"
                                 f"{self._log()}") from None
        finally:
            if self.after_each is not None:
                self.after_each()
        run = Run(line, command, r.returncode, r.stdout, r.stderr, self.ctx, self.cwd)
        self.runs.append(run)
        chk = check_for(line)
        expected = chk.rc if chk else 0
        assert run.rc == expected, f"expected exit {expected}:\n{run}{self._log()}"
        try:
            if chk is not None:
                chk.fn(run)
            else:  # a line nobody wrote a check for yet: it must at least say something
                assert (run.out + run.err).strip(), "printed nothing"
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{run}{self._log()}") from None
        return run

    def _log(self) -> str:
        return f"\n  node log:\n{self.node.log_tail()}" if self.node is not None else ""


def client_env(home: Path, node: NodeProcess, **extra: str) -> dict[str, str]:
    """What a user's shell has after `. .venv/bin/activate` next to a running node."""
    return clean_env(
        PATH=f"{REPO / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        AITBC_HOME=str(home),
        AITBC_RPC_URL=node.url,
        **extra,
    )


def workdir(tmp_path: Path) -> Path:
    """A working directory with the checkout's .venv (so `. .venv/bin/activate` works and files the
    snippets write, like result.bin, land in tmp_path)."""
    d = tmp_path / "work"
    d.mkdir()
    (d / ".venv").symlink_to(REPO / ".venv")
    return d


def node_ctx(node: NodeProcess) -> dict[str, str]:
    return {"rpc_hostport": f"127.0.0.1:{node.rpc_port}"}


@pytest.fixture
def started() -> Iterator[Callable[..., NodeProcess]]:
    """``start(home, **NodeProcess kwargs)``: a started, ready node, killed by pid at teardown."""
    procs: list[NodeProcess] = []

    def start(home: Path, **kw) -> NodeProcess:
        node = NodeProcess(home, **kw)
        procs.append(node)
        node.start()
        node.wait_ready()
        return node

    try:
        yield start
    finally:
        for p in procs:
            p.close()


# ---------------------------------------------------------------------------------------------- checks

AIT_AMOUNT = re.compile(r"(\d+(?:\.\d+)?) AIT")


@check(". .venv/bin/activate")
def _activate(run: Run) -> None:
    assert not run.err.strip()


@check("aitbc-peer status")
def _status(run: Run) -> None:
    head = re.search(r"^\s*head\s+(\d+)\s+0x[0-9a-f]{64}$", run.out, re.M)
    final = re.search(r"^\s*finalized\s+(\d+)$", run.out, re.M)
    assert head and final and int(head.group(1)) >= int(final.group(1)) >= 1, "no head and finalized height"
    for row in ("peers", "mempool", "sync"):  # what the README comment lists
        assert re.search(rf"^\s*{row}\s+\S", run.out, re.M), row


@check("aitbc-peer wallet balance")
def _balance(run: Run) -> None:
    amounts = AIT_AMOUNT.findall(run.out)
    assert amounts, "no AIT amount"
    who = words(run.line.command).split()[3]
    if who == "dev":
        assert float(amounts[0]) > 1_000_000, amounts  # funded by init --dev (less the fee of the send)
    elif who == "alice":  # after `wallet send … --amount 12.5`
        assert amounts[0] == "12.5", amounts


@check("aitbc-peer wallet history")
def _history(run: Run) -> None:
    lines = run.out.splitlines()
    assert lines and lines[0].split()[:4] == ["HASH", "BLOCK", "TYPE", "DIR"], lines[:1]
    rows = [ln.split() for ln in lines[1:]]
    if words(run.line.command).split()[3] == "alice":  # after `wallet send … --amount 12.5`: one transfer in
        assert [(r[2], r[3], r[5], r[6]) for r in rows] == [("transfer", "in", "12.5", "AIT")], rows


@check("aitbc-peer keys new")
def _keys_new(run: Run) -> None:
    addr = re.search(r"\bait1[0-9a-z]+", run.out)
    assert addr, "no ait1… address"
    run.ctx["key:" + words(run.line.command).split()[3]] = addr.group(0)


@check("aitbc-peer wallet send")
def _send(run: Run) -> None:
    assert re.search(r"0x[0-9a-f]{64}", run.out), "no transaction hash"
    assert "committed" in run.out, "--wait did not report the transfer committed"


@check("curl")
def _curl(run: Run) -> None:
    if "/metrics" in run.command:  # curl … /metrics | grep NAME: the metric's sample line
        name = run.command.rsplit("grep", 1)[1].split()[0] if "| grep" in run.command else ""
        samples = [ln for ln in run.out.splitlines() if ln.startswith(name) and not ln.startswith("#")]
        assert samples, f"no {name or 'metric'} sample"
        if name == "chain_head_height":
            assert float(samples[0].split()[-1]) >= 1, samples
        return
    body = json.loads(run.out)  # a JSON-RPC call
    assert "error" not in body and "result" in body, body
    if '"chain_getHead"' in run.command:
        assert body["result"]["height"] >= 1 and body["result"]["hash"].startswith("0x"), body


@check("aitbc-peer gpu probe")
def _gpu_probe(run: Run) -> None:
    assert re.search(r"backend:\s+(pycuda|numpy)", run.out), "no backend line"
    for kind in ("matmul-u32", "hash-chain", "mlp-f32"):
        assert kind in run.out, kind


def kv_table(out: str) -> dict[str, str]:
    """The key/value table a single-object command prints (up to the first blank line)."""
    rows: dict[str, str] = {}
    for ln in out.splitlines():
        if not ln.strip():
            break
        key, _, value = ln.partition(" ")
        rows[key] = value.strip()
    return rows


@check("aitbc-peer miner status")
def _miner_status(run: Run) -> None:
    rows = kv_table(run.out)
    assert rows.get("address", "").startswith("ait1") and rows.get("status") == "active", rows
    assert re.fullmatch(r"[1-9][\d.]* AIT", rows.get("bond", "")) and re.fullmatch(r"-?\d+", rows.get("reputation", "")), \
        "the node's miner is not active with a bond and a reputation"


@check("aitbc-peer job submit")
def _job_submit(run: Run) -> None:
    m = re.search(r"job (0x[0-9a-f]{64}) submitted in block \d+", run.out)
    assert m, "no `job 0x… submitted` line"
    run.ctx["job_id"] = m.group(1)
    assert f"job {m.group(1)}: COMPLETED (payment released)" in run.out, "--wait did not see it settled"


@check("aitbc-peer job list")
def _job_list(run: Run) -> None:
    assert run.ctx["job_id"] in run.out and "COMPLETED" in run.out


@check("aitbc-peer job status")
def _job_status(run: Run) -> None:
    job = kv_table(run.out)  # state, bids, award, receipt
    assert job["job_id"] == run.ctx["job_id"] and job["state"] == "COMPLETED", job
    assert job["payment"] == "released" and int(job["bids"]) >= 1 and job["units"].endswith(" mmac"), job
    assert job["miner"].startswith("ait1") and job["award_height"].isdigit(), job  # the award
    assert re.fullmatch(r"0x[0-9a-f]{64}", job["result_hash"]), job  # the receipt
    assert "MINER" in run.out.split("\n\n", 1)[1], "no bids table under the job"


@check("aitbc-peer job result")
def _job_result(run: Run) -> None:
    out_file = run.command.split(" -o ", 1)[1].split()[0]
    data = (run.cwd / out_file).read_bytes()
    assert f"wrote {len(data)} bytes to {out_file}" in run.out and "verified" in run.out
    assert "array uint32 [64, 64]" in run.out  # matmul-u32 with m = n = 64


@check("aitbc-peer validator create")
def _validator_create(run: Run) -> None:
    m = re.search(r"validator (ait1\S+) \(consensus key (ait1\S+)\) created in block \d+", run.out)
    assert m, "no `validator … created in block` line"
    assert m.group(1) == run.ctx["operator"] and m.group(2) == run.ctx["consensus_key"]


@check("aitbc-peer validator status")
def _validator_status(run: Run) -> None:
    rows = {ln.split()[0]: ln.split()[1] for ln in run.out.splitlines() if ln.startswith("ait1")}
    assert len(rows) == 2, rows  # the genesis validator and the one just created
    assert rows.get(run.ctx["operator"]) in {"active", "inactive"}, rows


@check("testnet/up")
def _testnet_up(run: Run) -> None:
    nodes = int(re.search(r"--nodes (\d+)", run.line.command).group(1))
    assert f"started {nodes} nodes" in run.out
    urls = re.findall(r"^node(\d+): (http://\S+)", run.out, re.M)
    assert [int(i) for i, _ in urls] == list(range(nodes)), run.out
    run.ctx["nodes"] = str(nodes)


@check("testnet/status")
def _testnet_status(run: Run) -> None:
    rows = [ln.split() for ln in run.out.splitlines() if ln.startswith("node")][1:]  # after the header
    assert len(rows) == int(run.ctx["nodes"]), run.out
    assert all(r[1].isdigit() and r[2].isdigit() and int(r[3]) >= 2 for r in rows), rows  # pid, height, final


@check("testnet/load")
def _testnet_load(run: Run) -> None:
    rep = json.loads(run.out)
    assert rep["submitted"] > 0 and rep["committed"] > 0, rep
    assert re.search(r"^load: submitted \d+/\d+, committed \d+, pending \d+", run.err, re.M), "no progress on stderr"


@contextmanager
def _network(run: Run) -> Iterator[Network]:
    net = Network(Path(run.ctx["testnet_dir"]))
    try:
        yield net
    finally:
        for client in net._clients.values():
            client.close()


def _finalized(net: Network, nodes: list) -> list[int]:
    return [net.rpc(n, "chain_getHead", timeout=2)["finalized_height"] for n in nodes]


@check("testnet/kill")
def _testnet_kill(run: Run) -> None:
    victim = words(run.line.command).split()[1]
    assert f"killed {victim}" in run.out
    with _network(run) as net:  # README: "the other three keep finalizing"
        others = [n for n in net.nodes if f"node{n.index}" != victim]
        net.wait_finalized(max(_finalized(net, others)) + 2, timeout=30, nodes=others)


@check("testnet/restart")
def _testnet_restart(run: Run) -> None:
    victim = words(run.line.command).split()[1]
    assert re.search(rf"restarted {victim} \(pid \d+\)", run.out)
    with _network(run) as net:  # README: "it comes back and catches up by block sync"
        others = [n for n in net.nodes if f"node{n.index}" != victim]
        net.wait_finalized(max(_finalized(net, others)), timeout=60, nodes=[net.node(victim)])


@check("testnet/down")
def _testnet_down(run: Run) -> None:
    assert f"stopped {run.ctx['nodes']} nodes" in run.out
    if "--clean" in run.command:
        assert "removed" in run.out and not Path(run.ctx["testnet_dir"]).exists()


# ----------------------------------------------------------------------------------------------- tests


def test_every_shell_block_is_run_or_listed() -> None:
    """A README shell block no test runs must be on SKIPPED line by line; no list entry is stale."""
    from node.config import Config

    blocks = parse_file(README)
    assert len(blocks) >= 5, blocks
    assert coverage_problems(blocks) == []
    every_line = [ln for b in blocks for ln in b.lines]
    for prefix in SKIPPED:
        assert any(starts_with(ln.command, prefix) for ln in every_line), f"stale SKIPPED entry {prefix!r}"
    for prefix in CHECKS:  # a check that matches no README line would silently check nothing
        assert any(starts_with(ln.command, prefix) for ln in every_line), f"CHECKS entry {prefix!r} matches no line"
    # the rewrite of 127.0.0.1:8202 stands for the default RPC address that `make run` listens on
    assert (Config().rpc.host, Config().rpc.port) == ("127.0.0.1", 8202)


def test_a_new_snippet_cannot_go_untested() -> None:
    """The parser and the coverage rule on a README with one more section: a block nobody runs is
    reported; one made of SKIPPED lines is not."""
    text = README.read_text(encoding="utf-8") + (
        "\n## Models\n\nSome text.\n\n```sh\n"
        "# a comment line\n"
        "aitbc-peer model list --json    # the '#' in \"a#b\" is not a comment: 'x # y'\n"
        "aitbc-peer model show \\\n    --name 'a # b'   # continued\n"
        "```\n\n```bash\nmake test   # the suite\n```\n\n```toml\n[rpc]\nport = 1\n```\n"
    )
    blocks = parse(text)
    new, skipped_only = blocks[-2], blocks[-1]
    assert new.heading == "Models" and [ln.command for ln in new.lines] == [
        "aitbc-peer model list --json", "aitbc-peer model show --name 'a # b'"]
    assert new.lines[0].comment.startswith("the '#'") and new.lines[1].comment == "continued"
    assert skipped_only.lang == "bash" and len(blocks) == len(parse_file(README)) + 2  # toml is not shell
    problems = coverage_problems(blocks)
    assert len(problems) == 1 and "aitbc-peer model list" in problems[0] and "Models" in problems[0]
    assert substitute("curl http://127.0.0.1:8202/rpc", {"rpc_hostport": "127.0.0.1:9"}) == "curl http://127.0.0.1:9/rpc"


def test_quick_start_client(tmp_path: Path, started: Callable[..., NodeProcess]) -> None:
    """Quick start: the client commands against a running dev node."""
    block = claimed_block("test_quick_start_client")
    home = init_home(tmp_path / "home")
    node = started(home)
    s = Session(client_env(home, node), workdir(tmp_path), node_ctx(node), node)
    s.run_block(block)
    # the keystore key the README created is the one that got the 12.5 AIT
    if "key:alice" in s.ctx:
        assert node.balance(s.ctx["key:alice"]) == 12_500_000


def test_compute_market(tmp_path: Path, started: Callable[..., NodeProcess]) -> None:
    """The compute market: the dev node as validator + miner, a job submitted, followed and fetched."""
    block = claimed_block("test_compute_market")
    home = init_home(tmp_path / "home")
    node = started(home, extra_args=["--miner"])
    # the README runs these commands "with the node running": its miner registers itself at start
    wait_for(lambda: node.rpc("market_listMiners")["miners"], 60, "the node's miner registered")
    s = Session(client_env(home, node), workdir(tmp_path), node_ctx(node), node)
    s.run_block(block)


def test_sealed_bids(tmp_path: Path, started: Callable[..., NodeProcess]) -> None:
    """Sealed bids: a dev node as validator + miner; the client's CLI awards the sealed bid itself."""
    block = claimed_block("test_sealed_bids")
    home = init_home(tmp_path / "home")
    node = started(home, extra_args=["--miner"])
    wait_for(lambda: node.rpc("market_listMiners")["miners"], 60, "the node's miner registered")
    s = Session(client_env(home, node), workdir(tmp_path), node_ctx(node), node)
    s.run_block(block)
    job = node.rpc("market_getJob", job_id=s.ctx["job_id"])
    assert job["sealed"]["winner"] == job["miner"] and len(job["sealed"]["bids"]) == 1


@check("aitbc-peer zk prove-receipt")
def _zk_prove(run: Run) -> None:
    att = json.loads((run.cwd / "receipt-proof.json").read_text())
    assert att["type"] == "aitbc-receipt-attestation" and att["min_units"] == 1 and att["scope"] == "loyalty", att
    assert run.ctx["job_id"][2:] not in json.dumps(att), "the attestation names the job"


@check("aitbc-peer zk verify")
def _zk_verify(run: Run) -> None:
    res = json.loads(run.out)
    assert res["valid"] is True and res["proof"] == "valid" and res["root_height"] >= 1, res


@requires_snarkjs
def test_receipt_attestations(tmp_path: Path, started: Callable[..., NodeProcess]) -> None:
    """Private receipt attestations: an attestable job paid by the dev node's miner, proven with snarkjs and
    verified (proof and root) by another process."""
    block = claimed_block("test_receipt_attestations")
    home = init_home(tmp_path / "home")
    node = started(home, extra_args=["--miner"])
    wait_for(lambda: node.rpc("market_listMiners")["miners"], 60, "the node's miner registered")
    s = Session(client_env(home, node), workdir(tmp_path), node_ctx(node), node)
    s.run_block(block)
    assert node.rpc("market_getJob", job_id=s.ctx["job_id"])["attest"]["leaf_index"] == 0


def test_proof_of_stake(tmp_path: Path, started: Callable[..., NodeProcess]) -> None:
    """Proof of stake: a node's home (not a genesis validator) turns its consensus key into a validator
    on a running PoS chain, with a funded `operator` account, as the README describes."""
    block = claimed_block("test_proof_of_stake")
    chain_home = tmp_path / "chain"
    r = run_cli("init", "--dev", "--consensus", "pos", "--home", str(chain_home), "--block-interval", "200")
    assert r.returncode == 0, r.stderr
    # a running network's set outweighs one newcomer: with the dev genesis' power 1, the README's 1000 AIT
    # would be 1/3 or more of the power and `validator create` would (rightly) want --yes
    genesis = json.loads((chain_home / "genesis.json").read_text())
    genesis["validators"][0]["power"] = 3_000
    (chain_home / "genesis.json").write_text(json.dumps(genesis, indent=2))
    node = started(chain_home)
    # the joining node's home: same genesis, its own keys; an `operator` key funded from the dev account
    home = tmp_path / "joiner"
    r = run_cli("init", "--home", str(home), "--genesis", str(chain_home / "genesis.json"))
    assert r.returncode == 0, r.stderr
    consensus_key = re.search(r"validator: (ait1\S+)", r.stdout).group(1)
    env = client_env(home, node, AITBC_PASSWORD="secret")
    r = run_cli("keys", "new", "operator", env=env)
    assert r.returncode == 0, r.stderr
    operator = re.search(r"\bait1[0-9a-z]+", r.stdout).group(0)
    r = run_cli("wallet", "send", "--home", str(chain_home), "--from", "dev", "--to", operator, "--amount",
                "1001", "--wait", env=clean_env(AITBC_RPC_URL=node.url))
    assert r.returncode == 0 and "committed" in r.stdout, r.stdout + r.stderr
    s = Session(env, workdir(tmp_path), {**node_ctx(node), "operator": operator,
                                         "consensus_key": consensus_key}, node)
    s.run_block(block)
    v = node.rpc("staking_getValidator", address=operator)
    assert v["moniker"] == "me" and v["commission_bps"] == 500 and int(v["tokens"]) == 1000 * 1_000_000, v


def _setup_env(tmp_path: Path) -> dict[str, str]:
    """testnet/* run `make setup` first. When the venv's stamp is older than requirements.lock or
    pyproject.toml (another edit in this checkout), that would reinstall the shared .venv under the other
    tests (pip, network): point the stamp at a fresh file instead. The venv this test runs in is the one
    the scripts use."""
    r = subprocess.run(["make", "-q", "-s", "-C", str(REPO), "setup"], capture_output=True, timeout=30)
    if r.returncode == 0:
        return {}
    stamp = tmp_path / "setup-stamp"
    stamp.touch()
    return {"MAKEFLAGS": f"STAMP={stamp}"}


def _kill_testnet_pids(pids: set[int], testnet_dir: Path) -> list[int]:
    """SIGKILL every pid that is still a node of ``testnet_dir`` (its command line names the dir)."""
    killed = []
    for pid in sorted(pids):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone
        if str(testnet_dir) in cmdline:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
    return killed


@pytest.mark.timeout(400)
def test_local_testnet(tmp_path: Path) -> None:
    """Run a local 4-node network: up, status, load, kill, restart, down --clean, in tmp_path."""
    block = claimed_block("test_local_testnet")
    d = tmp_path / "testnet-data"
    pids: set[int] = set()

    def collect_pids() -> None:
        for pf in d.glob("node*/node.pid"):
            try:
                pids.add(int(pf.read_text()))
            except (OSError, ValueError):
                pass

    env = clean_env(PATH=f"{REPO / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
                    **_setup_env(tmp_path))
    ctx = {"testnet_dir": str(d), "base_port": str(free_base_port(4))}
    s = Session(env, REPO, ctx, after_each=collect_pids)
    try:
        s.run_block(block, timeouts={"testnet/up": 180.0})
    finally:
        collect_pids()
        if (d / "network.json").exists():
            subprocess.run([str(REPO / "testnet" / "down"), "--dir", str(d)], env=env, cwd=REPO,
                           capture_output=True, timeout=60)
        leftover = _kill_testnet_pids(pids, d)
    assert pids and not leftover, f"nodes left running after testnet/down: {leftover}"
