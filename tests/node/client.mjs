// A centrifuge-js client in Node for the tests (tests/sdk.py runs it).
//
// Usage: node tests/node/client.mjs CONFIG_JSON
//   CONFIG_JSON: {"url": "ws://HOST/connection/websocket",
//                 "token": "JWT",                 (optional) initial connection token
//                 "tokenUrl": "http://HOST/chat_token.py?user=ada",
//                                                 (optional) getToken fetches {"token": ...}
//                 "subscriptions": [{"channel": "news", "token": "JWT", "tokenUrl": "...",
//                                    "since": {}}],  (since: centrifuge-js's option)
//                 "frames": true,                 (optional) report every WebSocket frame
//                 "connect": true}                (default) connect at once
// Subscriptions listed in the config are created before connect(), so centrifuge-js
// sends them in the same frame as the connect command.
//
// Prints one JSON object a line on stdout: {"event": NAME, "t": ms since start, ...}.
// Reads commands from stdin, one JSON object a line: {"id": N, "op": OP, ...}, answered
// by {"event": "reply", "id": N, "ok": true, "result": ...} or "ok": false and "error".
// OPs: subscribe {channel, token?, tokenUrl?}, unsubscribe {channel}, publish {channel,
// data}, rpc {method, data}, connect, disconnect, exit. End of stdin exits too.
import { createInterface } from "node:readline";
import { Centrifuge, UnauthorizedError } from "centrifuge";
import WebSocket from "ws";

const config = JSON.parse(process.argv[2] ?? "{}");
const started = performance.now();

function emit(event, fields = {}) {
  const t = Math.round(performance.now() - started);
  process.stdout.write(JSON.stringify({ event, t, ...fields }) + "\n");
}

function describe(error) {
  if (error === null || error === undefined) return null;
  return { code: error.code ?? null, message: String(error.message ?? error), temporary: error.temporary ?? false };
}

async function fetchToken(url, kind, channel) {
  emit("get_token", { kind, channel: channel ?? null });
  const response = await fetch(url);
  if (response.status === 401 || response.status === 403) throw new UnauthorizedError(`${response.status}`);
  if (!response.ok) throw new Error(`token endpoint answered ${response.status}`);
  const { token } = await response.json();
  emit("got_token", { kind, channel: channel ?? null });
  return token;
}

class ReportingWebSocket extends WebSocket {
  constructor(...args) {
    super(...args);
    this.on("message", (data) => emit("frame_in", { data: data.toString() }));
    this.on("close", (code, reason) => emit("transport_closed", { code, reason: reason.toString() }));
  }

  send(data, ...rest) {
    emit("frame_out", { data: String(data) });
    return super.send(data, ...rest);
  }
}

const options = {
  name: "node-harness",
  websocket: config.frames ? ReportingWebSocket : WebSocket,
  minReconnectDelay: 100,
  maxReconnectDelay: 2000,
};
if (config.token) options.token = config.token;
if (config.tokenUrl) options.getToken = () => fetchToken(config.tokenUrl, "connection");

const client = new Centrifuge(config.url, options);
client.on("connecting", (ctx) => emit("connecting", { code: ctx.code, reason: ctx.reason }));
client.on("connected", (ctx) => emit("connected", { client: ctx.client, data: ctx.data ?? null }));
client.on("disconnected", (ctx) => emit("disconnected", { code: ctx.code, reason: ctx.reason }));
client.on("error", (ctx) => emit("error", { type: ctx.type, error: describe(ctx.error) }));
// Server-side subscriptions (a connection token's channels).
client.on("subscribed", (ctx) => emit("server_subscribed", { channel: ctx.channel }));
client.on("publication", (ctx) =>
  emit("server_publication", { channel: ctx.channel, data: ctx.data ?? null, info: ctx.info ?? null }),
);

function subscribe({ channel, token, tokenUrl, since }) {
  const subOptions = {};
  if (token) subOptions.token = token;
  if (since) subOptions.since = since; // {} asks a cache-mode channel for its latest
  if (tokenUrl) subOptions.getToken = () => fetchToken(tokenUrl, "subscription", channel);
  const sub = client.newSubscription(channel, subOptions);
  sub.on("subscribing", (ctx) => emit("subscribing", { channel, code: ctx.code, reason: ctx.reason }));
  sub.on("subscribed", (ctx) =>
    emit("subscribed", { channel, wasRecovering: ctx.wasRecovering, recovered: ctx.recovered }),
  );
  sub.on("unsubscribed", (ctx) => emit("unsubscribed", { channel, code: ctx.code, reason: ctx.reason }));
  sub.on("error", (ctx) => emit("sub_error", { channel, type: ctx.type, error: describe(ctx.error) }));
  sub.on("publication", (ctx) =>
    emit("publication", { channel, data: ctx.data ?? null, info: ctx.info ?? null, offset: ctx.offset ?? null }),
  );
  sub.subscribe();
  return sub;
}

for (const spec of config.subscriptions ?? []) subscribe(spec);
if (config.connect !== false) client.connect();

async function run(command) {
  switch (command.op) {
    case "subscribe":
      subscribe(command);
      return null;
    case "unsubscribe": {
      const sub = client.getSubscription(command.channel);
      if (sub) {
        sub.unsubscribe();
        client.removeSubscription(sub);
      }
      return null;
    }
    case "publish": {
      const sub = client.getSubscription(command.channel);
      return sub ? await sub.publish(command.data) : await client.publish(command.channel, command.data);
    }
    case "rpc":
      return await client.rpc(command.method, command.data ?? null);
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
  // Let the close frame go out.
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
