// The conversation list: the peer's name, the last message's preview and time, the unread count,
// most recent first, paged as it is scrolled, kept current by the stream.

import { query } from "./api.js";
import { previewOf } from "./content.js";
import { byId, el, timeElement } from "./dom.js";

const PAGE = 30;
// Load the next page when the list is scrolled this close to its end (pixels).
const NEAR_END = 150;

export class ConversationList {
  constructor(app) {
    this.app = app;
    this.byPeer = new Map();
    this.nextBefore = undefined; // undefined: not loaded yet; null: everything is loaded
    this.loading = false;
    this.list = byId("conversations");
    this.scroller = this.list.closest(".sidebar");
    this.onScroll = () => this.loadMoreIfNear();
    this.scroller.addEventListener("scroll", this.onScroll, { passive: true });
  }

  destroy() {
    this.scroller.removeEventListener("scroll", this.onScroll);
    this.list.replaceChildren();
    this.byPeer.clear();
  }

  // The first page, again: after start-up and whenever the stream resumes (read events are not
  // replayed). Returns the newest message id the caller has, for the stream to resume after.
  async refresh() {
    const page = await this.app.api.get(`/conversations${query({ limit: PAGE })}`);
    for (const conversation of page.conversations) this.put(conversation);
    if (this.nextBefore === undefined) this.nextBefore = page.next_before;
    this.render();
    this.loadMoreIfNear();
    return page.conversations[0]?.last_message.id ?? 0;
  }

  async loadMoreIfNear() {
    if (this.loading || this.nextBefore === null || this.nextBefore === undefined) return;
    const { scrollTop, scrollHeight, clientHeight } = this.scroller;
    if (scrollHeight - scrollTop - clientHeight > NEAR_END) return;
    this.loading = true;
    try {
      const page = await this.app.api.get(`/conversations${query({ limit: PAGE, before: this.nextBefore })}`);
      for (const conversation of page.conversations) {
        if (!this.byPeer.has(conversation.peer.id)) this.put(conversation);
      }
      this.nextBefore = page.next_before;
      this.render();
    } catch (error) {
      this.app.report(error);
    } finally {
      this.loading = false;
    }
    // A tall window may show the whole page with room to spare.
    if (this.nextBefore !== null) requestAnimationFrame(() => this.loadMoreIfNear());
  }

  get(peerId) {
    return this.byPeer.get(peerId);
  }

  put(conversation) {
    const known = this.byPeer.get(conversation.peer.id);
    if (known && known.last_message.id > conversation.last_message.id) return known;
    const entry = { ...conversation, element: known?.element ?? null };
    this.byPeer.set(conversation.peer.id, entry);
    this.app.people.set(conversation.peer.id, conversation.peer.username);
    return entry;
  }

  // A message from the stream (or our own 201): the conversation moves to the top.
  noteMessage(message, peer, { countUnread }) {
    let entry = this.byPeer.get(peer.id);
    if (!entry) {
      entry = this.put({ peer, last_message: message, unread: 0, last_read: null, peer_last_read: null });
    } else if (message.id > entry.last_message.id) {
      entry.last_message = message;
    } else {
      return;
    }
    if (countUnread && message.sender === peer.id && message.id > (entry.last_read ?? 0)) entry.unread += 1;
    this.render();
  }

  // The caller's read marker moved (this device, or another of theirs).
  noteRead(peerId, lastRead, unread) {
    const entry = this.byPeer.get(peerId);
    if (!entry) return false;
    entry.last_read = Math.max(entry.last_read ?? 0, lastRead);
    if (unread !== undefined) entry.unread = unread;
    else if (entry.last_read >= entry.last_message.id) entry.unread = 0;
    else return false; // unknown how many are left: the caller refreshes
    this.render();
    return true;
  }

  notePeerRead(peerId, lastRead) {
    const entry = this.byPeer.get(peerId);
    if (entry) entry.peer_last_read = Math.max(entry.peer_last_read ?? 0, lastRead);
  }

  // Updated in place and moved only where the order changed, so keyboard focus stays put.
  render() {
    const focused = document.activeElement;
    const entries = [...this.byPeer.values()].sort((a, b) => b.last_message.id - a.last_message.id);
    entries.forEach((entry, index) => {
      const item = this.item(entry);
      if (this.list.children[index] !== item) this.list.insertBefore(item, this.list.children[index] ?? null);
    });
    if (focused !== document.activeElement && focused?.isConnected) focused.focus({ preventScroll: true });
    byId("conversations-empty").hidden = entries.length > 0;
  }

  item(entry) {
    const { peer, last_message: last, unread } = entry;
    const me = this.app.me;
    if (!entry.element) {
      const button = el("button", { type: "button", className: "conversation-item", "data-peer": peer.id });
      button.addEventListener("click", () => this.app.openConversation(entry.peer));
      entry.element = el("li", {}, button);
    }
    const button = entry.element.firstElementChild;
    const name = peer.id === me.id ? "Notes to self" : peer.username;
    const preview = (last.sender === me.id && peer.id !== me.id ? "You: " : "") + previewOf(last.content);
    const badge = unread > 0
      ? el("span", { className: "badge" }, String(unread), el("span", { className: "visually-hidden" }, " unread"))
      : null;
    if (this.app.openPeerId === peer.id) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
    button.replaceChildren(...[
      el("span", { className: "peer" }, name),
      timeElement(last.timestamp),
      el("span", { className: "preview" }, preview),
      badge,
    ].filter(Boolean));
    return entry.element;
  }
}
