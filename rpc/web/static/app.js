// The explorer and market app: hash routes rendered from the node's public JSON-RPC, live over /ws.
import { Live, RpcError, batch, call, maybe } from "./api.js";
import {
  addr, ago, ait, badge, blockLink, dl, h, isAddress, isHash, jobLink, mono, short, table, time, txLink,
} from "./fmt.js";
import { verifyAccountProof, webCryptoAvailable } from "./proof.js";

const main = document.getElementById("main");
const liveBadge = document.getElementById("live");
const live = new Live();
const RECENT = 20; // blocks behind the overview's block time and tx/s
const PAGE = 25; // blocks per page of the block list
const HISTORY_PAGE = 25; // transactions per page of an account's history (chain_getAddressTransactions)
const AMOUNT_KEYS = new Set(["amount", "fee", "bond", "price", "max_price", "self_bond", "unit_price", "paid",
  "refunded", "escrow", "tokens", "shares", "rewards", "slashed"]);
const JOB_STATES = ["QUEUED", "RUNNING", "COMPLETED", "FAILED", "CANCELED", "EXPIRED"];

let headHeight = 0;
let pageHandlers = [];
let renderSeq = 0;

let wasUp = false;
live.onStatus((up) => {
  liveBadge.classList.toggle("up", up);
  liveBadge.textContent = up ? (headHeight ? `live · #${headHeight}` : "live") : "offline, reconnecting…";
  if (up && wasUp) render(); // back after a drop: blocks were missed, so the page is fetched again
  if (up) wasUp = true;
});
live.onHead((header) => {
  headHeight = Math.max(headHeight, header.height);
  liveBadge.textContent = `live · #${headHeight}`;
  liveBadge.dataset.height = String(headHeight);
  for (const fn of pageHandlers) fn(header);
});

/** Run `fn` at most once per `ms`, the last call winning (a live refresh on a fast chain). */
function throttle(fn, ms) {
  let timer = null;
  let last = 0;
  let busy = false;
  const run = async () => {
    timer = null;
    if (busy) {
      timer = setTimeout(run, ms);
      return;
    }
    busy = true;
    last = Date.now();
    try {
      await fn();
    } catch (e) {
      console.warn("live refresh failed", e);
    } finally {
      busy = false;
    }
  };
  return () => {
    if (timer) return;
    timer = setTimeout(run, Math.max(0, last + ms - Date.now()));
  };
}

function section(title, ...children) {
  return h("section", { class: "card" }, h("h2", {}, title), ...children);
}

function stat(label, value, field) {
  return h("div", { class: "stat" }, h("div", { class: "label" }, label), h("div", { class: "value", "data-field": field }, value));
}

function setField(root, field, value) {
  const el = root.querySelector(`[data-field="${field}"]`);
  if (el) el.textContent = value;
}

function json(value) {
  return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
}

/** A value of a transaction body or a record: addresses, hashes and amounts made readable. */
function pretty(key, value) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "string") {
    if (isAddress(value)) return addr(value, true);
    if (key === "job_id" && isHash(value)) return jobLink(value, true);
    if (AMOUNT_KEYS.has(key) && /^\d+$/.test(value)) return h("span", { title: `${value} base units` }, ait(value));
    return mono(value);
  }
  if (typeof value === "object") return json(value);
  return String(value);
}

function kvObject(obj, field) {
  return dl(Object.entries(obj || {}).map(([k, v]) => [k, pretty(k, v), field ? `${field}.${k}` : null]));
}

