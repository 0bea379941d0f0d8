// DOM and formatting helpers shared by the pages. Everything the server sends is shown as text
// (never parsed as HTML): instance IDs, names and payloads come from users' apps.

/**
 * Create an element. `attrs` sets properties (`className`, `onclick`, ...) or, for names with a dash
 * (`data-testid`, `aria-label`), attributes. Children are nodes or strings; null/false are skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.includes("-")) element.setAttribute(name, value === true ? "" : String(value));
    else element[name] = value;
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

/** An ISO timestamp as "YYYY-MM-DD HH:MM:SS.mmmZ" (UTC, as the task hub stores it), or "—". */
export function formatTime(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toISOString().replace("T", " ");
}

/** Milliseconds as "850 ms", "12.3 s", "4 min 05 s" or "2 h 03 min". */
export function formatDuration(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const seconds = ms / 1000;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${String(Math.floor(seconds % 60)).padStart(2, "0")} s`;
  return `${Math.floor(minutes / 60)} h ${String(minutes % 60).padStart(2, "0")} min`;
}

/** A value as indented JSON text ("null" for null, a string's own JSON quoting). */
export function formatJson(value) {
  if (value === undefined) return "—";
  return JSON.stringify(value, null, 2);
}

/** A status badge whose class colours it by runtime status. */
export function statusBadge(status) {
  return h("span", { className: `status status-${String(status).toLowerCase()}`, "data-testid": "status" }, status);
}

/** Replace the children of `element` with `children`. */
export function replaceChildren(element, ...children) {
  element.replaceChildren(...children.flat(Infinity).filter((child) => child !== null && child !== false));
}

/** The value of a datetime-local input (local time) as an ISO string in UTC, or "". */
export function localInputToIso(value) {
  if (!value) return "";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? "" : date.toISOString();
}

/** An ISO string as the "YYYY-MM-DDTHH:MM:SS" local time a datetime-local input shows, or "". */
export function isoToLocalInput(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "";
  const local = new Date(date.getTime() - date.getTimezoneOffset() * 60000);
  return local.toISOString().slice(0, 19);
}

/** The hash of a dashboard page: `pageHash(hub, "instances", id)`, `pageHash(hub, "entities")`. */
export function pageHash(hubId, ...segments) {
  return "#/" + [hubId, ...segments].map(encodeURIComponent).join("/");
}
