// pusher-js 8.6 (and, with "echo": true, Laravel Echo 2.5 over it) in Node for the tests
// (tests/e2e/test_pusher_js.py, test_pusher_echo.py), unchanged from npm.
//
// Usage: node tests/node/pusher_client.mjs CONFIG_JSON
//   CONFIG_JSON: {"key": "app-key", "wsHost": "127.0.0.1", "wsPort": 8000,
//                 "authEndpoint": "http://HOST/node_auth.py?user=ada",  (optional)
//                 "echo": false,                  (optional) Laravel Echo over pusher-js
//                 "subscriptions": ["news"]}      (optional) subscribed at once
//
// The line protocol of client.mjs (tests/sdk.py's NodeClient reads it): events out as
// {"event": NAME, "t": ms, ...}, commands in as {"id": N, "op": OP, ...} answered by
// {"event": "reply", "id": N, "ok": ..., "result"/"error": ...}.
//
// Events: state {previous, current}, connected {socket_id}, connection_error {error},
// subscribed {channel, members: {count, me, ids} | null}, subscription_error {channel,
// status, error}, message {channel, name, data} (every event on a channel that is not
// pusher:/pusher_internal:, from bind_global), bound {channel, name, data, user_id}
// (from a bind op's callback, which gets the metadata), member_added / member_removed
// {channel, id, info}, user_event {name, data} (a signed-in user's, see user_bind); with Echo: echo_event {channel, kind, name, data}, echo_whisper
// {channel, kind, name, data}, echo_subscribed {channel, kind}, echo_error {channel,
// kind, error}, here {channel, members}, joining / leaving {channel, member}.
// OPs: subscribe {channel}, bind {channel, event}, unsubscribe {channel}, trigger
// {channel, event, data}, members {channel}, signin (answers the user_data), user_bind
// {event}, state, disconnect, connect, exit; with
// Echo: echo_listen {kind: "channel" | "private" | "join", name, event},
// echo_whisper_listen {kind, name, event}, echo_whisper {kind, name, event, data},
// echo_leave {name}.
import { createInterface } from "node:readline";
import Pusher from "pusher-js";
import Echo from "laravel-echo";

const config = JSON.parse(process.argv[2] ?? "{}");
const started = performance.now();

function emit(event, fields = {}) {
  const t = Math.round(performance.now() - started);
  process.stdout.write(JSON.stringify({ event, t, ...fields }) + "\n");
}

function describe(error) {
  if (error === null || error === undefined) return null;
  if (typeof error !== "object") return String(error);
  if (error instanceof Error) return { name: error.name, message: error.message };
  try {
    return JSON.parse(JSON.stringify(error));
  } catch {
    return String(error);
  }
}

const options = {
  wsHost: config.wsHost ?? "127.0.0.1",
  wsPort: config.wsPort,
  forceTLS: false,
  enabledTransports: ["ws"],
  disableStats: true,
  cluster: "mt1",
};
if (config.authEndpoint) {
  options.channelAuthorization = { endpoint: config.authEndpoint, transport: "ajax" };
  // Echo reads its own authEndpoint option (and passes it on).
  options.authEndpoint = config.authEndpoint;
  // pusher:signin's endpoint: the same script (it tells them apart by channel_name).
  options.userAuthentication = { endpoint: config.authEndpoint, transport: "ajax" };
}

let echo = null;
let pusher;
if (config.echo) {
  echo = new Echo({ broadcaster: "pusher", key: config.key, Pusher, ...options });
  pusher = echo.connector.pusher;
} else {
  pusher = new Pusher(config.key, options);
}

pusher.connection.bind("state_change", (states) => emit("state", states));
pusher.connection.bind("connected", () => emit("connected", { socket_id: pusher.connection.socket_id }));
pusher.connection.bind("error", (error) => emit("connection_error", { error: describe(error) }));

function membersOf(channel) {
  const members = channel.members;
  if (!members || !channel.name.startsWith("presence-")) return null;
  const ids = [];
  members.each((member) => ids.push(member.id));
  return { count: members.count, me: members.me, ids: ids.sort() };
}

