// A Mercure subscriber with Node's `eventsource` package v3 (npm alias `eventsource3`),
// as a JavaScript app uses it: node tests/node/mercure_eventsource.mjs URL [TYPE...]
// URL is the hub's /.well-known/mercure?topic=... (a subscriber JWT in its
// `authorization` query parameter, if any). Prints one JSON object a line on stdout:
// {"open":true} at each (re)connection, {"error":"..."} at each error, and for every
// event of type "message" or one of the TYPEs {"type", "id", "data"}. The package
// reconnects by itself, sending the last event's id as Last-Event-ID. Exits when
// stdin closes.
import { EventSource } from 'eventsource3';

const [url, ...types] = process.argv.slice(2);
const source = new EventSource(url);
const print = (value) => process.stdout.write(`${JSON.stringify(value)}\n`);
source.onopen = () => print({ open: true });
source.onerror = (event) => print({ error: event.message ?? `readyState ${source.readyState}` });
for (const type of ['message', ...types]) {
  source.addEventListener(type, (event) =>
    print({ type: event.type, id: event.lastEventId, data: event.data }),
  );
}
process.stdin.resume();
process.stdin.on('end', () => {
  source.close();
  process.exit(0);
});
