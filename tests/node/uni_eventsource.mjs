// A one-way SSE reader with Node's `eventsource` package (v5), no Centrifuge SDK:
// node tests/node/uni_eventsource.mjs URL [COOKIE]
// Prints each event's data (one JSON push a line) on stdout; "open" and "error: ..."
// lines say how the connection goes. It stops reconnecting after a disconnect push,
// as a one-way client should, and exits when stdin closes.
import { EventSource } from 'eventsource';

const [url, cookie] = process.argv.slice(2);
const options = cookie
  ? { fetch: (input, init) => fetch(input, { ...init, headers: { ...init.headers, Cookie: cookie } }) }
  : {};
const source = new EventSource(url, options);
source.onopen = () => console.log('open');
source.onmessage = (event) => {
  console.log(event.data);
  if (JSON.parse(event.data).disconnect) source.close();
};
source.onerror = (event) => console.log(`error: ${event.message ?? 'closed'}`);
process.stdin.resume();
process.stdin.on('end', () => {
  source.close();
  process.exit(0);
});
