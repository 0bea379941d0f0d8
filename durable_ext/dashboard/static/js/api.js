// The dashboard's JSON API client. The system key, once entered, lives in sessionStorage (this tab
// only) and travels in the x-functions-key header: never in a URL, where it would reach logs and history.

const KEY_STORAGE = "durable_ext.dashboard.key";
const API_BASE = new URL("../../api/", import.meta.url);

/** An answer the API refused: `status` is the HTTP status, `message` the server's `error` text. */
class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let keyPrompt = null;

/** Register the function asked for a key after a 401: it resolves once the user entered one. */
export function onKeyRequired(prompt) {
  keyPrompt = prompt;
}

function storedKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

export function storeKey(key) {
  sessionStorage.setItem(KEY_STORAGE, key);
}

/** The URL of an API path ("hubs/x/instances") with the query parameters that have a value. */
function apiUrl(path, params = {}) {
  const url = new URL(path, API_BASE);
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  return url;
}

/**
 * Send one request and return the parsed JSON answer. A 401 asks for the key (through the registered
 * prompt) and retries; any other error status throws an ApiError carrying the server's message.
 */
async function request(method, path, { params, body } = {}) {
  for (;;) {
    const headers = { Accept: "application/json" };
    const key = storedKey();
    if (key) headers["x-functions-key"] = key;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(apiUrl(path, params), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
    const answer = await readJson(response);
    if (response.status === 401 && keyPrompt) {
      await keyPrompt(key ? "That key was refused." : "");
      continue;
    }
    if (!response.ok) {
      const message = (answer && answer.error) || `${response.status} ${response.statusText}`;
      throw new ApiError(response.status, message);
    }
    return answer;
  }
}

async function readJson(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return { error: text.slice(0, 500) };
  }
}

/** Path segments for one hub's API, each encoded (instance IDs may hold any character but "/"). */
export function hubPath(hubId, ...segments) {
  return ["hubs", hubId, ...segments].map(encodeURIComponent).join("/");
}

export const api = {
  get: (path, params) => request("GET", path, { params }),
  post: (path, body) => request("POST", path, { body: body ?? {} }),
  del: (path) => request("DELETE", path),
};
