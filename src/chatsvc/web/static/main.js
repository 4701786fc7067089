// Start-up: the signed-out page, or the chat for the session this tab (or browser) remembers.

import { describe } from "./api.js";
import { ChatApp } from "./app.js";
import { setUpAuthForm, showAuthError } from "./auth.js";
import { setUpComposer } from "./composer.js";
import { byId } from "./dom.js";
import { forgetSession, loadSession, saveSession } from "./session.js";

let app = null;
let undoComposer = null;

function showSignedOut(notice = "") {
  byId("signed-in").hidden = true;
  byId("signed-out").hidden = false;
  document.body.classList.remove("detail-open");
  // Whatever the session put on the page goes with it.
  for (const id of ["me-name", "peer-title", "message-list", "conversations", "sessions",
    "history-status", "connection", "composer-error", "peer-error"]) {
    byId(id).replaceChildren();
  }
  byId("conversation").hidden = true;
  byId("account").hidden = true;
  byId("placeholder").hidden = false;
  byId("new-conversation").hidden = true;
  byId("new-conversation").reset();
  byId("auth-password").value = "";
  showAuthError(notice);
  byId("auth-username").focus();
}

async function signIn(session, remember) {
  if (remember !== undefined) saveSession(session, remember);
  byId("signed-out").hidden = true;
  byId("signed-in").hidden = false;
  app = new ChatApp(session, (notice) => {
    forgetSession();
    undoComposer?.();
    undoComposer = null;
    app = null;
    showSignedOut(notice);
  });
  undoComposer = setUpComposer((content) => app?.view?.send(content));
  try {
    await app.start();
  } catch (error) {
    if (app) app.endSession(`Could not open the chat. ${describe(error)}`, { revoke: false });
  }
}

setUpAuthForm(signIn);
const saved = loadSession();
if (saved) signIn(saved);
else showSignedOut();
