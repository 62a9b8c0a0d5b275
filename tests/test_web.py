"""The web explorer and market app (``rpc/web``) in a real headless Chromium against a real dev node.

One dev node (200 ms blocks, ``--miner``) is shared by the module; a transfer and a market job that the
node's miner completes are made with the CLI first. Every page is compared with the JSON-RPC answers
fetched here with httpx, a new block must appear without a reload (WebSocket ``newHeads``), search must
route to the right page, a phone-width viewport must not scroll sideways, and no page may log a console
error or throw. Screenshots are kept in ``tests/artifacts/web/`` (git-ignored).

Debian's chromium is used (``/usr/bin/chromium``; ``make test`` installs it): no browser is downloaded.
Playwright's sync API runs in plain (non-async) test functions.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from nodeproc import FAST_BLOCK_MS, NodeProcess, clean_env, run_cli, wait_for
from zk_tools import requires_snarkjs

from gpu.llm.tiny import TINY, tiny_model_file
from state.address import encode_address
from state.crypto import SigningKey

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed at /usr/bin/chromium (make test installs it)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make setup)")

ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "web"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage", "--disable-breakpad", "--disable-crash-reporter"]
TIMEOUT_MS = 10_000  # every Playwright wait
PHONE = {"width": 390, "height": 844}


def fmt_ait(base: int | str) -> str:
    """What the page shows for an amount of base units (grouped whole part, up to 6 decimals)."""
    whole, frac = divmod(int(base), 1_000_000)
    text = f"{whole:,}"
    if frac:
        text += "." + f"{frac:06d}".rstrip("0")
    return text + " AIT"


def parse_ait(text: str) -> int:
    """Base units of a shown amount (``"1,001.5 AIT"``)."""
    whole, _, frac = text.removesuffix(" AIT").replace(",", "").partition(".")
    return int(whole) * 1_000_000 + int((frac + "000000")[:6])


class Env:
    def __init__(self, node: NodeProcess, transfer: dict, job: dict, recipient: str, model: str) -> None:
        self.node = node
        self.model = model  # name of a registered model
        self.transfer = transfer  # `wallet send --json` output
        self.job = job  # `job submit --json --wait` output
        self.recipient = recipient
        self.base = f"http://127.0.0.1:{node.rpc_port}/"

    def rpc(self, method: str, **params: Any) -> Any:
        return self.node.rpc(method, **params)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    home = tmp_path_factory.mktemp("web") / "home"  # a PoS dev chain: staked validator, delegations
    r = run_cli("init", "--dev", "--consensus", "pos", "--home", str(home), "--block-interval", str(FAST_BLOCK_MS))
    assert r.returncode == 0, r.stderr
    node = NodeProcess(home, extra_args=["--miner"])
    try:
        node.start()
        node.wait_ready()
        cli_env = clean_env(AITBC_RPC_URL=node.url)
        wait_for(lambda: node.rpc("market_listMiners")["miners"], 30, "the dev miner registered", interval=0.2)
        r = run_cli("job", "submit", "--from", "dev", "--kind", "matmul-u32", "--params", '{"m":8,"n":8,"k":8}',
                    "--max-price", "0.001", "--max-units", "1", "--bid-window", "2", "--wait", "--json",
                    "--home", str(home), env=cli_env, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        job = json.loads(r.stdout)
        assert job["state"] == "COMPLETED", job
        tmp = home.parent
        (tmp / "tiny.bin").write_bytes(tiny_model_file())
        (tmp / "arch.json").write_text(json.dumps(TINY.to_map()))
        r = run_cli("model", "register", str(tmp / "tiny.bin"), "--name", "tiny-web", "--arch", str(tmp / "arch.json"),
                    "--from", "dev", "--home", str(home), env=cli_env, timeout=60)
        assert r.returncode == 0 and "registered in block" in r.stdout, r.stdout + r.stderr
        recipient = node.rpc("system_info")["validator"]  # the operator of the only validator
        r = run_cli("stake", "delegate", "--from", "dev", "--validator", recipient, "--amount", "5",
                    "--home", str(home), env=cli_env, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        r = run_cli("wallet", "send", "--from", "dev", "--to", recipient, "--amount", "12.5", "--wait", "--json",
                    "--home", str(home), env=cli_env, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        transfer = json.loads(r.stdout)
        assert transfer["status"] == "committed", transfer
        yield Env(node, transfer, job, recipient, "tiny-web")
    finally:
        node.close()


@pytest.fixture(scope="module")
def browser(env: Env) -> Iterator[Any]:
    pw = sync_api.sync_playwright().start()
    try:
        # A start-up that hangs on a loaded machine (seen once in CI: launched, never answered) is given
        # up after 45 s and tried again, twice at most.
        for attempt in range(3):
            try:
                b = pw.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS, timeout=45_000)
                break
            except sync_api.TimeoutError:
                if attempt == 2:
                    raise
        try:
            yield b
        finally:
            b.close()
    finally:
        pw.stop()


class Page:
    """A fresh browser page that records console errors and uncaught exceptions."""

    def __init__(self, browser: Any, env: Env, viewport: dict | None = None) -> None:
        self.env = env
        self.context = browser.new_context(viewport=viewport or {"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text}")
                     if m.type in ("error", "assert") else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))

    def unready(self) -> None:
        """Forget the rendered page, so that :meth:`ready` waits for the next one (a hash change keeps the
        document: the previous page would otherwise still count as rendered)."""
        if self.page.url.startswith(self.env.base):
            self.page.evaluate("document.getElementById('main').removeAttribute('data-ready')")

    def open(self, route: str, page_name: str) -> Any:
        """Go to ``#/route`` and wait until that page has rendered."""
        self.unready()
        self.page.goto(self.env.base + "#/" + route)
        return self.ready(page_name)

    def ready(self, page_name: str) -> Any:
        self.page.wait_for_selector(f'#main[data-ready="{page_name}"]')
        return self.page

    def field(self, name: str) -> str:
        return self.page.locator(f'[data-field="{name}"]').first.inner_text().strip()

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest.fixture
def web(browser: Any, env: Env) -> Iterator[Page]:
    p = Page(browser, env)
    try:
        yield p
        assert p.errors == [], p.errors
    finally:
        p.context.close()


