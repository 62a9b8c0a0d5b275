// Formatting and DOM helpers. Text from the node is only ever set as textContent (no innerHTML).

export const AIT = 1000000n;

/** Base units (decimal string or integer) -> "12.5 AIT", like the CLI's format_ait (up to 6 decimals). */
export function ait(base, unit = true) {
  if (base === null || base === undefined || base === "") return "–";
  let v;
  try {
    v = BigInt(base);
  } catch {
    return String(base);
  }
  const neg = v < 0n;
  if (neg) v = -v;
  const whole = v / AIT;
  const frac = v % AIT;
  let text = whole.toLocaleString("en-US");
  if (frac) text += "." + frac.toString().padStart(6, "0").replace(/0+$/, "");
  return (neg ? "-" : "") + text + (unit ? " AIT" : "");
}

/** The plain AIT decimal (no grouping, no unit): what the CLI's *_ait JSON fields hold. */
export function aitPlain(base) {
  const v = BigInt(base);
  const whole = v / AIT;
  const frac = v % AIT;
  return frac ? `${whole}.${frac.toString().padStart(6, "0").replace(/0+$/, "")}` : `${whole}`;
}

export function short(hex, n = 10) {
  if (typeof hex !== "string") return String(hex);
  return hex.length > n + 8 ? `${hex.slice(0, n)}…${hex.slice(-6)}` : hex;
}

export function time(ms) {
  if (!ms) return "–";
  const d = new Date(Number(ms));
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

export function ago(ms) {
  const s = Math.max(0, (Date.now() - Number(ms)) / 1000);
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

/** h("a", {href: "#/x", class: "c"}, "text", child…): an element; strings become text nodes. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

const ADDRESS = /^ait1[02-9ac-hj-np-z]{20,100}$/;
const HASH = /^0x[0-9a-fA-F]{64}$/;

export function isAddress(s) {
  return typeof s === "string" && ADDRESS.test(s);
}

export function isHash(s) {
  return typeof s === "string" && HASH.test(s);
}

export function addr(a, full = false) {
  if (!a) return "–";
  return h("a", { href: `#/account/${a}`, class: "mono", title: a }, full ? a : short(a, 12));
}

export function blockLink(height) {
  if (height === null || height === undefined) return "–";
  return h("a", { href: `#/block/${height}` }, String(height));
}

export function txLink(hash, full = false) {
  return h("a", { href: `#/tx/${hash}`, class: "mono", title: hash }, full ? hash : short(hash));
}

export function jobLink(id, full = false) {
  return h("a", { href: `#/job/${id}`, class: "mono", title: id }, full ? id : short(id));
}

/** A value cell: addresses and hashes stay whole (they wrap), everything else as text. */
export function mono(text) {
  return h("span", { class: "mono" }, text ?? "–");
}

/** <dl> of [label, value, field] rows; `field` becomes data-field for tests and styling. */
export function dl(rows) {
  return h("dl", { class: "kv" }, rows.filter(Boolean).map(([label, value, field]) => [
    h("dt", {}, label),
    h("dd", { "data-field": field || null }, value ?? "–"),
  ]));
}

/** A table: head labels and rows of cells; wrapped so that a wide table scrolls inside the page. */
export function table(head, rows, attrs = {}) {
  return h("div", { class: "scroll" }, h("table", attrs,
    h("thead", {}, h("tr", {}, head.map((x) => h("th", {}, x)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: head.length, class: "muted" }, "none")))));
}

export function badge(text, kind = "") {
  return h("span", { class: `badge ${kind || String(text).toLowerCase()}` }, text);
}
