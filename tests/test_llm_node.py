"""``llm-generate`` end to end on one real dev node with ``--miner``: a tiny seeded random-weight model (with a
real byte-level BPE tokenizer and a ChatML template) registered and pinned through the CLI, jobs submitted
with ``job submit --kind llm-generate … --wait`` (text, chat, token ids, seeded sampling) whose tokens equal
``state.llm.generate`` run here, ``job result`` decoding, and the OpenAI-compatible endpoint (``/v1/models``,
``/v1/completions``, ``/v1/chat/completions``, errors) through httpx and, when installed, the ``openai``
client."""

from __future__ import annotations

import re

import httpx
import pytest
from llm_fixtures import TINY, tokenizer_meta, write_model
from nodeproc import NodeProcess, address, clean_env, init_home, run_cli, wait_for

from gpu.llm.tokenizer import BpeTokenizer
from node.llm import seed_bytes, temperature_ratio
from state.crypto import SigningKey
from state.llm.generate import IntModel, generate
from state.llm.steps import Sampling

NAME = "tiny-llm"
PRICE = 50  # base units per token (the miner's price)


# ------------------------------------------------------------------------------- the executable kind


class BytesSource:
    """A model source holding model files in memory (what a node's NodeModelSource is for its pins)."""

    def __init__(self, files: dict[bytes, bytes]) -> None:
        self.files = files
        self.reads = 0

    def model_config(self, model_id: bytes):
        return (TINY, len(self.files[model_id])) if model_id in self.files else None

    def model_file(self, model_id: bytes) -> bytes:
        from gpu.kinds import JobExecutionError

        self.reads += 1
        if model_id not in self.files:
            raise JobExecutionError("model_unavailable", "not here")
        return self.files[model_id]


def test_executor_runs_llm_jobs_with_a_bounded_model_cache() -> None:
    from llm_fixtures import tiny_model_file

    from gpu.backend import NumpyBackend
    from gpu.executor import Executor
    from gpu.kinds import JobExecutionError, get_kind
    from gpu.kinds.llm_generate import LOADED_BYTES_PER_FILE_BYTE, LlmGenerate, generated_tokens
    from state.kinds import llm_trace as lt

    kind = get_kind("llm-generate")
    assert isinstance(kind, LlmGenerate)
    files = {b"\x01" * 32: tiny_model_file(11), b"\x02" * 32: tiny_model_file(12)}
    src = BytesSource(files)
    size = len(files[b"\x01" * 32])
    old = kind.source, kind.models
    kind.install(src, cache_bytes=LOADED_BYTES_PER_FILE_BYTE * size + 1, cache_models=4)  # room for one model
    try:
        params = {"model": b"\x01" * 32, "prompt": [1, 2, 3], "max_new_tokens": 5, "sampling": {"mode": "greedy"}}
        res = Executor(NumpyBackend()).run_sync("llm-generate", params, None, time_limit_s=60, max_result_bytes=1 << 20)
        toks, trace = generate(IntModel(TINY, files[b"\x01" * 32]), [1, 2, 3], 5)
        want = lt.result_rows(trace, [1, 2, 3], 5, toks)
        assert res.array.tobytes() == want.tobytes() and res.units == 8 and res.unit_type == "token"
        assert generated_tokens(params, res.array) == toks
        assert kind.verify_full(params, None, res.array, b"")
        assert kind.position_digests(params, 2) == lt.position_digests(trace, 2)
        assert src.reads == 1  # loaded once, then cached (verify_full re-ran on the cached model)
        other = {**params, "model": b"\x02" * 32}
        kind.execute_numpy(other, None)
        assert src.reads == 2 and b"\x01" * 32 not in kind.models  # evicted: the cache holds one model
        assert kind.models.total_bytes <= kind.models.max_bytes
        with pytest.raises(JobExecutionError) as exc:
            kind.execute_numpy({**params, "model": b"\x03" * 32}, None)
        assert exc.value.reason == "model_unavailable"
    finally:
        kind.source, kind.models = old


def test_a_backend_without_kernels_for_a_kind_runs_it_on_numpy() -> None:
    from gpu.backend import NumpyBackend, numpy_info
    from gpu.executor import Executor
    from gpu.kinds import get_kind

    class NoLlmKernels(NumpyBackend):  # like the PyCUDA backend: kernels for some kinds only
        def runs(self, kind) -> bool:
            return kind.name != "llm-generate"

    backend = NoLlmKernels(numpy_info("test"))
    ex = Executor(backend)
    assert ex.backend_for(get_kind("matmul-u32")) is backend
    assert ex.backend_for(get_kind("llm-generate")) is not backend
    assert ex.backend_for(get_kind("llm-generate")).info.name == "numpy"


