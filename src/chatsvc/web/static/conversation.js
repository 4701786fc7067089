// One open conversation: newest messages at the bottom, older ones loaded on scrolling up, live
// messages from the stream, sending with an at-once pending copy, read markers and "Seen".

import { ApiError, describe, query } from "./api.js";
import { renderContent } from "./content.js";
import { byId, el, randomKey, sleep, timeElement } from "./dom.js";

const PAGE = 50;
// Load older messages when scrolled this close to the top (pixels).
const NEAR_TOP = 200;
// "At the bottom" within this many pixels: new messages then keep the view at the bottom.
const NEAR_BOTTOM = 80;
const SEND_RETRIES = 6;

export class ConversationView {
  constructor(app, peer) {
    this.app = app;
    this.peer = peer;
    this.items = new Map(); // message id -> <li>
    this.older = undefined; // cursor for `before`; null: the beginning is on screen
    this.loadingOlder = false;
    this.markerSent = 0;
    this.controller = new AbortController();
    this.log = byId("messages");
    this.list = byId("message-list");
    this.status = byId("history-status");
    this.onScroll = () => this.loadOlderIfNear();
    this.log.addEventListener("scroll", this.onScroll, { passive: true });
  }

  get isSelf() {
    return this.peer.id === this.app.me.id;
  }

  close() {
    this.controller.abort();
    this.log.removeEventListener("scroll", this.onScroll);
    this.list.replaceChildren();
    this.status.textContent = "";
  }

  async open() {
    this.list.replaceChildren();
    this.status.textContent = "Loading messages…";
    const page = await this.app.api.get(`/conversations/${this.peer.id}/messages${query({ limit: PAGE })}`,
      { signal: this.controller.signal });
    for (const message of page.messages) this.show(message);
    this.older = page.older;
    this.updateHistoryStatus();
    this.scrollToBottom();
    this.updateSeen();
    this.markRead();
    this.loadOlderIfNear();
  }

  updateHistoryStatus() {
    this.status.textContent = this.older === null
      ? (this.items.size ? "This is the beginning of the conversation." : "No messages yet. Say hello!")
      : "";
  }

  async loadOlderIfNear() {
    if (this.loadingOlder || this.older === null || this.older === undefined) return;
    if (this.log.scrollTop > NEAR_TOP) return;
    this.loadingOlder = true;
    this.status.textContent = "Loading older messages…";
    try {
      const page = await this.app.api.get(
        `/conversations/${this.peer.id}/messages${query({ limit: PAGE, before: this.older })}`,
        { signal: this.controller.signal });
      // Keep what is on screen where it is while the older messages go in above it.
      const fromBottom = this.log.scrollHeight - this.log.scrollTop;
      for (const message of page.messages) this.show(message);
      this.log.scrollTop = this.log.scrollHeight - fromBottom;
      this.older = page.older;
      this.updateHistoryStatus();
      this.updateSeen();
    } catch (error) {
      if (error.name === "AbortError") return;
      this.status.textContent = describe(error);
    } finally {
      this.loadingOlder = false;
    }
    if (!this.controller.signal.aborted) requestAnimationFrame(() => this.loadOlderIfNear());
  }

  // A message of this conversation from the stream.
  receive(message) {
    if (this.items.has(message.id)) return;
    const atBottom = this.isAtBottom();
    if (message.sender === this.app.me.id && this.adoptPending(message)) return;
    this.show(message);
    if (atBottom || message.sender === this.app.me.id) this.scrollToBottom();
    this.updateSeen();
    this.markRead();
  }

  // The peer has read up to `lastRead`.
  peerRead() {
    this.updateSeen();
  }

  // ---- sending ----

  async send(content) {
    const key = randomKey();
    const item = this.messageItem({ sender: this.app.me.id, content, timestamp: null });
    item.classList.add("pending");
    item.dataset.key = key;
    item.dataset.content = canonical(content);
    this.setState(item, "Sending…");
    this.list.append(item);
    this.scrollToBottom();
    await this.deliver(item, content, key);
  }

  // POSTs with the message's own Idempotency-Key until the server answers: a retry after a lost
  // answer returns the first message's id again and creates nothing.
  async deliver(item, content, key) {
    const body = { recipient: this.peer.id, content };
    for (let attempt = 0; ; attempt += 1) {
      try {
        const created = await this.app.api.post("/messages", body, { headers: { "Idempotency-Key": key } });
        this.confirm(item, { ...created, sender: this.app.me.id, recipient: this.peer.id, content });
        return;
      } catch (error) {
        if (!(error instanceof ApiError) || !error.transient || attempt >= SEND_RETRIES
            || this.controller.signal.aborted) {
          this.fail(item, content, key, error);
          return;
        }
        this.setState(item, "Sending… (retrying)");
        const wait = Math.max(500 * 2 ** attempt, (error.retryAfter ?? 0) * 1000);
        await sleep(Math.min(wait, 8000), this.controller.signal);
      }
    }
  }