// ------------------------------------------------------------------------------------------- overview
async function overview(ctx) {
  const [head, info, vals, net, mem, stats, supply] = await batch([
    ["chain_getHead", {}], ["system_info", {}], ["consensus_getValidators", {}], ["net_info", {}],
    ["mempool_status", {}], ["market_stats", {}], ["chain_getSupply", {}],
  ]);
  if (head instanceof Error) throw head;
  const lo = Math.max(1, head.height - RECENT + 1);
  const heights = [];
  for (let x = head.height; x >= lo; x--) heights.push(x);
  const recent = (await batch(heights.map((height) => ["chain_getBlock", { height }]))).filter((b) => !(b instanceof Error));
  const ok = (x) => !(x instanceof Error);

  const cards = h("div", { class: "stats" },
    stat("Head height", String(head.height), "head-height"),
    stat("Finalized height", String(head.finalized_height), "finalized-height"),
    stat("Block time", "–", "block-time"),
    stat("Transactions / s", "–", "tps"),
    stat("Validators", ok(vals) ? String(vals.validators.length) : "–", "validators"),
    stat("Peers", ok(net) ? String(net.peers) : "–", "peers"),
    stat("Mempool", ok(mem) ? `${mem.size} txs` : "–", "mempool"),
    stat("Chain", ok(info) ? `${info.chain_id} · ${info.consensus}` : "–", "chain"),
  );
  const rows = h("tbody", {});
  const blocksTable = h("div", { class: "scroll" }, h("table", { id: "recent-blocks" },
    h("thead", {}, h("tr", {}, ["Height", "Hash", "Time", "Txs", "Proposer"].map((x) => h("th", {}, x)))), rows));

  function blockRow(b) {
    return h("tr", { "data-height": String(b.height) },
      h("td", {}, blockLink(b.height)), h("td", {}, h("a", { href: `#/block/${b.height}`, class: "mono" }, short(b.hash))),
      h("td", { title: time(b.time) }, ago(b.time)), h("td", {}, String(b.tx_count)), h("td", {}, addr(b.proposer)));
  }
  function refreshRates() {
    if (recent.length >= 2) {
      const span = recent[0].time - recent[recent.length - 1].time;
      const txs = recent.slice(0, -1).reduce((n, b) => n + b.tx_count, 0);
      setField(cards, "block-time", `${(span / (recent.length - 1) / 1000).toFixed(2)} s`);
      setField(cards, "tps", span > 0 ? (txs / (span / 1000)).toFixed(2) : "–");
    }
  }
  for (const b of recent.slice(0, 10)) rows.appendChild(blockRow(b));
  refreshRates();

  const refreshHead = throttle(async () => {
    const [hd, nt, mp] = await batch([["chain_getHead", {}], ["net_info", {}], ["mempool_status", {}]]);
    if (ok(hd)) setField(cards, "finalized-height", String(hd.finalized_height));
    if (ok(nt)) setField(cards, "peers", String(nt.peers));
    if (ok(mp)) setField(cards, "mempool", `${mp.size} txs`);
  }, 1000);
  ctx.onHead(async (b) => {
    // blocks committed between the page's first read and the subscription (or while the socket
    // reconnected) are fetched, so the list never skips a height
    const fresh = await withGap(recent.length ? recent[0].height : b.height - 1, b);
    for (const blk of fresh) {
      if (recent.length && blk.height <= recent[0].height) continue;
      recent.unshift(blk);
      rows.insertBefore(blockRow(blk), rows.firstChild);
    }
    recent.length = Math.min(recent.length, RECENT);
    setField(cards, "head-height", String(recent[0].height));
    while (rows.children.length > 10) rows.lastChild.remove();
    refreshRates();
    refreshHead();
  });

  const market = ok(stats)
    ? h("div", {},
      h("div", { class: "chips" }, JOB_STATES.map((s) =>
        h("a", { href: `#/market?state=${s}`, class: "chip" }, `${s} `, h("b", { "data-field": `jobs-${s}` }, String(stats.jobs_by_state[s] ?? 0))))),
      dl([["Jobs", String(stats.jobs_total), "jobs-total"], ["Active miners", String(stats.miners_active)],
        ["Escrow locked", ait(stats.escrow_locked)], ["Miner bonds", ait(stats.bonds_locked)],
        ["Paid to miners", ait(stats.paid_total)], ["Burned", ait(stats.burned_total)]]))
    : h("p", { class: "muted" }, "market_stats unavailable");
  const supplyDl = ok(supply)
    ? dl([["Total", ait(supply.total), "supply-total"], ["Circulating", ait(supply.circulating)],
      ["Bonded", ait(supply.bonded)], ["Market escrow", ait(supply.market_escrow)], ["Miner bonds", ait(supply.miner_bonds)]])
    : h("p", { class: "muted" }, "chain_getSupply unavailable");
  return h("div", {}, cards,
    section("Latest blocks", blocksTable, h("p", {}, h("a", { href: "#/blocks" }, "All blocks →"))),
    h("div", { class: "grid2" }, section("Market", market), section("Supply", supplyDl)));
}

/** The new head ``b`` preceded by the blocks between ``known`` and it (at most 10, oldest first). */
async function withGap(known, b) {
  if (b.height <= known + 1) return [b];
  const missing = [];
  for (let x = Math.max(known + 1, b.height - 10); x < b.height; x++) missing.push(x);
  try {
    const got = (await batch(missing.map((height) => ["chain_getBlock", { height }]))).filter((x) => !(x instanceof Error));
    return [...got, b];
  } catch {
    return [b]; // the node is busy or gone: show what arrived
  }
}

// --------------------------------------------------------------------------------------------- blocks
async function blocks(ctx, _params, query) {
  const head = await call("chain_getHead");
  const before = query.get("before") ? Math.min(Number(query.get("before")), head.height + 1) : head.height + 1;
  const top = before - 1;
  const heights = [];
  for (let x = top; x >= Math.max(1, top - PAGE + 1); x--) heights.push(x);
  const list = (await batch(heights.map((height) => ["chain_getBlock", { height }]))).filter((b) => !(b instanceof Error));
  const rows = list.map(blockTableRow);
  const t = table(["Height", "Hash", "Time", "Txs", "Proposer"], rows, { id: "blocks-table" });
  const tbody = t.querySelector("tbody");
  if (!query.get("before")) {
    let newest = list.length ? list[0].height : 0;
    ctx.onHead(async (b) => {
      for (const blk of await withGap(newest, b)) {
        if (blk.height <= newest) continue;
        newest = blk.height;
        tbody.insertBefore(blockTableRow(blk), tbody.firstChild);
      }
      while (tbody.children.length > PAGE) tbody.lastChild.remove();
    });
  }
  const last = heights[heights.length - 1];
  return section(`Blocks ${last}–${top}`, t,
    h("p", { class: "pager" },
      query.get("before") ? h("a", { href: "#/blocks" }, "← Newest") : null,
      last > 1 ? h("a", { href: `#/blocks?before=${last}` }, "Older →") : null));
}

