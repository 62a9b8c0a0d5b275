// JSON-RPC over POST /rpc and newHeads notifications over the WebSocket /ws: the node's public API only.

export class RpcError extends Error {
  constructor(method, error) {
    super(`${method}: ${error.message} (${error.code})`);
    this.code = error.code;
    this.data = error.data;
  }
}

export const NOT_FOUND = -32004;
let nextId = 1;

async function post(body) {
  const resp = await fetch("/rpc", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
    cache: "no-store",
  });
  if (!resp.ok && resp.headers.get("content-type")?.startsWith("application/json") !== true) {
    throw new Error(`HTTP ${resp.status} from /rpc`);
  }
  return resp.json();
}

/** One call: its result, or a thrown RpcError. */
export async function call(method, params = {}) {
  const answer = await post({ jsonrpc: "2.0", id: nextId++, method, params });
  if (answer.error) throw new RpcError(method, answer.error);
  return answer.result;
}

/** One call; null when the node answers "not found" (-32004). */
export async function maybe(method, params = {}) {
  try {
    return await call(method, params);
  } catch (e) {
    if (e instanceof RpcError && e.code === NOT_FOUND) return null;
    throw e;
  }
}

/** A JSON-RPC batch: [[method, params], …] -> results in order (an error member becomes an RpcError). */
export async function batch(calls) {
  if (calls.length === 0) return [];
  const base = nextId;
  nextId += calls.length;
  const answer = await post(calls.map(([method, params], i) => ({ jsonrpc: "2.0", id: base + i, method, params })));
  if (!Array.isArray(answer)) throw new RpcError("batch", answer.error || { code: 0, message: "bad answer" });
  const byId = new Map(answer.map((a) => [a.id, a]));
  return calls.map(([method], i) => {
    const a = byId.get(base + i);
    return a && !a.error ? a.result : new RpcError(method, a ? a.error : { code: 0, message: "no answer" });
  });
}

/** newHeads over the WebSocket, reconnecting with a bounded backoff. */
export class Live {
  constructor() {
    this.listeners = new Set();
    this.status = new Set();
    this.ws = null;
    this.delay = 500;
    this.connected = false;
  }

  onHead(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  onStatus(fn) {
    this.status.add(fn);
  }

  setConnected(value) {
    this.connected = value;
    for (const fn of this.status) fn(value);
  }

  start() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(scheme + location.host + "/ws");
    this.ws = ws;
    ws.onopen = () => {
      this.delay = 500;
      ws.send(JSON.stringify({ jsonrpc: "2.0", id: 1, method: "subscribe", params: { topic: "newHeads" } }));
    };
    ws.onmessage = (event) => {
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch {
        return;
      }
      if (msg.id === 1 && msg.result) this.setConnected(true);
      if (msg.method === "subscription" && msg.params?.topic === "newHeads") {
        for (const fn of this.listeners) {
          try {
            fn(msg.params.result);
          } catch (e) {
            console.warn("newHeads listener failed", e);
          }
        }
      }
    };
    ws.onclose = () => {
      this.setConnected(false);
      this.ws = null;
      setTimeout(() => this.start(), this.delay);
      this.delay = Math.min(this.delay * 2, 15000);
    };
  }
}
