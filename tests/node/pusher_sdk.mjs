// The `pusher` server SDK for Node (npm 5.3), unchanged, calling the HTTP API for the
// tests (tests/e2e/test_pusher_js.py).
//
// Usage: node tests/node/pusher_sdk.mjs CONFIG_JSON
//   CONFIG_JSON: {"appId": "1", "key": "app-key", "secret": "...",
//                 "host": "127.0.0.1", "port": 8000,
//                 "clockSkew": 0,          (optional) seconds the SDK's clock is behind
//                 "encryptionMasterKeyBase64": "...",  (optional) for private-encrypted-
//                 "ops": [{"op": "trigger", "channels": ["news"], "event": "e",
//                          "data": {...}, "params": {"socket_id": "1.2"}},
//                         {"op": "triggerBatch", "batch": [{channel, name, data}]},
//                         {"op": "get", "path": "/channels", "params": {...}},
//                         {"op": "sendToUser", "userId": "ada", "event": "e", "data": {}},
//                         {"op": "terminate", "userId": "ada"}]}
//
// Prints one JSON line per op, in order: {"op", "ok", "status", "body"} (body parsed
// as JSON when it is JSON).
import Pusher from "pusher";

const config = JSON.parse(process.argv[2] ?? "{}");
if (config.clockSkew) {
  const now = Date.now.bind(Date);
  Date.now = () => now() - config.clockSkew * 1000;
}

const pusher = new Pusher({
  appId: String(config.appId),
  key: config.key,
  secret: config.secret,
  host: config.host ?? "127.0.0.1",
  port: config.port,
  useTLS: false,
  timeout: 5000,
  ...(config.encryptionMasterKeyBase64
    ? { encryptionMasterKeyBase64: config.encryptionMasterKeyBase64 }
    : {}),
});

function parsed(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

async function call(op) {
  switch (op.op) {
    case "trigger":
      return pusher.trigger(op.channels, op.event, op.data, op.params ?? {});
    case "triggerBatch":
      return pusher.triggerBatch(op.batch);
    case "get":
      return pusher.get({ path: op.path, params: op.params ?? {} });
    case "sendToUser":
      return pusher.sendToUser(op.userId, op.event, op.data);
    case "terminate":
      return pusher.terminateUserConnections(op.userId);
    default:
      throw new Error(`unknown op ${op.op}`);
  }
}

for (const op of config.ops ?? []) {
  try {
    const response = await call(op);
    const body = await response.text();
    process.stdout.write(JSON.stringify({ op: op.op, ok: true, status: response.status, body: parsed(body) }) + "\n");
  } catch (error) {
    const status = error?.status ?? null;
    const body = error?.body === undefined ? String(error?.message ?? error) : parsed(error.body);
    process.stdout.write(JSON.stringify({ op: op.op, ok: false, status, body }) + "\n");
  }
}