function blockTableRow(b) {
  return h("tr", { "data-height": String(b.height) },
    h("td", {}, blockLink(b.height)), h("td", {}, h("a", { href: `#/block/${b.height}`, class: "mono" }, short(b.hash))),
    h("td", { title: time(b.time) }, time(b.time)), h("td", {}, String(b.tx_count)), h("td", {}, addr(b.proposer)));
}

async function block(_ctx, [id]) {
  const params = /^\d+$/.test(id) ? { height: Number(id), full_transactions: true } : { hash: id, full_transactions: true };
  const b = await maybe("chain_getBlock", params);
  if (!b) return notFound(`block ${id}`);
  const txRows = b.transactions.map((tx) => h("tr", { "data-tx": tx.hash },
    h("td", {}, txLink(tx.hash)), h("td", {}, tx.type), h("td", {}, addr(tx.sender)), h("td", {}, String(tx.nonce)),
    h("td", {}, ait(tx.fee)),
    h("td", {}, tx.result?.ok ? badge("ok") : badge(tx.result?.reason || "failed", "failed"))));
  const sigs = (b.last_commit?.signatures || []).map((s) => h("tr", {}, h("td", {}, addr(s.validator)), h("td", { class: "mono" }, short(s.signature, 18))));
  return h("div", {},
    section(`Block ${b.height}`,
      h("p", { class: "pager" },
        b.height > 1 ? h("a", { href: `#/block/${b.height - 1}` }, "← Previous") : null,
        h("a", { href: `#/block/${b.height + 1}` }, "Next →")),
      dl([
        ["Height", String(b.height), "height"], ["Hash", mono(b.hash), "hash"], ["Time", time(b.time), "time"],
        ["Proposer", addr(b.proposer, true), "proposer"], ["Transactions", String(b.tx_count), "tx_count"],
        ["Previous", h("a", { href: `#/block/${b.prev_hash}`, class: "mono" }, b.prev_hash), "prev_hash"],
        ["State root", mono(b.state_root), "state_root"], ["Tx root", mono(b.tx_root)], ["Results hash", mono(b.results_hash)],
        ["Validators hash", mono(b.validators_hash)], ["Next validators hash", mono(b.next_validators_hash)],
        ["Last commit hash", mono(b.last_commit_hash)], ["Evidence", String((b.evidence || []).length)],
      ])),
    section("Transactions", table(["Hash", "Type", "Sender", "Nonce", "Fee", "Result"], txRows, { id: "block-txs" })),
    section(`Last commit (height ${b.last_commit?.height ?? "–"}, round ${b.last_commit?.round ?? "–"})`,
      table(["Validator", "Signature"], sigs)));
}

async function tx(ctx, [hash]) {
  const t = await maybe("chain_getTransaction", { hash });
  if (!t) return notFound(`transaction ${hash}`);
  const x = t.tx;
  if (t.status === "pending") ctx.onHead(throttle(() => render(), 500));
  return h("div", {},
    section("Transaction", dl([
      ["Hash", mono(t.hash), "hash"], ["Status", badge(t.status), "status"],
      ["Block", blockLink(t.block_height), "block_height"], ["Index", t.index ?? "–", "index"],
      ["Type", x.type, "type"], ["Sender", addr(x.sender, true), "sender"], ["Nonce", String(x.nonce), "nonce"],
      ["Fee", ait(x.fee), "fee"], ["Size", `${x.size} bytes`],
      t.result ? ["Result", t.result.ok ? badge("ok") : h("span", {}, badge(t.result.reason || "failed", "failed"), " ", t.result.message || ""), "result"] : null,
      x.type === "job_submit" ? ["Job", jobLink(t.hash, true), "job"] : null,
    ])),
    section("Body", kvObject(x.body, "body")),
    h("details", { class: "card" }, h("summary", {}, "Raw JSON"), json(t)));
}

