// The account panel: the sessions of this account (and ending them), logging out everywhere,
// and changing the password.

import { ApiError, describe } from "./api.js";
import { byId, el, timeElement } from "./dom.js";
import { setBusy } from "./auth.js";

export class AccountPanel {
  constructor(app) {
    this.app = app;
    this.section = byId("account");
    this.list = byId("sessions");
    this.form = byId("password-form");
    this.onSubmit = (event) => this.changePassword(event);
    this.onLogOutEverywhere = () => this.logOutEverywhere();
    this.form.addEventListener("submit", this.onSubmit);
    byId("log-out-everywhere").addEventListener("click", this.onLogOutEverywhere);
  }

  destroy() {
    this.form.removeEventListener("submit", this.onSubmit);
    byId("log-out-everywhere").removeEventListener("click", this.onLogOutEverywhere);
    this.list.replaceChildren();
    this.form.reset();
    byId("password-status").textContent = "";
  }

  async refresh() {
    try {
      const { sessions } = await this.app.api.get("/sessions");
      this.list.replaceChildren(...sessions.map((session) => this.item(session)));
    } catch (error) {
      this.list.replaceChildren(el("li", { className: "error" }, describe(error)));
    }
  }

  item(session) {
    const device = session.user_agent ? shortAgent(session.user_agent) : "Unknown device";
    const details = el("span", { className: "session-details" },
      "Signed in ", timeElement(session.created_at), ", last active ", timeElement(session.last_seen_at));
    const children = [el("strong", { title: session.user_agent ?? "" }, device), details];
    if (session.current) {
      children.push(el("span", { className: "current" }, "This device"));
    } else {
      children.push(el("button", {
        type: "button", className: "secondary",
        "aria-label": `End session: ${device}, signed in ${new Date(session.created_at).toLocaleString()}`,
        onclick: () => this.end(session.id),
      }, "End session"));
    }
    return el("li", {}, ...children);
  }

  async end(id) {
    try {
      await this.app.api.delete(`/sessions/${encodeURIComponent(id)}`);
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 404) this.app.report(error);
    }
    await this.refresh();
  }

  async logOutEverywhere() {
    try {
      await this.app.api.post("/logout/all");
    } catch (error) {
      if (!(error instanceof ApiError) || error.status !== 401) {
        this.app.report(error);
        return;
      }
    }
    this.app.endSession("You were logged out on every device.", { revoke: false });
  }

  async changePassword(event) {
    event.preventDefault();
    const status = byId("password-status");
    const current = byId("current-password").value;
    const next = byId("new-password").value;
    if (!current || [...next].length < 8) {
      status.textContent = "Enter the current password and a new one of at least 8 characters.";
      return;
    }
    setBusy(this.form, true);
    try {
      await this.app.api.put("/users/me/password", { current_password: current, new_password: next });
      this.form.reset();
      status.textContent = "Password changed. Every other session was logged out.";
      await this.refresh();
    } catch (error) {
      status.textContent = error instanceof ApiError && error.status === 403
        ? "The current password is wrong." : describe(error);
    } finally {
      setBusy(this.form, false);
    }
  }
}

// "Chrome on Linux" from a user agent string, enough to tell one's devices apart.
function shortAgent(agent) {
  const browser = /Edg\//.test(agent) ? "Edge" : /Firefox\//.test(agent) ? "Firefox"
    : /Chrom(e|ium)\//.test(agent) ? "Chrome" : /Safari\//.test(agent) ? "Safari"
      : /curl\//.test(agent) ? "curl" : null;
  const system = /Android/.test(agent) ? "Android" : /iPhone|iPad/.test(agent) ? "iOS"
    : /Windows/.test(agent) ? "Windows" : /Mac OS X/.test(agent) ? "macOS" : /Linux/.test(agent) ? "Linux" : null;
  if (browser && system) return `${browser} on ${system}`;
  return browser ?? system ?? agent.slice(0, 60);
}