@pytest.fixture(scope="module")
def llm_node(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("llm")
    home = init_home(base / "home")
    node = NodeProcess(home, extra_args=["--miner"], env={
        "AITBC_RPC_ADMIN": "true",
        "AITBC_MINER_MODELS": f"{NAME}={PRICE}",
        "AITBC_OPENAI_ENABLED": "true",
        "AITBC_OPENAI_KEY": "dev",
        "AITBC_OPENAI_MAX_PRICE_PER_TOKEN": "100",
        "AITBC_OPENAI_TIMEOUT_S": "60",
    })
    try:
        node.start()
        node.wait_ready()
        path, arch, data = write_model(base)
        out = cli(node, "model", "register", str(path), "--name", NAME, "--arch", str(arch), "--from", "dev")
        assert "registered in block" in out
        miner = address(SigningKey.from_seed(bytes.fromhex(_miner_seed(home))))
        wait_for(lambda: "llm-generate" in _miner(node, miner).get("capabilities", {}).get("throughput", {}), 30,
                 "the miner to register with llm-generate")
        wait_for(lambda: "model tiny-llm is complete here" in node.log_text(), 30, "the miner to pin the model")
        yield node, IntModel(TINY, data)
    finally:
        node.close()


def _miner_seed(home) -> str:
    import json

    return json.loads((home / "keys" / "miner_key.json").read_text())["seed"][2:]


def _miner(node: NodeProcess, addr: str) -> dict:
    try:
        return node.rpc("market_getMiner", address=addr)
    except Exception:
        return {}


def cli(node: NodeProcess, *args: str, ok: bool = True) -> str:
    r = run_cli(*args, "--home", str(node.home), env=clean_env(AITBC_RPC_URL=node.url), timeout=180)
    if ok:
        assert r.returncode == 0, f"{args}: {r.stdout}\n{r.stderr}\n{node.log_tail()}"
        return r.stdout
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stdout + r.stderr
    return r.stderr


TOK = BpeTokenizer(tokenizer_meta())


def _job_id(out: str) -> str:
    m = re.search(r"job (0x[0-9a-f]{64}) submitted", out)
    assert m, out
    return m.group(1)


def _result_ids(node: NodeProcess, job_id: str) -> list[int]:
    out = cli(node, "job", "result", job_id, "--tokens").splitlines()
    return [int(x) for x in out[0].split()] if out[0].strip() else []


def test_cli_submit_text_chat_ids_and_sampling(llm_node) -> None:
    node, model = llm_node
    eos = TOK.eos_id
    # raw completion: the text is tokenized with the model's own tokenizer, greedy
    out = cli(node, "job", "submit", "--kind", "llm-generate", "--model", NAME, "--prompt", "hello there",
              "--no-chat", "--max-tokens", "8", "--from", "dev", "--wait")
    job_id = _job_id(out)
    prompt = TOK.encode("hello there")
    want, _ = generate(model, prompt, 8, Sampling(), frozenset({eos}), record=False)
    assert _result_ids(node, job_id) == want
    assert TOK.decode(want) in out and "COMPLETED" in out
    job = node.rpc("market_getJob", job_id=job_id)
    assert job["params"]["prompt"] == prompt and job["max_units"] == len(prompt) + 8
    assert job["price"] == str(PRICE) and int(job["paid"]) == PRICE * (len(prompt) + 8)
    assert cli(node, "job", "result", job_id).splitlines()[0] == TOK.decode(want)
    # chat: the model's template is applied by default
    out = cli(node, "job", "submit", "--kind", "llm-generate", "--model", NAME, "--prompt", "hi", "--max-tokens", "5",
              "--from", "dev", "--wait")
    prompt = TOK.chat_ids("hi")
    want, _ = generate(model, prompt, 5, Sampling(), frozenset({eos}), record=False)
    job_id = _job_id(out)
    assert node.rpc("market_getJob", job_id=job_id)["params"]["prompt"] == prompt
    assert _result_ids(node, job_id) == want
    # token ids in, seeded sampling, ids out
    ids = [1, 17, 200, 3, 99]
    out = cli(node, "job", "submit", "--kind", "llm-generate", "--model", NAME, "--prompt-ids", "1,17,200,3,99",
              "--max-tokens", "6", "--temperature", "0.7", "--top-k", "5", "--seed", "42", "--tokens",
              "--from", "dev", "--wait")
    num, den = temperature_ratio("0.7")
    want, _ = generate(model, ids, 6, Sampling(num, den, 5, seed_bytes("42")), record=False)
    assert " ".join(map(str, want)) in out
    assert _result_ids(node, _job_id(out)) == want
    # bad requests fail with one line
    assert "vocabulary" in cli(node, "job", "submit", "--kind", "llm-generate", "--model", NAME, "--prompt-ids",
                               "9999", "--from", "dev", ok=False)
    assert "not found" in cli(node, "job", "submit", "--kind", "llm-generate", "--model", "no-such-model",
                              "--prompt", "x", "--from", "dev", ok=False)


# ----------------------------------------------------------------------------------------- the OpenAI API


def _base(node: NodeProcess) -> str:
    return f"http://127.0.0.1:{node.rpc_port}/v1"


def test_openai_endpoint(llm_node) -> None:
    node, model = llm_node
    eos = TOK.eos_id
    with httpx.Client(timeout=90) as http:
        models = http.get(_base(node) + "/models").json()
        assert models["object"] == "list" and [m["id"] for m in models["data"]] == [NAME]
        r = http.post(_base(node) + "/completions", json={"model": NAME, "prompt": "hello", "max_tokens": 6,
                                                         "temperature": 0})
        assert r.status_code == 200, r.text
        body = r.json()
        prompt = TOK.encode("hello")
        want, _ = generate(model, prompt, 6, Sampling(), frozenset({eos}), record=False)
        assert body["object"] == "text_completion" and body["model"] == NAME and body["id"].startswith("cmpl-")
        (choice,) = body["choices"]
        assert choice["index"] == 0 and choice["text"] == TOK.decode(want)
        assert choice["finish_reason"] == ("stop" if want[-1] == eos else "length")
        assert body["usage"] == {"prompt_tokens": len(prompt), "completion_tokens": len(want),
                                 "total_tokens": len(prompt) + len(want)}
        job = node.rpc("market_getJob", job_id=body["aitbc"]["job_id"])
        assert job["state"] == "COMPLETED" and job["client"] == address_of_dev(node)
        r = http.post(_base(node) + "/chat/completions", json={
            "model": NAME, "max_tokens": 5, "temperature": 0,
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]})
        assert r.status_code == 200, r.text
        body = r.json()
        prompt = TOK.chat_ids("hi", system="be brief")
        want, _ = generate(model, prompt, 5, Sampling(), frozenset({eos}), record=False)
        assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
        msg = body["choices"][0]["message"]
        assert msg == {"role": "assistant", "content": TOK.decode(want)}
        assert body["usage"]["prompt_tokens"] == len(prompt)
        # without max_tokens a chat generates what fits the model's context (OpenAI's default)
        r = http.post(_base(node) + "/chat/completions", json={"model": NAME, "seed": 7,
                                                              "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200, r.text
        usage = r.json()["usage"]
        assert 1 <= usage["completion_tokens"] <= TINY.max_ctx - usage["prompt_tokens"]
        # errors in OpenAI's shape
        r = http.post(_base(node) + "/completions", json={"model": "no-such-model", "prompt": "x"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        r = http.post(_base(node) + "/completions", json={"model": NAME})
        assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
        r = http.post(_base(node) + "/completions", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
        r = http.post(_base(node) + "/chat/completions", json={"model": NAME, "messages": "hi"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
        r = http.post(_base(node) + "/completions", json={"model": NAME, "prompt": "x", "max_tokens": 100_000})
        assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
        r = http.post(_base(node) + "/completions", json={"model": NAME, "prompt": "x", "stream": True})
        assert r.status_code == 400
        r = http.post(_base(node) + "/completions", content=b"x" * 70_000, headers={"content-type": "application/json"})
        assert r.status_code == 413
        r = http.post(_base(node) + "/completions", content=b"{}", headers={"content-type": "text/plain"})
        assert r.status_code == 415
        r = http.post(_base(node) + "/completions", json={"model": NAME, "prompt": "x"},
                      headers={"origin": "https://evil.example"})
        assert r.status_code == 403
        assert http.get(_base(node) + "/nope").status_code == 404
        # a model this node keeps but no miner serves: the job expires unbid (refunded) -> 503
        import tempfile
        from pathlib import Path

        from llm_fixtures import write_model

        with tempfile.TemporaryDirectory() as d:
            path, arch, _ = write_model(Path(d), seed=12)
            cli(node, "model", "register", str(path), "--name", "other-llm", "--arch", str(arch), "--from", "dev")
        r = http.post(_base(node) + "/completions", json={"model": "other-llm", "prompt": "x", "max_tokens": 2})
        assert r.status_code == 503 and r.json()["error"]["code"] == "no_miner", r.text


def address_of_dev(node: NodeProcess) -> str:
    from nodeproc import load_dev_key

    return address(load_dev_key(node.home))


def test_openai_python_client(llm_node) -> None:
    openai = pytest.importorskip("openai")
    node, model = llm_node
    client = openai.OpenAI(base_url=_base(node), api_key="unused", timeout=90)
    assert NAME in [m.id for m in client.models.list().data]
    c = client.completions.create(model=NAME, prompt="hello", max_tokens=4, temperature=0)
    want, _ = generate(model, TOK.encode("hello"), 4, Sampling(), frozenset({TOK.eos_id}), record=False)
    assert c.choices[0].text == TOK.decode(want)
    chat = client.chat.completions.create(model=NAME, max_tokens=4, temperature=0,
                                          messages=[{"role": "user", "content": "hi"}])
    assert chat.choices[0].message.role == "assistant" and chat.usage.completion_tokens >= 1
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="no-such-model", prompt="x", max_tokens=2)