// -------------------------------------------------------------------------------------------- account
async function account(ctx, [address]) {
  if (!isAddress(address)) return notFound(`address ${address}`);
  const [acc, miner, dels, val, asClient, asMiner] = await batch([
    ["state_getAccount", { address, proof: true }], ["market_getMiner", { address }],
    ["staking_getDelegations", { delegator: address }], ["staking_getValidator", { address }],
    ["market_listJobs", { client: address, limit: 50 }], ["market_listJobs", { miner: address, limit: 50 }],
  ]);
  if (acc instanceof Error) throw acc;
  const ok = (x) => !(x instanceof Error);
  const proofBox = h("div", { id: "proof" }, h("p", { "data-field": "proof-status", class: "muted" }, "checking…"));
  const page = h("div", {},
    section("Account", dl([
      ["Address", mono(address), "address"], ["Balance", h("span", { title: `${acc.balance} base units` }, ait(acc.balance)), "balance"],
      ["Nonce", String(acc.nonce), "nonce"], ["Pending nonce", String(acc.pending_nonce), "pending_nonce"],
      ["Exists", acc.exists ? "yes" : "no (never funded)", "exists"], ["At height", blockLink(acc.height), "height"],
    ])),
    section("State proof", proofBox),
    ok(miner) ? section("Miner", minerDl(miner)) : null,
    ok(val) ? section("Validator", h("p", {}, h("a", { href: `#/validator/${address}` }, `${val.moniker || "validator"}: ${val.status}, power ${val.power}, tokens ${ait(val.tokens)}`))) : null,
    ok(dels) && dels.delegations.length ? section("Delegations", delegationsTable(dels.delegations)) : null,
    section("Transactions", h("div", { id: "account-txs" }, h("p", { class: "muted" }, "loading…"))),
    ok(asClient) && asClient.jobs.length ? section("Jobs submitted", jobsTable(asClient.jobs)) : null,
    ok(asMiner) && asMiner.jobs.length ? section("Jobs run as miner", jobsTable(asMiner.jobs)) : null);
  checkProof(address, acc, proofBox);
  accountTransactions(address, page.querySelector("#account-txs"));
  ctx.onHead(throttle(async () => {
    const a = await call("state_getAccount", { address });
    setField(page, "balance", ait(a.balance));
    setField(page, "nonce", String(a.nonce));
    setField(page, "pending_nonce", String(a.pending_nonce));
  }, 1000));
  return page;
}

async function checkProof(address, acc, box) {
  const status = box.querySelector('[data-field="proof-status"]');
  const details = h("details", {}, h("summary", {}, "Proof"), json(acc.proof));
  if (!webCryptoAvailable()) {
    status.textContent = "not checked in this browser: WebCrypto (crypto.subtle) needs a secure context " +
      "(https, or http on localhost/127.0.0.1). The proof is shown below; check it with state.smt.verify_proof.";
    box.appendChild(details);
    return;
  }
  try {
    const [res, blk] = await Promise.all([verifyAccountProof(address, acc), call("chain_getBlock", { height: acc.height })]);
    res.steps.push([`state_root = header state_root of block ${acc.height}`, blk.state_root === res.root]);
    const good = res.steps.every(([, x]) => x);
    status.textContent = good
      ? `verified in this browser (WebCrypto SHA-256): ${acc.exists ? "the balance and nonce above are" : "the absence of this account is"} committed to the state root of block ${acc.height}`
      : "FAILED: the proof does not match (see the checks below)";
    status.className = good ? "ok" : "bad";
    box.dataset.verified = good ? "true" : "false";
    box.appendChild(h("ul", { class: "checks" }, res.steps.map(([label, x]) => h("li", { class: x ? "ok" : "bad" }, `${x ? "✓" : "✗"} ${label}`))));
  } catch (e) {
    status.textContent = `FAILED: ${e.message}`;
    status.className = "bad";
    box.dataset.verified = "false";
  }
  box.appendChild(h("p", { class: "muted" }, "The header itself is trusted from this node; its commit signatures are not checked here."));
  box.appendChild(details);
}

async function accountTransactions(address, box) {
  const head = ["Hash", "Block", "Type", "Dir", "Counterparty", "Amount", "Result"];
  const more = h("button", { type: "button", id: "account-txs-older" }, "Older");
  const note = h("p", { class: "muted" });
  let cursor = null;
  let tbody = null;
  const row = (t) => {
    const out = t.sender === address;
    return h("tr", { "data-tx": t.hash }, h("td", {}, txLink(t.hash)), h("td", {}, blockLink(t.block_height)), h("td", {}, t.type),
      h("td", {}, out ? "out" : "in"), h("td", {}, out ? addr(t.to) : addr(t.sender)),
      h("td", {}, t.amount !== null ? ait(t.amount) : "–"),
      h("td", {}, t.result.ok ? badge("ok") : badge(t.result.reason || "failed", "failed")));
  };
  const load = async () => {
    more.disabled = true;
    try {
      const params = cursor ? { address, cursor, limit: HISTORY_PAGE } : { address, limit: HISTORY_PAGE };
      const res = await call("chain_getAddressTransactions", params);
      const rows = res.transactions.map(row);
      if (tbody === null) {
        const tbl = table(head, rows, { id: "account-txs-table" });
        tbody = tbl.querySelector("tbody");
        note.textContent = `Newest first, from block ${res.indexed_from} on (the node indexes each address's transactions as it commits blocks).`;
        box.replaceChildren(note, tbl, more);
      } else {
        for (const r of rows) tbody.appendChild(r);
      }
      cursor = res.next_cursor;
      more.hidden = cursor === null;
    } catch (e) {
      box.appendChild(h("p", { class: "bad" }, `history failed: ${e.message}`));
    }
    more.disabled = false;
  };
  more.addEventListener("click", load);
  await load();
}

