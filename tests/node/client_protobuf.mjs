// centrifuge-js's protobuf build in Node for the tests (tests/e2e/test_centrifuge_protobuf_js.py).
//
// Usage: node tests/node/client_protobuf.mjs CONFIG_JSON
//   CONFIG_JSON: {"url": "ws://HOST/connection/websocket",
//                 "token": "JWT",                 (optional) initial connection token
//                 "tokenUrl": "http://HOST/token.py?user=ada",
//                                                 (optional) getToken fetches {"token": ...}
//                 "subscriptions": [{"channel": "chat:a"}],
//                 "connect": true}                (default) connect at once
//
// The same line protocol as client.mjs (tests/sdk.py's NodeClient reads it): events out
// as {"event": NAME, "t": ms, ...}, commands in as {"id": N, "op": OP, ...} answered by
// {"event": "reply", "id": N, "ok": ..., "result"/"error": ...}. Payloads are bytes in
// this build: shown as {"json": VALUE} when they hold JSON, else {"base64": "..."}; a
// command's "data" is sent as its JSON text, "base64" as those bytes.
// OPs: subscribe {channel}, publish {channel, data | base64}, rpc {method, data},
// presence {channel}, presence_stats {channel}, history {channel, limit}, connect,
// disconnect, exit.
import { createInterface } from "node:readline";
import { Centrifuge } from "centrifuge/build/protobuf";
import WebSocket from "ws";

const config = JSON.parse(process.argv[2] ?? "{}");
const started = performance.now();
const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

function emit(event, fields = {}) {
  const t = Math.round(performance.now() - started);
  process.stdout.write(JSON.stringify({ event, t, ...fields }) + "\n");
}

function describe(error) {
  if (error === null || error === undefined) return null;
  return { code: error.code ?? null, message: String(error.message ?? error), temporary: error.temporary ?? false };
}

function shown(bytes) {
  if (bytes === null || bytes === undefined) return null;
  const array = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  try {
    return { json: JSON.parse(decoder.decode(array)) };
  } catch {
    return { base64: Buffer.from(array).toString("base64") };
  }
}

// uint64 fields come as protobufjs Long-like objects ({low, high, unsigned}) here.
function num(value) {
  if (value === null || value === undefined) return null;
  if (typeof value === "object" && "low" in value) return (value.high >>> 0) * 4294967296 + (value.low >>> 0);
  return Number(value);
}

function info(clientInfo) {
  if (!clientInfo) return null;
  return { user: clientInfo.user, client: clientInfo.client, connInfo: shown(clientInfo.connInfo) };
}

function payload(command) {
  if (command.base64 !== undefined) return new Uint8Array(Buffer.from(command.base64, "base64"));
  return encoder.encode(JSON.stringify(command.data ?? null));
}

class ReportingWebSocket extends WebSocket {
  constructor(...args) {
    super(...args);
    this.on("open", () => emit("transport_open", { protocol: this.protocol }));
    this.on("close", (code, reason) => emit("transport_closed", { code, reason: reason.toString() }));
  }
}

async function fetchToken(url) {
  emit("get_token");
  const response = await fetch(url);
  if (!response.ok) throw new Error(`token endpoint answered ${response.status}`);
  const { token } = await response.json();
  return token;
}

const options = { name: "node-protobuf", websocket: ReportingWebSocket, minReconnectDelay: 100, maxReconnectDelay: 2000 };
if (config.token) options.token = config.token;
if (config.tokenUrl) options.getToken = () => fetchToken(config.tokenUrl);

const client = new Centrifuge(config.url, options);
client.on("connected", (ctx) => emit("connected", { client: ctx.client, transport: ctx.transport }));
client.on("disconnected", (ctx) => emit("disconnected", { code: ctx.code, reason: ctx.reason }));
client.on("error", (ctx) => emit("error", { type: ctx.type, error: describe(ctx.error) }));

function subscribe({ channel }) {
  const sub = client.newSubscription(channel);
  sub.on("subscribed", (ctx) =>
    emit("subscribed", { channel, wasRecovering: ctx.wasRecovering, recovered: ctx.recovered }),
  );
  sub.on("unsubscribed", (ctx) => emit("unsubscribed", { channel, code: ctx.code, reason: ctx.reason }));
  sub.on("error", (ctx) => emit("sub_error", { channel, type: ctx.type, error: describe(ctx.error) }));
  sub.on("publication", (ctx) =>
    emit("publication", { channel, data: shown(ctx.data), info: info(ctx.info), offset: num(ctx.offset) }),
  );
  sub.subscribe();
  return sub;
}

for (const spec of config.subscriptions ?? []) subscribe(spec);
if (config.connect !== false) client.connect();

async function run(command) {
  const sub = command.channel ? client.getSubscription(command.channel) : null;
  switch (command.op) {
    case "subscribe":
      subscribe(command);
      return null;
    case "publish":
      await sub.publish(payload(command));
      return null;
    case "rpc": {
      const result = await client.rpc(command.method, payload(command));
      return { data: shown(result.data) };
    }
    case "presence": {
      const result = await sub.presence();
      return Object.fromEntries(Object.entries(result.clients).map(([id, member]) => [id, info(member)]));
    }
    case "presence_stats":
      return await sub.presenceStats();
    case "history": {
      const result = await sub.history({ limit: command.limit ?? 10 });
      return {
        epoch: result.epoch,
        offset: num(result.offset),
        publications: result.publications.map((pub) => ({ data: shown(pub.data), offset: num(pub.offset), info: info(pub.info) })),
      };
    }
    case "connect":
      client.connect();
      return null;
    case "disconnect":
      client.disconnect();
      return null;
    case "exit":
      finish();
      return null;
    default:
      throw new Error(`unknown op ${command.op}`);
  }
}

function finish() {
  client.disconnect();
  emit("exit");
  setTimeout(() => process.exit(0), 50);
}

const input = createInterface({ input: process.stdin });
input.on("line", async (line) => {
  if (!line.trim()) return;
  let command;
  try {
    command = JSON.parse(line);
  } catch (error) {
    emit("bad_command", { line, error: String(error) });
    return;
  }
  try {
    const result = await run(command);
    emit("reply", { id: command.id ?? null, ok: true, result: result ?? null });
  } catch (error) {
    emit("reply", { id: command.id ?? null, ok: false, error: describe(error) });
  }
});
input.on("close", finish);
