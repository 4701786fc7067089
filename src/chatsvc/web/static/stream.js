// The live stream of GET /messages/stream, read with fetch because EventSource cannot send
// Authorization. It resumes from the last message id it saw (Last-Event-ID), so a network loss
// or a server restart (`event: shutdown`) loses nothing and the server sends nothing twice.

import { sleep } from "./dom.js";

const FIRST_RETRY_MS = 500;
const LONGEST_RETRY_MS = 10_000;
// After `event: shutdown` another replica (or the restarted server) is usually ready at once.
const AFTER_SHUTDOWN_MS = 250;

export class EventStream {
  constructor({ token, lastEventId, onMessage, onRead, onState, onResume, onUnauthorized }) {
    this.token = token;
    this.lastEventId = lastEventId;
    this.handlers = { onMessage, onRead, onState, onResume, onUnauthorized };
    this.controller = new AbortController();
  }

  start() {
    this.run();
  }

  stop() {
    this.controller.abort();
  }

  async run() {
    const { signal } = this.controller;
    let delay = FIRST_RETRY_MS;
    let connectedBefore = false;
    while (!signal.aborted) {
      let wait = delay;
      try {
        this.handlers.onState(connectedBefore ? "reconnecting" : "connecting");
        const headers = { Authorization: `Bearer ${this.token}`, Accept: "text/event-stream" };
        if (this.lastEventId !== null) headers["Last-Event-ID"] = String(this.lastEventId);
        const response = await fetch("/messages/stream", { headers, signal, cache: "no-store" });
        if (response.status === 401) {
          this.handlers.onUnauthorized();
          return;
        }
        if (!response.ok) {
          const retryAfter = Number.parseInt(response.headers.get("Retry-After") || "", 10);
          if (Number.isFinite(retryAfter)) wait = Math.max(wait, retryAfter * 1000);
          throw new Error(`stream answered ${response.status}`);
        }
        this.handlers.onState("live");
        if (connectedBefore) this.handlers.onResume();
        connectedBefore = true;
        delay = FIRST_RETRY_MS;
        const ending = await this.read(response.body);
        wait = ending === "shutdown" ? AFTER_SHUTDOWN_MS : FIRST_RETRY_MS;
      } catch (error) {
        if (signal.aborted) return;
        delay = Math.min(delay * 2, LONGEST_RETRY_MS);
      }
      if (signal.aborted) return;
      this.handlers.onState("reconnecting");
      // Jitter, so that the clients of a restarted server do not all come back in the same instant.
      await sleep(wait * (0.5 + Math.random()), signal);
    }
  }

  // Reads events until the stream ends; "shutdown" when the server said it is going away.
  async read(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let event = { type: "message", data: [], id: null };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return "ended";
      buffer += value;
      let newline;
      while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + (buffer.startsWith("\r\n", newline) ? 2 : 1));
        if (line === "") {
          if (event.type === "shutdown") {
            reader.cancel().catch(() => {});
            return "shutdown";
          }
          if (event.data.length) this.dispatch(event);
          event = { type: "message", data: [], id: null };
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let text = colon < 0 ? "" : line.slice(colon + 1);
        if (text.startsWith(" ")) text = text.slice(1);
        if (field === "event") event.type = text;
        else if (field === "data") event.data.push(text);
        else if (field === "id") event.id = text;
      }
    }
  }

  dispatch(event) {
    let data;
    try {
      data = JSON.parse(event.data.join("\n"));
    } catch {
      return;
    }
    if (event.type === "message") {
      const id = Number(event.id ?? data.id);
      if (Number.isSafeInteger(id) && (this.lastEventId === null || id > this.lastEventId)) {
        this.lastEventId = id;
      }
      this.handlers.onMessage(data);
    } else if (event.type === "read") {
      this.handlers.onRead(data);
    }
  }
}