// ----------------------------------------------------------------------------------------- validators
async function validators() {
  const [set, staking, cons] = await batch([["consensus_getValidators", {}], ["staking_getValidators", {}], ["consensus_status", {}]]);
  if (set instanceof Error) throw set;
  const total = set.total_power || 1;
  const setRows = set.validators.map((v) => h("tr", { "data-validator": v.address },
    h("td", {}, addr(v.address, true)), h("td", {}, v.name || "–"), h("td", {}, String(v.power)),
    h("td", {}, `${((100 * v.power) / total).toFixed(1)} %`),
    h("td", {}, !(cons instanceof Error) && cons.proposer === v.address ? badge("proposer", "ok") : "")));
  const stakeRows = staking instanceof Error ? [] : staking.validators.map((v) => h("tr", {},
    h("td", {}, h("a", { href: `#/validator/${v.address}`, class: "mono" }, short(v.address, 12))), h("td", {}, v.moniker || "–"),
    h("td", {}, badge(v.status)), h("td", {}, String(v.power)), h("td", {}, ait(v.tokens)), h("td", {}, ait(v.self_bond)),
    h("td", {}, `${(v.commission_bps / 100).toFixed(2)} %`), h("td", {}, `${v.missed_blocks}/${v.tracked_blocks}`)));
  return h("div", {},
    section(`Validator set at height ${set.height} (total power ${set.total_power})`,
      table(["Address", "Name", "Power", "Share", ""], setRows, { id: "validator-set" })),
    section("Staked validators and delegations",
      stakeRows.length ? table(["Operator", "Moniker", "Status", "Power", "Tokens", "Self bond", "Commission", "Missed"], stakeRows, { id: "staking-validators" })
        : h("p", { class: "muted" }, "No staked validators (a PoA chain, or none created yet)."),
      h("p", { class: "muted" }, "Open a validator for its delegations.")));
}

function delegationsTable(dels) {
  return table(["Delegator", "Validator", "Amount", "Pending rewards"], dels.map((d) => h("tr", { "data-delegator": d.delegator },
    h("td", {}, addr(d.delegator)), h("td", {}, h("a", { href: `#/validator/${d.validator}`, class: "mono" }, short(d.validator, 12))),
    h("td", {}, ait(d.amount)), h("td", {}, ait(d.rewards)))), { class: "delegations" });
}

async function validatorPage(_ctx, [address]) {
  const v = await maybe("staking_getValidator", { address });
  if (!v) return notFound(`staked validator ${address}`);
  const dels = await call("staking_getDelegations", { validator: address });
  return h("div", {},
    section(`Validator ${v.moniker || ""}`, dl([
      ["Operator", addr(v.address, true), "address"], ["Consensus key", mono(v.consensus_key)], ["Status", badge(v.status), "status"],
      ["Power", String(v.power), "power"], ["Tokens", ait(v.tokens), "tokens"], ["Self bond", ait(v.self_bond), "self_bond"],
      ["Commission", `${(v.commission_bps / 100).toFixed(2)} %`], ["Rewards outstanding", ait(v.rewards_outstanding)],
      ["Jailed", v.jailed ? `until ${v.jailed_until}` : "no"], ["Tombstoned", v.tombstoned ? "yes" : "no"],
      ["Missed blocks", `${v.missed_blocks} of ${v.tracked_blocks} (window ${v.signed_blocks_window})`],
      ["Created at", blockLink(v.created_height)],
    ])),
    section("Delegations", delegationsTable(dels.delegations)));
}

// --------------------------------------------------------------------------------------------- market
function jobsTable(jobs) {
  return table(["Job", "Kind", "State", "Payment", "Client", "Miner", "Price / unit", "Units", "Submitted"], jobs.map((j) =>
    h("tr", { "data-job": j.job_id }, h("td", {}, jobLink(j.job_id)), h("td", {}, j.kind), h("td", {}, badge(j.state)),
      h("td", {}, j.payment), h("td", {}, addr(j.client)), h("td", {}, j.miner ? addr(j.miner) : "–"),
      h("td", {}, j.price !== null ? ait(j.price) : `≤ ${ait(j.max_price)}`), h("td", {}, String(j.max_units)),
      h("td", {}, blockLink(j.submitted_height)))), { class: "jobs" });
}

async function market(_ctx, _params, query) {
  const state = query.get("state");
  const params = { limit: 50 };
  if (state) params.state = state;
  if (query.get("cursor")) params.cursor = query.get("cursor");
  const [stats, list] = await batch([["market_stats", {}], ["market_listJobs", params]]);
  if (list instanceof Error) throw list;
  const tabs = h("div", { class: "chips" },
    h("a", { href: "#/market", class: state ? "chip" : "chip on" }, "ALL ", h("b", {}, stats instanceof Error ? "" : String(stats.jobs_total))),
    JOB_STATES.map((s) => h("a", { href: `#/market?state=${s}`, class: s === state ? "chip on" : "chip", "data-state": s },
      `${s} `, h("b", {}, stats instanceof Error ? "" : String(stats.jobs_by_state[s] ?? 0)))));
  const next = list.next_cursor
    ? h("a", { href: `#/market?${new URLSearchParams({ ...(state ? { state } : {}), cursor: list.next_cursor })}` }, "More →") : null;
  return section(state ? `Jobs: ${state}` : "Jobs", tabs, jobsTable(list.jobs), h("p", { class: "pager" }, next),
    h("p", { class: "muted" }, "In submission order."));
}

