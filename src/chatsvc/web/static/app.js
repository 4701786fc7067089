// The signed-in page: wires the conversation list, the open conversation, the account panel and
// the live stream together, and takes every trace of the session away again at the end.

import { AccountPanel } from "./account.js";
import { Api, ApiError, describe, query } from "./api.js";
import { ConversationView } from "./conversation.js";
import { ConversationList } from "./conversations.js";
import { byId, sleep } from "./dom.js";
import { EventStream } from "./stream.js";

const CONNECTION_WORDS = { connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…" };

export class ChatApp {
  // `onEnded(notice)` runs once the session is over and the page holds nothing of it.
  constructor(session, onEnded) {
    this.me = { id: session.id, username: session.username };
    this.token = session.token;
    this.onEnded = onEnded;
    this.api = new Api(session.token, () => this.endSession("Your session has ended. Log in again.", { revoke: false }));
    this.people = new Map([[this.me.id, this.me.username]]);
    this.conversations = new ConversationList(this);
    this.account = new AccountPanel(this);
    this.view = null;
    this.stream = null;
    this.ended = false;
    this.listeners = [];
  }

  get openPeerId() {
    return this.view?.peer.id ?? null;
  }

  async start() {
    const me = await this.whoAmI();
    this.me.username = me.username;
    this.people.set(me.id, me.username);
    byId("me-name").textContent = me.username;
    this.listen(byId("log-out"), "click", () => this.endSession("You logged out."));
    this.listen(byId("account-toggle"), "click", () => this.toggleAccount());
    this.listen(byId("new-conversation-toggle"), "click", () => this.toggleNewConversation());
    this.listen(byId("new-conversation"), "submit", (event) => this.startConversation(event));
    this.listen(byId("notes-to-self"), "click", () => this.openConversation({ ...this.me }));
    this.listen(byId("back"), "click", () => this.showList());
    this.listen(document, "visibilitychange", () => this.view?.markRead());
    let newest = null;
    try {
      newest = await this.conversations.refresh();
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) return;
      this.report(error);
    }
    this.stream = new EventStream({
      token: this.token,
      lastEventId: newest,
      onMessage: (message) => this.noteMessage(message, { live: true }),
      onRead: (event) => this.noteRead(event),
      onState: (state) => { byId("connection").textContent = CONNECTION_WORDS[state]; },
      onResume: () => this.resume(),
      onUnauthorized: () => this.endSession("Your session has ended. Log in again.", { revoke: false }),
    });
    this.stream.start();
  }

  // Who the token belongs to; waits out a server that is restarting or unreachable.
  async whoAmI() {
    for (let attempt = 0; ; attempt += 1) {
      try {
        return await this.api.get("/users/me");
      } catch (error) {
        // A replica from before GET /users/me (a rolling update): the name typed at login will do.
        if (error instanceof ApiError && error.status === 404) return { ...this.me };
        if (!(error instanceof ApiError) || !error.transient || this.ended) throw error;
        byId("connection").textContent = describe(error);
        await sleep(Math.min(500 * 2 ** attempt, 10_000));
      }
    }
  }

  listen(target, type, handler) {
    target.addEventListener(type, handler);
    this.listeners.push([target, type, handler]);
  }

  report(error) {
    if (error?.name === "AbortError") return;
    byId("connection").textContent = describe(error);
  }

  // ---- events ----

  async noteMessage(message, { live = false } = {}) {
    const peerId = message.sender === this.me.id ? message.recipient : message.sender;
    const peer = { id: peerId, username: await this.nameOf(peerId) };
    if (this.ended) return;
    const onScreen = this.openPeerId === peerId && document.visibilityState === "visible";
    const known = Boolean(this.conversations.get(peerId));
    this.conversations.noteMessage(message, peer, { countUnread: live && !onScreen });
    // A conversation beyond the pages loaded so far: the server knows its exact unread count.
    if (live && !known) this.refreshSoon();
    if (live && this.openPeerId === peerId) this.view.receive(message);
  }

  noteRead({ reader, peer, last_read: lastRead }) {
    if (reader === this.me.id) {
      // Another device of ours (or this one) read up to there.
      if (!this.conversations.noteRead(peer, lastRead)) this.refreshSoon();
    } else if (peer === this.me.id) {
      // A read receipt: the peer has read what we sent.
      this.conversations.notePeerRead(reader, lastRead);
      if (this.openPeerId === reader) this.view.peerRead();
    }
  }

  // The stream is back: read events missed meanwhile are not replayed, so ask again.
  resume() {
    this.refreshSoon();
  }

  refreshSoon() {
    clearTimeout(this.refreshTimer);
    this.refreshTimer = setTimeout(async () => {
      try {
        await this.conversations.refresh();
        this.view?.updateSeen();
      } catch (error) {
        this.report(error);
      }
    }, 200);
  }

  async nameOf(id) {
    if (!this.people.has(id)) {
      try {
        const { users } = await this.api.get(`/users${query({ id })}`);
        this.people.set(id, users[0]?.username ?? `user ${id}`);
      } catch {
        return `user ${id}`;
      }
    }
    return this.people.get(id);
  }

  // ---- navigation ----

  async openConversation(peer) {
    this.view?.close();
    this.hideAccount();
    this.view = new ConversationView(this, peer);
    const entry = this.conversations.get(peer.id);
    if (entry) entry.unread = 0;
    this.conversations.render();
    byId("peer-title").textContent = peer.id === this.me.id ? "Notes to self" : peer.username;
    byId("placeholder").hidden = true;
    byId("conversation").hidden = false;
    document.body.classList.add("detail-open");
    const view = this.view;
    try {
      await view.open();
    } catch (error) {
      if (error?.name !== "AbortError") byId("history-status").textContent = describe(error);
    }
    if (this.view === view) byId("message-text").focus();
  }

  showList() {
    this.view?.close();
    this.view = null;
    this.hideAccount();
    byId("conversation").hidden = true;
    byId("placeholder").hidden = false;
    document.body.classList.remove("detail-open");
    this.conversations.render();
    byId("new-conversation-toggle").focus();
  }

  toggleAccount() {
    const open = byId("account").hidden;
    if (!open) {
      this.hideAccount();
      if (!this.view) document.body.classList.remove("detail-open");
      return;
    }
    byId("account").hidden = false;
    byId("conversation").hidden = true;
    byId("placeholder").hidden = true;
    byId("account-toggle").setAttribute("aria-expanded", "true");
    document.body.classList.add("detail-open");
    this.account.refresh();
    byId("account-title").focus?.();
  }

  hideAccount() {
    byId("account").hidden = true;
    byId("account-toggle").setAttribute("aria-expanded", "false");
    byId("conversation").hidden = !this.view;
    byId("placeholder").hidden = Boolean(this.view);
  }

  toggleNewConversation() {
    const form = byId("new-conversation");
    form.hidden = !form.hidden;
    byId("new-conversation-toggle").setAttribute("aria-expanded", String(!form.hidden));
    if (!form.hidden) byId("peer-name").focus();
  }

  async startConversation(event) {
    event.preventDefault();
    const error = byId("peer-error");
    const name = byId("peer-name").value.trim();
    if (!name) {
      error.textContent = "Enter the username of the person to write to.";
      return;
    }
    try {
      const { users } = await this.api.get(`/users${query({ username: name })}`);
      if (!users.length) {
        error.textContent = `No one is called “${name}”.`;
        return;
      }
      error.textContent = "";
      byId("peer-name").value = "";
      this.toggleNewConversation();
      this.people.set(users[0].id, users[0].username);
      await this.openConversation(users[0]);
    } catch (failure) {
      error.textContent = describe(failure);
    }
  }

  // ---- the end ----

  // Log out (revoking the token unless the server already did), then leave nothing behind:
  // no token in storage, no message or name on the page, no stream, no handler.
  async endSession(notice, { revoke = true } = {}) {
    if (this.ended) return;
    this.ended = true;
    this.stream?.stop();
    this.view?.close();
    if (revoke) {
      try {
        await Promise.race([this.api.post("/logout"), new Promise((resolve) => setTimeout(resolve, 3000))]);
      } catch {
        // Already unknown to the server, or unreachable: the token is forgotten here either way.
      }
    }
    for (const [target, type, handler] of this.listeners) target.removeEventListener(type, handler);
    clearTimeout(this.refreshTimer);
    this.conversations.destroy();
    this.account.destroy();
    this.people.clear();
    this.api.token = null;
    this.token = null;
    this.onEnded(notice);
  }
}
