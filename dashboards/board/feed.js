// The live feed (WebSocket /api/board/feed): a snapshot, then numbered messages. A gap in
// the numbers or a lost connection starts again from a new snapshot, with a backoff; the
// server closing it because the sign-in ended stops it for good. What a message means is
// the caller's business (board.js): this module only hands messages on, in order.

const FEED_PATH = "/api/board/feed";
// The server closes the feed with this code when the sign-in has ended (the reason says why).
const SIGNED_OUT_CODE = 4401;
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 5000;

let socket = null;
let backoffMs = BACKOFF_FIRST_MS;
let reconnectTimer = null;
let handlers = null;

// handlers: {
//   onSnapshot(snapshot),
//   onMessage(message, expectSnapshot): expectSnapshot() drops messages until the next snapshot,
//   onConnection("live" | "lost"),
//   onSignedOut(reason),
// }
export function openFeed(given) {
  handlers = given;
  connect();
}

// Stop for good (the sign-in has ended): no message is handed on, nothing reconnects.
export function closeFeed() {
  const ws = socket;
  socket = null;
  clearTimeout(reconnectTimer);
  try {
    ws?.close();
  } catch {
    /* already closed */
  }
}

function connect() {
  clearTimeout(reconnectTimer);
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}${FEED_PATH}`);
  socket = ws;
  // The seq the next message must have; null until a snapshot says where we are.
  let expected = null;
  ws.addEventListener("message", (event) => {
    if (socket !== ws) return;
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return;
    }
    if (message.type === "snapshot") {
      handlers.onSnapshot(message);
      expected = message.seq + 1;
      backoffMs = BACKOFF_FIRST_MS;
      handlers.onConnection("live");
      return;
    }
    if (expected === null) return;
    if (message.seq !== expected) {
      // A message went missing: what we show may be wrong. Start again from a snapshot.
      console.warn(`board feed: expected seq ${expected}, got ${message.seq}; reconnecting`);
      dropSocket(ws);
      return;
    }
    expected = message.seq + 1;
    handlers.onMessage(message, () => {
      expected = null;
    });
  });
  ws.addEventListener("close", (event) => {
    if (socket !== ws) return;
    if (event.code === SIGNED_OUT_CODE) {
      // The sign-in has ended: nothing reconnects.
      socket = null;
      clearTimeout(reconnectTimer);
      handlers.onSignedOut(event.reason);
    } else dropSocket(ws);
  });
}

function dropSocket(ws) {
  if (socket === ws) socket = null;
  try {
    ws.close();
  } catch {
    /* already closed */
  }
  handlers.onConnection("lost");
  clearTimeout(reconnectTimer);
  reconnectTimer = setTimeout(reconnect, backoffMs);
  backoffMs = Math.min(backoffMs * 2, BACKOFF_MAX_MS);
}

async function reconnect() {
  // A refused WebSocket does not say why: ask whether the sign-in has ended.
  try {
    const reply = await fetch("/api/me", { credentials: "same-origin" });
    if (reply.status === 401) {
      socket = null;
      handlers.onSignedOut("");
      return;
    }
  } catch {
    /* server away: keep trying */
  }
  connect();
}