async function job(ctx, [id]) {
  const [j, chunks] = await batch([["market_getJob", { job_id: id }], ["market_getAvailableChunks", { job_id: id }]]);
  if (j instanceof RpcError && j.code === -32004) return notFound(`job ${id}`);
  if (j instanceof Error) throw j;
  const r = j.receipt;
  const total = (BigInt(j.max_price) * BigInt(j.max_units)).toString();
  if (j.state === "QUEUED" || j.state === "RUNNING" || j.payment === "escrowed") {
    ctx.onHead(throttle(async () => {
      const now = await call("market_getJob", { job_id: id });
      if (now.state !== j.state || now.payment !== j.payment || now.bids.length !== j.bids.length || now.receipt_height !== j.receipt_height
        || anonKey(now.anonymous) !== anonKey(j.anonymous)) render();
    }, 700));
  }
  const bids = j.bids.map((b) => h("tr", {}, h("td", {}, addr(b.miner)), h("td", {}, ait(b.price)), h("td", {}, blockLink(b.height)),
    h("td", {}, j.miner === b.miner ? badge("awarded", "ok") : "")));
  const chunkRows = chunks instanceof Error ? [] : chunks.chunks.map((c) => h("tr", {}, h("td", {}, String(c.index)),
    h("td", {}, txLink(c.tx_hash)), h("td", {}, blockLink(c.height))));
  return h("div", {},
    section("Job", dl([
      ["Job id", mono(j.job_id), "job_id"], ["State", badge(j.state), "state"], ["Kind", `${j.kind} v${j.version}`, "kind"],
      ["Client", addr(j.client, true), "client"], ["Submitted", h("span", {}, "block ", blockLink(j.submitted_height), " in tx ", txLink(j.job_id)), "submitted"],
      ["Max price", `${ait(j.max_price)} × ${j.max_units} units = ${ait(total)}`, "max_price"],
      ["Bid window", `${j.bid_window} blocks (closes at ${j.bid_close_height})`], ["Deadline", `${j.deadline} blocks after the award`],
      ["Params", json(j.params)], ["Input", j.input ? json(j.input) : "–"],
      ["Requirements", Object.keys(j.requirements || {}).length ? json(j.requirements) : "–"],
    ])),
    section(`Bids (${j.bids.length})`, table(["Miner", "Price / unit", "Height", ""], bids, { id: "job-bids" })),
    j.sealed ? sealedSection(j.sealed) : null,
    j.anonymous ? anonymousSection(j.anonymous) : null,
    j.attest ? attestSection(j.attest) : null,
    section("Award", j.miner ? dl([
      ["Miner", addr(j.miner, true), "miner"], ["Price / unit", ait(j.price), "price"], ["Awarded at", blockLink(j.award_height), "award_height"],
      ["Receipt due by", blockLink(j.deadline_height), "deadline_height"],
    ]) : h("p", { class: "muted", "data-field": "award" }, j.state === "QUEUED" ? `bidding until block ${j.bid_close_height}` : "no award")),
    section("Receipt", r ? dl([
      ["Receipt id", mono(r.receipt_id), "receipt_id"], ["Provider", addr(r.provider, true)], ["Units", `${r.units} ${r.unit_type}`, "units"],
      ["Unit price", ait(r.unit_price)], ["Price", ait(r.price), "receipt_price"], ["Result hash", mono(r.result_hash), "result_hash"],
      ["Result root", mono(r.result_root)], ["Result size", `${r.result_size} bytes`], ["Backend", `${r.backend} · ${r.device}`],
      ["Started / completed", `${time(r.started_at)} / ${time(r.completed_at)}`], ["At height", blockLink(j.receipt_height)],
      ["Signature", mono(`${r.signature.alg} by ${r.signature.key_id}: ${short(r.signature.sig, 18)}`)],
    ]) : h("p", { class: "muted", "data-field": "receipt" }, "no receipt yet")),
    section("Challenges", dl([
      ["Verification", j.verify ? json(j.verify) : "not requested (no challenge window)", "verify"],
      ["False challenges", String(j.false_challenges), "false_challenges"],
      ["Availability challenge", j.availability ? json(j.availability) : "none open", "availability"],
      ["Availability rounds", String(j.availability_rounds)],
      ["Rows published", chunkRows.length ? table(["Row", "Tx", "Height"], chunkRows) : "none"],
      ["Failure", j.failure || "–", "failure"],
    ])),
    section("Payment", dl([
      ["Payment", badge(j.payment), "payment"], ["Escrow held", ait(j.escrow), "escrow"], ["Paid to miner", ait(j.paid), "paid"],
      ["Refunded", ait(j.refunded), "refunded"], ["Released at", blockLink(j.release_height)], ["Settled at", blockLink(j.settle_height), "settle_height"],
    ])),
    h("details", { class: "card" }, h("summary", {}, "Raw JSON"), json(j)));
}

