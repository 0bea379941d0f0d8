// The auto-refresh setting, shared by the pages and kept for the tab (sessionStorage).

import { h } from "./dom.js";

export const REFRESH_MS = 2000;
const STORAGE = "durable_ext.dashboard.autoRefresh";

export function autoRefreshOn() {
  return sessionStorage.getItem(STORAGE) === "1";
}

/** The "Auto-refresh" checkbox. */
export function autoRefreshToggle() {
  return h(
    "label",
    { className: "inline" },
    h("input", {
      type: "checkbox",
      "data-testid": "auto-refresh",
      checked: autoRefreshOn(),
      onchange: (event) => sessionStorage.setItem(STORAGE, event.target.checked ? "1" : "0"),
    }),
    "Auto-refresh",
  );
}
