// The signed-out page: log in or sign up, with every refusal said in words.

import { Api, ApiError, describe } from "./api.js";
import { byId } from "./dom.js";

const MIN_PASSWORD = 8;

// Calls `onSignedIn({token, id, username}, remember)` once the server has given a token.
export function setUpAuthForm(onSignedIn) {
  const form = byId("auth-form");
  const error = byId("auth-error");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const signingUp = event.submitter?.id === "sign-up";
    const username = byId("auth-username").value.trim();
    const password = byId("auth-password").value;
    const problem = !username ? "Enter a username."
      : !password ? "Enter a password."
      : signingUp && [...password].length < MIN_PASSWORD
        ? `Choose a password of at least ${MIN_PASSWORD} characters.` : "";
    if (problem) {
      showAuthError(problem);
      return;
    }
    error.textContent = "";
    setBusy(form, true);
    try {
      const api = new Api();
      if (signingUp) await api.post("/users", { username, password });
      const session = await api.post("/login", { username, password });
      byId("auth-password").value = "";
      await onSignedIn({ token: session.token, id: session.id, username }, byId("auth-remember").checked);
    } catch (failure) {
      showAuthError(explain(failure, signingUp));
    } finally {
      setBusy(form, false);
    }
  });
}

export function showAuthError(text) {
  byId("auth-error").textContent = text;
}

function explain(failure, signingUp) {
  if (failure instanceof ApiError) {
    if (signingUp && failure.status === 409) return "That name is taken. Choose another one.";
    if (!signingUp && failure.status === 401) return "Wrong username or password.";
  }
  return describe(failure);
}

export function setBusy(form, busy) {
  form.setAttribute("aria-busy", String(busy));
  for (const button of form.querySelectorAll("button")) button.disabled = busy;
}