/** A sealed-bid job's auction (market_getJob `sealed`): commitments only, never a losing price. */
function sealedSection(sa) {
  const bids = (sa.bids || []).map((b) => h("tr", {}, h("td", {}, addr(b.miner)), h("td", { class: "mono" }, short(b.commitment)),
    h("td", {}, blockLink(b.height))));
  return section(`Sealed auction (${(sa.bids || []).length} sealed bids)`, dl([
    ["Winner", sa.winner ? addr(sa.winner, true) : "not decided", "sealed.winner"],
    ["Winning price tick", sa.winning_tick ?? "–"], ["Deposit", ait(sa.deposit)],
    ["Settle window", `${sa.settle_window} blocks${sa.settle_height ? ` (settles at ${sa.settle_height})` : ""}`],
    ["Faulty bidders", (sa.faulty || []).length ? (sa.faulty || []).map((a) => addr(a)) : "none"],
  ]), table(["Miner", "Commitment", "Height"], bids));
}

/** What the live refresh of an anonymous job compares: new bids, the next pending bid, the passed-over ones. */
function anonKey(an) {
  return an ? `${(an.bids || []).length}/${an.pending ?? "-"}/${(an.passed || []).length}` : "";
}

/** An anonymous-bid job's auction (market_getJob `anonymous`): prices and nullifiers, no bidder but the winner. */
function anonymousSection(an) {
  const all = an.bids || [];
  const passed = an.passed || [];
  const pending = an.pending ?? null;
  const ref = (i) => `bid #${i + 1} at ${ait(all[i]?.price)}`;
  const mark = (i) => (i === pending ? (an.winner ? badge("won", "ok") : badge("pending")) : passed.includes(i) ? badge("passed") : "");
  const bids = all.map((b, i) => h("tr", {}, h("td", {}, `#${i + 1}`), h("td", {}, ait(b.price)),
    h("td", { class: "mono", title: b.nullifier }, short(b.nullifier)), h("td", {}, blockLink(b.height)), h("td", {}, mark(i))));
  return section(`Anonymous auction (${all.length} anonymous bids)`, dl([
    ["Winner", an.winner ? addr(an.winner, true) : "not revealed", "anonymous.winner"],
    ["Pending bid", pending === null ? "none" : an.winner ? `${ref(pending)}, accepted`
      : `${ref(pending)}${an.accept_deadline !== null && an.accept_deadline !== undefined ? `, accept by block ${an.accept_deadline}` : ""}`,
    "anonymous.pending"],
    ["Passed over", passed.length ? passed.map(ref).join(" · ") : "none", "anonymous.passed"],
    ["Fee per bid", `${ait(an.bid_fee)} (at most ${an.max_bids} bids)`, "anonymous.bid_fee"],
    ["Fees paid", ait(an.fees_paid), "anonymous.fees_paid"], ["Min bond", ait(an.min_bond), "anonymous.min_bond"],
    ["Accept window", `${an.accept_window} blocks`],
  ]), table(["Bid", "Price / unit", "Nullifier", "Height", ""], bids, { id: "job-anon-bids" }));
}

/** An attestable job (market_getJob `attest`): its leaf in the receipt tree once paid, the owner commitment. */
function attestSection(at) {
  return section("Attestable receipt", dl([
    ["Leaf index", at.leaf_index !== null && at.leaf_index !== undefined ? String(at.leaf_index) : "not in the receipt tree yet",
      "attest.leaf_index"],
    ["Owner commitment", h("span", { class: "mono", title: at.owner }, short(at.owner)), "attest.owner"],
  ]));
}

function minerDl(m) {
  return dl([
    ["Address", addr(m.address, true), "address"], ["Status", badge(m.status), "status"], ["Bond", ait(m.bond), "bond"],
    ["Reputation", String(m.reputation), "reputation"],
    ["Prices", Object.entries(m.prices || {}).map(([k, p]) => `${k}: ${ait(p)}/unit`).join(" · ") || "–", "prices"],
    ["Backend", `${m.capabilities?.backend ?? "–"} · ${m.capabilities?.device ?? ""}`],
    ["Jobs", `${m.jobs_completed} completed, ${m.jobs_failed} failed, ${m.running_jobs} running`, "jobs"],
    ["Slashed", ait(m.slashed)], ["Registered at", blockLink(m.registered_height)],
  ]);
}

async function miners() {
  const list = await call("market_listMiners", { limit: 100 });
  const rows = list.miners.map((m) => h("tr", { "data-miner": m.address },
    h("td", {}, addr(m.address)), h("td", {}, badge(m.status)), h("td", { "data-field": "bond" }, ait(m.bond)),
    h("td", { "data-field": "reputation" }, String(m.reputation)),
    h("td", { "data-field": "prices" }, Object.entries(m.prices || {}).map(([k, p]) => h("div", {}, `${k}: ${ait(p)}`))),
    h("td", {}, `${m.capabilities?.backend ?? "–"}`), h("td", {}, `${m.jobs_completed} / ${m.jobs_failed}`), h("td", {}, ait(m.slashed))));
  return section("Miners", table(["Miner", "Status", "Bond", "Reputation", "Prices / unit", "Backend", "Done / failed", "Slashed"], rows, { id: "miners-table" }),
    list.next_cursor ? h("p", { class: "muted" }, "First 100 shown.") : null);
}

