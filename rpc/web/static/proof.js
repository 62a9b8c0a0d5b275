// In-browser check of a state_getAccount proof against the state root, with WebCrypto SHA-256.
//
// The state tree (state/smt.py): key = SHA-256("acct/" || public key); value hash = SHA-256(value), the
// value being the account's canonical CBOR [balance, nonce]; leaf = SHA-256(0x00 || key || value_hash);
// internal = SHA-256(0x01 || left || right); empty = 32 zero bytes; siblings run from depth 0 down, and
// bit d of the key (MSB first) says whether the path goes right at depth d.

const CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";
const BECH32M = 0x2bc830a3;
const GEN = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3];

function polymod(values) {
  let chk = 1;
  for (const v of values) {
    const b = chk >>> 25;
    chk = (((chk & 0x1ffffff) << 5) ^ v) >>> 0;
    for (let i = 0; i < 5; i++) if ((b >>> i) & 1) chk = (chk ^ GEN[i]) >>> 0;
  }
  return chk;
}

/** The 32-byte public key of an ait1… address (bech32m, BIP-350); throws on a bad address. */
export function decodeAddress(address) {
  const a = address.toLowerCase();
  const pos = a.lastIndexOf("1");
  const hrp = a.slice(0, pos);
  if (hrp !== "ait") throw new Error("not an ait1… address");
  const data = [];
  for (const c of a.slice(pos + 1)) {
    const v = CHARSET.indexOf(c);
    if (v < 0) throw new Error("bad address character");
    data.push(v);
  }
  const expand = [...hrp].map((c) => c.charCodeAt(0) >> 5).concat([0], [...hrp].map((c) => c.charCodeAt(0) & 31));
  if (data.length < 6 || polymod(expand.concat(data)) !== BECH32M) throw new Error("bad address checksum");
  let acc = 0;
  let bits = 0;
  const out = [];
  for (const v of data.slice(0, -6)) {
    acc = ((acc << 5) | v) & 0xfff;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out.push((acc >> bits) & 0xff);
    }
  }
  if (bits >= 5 || ((acc << (8 - bits)) & 0xff)) throw new Error("bad address padding");
  if (out.length !== 32) throw new Error("address does not hold a 32-byte key");
  return new Uint8Array(out);
}

export function fromHex(hex) {
  if (typeof hex !== "string" || !/^0x([0-9a-fA-F]{2})*$/.test(hex)) throw new Error(`not 0x-hex: ${hex}`);
  const out = new Uint8Array((hex.length - 2) / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 + 2 * i, 4 + 2 * i), 16);
  return out;
}

export function toHex(bytes) {
  return "0x" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let i = 0;
  for (const p of parts) {
    out.set(p, i);
    i += p.length;
  }
  return out;
}

async function sha256(...parts) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", concat(...parts)));
}

function equal(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Canonical CBOR [uint, uint] (an account) -> [BigInt balance, BigInt nonce]; throws otherwise. */
export function decodeAccount(bytes) {
  if (bytes[0] !== 0x82) throw new Error("account value is not a CBOR array of 2");
  let i = 1;
  const uint = () => {
    const ib = bytes[i++];
    if (ib === undefined || ib >> 5 !== 0) throw new Error("account field is not an unsigned integer");
    const info = ib & 31;
    if (info < 24) return BigInt(info);
    const len = { 24: 1, 25: 2, 26: 4, 27: 8 }[info];
    if (!len || i + len > bytes.length) throw new Error("bad CBOR integer");
    let v = 0n;
    for (let k = 0; k < len; k++) v = (v << 8n) | BigInt(bytes[i++]);
    const min = { 1: 24n, 2: 256n, 4: 65536n, 8: 4294967296n }[len];
    if (v < min) throw new Error("non-canonical CBOR integer");
    return v;
  };
  const balance = uint();
  const nonce = uint();
  if (i !== bytes.length) throw new Error("trailing bytes after the account");
  return [balance, nonce];
}

export const webCryptoAvailable = () => typeof crypto !== "undefined" && !!crypto.subtle;

/**
 * Check `account` (a state_getAccount result with `proof`) for `address`. Returns {ok, steps, root}:
 * `steps` lists each check made with its outcome; `ok` is true only if all passed (the caller still has
 * to compare `root` with a block header's state_root).
 */
export async function verifyAccountProof(address, account) {
  const steps = [];
  const check = (label, ok) => {
    steps.push([label, !!ok]);
    return !!ok;
  };
  const p = account.proof;
  const pubkey = decodeAddress(address);
  const key = await sha256(new TextEncoder().encode("acct/"), pubkey);
  if (!check('key = SHA-256("acct/" ‖ public key of the address)', equal(key, fromHex(p.key)))) {
    return { ok: false, steps, root: p.state_root };
  }
  const siblings = p.siblings.map(fromHex);
  const zero = new Uint8Array(32);
  let node;
  if (p.value !== null) {
    const value = fromHex(p.value);
    const [balance, nonce] = decodeAccount(value);
    check("value decodes to [balance, nonce] shown", balance === BigInt(account.balance) && nonce === BigInt(account.nonce));
    const valueHash = await sha256(value);
    check("leaf key = key and leaf value hash = SHA-256(value)",
      p.leaf_key !== null && equal(fromHex(p.leaf_key), key) && equal(fromHex(p.leaf_value_hash), valueHash));
    node = await sha256(Uint8Array.of(0), key, valueHash);
  } else if (p.leaf_key === null) {
    check("absent: the path ends at an empty position", true);
    node = zero;
  } else {
    const other = fromHex(p.leaf_key);
    let shares = !equal(other, key);
    for (let d = 0; d < siblings.length && shares; d++) {
      if (((other[d >> 3] >> (7 - (d & 7))) & 1) !== ((key[d >> 3] >> (7 - (d & 7))) & 1)) shares = false;
    }
    check("absent: the path ends at another key's leaf on the same path", shares);
    node = await sha256(Uint8Array.of(0), other, fromHex(p.leaf_value_hash));
  }
  check("path is canonical (last sibling not empty)", siblings.length === 0 || !equal(siblings[siblings.length - 1], zero));
  for (let d = siblings.length - 1; d >= 0; d--) {
    const right = (key[d >> 3] >> (7 - (d & 7))) & 1;
    node = right ? await sha256(Uint8Array.of(1), siblings[d], node) : await sha256(Uint8Array.of(1), node, siblings[d]);
  }
  check(`root recomputed from ${siblings.length} siblings = proof's state_root`, equal(node, fromHex(p.state_root)));
  return { ok: steps.every(([, ok]) => ok), steps, root: p.state_root, computed: toHex(node) };
}
