// Where the session token lives: this tab only (sessionStorage), or this browser ("stay signed
// in", localStorage). Nothing else is ever stored, and logging out removes it from both.

const KEY = "chatsvc.session";

export function loadSession() {
  for (const storage of [sessionStorage, localStorage]) {
    try {
      const saved = JSON.parse(storage.getItem(KEY) || "null");
      if (saved && typeof saved.token === "string" && Number.isInteger(saved.id)) return saved;
    } catch {
      storage.removeItem(KEY);
    }
  }
  return null;
}

export function saveSession(session, remember) {
  forgetSession();
  (remember ? localStorage : sessionStorage).setItem(KEY, JSON.stringify(session));
}

export function forgetSession() {
  sessionStorage.removeItem(KEY);
  localStorage.removeItem(KEY);
}