async function models() {
  const list = await call("market_listModels", { limit: 100 });
  const rows = list.models.map((m) => h("tr", { "data-model": m.model_id },
    h("td", {}, h("a", { href: `#/model/${m.model_id}` }, m.name)), h("td", {}, mono(short(m.model_id))), h("td", {}, m.format),
    h("td", {}, `${(m.size / 1048576).toFixed(2)} MiB`), h("td", {}, String(m.chunks)), h("td", {}, addr(m.owner)),
    h("td", {}, blockLink(m.height)), h("td", {}, ait(m.fee))));
  return section(`Models (${list.total})`, table(["Name", "Id", "Format", "Size", "Chunks", "Owner", "Height", "Fee"], rows, { id: "models-table" }));
}

async function model(_ctx, [id]) {
  const m = await maybe("market_getModel", { model: id });
  if (!m) return notFound(`model ${id}`);
  return h("div", {}, section(`Model ${m.name}`, dl([
    ["Id", mono(m.model_id), "model_id"], ["Name", m.name, "name"], ["Format", m.format], ["Owner", addr(m.owner, true)],
    ["Size", `${m.size} bytes in ${m.chunks} chunks of ${m.chunk_size}`], ["Root", mono(m.root)], ["Registered at", blockLink(m.height)],
    ["Fee", ait(m.fee)], ["Licence", m.licence || "–"], ["On this node", m.local ? (m.local.complete ? "complete" : `${m.local.chunks_present}/${m.local.chunks} chunks${m.local.pinned ? ", pinned" : ""}`) : "–"],
    ["Architecture", json(m.arch)],
  ])));
}

// --------------------------------------------------------------------------------------------- search
async function search(_ctx, [raw]) {
  const q = raw.trim();
  let target = null;
  if (/^\d+$/.test(q)) target = `#/block/${Number(q)}`;
  else if (isAddress(q.toLowerCase())) target = `#/account/${q.toLowerCase()}`;
  else if (isHash(q)) {
    const hash = q.toLowerCase();
    const [j, t, b, m] = await batch([["market_getJob", { job_id: hash }], ["chain_getTransaction", { hash }],
      ["chain_getBlock", { hash }], ["market_getModel", { model: hash }]]);
    if (!(j instanceof Error)) target = `#/job/${hash}`;
    else if (!(t instanceof Error)) target = `#/tx/${hash}`;
    else if (!(b instanceof Error)) target = `#/block/${b.height}`;
    else if (!(m instanceof Error)) target = `#/model/${hash}`;
  } else if (q && (await maybe("market_getModel", { model: q }).catch(() => null))) target = `#/model/${encodeURIComponent(q)}`;
  if (target) {
    location.replace(target);
    return null;
  }
  return h("section", { class: "card", id: "search-miss" }, h("h2", {}, "Nothing found"),
    h("p", {}, `No block, transaction, job, account or model matches “${q}”. Search takes a height, a block or transaction hash, a job id (0x…), an ait1… address or a model name.`));
}

function notFound(what) {
  return h("section", { class: "card", id: "not-found" }, h("h2", {}, "Not found"), h("p", {}, `This node does not know ${what}.`));
}

// --------------------------------------------------------------------------------------------- router
const ROUTES = [
  [/^$/, "overview", overview], [/^blocks$/, "blocks", blocks], [/^block\/([^/]+)$/, "block", block],
  [/^tx\/(0x[0-9a-fA-F]{64})$/, "tx", tx], [/^account\/([^/]+)$/, "account", account],
  [/^validators$/, "validators", validators], [/^validator\/([^/]+)$/, "validator", validatorPage],
  [/^market$/, "market", market], [/^job\/(0x[0-9a-fA-F]{64})$/, "job", job], [/^miners$/, "miners", miners],
  [/^models$/, "models", models], [/^model\/([^/]+)$/, "model", model], [/^search\/(.+)$/, "search", search],
];
const NAV = { overview: "overview", blocks: "blocks", block: "blocks", tx: "blocks", validators: "validators",
  validator: "validators", market: "market", job: "market", miners: "miners", models: "models", model: "models" };

async function render() {
  const seq = ++renderSeq;
  pageHandlers = [];
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, qs] = raw.split("?", 2);
  const query = new URLSearchParams(qs || "");
  let name = "missing";
  let page = null;
  let params = [];
  for (const [re, n, fn] of ROUTES) {
    const m = re.exec(path);
    if (m) {
      name = n;
      page = fn;
      params = m.slice(1);
      break;
    }
  }
  document.body.dataset.page = name;
  main.removeAttribute("data-ready");
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("on", a.dataset.nav === NAV[name]);
  const handlers = [];
  const ctx = { onHead: (fn) => handlers.push(fn) };
  let el;
  try {
    params = params.map(decodeURIComponent);
    el = page ? await page(ctx, params, query) : notFound(`the page “${path}”`);
  } catch (e) {
    el = h("section", { class: "card error", id: "error" }, h("h2", {}, "Error"), h("p", {}, e.message || String(e)));
  }
  if (seq !== renderSeq || el === null) return;
  pageHandlers = handlers;
  main.replaceChildren(el);
  main.dataset.ready = name;
  document.title = `aitbc · ${name}`;
}

document.getElementById("search").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("q");
  const q = input.value.trim();
  if (!q) return;
  input.blur();
  location.hash = `#/search/${encodeURIComponent(q)}`;
});
window.addEventListener("hashchange", render);
render();
live.start();
