// The WebSocket session of /api/v1/ws (PROTOCOL.md): join, then messages both ways.
// On a lost connection it reconnects by itself with exponential backoff and `join {token, resume}`.

const FINAL_CLOSE_CODES = new Set([4001, 4003, 4009, 4010]);
const PING_EVERY_MS = 5000;
const SILENCE_LIMIT_MS = 12000;
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 10000;

/**
 * Events: "status" (detail: idle | connecting | connected | reconnecting | offline | closed),
 * "message" (detail: the parsed server message), "final" (detail: {code, reason}) when the server ends the session.
 */
export class Signal extends EventTarget {
  constructor(token) {
    super();
    this.token = token;
    this.resume = null;
    this.ws = null;
    this.status = "idle";
    this.attempt = 0;
    this.stopped = false;
    this.nextId = 1;
    this.retryTimer = null;
    this.pingTimer = null;
    this.lastHeard = 0;
    this.onOnline = () => this.reconnectNow();
    this.onOffline = () => this.drop("offline");
  }

  get url() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    return `${scheme}://${location.host}/api/v1/ws`;
  }

  start() {
    this.stopped = false;
    window.addEventListener("online", this.onOnline);
    window.addEventListener("offline", this.onOffline);
    this.connect();
  }

  /** Leave for good: no reconnect. */
  stop() {
    this.stopped = true;
    window.removeEventListener("online", this.onOnline);
    window.removeEventListener("offline", this.onOffline);
    clearTimeout(this.retryTimer);
    clearInterval(this.pingTimer);
    if (this.ws) {
      this.ws.onclose = null;
      this.ws.close(1000);
      this.ws = null;
    }
    this.setStatus("closed");
  }

  /** Send a message; returns its id (echoed by the server as `ref`), or null when not connected. */
  send(message) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return null;
    const id = message.id ?? String(this.nextId++);
    this.ws.send(JSON.stringify({ ...message, id }));
    return id;
  }

  get connected() {
    return this.status === "connected";
  }

  setStatus(status) {
    if (status === this.status) return;
    this.status = status;
    this.dispatchEvent(new CustomEvent("status", { detail: status }));
  }

  connect() {
    clearTimeout(this.retryTimer);
    if (this.stopped) return;
    this.setStatus(this.attempt === 0 && !this.resume ? "connecting" : "reconnecting");
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch {
      this.scheduleRetry();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      this.lastHeard = Date.now();
      const join = { type: "join", token: this.token };
      if (this.resume) join.resume = this.resume;
      ws.send(JSON.stringify(join));
    };
    ws.onmessage = (event) => {
      this.lastHeard = Date.now();
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (!message || typeof message.type !== "string") return;
      if (message.type === "joined") {
        this.resume = message.resume || this.resume;
        this.attempt = 0;
        this.setStatus("connected");
        this.startPings();
      }
      this.dispatchEvent(new CustomEvent("message", { detail: message }));
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      clearInterval(this.pingTimer);
      if (this.stopped) return;
      if (FINAL_CLOSE_CODES.has(event.code)) {
        this.stopped = true;
        this.setStatus("closed");
        this.dispatchEvent(new CustomEvent("final", { detail: { code: event.code, reason: event.reason } }));
        return;
      }
      this.scheduleRetry();
    };
    ws.onerror = () => {
      // onclose follows and decides what to do.
    };
  }

  startPings() {
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => {
      // A half-open connection (network gone without a close) shows as silence: drop it and reconnect.
      if (Date.now() - this.lastHeard > SILENCE_LIMIT_MS) {
        this.drop("reconnecting");
        return;
      }
      this.send({ type: "ping" });
    }, PING_EVERY_MS);
  }

  /** The network is gone (or silent): close the socket ourselves and retry with backoff. */
  drop(status) {
    if (this.stopped) return;
    const ws = this.ws;
    this.ws = null;
    clearInterval(this.pingTimer);
    if (ws) {
      ws.onclose = null;
      try {
        ws.close(4000, "network lost");
      } catch {
        // Closing a socket that is already gone.
      }
    }
    this.setStatus(status);
    this.scheduleRetry(status);
  }

  reconnectNow() {
    if (this.stopped || (this.ws && this.ws.readyState <= WebSocket.OPEN)) return;
    this.attempt = 0;
    this.connect();
  }

  scheduleRetry(status = "reconnecting") {
    if (this.stopped) return;
    clearTimeout(this.retryTimer);
    this.setStatus(navigator.onLine === false ? "offline" : status === "offline" ? "offline" : "reconnecting");
    const base = Math.min(BACKOFF_FIRST_MS * 2 ** this.attempt, BACKOFF_MAX_MS);
    // Jitter spreads the reconnects of a whole courtroom after a shared outage.
    const delay = base * (0.75 + Math.random() * 0.5);
    this.attempt += 1;
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }
}