# ------------------------------------------------------------------------------------------- serving
def _raw_get(port: int, target: str) -> int:
    """The status of a GET sent byte for byte (no client-side normalisation of ``..``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1])


def test_static_files_headers_and_origin(env: Env) -> None:
    base = env.base
    with httpx.Client(timeout=5) as c:
        r = c.get(base)
        assert r.status_code == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["cache-control"] == "no-cache"
        assert c.get(base, headers={"if-none-match": r.headers["etag"]}).status_code == 304
        html = r.text
        assert '<meta name="viewport"' in html
        # no inline script or style, no event-handler attributes: everything comes from files the CSP allows
        assert all("src=" in tag for tag in re.findall(r"<script[^>]*>", html))
        assert not re.search(r"<style|\sstyle=|\son[a-z]+=", html)
        assets = re.findall(r'(?:src|href)="(/web/[0-9a-f]+/[^"]+)"', html)
        assert {a.rsplit("/", 1)[1] for a in assets} == {"favicon.svg", "app.css", "app.js"}
        prefix = assets[0].rsplit("/", 1)[0]
        types = {"app.js": "text/javascript", "api.js": "text/javascript", "fmt.js": "text/javascript",
                 "proof.js": "text/javascript", "app.css": "text/css", "favicon.svg": "image/svg+xml"}
        for name, ctype in types.items():
            a = c.get(f"{base.rstrip('/')}{prefix}/{name}")
            assert a.status_code == 200 and a.headers["content-type"].startswith(ctype), name
            assert "immutable" in a.headers["cache-control"] and a.headers["content-security-policy"] == csp
        assert c.head(base).status_code == 200 and c.head(base).content == b""
        assert c.post(f"{base.rstrip('/')}{prefix}/app.js").status_code == 405
        for bad in (f"{prefix}/nope.js", f"{prefix}/", "/web/0000000000000000/app.js", "/web/", "/index.html",
                    f"{prefix}/%2e%2e/%2e%2e/server.py", f"{prefix}/..%2f..%2fserver.py", f"{prefix}/.hidden"):
            assert c.get(base.rstrip("/") + bad).status_code == 404, bad
        for bad in (f"{prefix}/../../../pyproject.toml", f"{prefix}/../__init__.py", "/web/../rpc/server.py"):
            assert _raw_get(env.node.rpc_port, bad) == 404, bad
        # the rest of the port is unchanged: POST / is JSON-RPC, /health, /metrics
        body = {"jsonrpc": "2.0", "id": 1, "method": "chain_getHead", "params": []}
        assert c.post(base, json=body).json()["result"]["height"] >= 1
        assert c.get(base + "health").status_code == 200
        # the page's own origin may call /rpc (browsers send Origin on every POST); another is refused
        same = c.post(base + "rpc", json=body, headers={"origin": base.rstrip("/")})
        assert same.status_code == 200 and same.json()["result"]["height"] >= 1
        assert c.post(base + "rpc", json=body, headers={"origin": "http://evil.example"}).status_code == 403
        assert c.post(base + "rpc", json=body, headers={"origin": f"http://127.0.0.1:{env.node.rpc_port + 1}"}
                      ).status_code == 403
        # a browser page never gets admin methods without the token, same origin or not
        admin = c.post(base + "rpc", json={"jsonrpc": "2.0", "id": 1, "method": "admin_peers"},
                       headers={"origin": base.rstrip("/")}).json()
        assert "error" in admin


# --------------------------------------------------------------------------------------------- pages
def test_overview_shows_chain_figures_and_live_blocks(web: Page, env: Env) -> None:
    head = env.rpc("chain_getHead")  # before the page: its figures can only be newer
    supply_before = int(env.rpc("chain_getSupply")["total"])
    page = web.open("", "overview")
    assert int(web.field("head-height")) >= head["height"]
    assert int(web.field("finalized-height")) >= head["finalized_height"]
    assert web.field("validators") == str(len(env.rpc("consensus_getValidators")["validators"]))
    assert web.field("peers") == str(env.rpc("net_info")["peers"])
    info = env.rpc("system_info")
    assert web.field("chain") == f"{info['chain_id']} · {info['consensus']}"
    assert re.fullmatch(r"\d+\.\d\d s", web.field("block-time"))
    assert re.fullmatch(r"\d+\.\d\d", web.field("tps"))
    assert web.field("jobs-COMPLETED") == str(env.rpc("market_stats")["jobs_by_state"]["COMPLETED"])
    # PoS mints a block reward per block: the page's figure lies between the supply before and after it
    assert supply_before <= parse_ait(web.field("supply-total")) <= int(env.rpc("chain_getSupply")["total"])
    # live: a block committed after the page rendered shows up without a reload
    page.evaluate("window.__noReload = true")
    top = int(page.locator("#recent-blocks tbody tr").first.get_attribute("data-height"))
    page.wait_for_function(
        "h => Number(document.querySelector('#recent-blocks tbody tr').dataset.height) > h", arg=top + 2)
    newest = int(page.locator("#recent-blocks tbody tr").first.get_attribute("data-height"))
    block = env.rpc("chain_getBlock", height=newest)
    row = page.locator(f'#recent-blocks tr[data-height="{newest}"]')
    assert block["hash"][:10] in row.inner_text()
    assert page.evaluate("window.__noReload") is True
    assert int(web.field("head-height")) >= newest
    heights = [int(h) for h in page.eval_on_selector_all("#recent-blocks tbody tr", "rs => rs.map(r => r.dataset.height)")]
    assert heights == list(range(heights[0], heights[0] - len(heights), -1)), f"the live list skipped a height: {heights}"
    page.wait_for_function("() => document.getElementById('live').classList.contains('up')")
    web.shot("overview")


def test_account_balance_proof_and_history(web: Page, env: Env) -> None:
    dev = env.transfer["from"]
    page = web.open(f"account/{dev}", "account")
    acc = env.rpc("state_getAccount", address=dev)
    assert web.field("balance") == fmt_ait(acc["balance"])
    assert web.field("nonce") == str(acc["nonce"])
    # the state proof is checked in the browser with WebCrypto against the block header's state root
    page.wait_for_selector("#proof[data-verified]")
    assert page.get_attribute("#proof", "data-verified") == "true", page.inner_text("#proof")
    assert "verified in this browser" in web.field("proof-status")
    # a tampered proof fails in the same verifier: one flipped sibling, or a different balance
    prefix = page.evaluate("document.querySelector('script[type=module]').src.replace(/app\\.js$/, '')")
    proof = env.rpc("state_getAccount", address=dev, proof=True)
    verdicts = page.evaluate(
        """async ([base, address, acc]) => {
            const m = await import(base + "proof.js");
            const ok = (await m.verifyAccountProof(address, acc)).ok;
            const flipped = structuredClone(acc);
            const s = flipped.proof.siblings[0];
            flipped.proof.siblings[0] = s.slice(0, -1) + (s.endsWith("0") ? "1" : "0");
            const richer = structuredClone(acc);
            richer.balance = (BigInt(acc.balance) + 1n).toString();
            return [ok, (await m.verifyAccountProof(address, flipped)).ok, (await m.verifyAccountProof(address, richer)).ok];
        }""",
        [prefix, dev, proof],
    )
    assert verdicts == [True, False, False]
    # jobs submitted by the account
    assert page.locator(f'table.jobs tr[data-job="{env.job["job_id"]}"]').count() == 1
    # the recipient's page lists the transfer (chain_getAddressTransactions: the node's history index)
    page = web.open(f"account/{env.recipient}", "account")
    page.wait_for_selector("#account-txs-table")
    assert "from block 1 on" in page.inner_text("#account-txs")
    row = page.locator(f'#account-txs-table tr[data-tx="{env.transfer["hash"]}"]')
    assert row.count() == 1 and "12.5 AIT" in row.inner_text() and "in" in row.inner_text()
    assert page.locator("#account-txs-older").is_hidden()  # one page: nothing older
    page.wait_for_selector("#proof[data-verified]")
    assert page.get_attribute("#proof", "data-verified") == "true"
    web.shot("account")
    # an address never funded: the proof of its absence checks out too
    nobody = encode_address(SigningKey.from_seed(b"\x5a" * 32).public_key)
    assert env.rpc("state_getAccount", address=nobody)["exists"] is False
    page = web.open(f"account/{nobody}", "account")
    assert web.field("balance") == "0 AIT" and web.field("exists").startswith("no")
    page.wait_for_selector("#proof[data-verified]")
    assert page.get_attribute("#proof", "data-verified") == "true", page.inner_text("#proof")
    assert "absence" in web.field("proof-status")


def test_block_and_transaction_pages(web: Page, env: Env) -> None:
    height = env.transfer["block_height"]
    block = env.rpc("chain_getBlock", height=height)
    page = web.open(f"block/{height}", "block")
    assert web.field("hash") == block["hash"] and web.field("height") == str(height)
    assert web.field("proposer") == block["proposer"] and web.field("tx_count") == str(block["tx_count"])
    assert web.field("state_root") == block["state_root"]
    assert page.locator(f'#block-txs tr[data-tx="{env.transfer["hash"]}"]').count() == 1
    web.shot("block")
    # by hash too
    web.open(f"block/{block['hash']}", "block")
    assert web.field("height") == str(height)

    t = env.rpc("chain_getTransaction", hash=env.transfer["hash"])
    page = web.open(f"tx/{env.transfer['hash']}", "tx")
    assert web.field("status") == t["status"] == "committed"
    assert web.field("block_height") == str(t["block_height"]) and web.field("type") == "transfer"
    assert web.field("sender") == t["tx"]["sender"] and web.field("fee") == fmt_ait(t["tx"]["fee"]) == "0.001 AIT"
    assert web.field("body.amount") == fmt_ait(t["tx"]["body"]["amount"]) == "12.5 AIT"
    assert web.field("body.to") == env.recipient
    web.shot("tx")

    page = web.open("blocks", "blocks")
    first = int(page.locator("#blocks-table tbody tr").first.get_attribute("data-height"))
    assert first >= height
    page.wait_for_function(  # the list grows live too
        "h => Number(document.querySelector('#blocks-table tbody tr').dataset.height) > h", arg=first)
    web.shot("blocks")


def test_validators_and_delegations(web: Page, env: Env) -> None:
    before = env.rpc("consensus_getValidators")  # powers may change at an epoch end: the page shows either
    page = web.open("validators", "validators")
    after = env.rpc("consensus_getValidators")
    powers = {v["address"]: {v["power"]} for v in before["validators"]}
    for v in after["validators"]:
        powers.setdefault(v["address"], set()).add(v["power"])
    rows = page.locator("#validator-set tbody tr")
    assert rows.count() in (len(before["validators"]), len(after["validators"]))
    for v in after["validators"]:
        cells = page.locator(f'#validator-set tr[data-validator="{v["address"]}"] td').all_inner_texts()
        assert cells[1] == v["name"] and int(cells[2]) in powers[v["address"]], cells
    staked = env.rpc("staking_getValidators")["validators"]
    assert page.locator("#staking-validators tbody tr").count() == len(staked) == 1
    assert staked[0]["moniker"] in page.inner_text("#staking-validators")
    web.shot("validators")

    page.locator(f'#staking-validators a[href="#/validator/{env.recipient}"]').click()
    web.ready("validator")
    v = env.rpc("staking_getValidator", address=env.recipient)
    assert web.field("address") == env.recipient and web.field("status") == v["status"]
    assert web.field("self_bond") == fmt_ait(v["self_bond"])
    dels = env.rpc("staking_getDelegations", validator=env.recipient)["delegations"]
    dev = env.transfer["from"]
    assert page.locator("table.delegations tbody tr").count() == len(dels) == 2
    mine = page.locator(f'table.delegations tr[data-delegator="{dev}"]').inner_text()
    assert "5 AIT" in mine
    web.shot("validator")
    # the delegator's account page lists it too
    page = web.open(f"account/{dev}", "account")
    assert "5 AIT" in page.locator(f'table.delegations tr[data-delegator="{dev}"]').inner_text()


def test_market_job_miners_models(web: Page, env: Env) -> None:
    job_id = env.job["job_id"]
    job = env.rpc("market_getJob", job_id=job_id)
    page = web.open("market?state=COMPLETED", "market")
    row = page.locator(f'table.jobs tr[data-job="{job_id}"]')
    assert row.count() == 1 and "COMPLETED" in row.inner_text() and job["kind"] in row.inner_text()
    assert fmt_ait(job["price"]) in row.inner_text()
    web.unready()
    page.locator('a.chip[data-state="EXPIRED"]').click()
    web.ready("market")
    assert page.locator(f'table.jobs tr[data-job="{job_id}"]').count() == 0
    web.shot("market")

    page = web.open(f"job/{job_id}", "job")
    assert web.field("state") == job["state"] == "COMPLETED" and web.field("payment") == job["payment"]
    assert web.field("miner") == job["miner"] and web.field("price") == fmt_ait(job["price"])
    assert web.field("award_height") == str(job["award_height"])
    assert page.locator("#job-bids tbody tr").count() == len(job["bids"]) >= 1
    assert web.field("receipt_id") == job["receipt"]["receipt_id"]
    assert web.field("result_hash") == job["receipt"]["result_hash"]
    assert web.field("paid") == fmt_ait(job["paid"]) and web.field("refunded") == fmt_ait(job["refunded"])
    assert web.field("false_challenges") == str(job["false_challenges"])
    assert web.field("failure") == "–" and web.field("availability") == "none open"
    web.shot("job")

    miners = env.rpc("market_listMiners")["miners"]
    page = web.open("miners", "miners")
    for m in miners:
        row = page.locator(f'#miners-table tr[data-miner="{m["address"]}"]')
        assert row.locator('[data-field="bond"]').inner_text() == fmt_ait(m["bond"])
        assert row.locator('[data-field="reputation"]').inner_text() == str(m["reputation"])
        prices = row.locator('[data-field="prices"]').inner_text()
        assert all(f"{k}: {fmt_ait(p)}" in prices for k, p in m["prices"].items())
    web.shot("miners")

    models = env.rpc("market_listModels")
    assert models["total"] == 1
    page = web.open("models", "models")
    assert page.locator("#models-table tr[data-model]").count() == len(models["models"])
    assert f"Models ({models['total']})" in page.inner_text("#main")
    m = models["models"][0]
    row = page.locator(f'#models-table tr[data-model="{m["model_id"]}"]').inner_text()
    assert m["name"] in row and m["format"] in row and fmt_ait(m["fee"]) in row
    web.shot("models")
    web.unready()
    page.locator(f'#models-table tr[data-model="{m["model_id"]}"] a').first.click()
    web.ready("model")
    assert web.field("model_id") == m["model_id"] and web.field("name") == env.model
    web.shot("model")


def test_search_routes_to_the_right_page(web: Page, env: Env) -> None:
    page = web.open("", "overview")

    def search(q: str, page_name: str) -> None:
        web.unready()
        page.fill("#q", q)
        page.press("#q", "Enter")
        web.ready(page_name)

    search(str(env.transfer["block_height"]), "block")
    assert web.field("height") == str(env.transfer["block_height"])
    search(env.transfer["hash"], "tx")
    assert web.field("hash") == env.transfer["hash"]
    search(env.job["job_id"], "job")
    assert web.field("job_id") == env.job["job_id"]
    block = env.rpc("chain_getBlock", height=env.transfer["block_height"])
    search(block["hash"].upper().replace("0X", "0x"), "block")
    assert web.field("hash") == block["hash"]
    search(env.recipient, "account")
    assert web.field("address") == env.recipient
    search(env.model, "model")
    model_id = web.field("model_id")
    assert model_id == env.rpc("market_getModel", model=env.model)["model_id"]
    search(model_id, "model")
    assert web.field("name") == env.model
    search("0x" + "ab" * 32, "search")
    assert page.locator("#search-miss").count() == 1
    search("no such thing", "search")
    assert "Nothing found" in page.inner_text("#main")
    web.shot("search")


def test_job_page_follows_a_job_live(web: Page, env: Env) -> None:
    """A job opened while it is still bidding moves to COMPLETED on the page without a reload."""
    r = run_cli("job", "submit", "--from", "dev", "--kind", "matmul-u32", "--params", '{"m":4,"n":4,"k":4}',
                "--max-price", "0.001", "--max-units", "1", "--bid-window", "20", "--json",
                "--home", str(env.node.home), env=clean_env(AITBC_RPC_URL=env.node.url), timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    job_id = json.loads(r.stdout)["job_id"]
    page = web.open(f"job/{job_id}", "job")
    assert web.field("state") == "QUEUED", "the job left QUEUED before the page opened"
    page.evaluate("window.__noReload = true")
    page.wait_for_function(
        "() => document.querySelector('[data-field=state]')?.textContent === 'COMPLETED'", timeout=20_000)
    web.ready("job")
    job = env.rpc("market_getJob", job_id=job_id)
    assert job["state"] == "COMPLETED" and web.field("receipt_id") == job["receipt"]["receipt_id"]
    assert web.field("miner") == job["miner"] and page.evaluate("window.__noReload") is True


def test_sealed_job_page_shows_commitments_and_only_the_winning_price(web: Page, env: Env) -> None:
    """A sealed-bid job (awarded by the client's CLI): its page lists the sealed bids as commitments,
    the winner and the winning tick, and shows no losing price (there is none to show)."""
    r = run_cli("job", "submit", "--from", "dev", "--kind", "matmul-u32", "--params", '{"m":4,"n":4,"k":4}',
                "--max-price", "0.001", "--max-units", "1", "--bid-window", "6", "--sealed", "--sealed-bits", "8",
                "--sealed-deposit", "0.1", "--wait", "--json", "--home", str(env.node.home),
                env=clean_env(AITBC_RPC_URL=env.node.url), timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    job = json.loads(r.stdout)
    assert job["state"] == "COMPLETED" and job["sealed"]["winner"] == job["miner"]
    web.open(f"job/{job['job_id']}", "job")
    assert web.field("sealed.winner") == job["miner"]
    text = web.page.inner_text("main")
    assert "Sealed auction (1 sealed bids)" in text
    assert job["sealed"]["bids"][0]["commitment"][:10] in text



@requires_snarkjs
def test_anonymous_attestable_job_page_shows_prices_and_only_the_winner(web: Page, env: Env) -> None:
    """An anonymous-bid, attestable job (the node's miner registers a bidding identity, bids without naming
    itself and accepts): its page lists the anonymous bid by price and nullifier, names only the winner,
    and shows the paid receipt's leaf in the receipt tree."""
    wait_for(lambda: env.rpc("zk_bidderTree")["size"] >= 1, 120, "the miner's bidding identity in the tree")
    r = run_cli("job", "submit", "--from", "dev", "--kind", "matmul-u32", "--params", '{"m":4,"n":4,"k":4}',
                "--max-price", "0.001", "--max-units", "1", "--bid-window", "40", "--accept-window", "20",
                "--anonymous", "--anon-bids", "4", "--attestable", "--wait", "--json", "--home", str(env.node.home),
                env=clean_env(AITBC_RPC_URL=env.node.url), timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr + env.node.log_tail()
    job = json.loads(r.stdout)
    an, att = job["anonymous"], job["attest"]
    assert job["state"] == "COMPLETED" and an["winner"] == job["miner"] and len(an["bids"]) == 1, job
    assert isinstance(att["leaf_index"], int), att
    page = web.open(f"job/{job['job_id']}", "job")
    assert web.field("anonymous.winner") == job["miner"]
    card = page.locator("section.card", has_text="Anonymous auction")
    text = card.inner_text()
    assert "Anonymous auction (1 anonymous bids)" in text
    bid = an["bids"][0]
    row = card.locator("#job-anon-bids tbody tr").first.inner_text()
    assert fmt_ait(bid["price"]) in row and bid["nullifier"][:10] in row and "won" in row
    # the only account the section names is the winner's (the data holds no other bidder)
    links = card.locator('a[href^="#/account/"]').evaluate_all("els => els.map((e) => e.title)")
    assert links == [job["miner"]]
    assert web.field("attest.leaf_index") == str(att["leaf_index"])
    assert att["owner"][:10] in web.field("attest.owner")
    web.shot("job-anonymous")
    assert web.errors == [], web.errors

def test_phone_viewport_has_no_horizontal_overflow(browser: Any, env: Env) -> None:
    p = Page(browser, env, viewport=PHONE)
    try:
        routes = [("", "overview"), ("blocks", "blocks"), (f"block/{env.transfer['block_height']}", "block"),
                  (f"tx/{env.transfer['hash']}", "tx"), (f"account/{env.transfer['from']}", "account"),
                  ("validators", "validators"), ("market", "market"), (f"job/{env.job['job_id']}", "job"),
                  ("miners", "miners"), ("models", "models")]
        for route, name in routes:
            page = p.open(route, name)
            width = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
            assert width[0] <= width[1], (route, width)
            p.shot(f"phone-{name}")
        assert p.errors == [], p.errors
    finally:
        p.context.close()


def test_web_disabled_serves_nothing(node_factory: Any) -> None:
    """``[web] enabled = false``: ``GET /`` is 404 again and the node's own origin is just another origin."""
    node = node_factory(env={"AITBC_WEB_ENABLED": "false"})
    base = f"http://127.0.0.1:{node.rpc_port}"
    with httpx.Client(timeout=5) as c:
        assert c.get(base + "/").status_code == 404
        assert c.get(base + "/web/0000000000000000/app.js").status_code == 404
        body = {"jsonrpc": "2.0", "id": 1, "method": "chain_getHead", "params": []}
        assert c.post(base + "/rpc", json=body, headers={"origin": base}).status_code == 403
        assert c.post(base + "/rpc", json=body).json()["result"]["height"] >= 1