  confirm(item, message) {
    this.app.noteMessage(message);
    if (!item.isConnected || item.dataset.id) return; // gone, or the stream already settled it
    const shown = this.items.get(message.id);
    if (shown && shown !== item) {
      item.remove(); // the stream brought it first
      return;
    }
    this.settle(item, message);
    this.updateSeen();
  }

  // The stream brought our own message before its 201: it is one of the pending ones.
  adoptPending(message) {
    const wanted = canonical(message.content);
    const item = [...this.list.querySelectorAll("li.pending:not(.failed)")]
      .find((candidate) => candidate.dataset.content === wanted);
    if (!item) return false;
    this.settle(item, message);
    this.updateSeen();
    return true;
  }

  settle(item, message) {
    item.classList.remove("pending");
    delete item.dataset.key;
    delete item.dataset.content;
    item.dataset.id = message.id;
    item.querySelector(".state")?.remove();
    item.querySelector(".meta").append(timeElement(message.timestamp));
    this.items.set(message.id, item);
    this.place(item, message.id);
    if (this.items.size === 1) this.updateHistoryStatus();
  }

  fail(item, content, key, error) {
    if (!item.isConnected) return;
    item.classList.add("failed");
    const again = error instanceof ApiError && error.transient;
    const state = this.setState(item, `Not sent: ${describe(error)}`);
    if (again) {
      state.append(" ", el("button", {
        type: "button", className: "link",
        onclick: () => {
          item.classList.remove("failed");
          this.setState(item, "Sending…");
          this.deliver(item, content, key);
        },
      }, "Retry"));
    } else {
      state.append(" ", el("button", { type: "button", className: "link", onclick: () => item.remove() }, "Dismiss"));
    }
  }

  setState(item, text) {
    let state = item.querySelector(".state");
    if (!state) {
      state = el("span", { className: "state" });
      item.querySelector(".meta").append(state);
    }
    state.replaceChildren(text);
    return state;
  }

  // ---- the log ----

  show(message) {
    if (this.items.has(message.id)) return;
    const item = this.messageItem(message);
    item.dataset.id = message.id;
    item.querySelector(".meta").append(timeElement(message.timestamp));
    this.items.set(message.id, item);
    this.place(item, message.id);
    if (this.items.size === 1) this.updateHistoryStatus();
  }

  messageItem(message) {
    const mine = message.sender === this.app.me.id;
    const author = mine ? "You" : this.peer.username;
    return el("li", { className: `message ${mine ? "mine" : "theirs"}` },
      el("p", { className: "meta" }, el("span", { className: "author" }, author), " "),
      renderContent(message.content));
  }

  // In id order; messages still waiting for their id stay last.
  place(item, id) {
    const first = this.list.firstElementChild;
    if (first && first !== item && first.dataset.id && id < Number(first.dataset.id)) {
      this.list.insertBefore(item, first); // an older page, going in above
      return;
    }
    let before = null;
    for (let child = this.list.lastElementChild; child; child = child.previousElementSibling) {
      if (child === item) continue;
      const childId = child.dataset.id ? Number(child.dataset.id) : Infinity;
      if (childId < id) break;
      if (child.classList.contains("message")) before = child;
    }
    if (item.nextElementSibling !== before || item.parentNode !== this.list) this.list.insertBefore(item, before);
  }

  isAtBottom() {
    return this.log.scrollHeight - this.log.scrollTop - this.log.clientHeight < NEAR_BOTTOM;
  }

  scrollToBottom() {
    this.log.scrollTop = this.log.scrollHeight;
  }

  // "Seen" under the last of our messages the peer has read.
  updateSeen() {
    this.list.querySelector(".seen")?.remove();
    const conversation = this.app.conversations.get(this.peer.id);
    const upTo = conversation?.peer_last_read;
    if (this.isSelf || !upTo) return;
    const mine = [...this.list.querySelectorAll("li.mine[data-id]")]
      .filter((item) => Number(item.dataset.id) <= upTo);
    mine.at(-1)?.append(el("p", { className: "seen" }, "Seen"));
  }

  // Tell the server (and so the peer, and our other devices) how far this conversation is read,
  // while it is on screen.
  async markRead() {
    if (this.isSelf || document.visibilityState !== "visible") return;
    const theirs = [...this.items.entries()]
      .filter(([, item]) => item.classList.contains("theirs")).map(([id]) => id);
    const newest = Math.max(0, ...theirs);
    const conversation = this.app.conversations.get(this.peer.id);
    if (newest <= this.markerSent || newest <= (conversation?.last_read ?? 0)) return;
    this.markerSent = newest;
    try {
      const marker = await this.app.api.put(`/conversations/${this.peer.id}/read`, { last_read: newest });
      this.app.conversations.noteRead(this.peer.id, marker.last_read, marker.unread);
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 401) this.markerSent = 0;
    }
  }
}

// Content compared field by field, whatever the order of the keys.
function canonical(content) {
  return JSON.stringify(Object.keys(content).sort().map((key) => [key, content[key]]));
}