function subscribe(name) {
  const channel = pusher.subscribe(name);
  channel.bind("pusher:subscription_succeeded", () =>
    emit("subscribed", { channel: name, members: membersOf(channel) }),
  );
  channel.bind("pusher:subscription_error", (error) =>
    emit("subscription_error", { channel: name, status: error?.status ?? null, error: describe(error) }),
  );
  channel.bind("pusher:member_added", (member) =>
    emit("member_added", { channel: name, id: member.id, info: member.info ?? null }),
  );
  channel.bind("pusher:member_removed", (member) =>
    emit("member_removed", { channel: name, id: member.id, info: member.info ?? null }),
  );
  channel.bind_global((event, data, metadata) => {
    if (event.startsWith("pusher:") || event.startsWith("pusher_internal:")) return;
    emit("message", { channel: name, name: event, data });
  });
  return channel;
}

for (const name of config.subscriptions ?? []) subscribe(name);

function echoChannel(kind, name) {
  if (kind === "channel") return echo.channel(name);
  if (kind === "private") return echo.private(name);
  if (kind === "join") {
    const joined = echo.join(name);
    if (!joined._reporting) {
      joined._reporting = true;
      joined.here((members) => emit("here", { channel: name, members }));
      joined.joining((member) => emit("joining", { channel: name, member }));
      joined.leaving((member) => emit("leaving", { channel: name, member }));
    }
    return joined;
  }
  throw new Error(`unknown Echo channel kind ${kind}`);
}

function echoReported(kind, name) {
  const channel = echoChannel(kind, name);
  if (!channel._subscribedReported) {
    channel._subscribedReported = true;
    channel.subscribed(() => emit("echo_subscribed", { channel: name, kind }));
    channel.error((error) => emit("echo_error", { channel: name, kind, error: describe(error) }));
  }
  return channel;
}

async function run(command) {
  switch (command.op) {
    case "subscribe":
      subscribe(command.channel);
      return null;
    case "bind": {
      // A callback of its own event gets the metadata (user_id) bind_global's does not.
      const channel = pusher.channel(command.channel);
      if (!channel) throw new Error(`not subscribed to ${command.channel}`);
      channel.bind(command.event, (data, metadata) =>
        emit("bound", { channel: command.channel, name: command.event, data, user_id: metadata?.user_id ?? null }),
      );
      return null;
    }
    case "signin":
      pusher.signin();
      await pusher.user.signinDonePromise;
      return pusher.user.user_data;
    case "user_bind":
      pusher.user.bind(command.event, (data) => emit("user_event", { name: command.event, data }));
      return null;
    case "unsubscribe":
      pusher.unsubscribe(command.channel);
      return null;
    case "trigger": {
      const channel = pusher.channel(command.channel);
      if (!channel) throw new Error(`not subscribed to ${command.channel}`);
      return channel.trigger(command.event, command.data ?? {});
    }
    case "members": {
      const channel = pusher.channel(command.channel);
      return channel ? membersOf(channel) : null;
    }
    case "state":
      return { state: pusher.connection.state, socket_id: pusher.connection.socket_id ?? null };
    case "disconnect":
      pusher.disconnect();
      return null;
    case "connect":
      pusher.connect();
      return null;
    case "echo_listen":
      echoReported(command.kind, command.name).listen(command.event, (data) =>
        emit("echo_event", { channel: command.name, kind: command.kind, name: command.event, data }),
      );
      return null;
    case "echo_whisper_listen":
      echoReported(command.kind, command.name).listenForWhisper(command.event, (data) =>
        emit("echo_whisper", { channel: command.name, kind: command.kind, name: command.event, data }),
      );
      return null;
    case "echo_whisper":
      echoReported(command.kind, command.name).whisper(command.event, command.data ?? {});
      return null;
    case "echo_leave":
      echo.leave(command.name);
      return null;
    case "exit":
      pusher.disconnect();
      setTimeout(() => process.exit(0), 50);
      return null;
    default:
      throw new Error(`unknown op ${command.op}`);
  }
}

const lines = createInterface({ input: process.stdin });
lines.on("line", async (line) => {
  if (!line.trim()) return;
  const command = JSON.parse(line);
  try {
    const result = await run(command);
    emit("reply", { id: command.id, ok: true, result: result ?? null });
  } catch (error) {
    emit("reply", { id: command.id, ok: false, error: describe(error) });
  }
});
lines.on("close", () => {
  pusher.disconnect();
  setTimeout(() => process.exit(0), 50);
});
