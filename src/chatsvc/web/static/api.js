// The public HTTP API, as the contract describes it, and its errors in words a person can act on.

export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }

  // Worth retrying unchanged: the request may not have arrived, or the server could not serve it.
  get transient() {
    return this.status === 0 || this.status === 429 || this.status >= 500;
  }
}

export function describe(error) {
  if (!(error instanceof ApiError)) return "Something went wrong. Try again.";
  if (error.status === 0) return "The server cannot be reached. Check your connection and try again.";
  if (error.status === 429) {
    const seconds = error.retryAfter ?? 1;
    return `Too many attempts. Try again in ${seconds} second${seconds === 1 ? "" : "s"}.`;
  }
  if (error.status === 503) return "The server is unavailable right now. Try again in a moment.";
  if (error.status >= 500) return "The server failed to answer. Try again in a moment.";
  return sentence(error.message);
}

function sentence(text) {
  const trimmed = String(text || "The request was refused.").trim();
  const capital = trimmed.charAt(0).toUpperCase() + trimmed.slice(1);
  return /[.!?]$/.test(capital) ? capital : capital + ".";
}

// One client per session token. `onUnauthorized` runs when the server no longer knows the token.
export class Api {
  constructor(token = null, onUnauthorized = () => {}) {
    this.token = token;
    this.onUnauthorized = onUnauthorized;
  }

  async request(method, path, { body, headers = {}, signal, keepalive } = {}) {
    const init = { method, headers: { ...headers }, signal, keepalive, cache: "no-store" };
    if (this.token) init.headers.Authorization = `Bearer ${this.token}`;
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError(0, "network", "network error");
    }
    const isJson = (response.headers.get("Content-Type") || "").startsWith("application/json");
    const data = isJson ? await response.json().catch(() => null) : null;
    if (response.ok) return data;
    const retryAfter = Number.parseInt(response.headers.get("Retry-After") || "", 10);
    const failure = new ApiError(response.status, data?.error?.code ?? "http_error",
      data?.error?.message ?? response.statusText, Number.isFinite(retryAfter) ? retryAfter : null);
    if (response.status === 401 && this.token) this.onUnauthorized(failure);
    throw failure;
  }

  get(path, options) { return this.request("GET", path, options); }
  post(path, body, options) { return this.request("POST", path, { ...options, body }); }
  put(path, body, options) { return this.request("PUT", path, { ...options, body }); }
  delete(path, options) { return this.request("DELETE", path, options); }
}

export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value === undefined || value === null) continue;
    for (const item of Array.isArray(value) ? value : [value]) search.append(name, String(item));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}
