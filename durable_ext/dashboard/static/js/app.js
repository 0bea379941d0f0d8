// The dashboard's entry point: loads the hubs, keeps the hub picker, and routes the URL's hash to a
// page. Hash routes: #/{hub}/instances?filters, #/{hub}/instances/{instanceId}, #/{hub}/entities.

import { api, onKeyRequired, storeKey } from "./api.js";
import { promptForKey } from "./dialog.js";
import { h, pageHash, replaceChildren } from "./dom.js";
import { renderEntities } from "./entities.js";
import { renderDetail } from "./detail.js";
import { renderInstances } from "./instances.js";

const main = document.getElementById("main");
const picker = document.getElementById("hub-picker");
const errorBanner = document.getElementById("error");
const state = { hubs: [], readOnly: false, leaveHandlers: [], renderCount: 0 };

let pendingPrompt = null;
// Requests answered 401 at the same time share one prompt.
onKeyRequired((message) => {
  pendingPrompt ??= promptForKey(message).then((key) => {
    storeKey(key);
    pendingPrompt = null;
  });
  return pendingPrompt;
});

/** Show an error above the page (or hide the banner when `message` is empty). */
function showError(message) {
  errorBanner.textContent = message || "";
  errorBanner.hidden = !message;
}

function parseRoute() {
  const [path, query = ""] = location.hash.replace(/^#\/?/, "").split("?");
  const segments = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { hubId: segments[0], page: segments[1] || "instances", id: segments[2], params: new URLSearchParams(query) };
}

async function loadHubs() {
  const answer = await api.get("hubs");
  state.hubs = answer.hubs;
  state.readOnly = Boolean(answer.readOnly);
  document.body.classList.toggle("read-only", state.readOnly);
  document.getElementById("read-only-badge").hidden = !state.readOnly;
  replaceChildren(
    picker,
    state.hubs.map((hub) => h("option", { value: hub.id }, hub.account ? `${hub.hub} — ${hub.account}` : hub.hub)),
  );
}

async function render() {
  const renderId = ++state.renderCount;
  for (const leave of state.leaveHandlers.splice(0)) leave();
  showError("");
  const route = parseRoute();
  const hub = state.hubs.find((candidate) => candidate.id === route.hubId);
  if (!hub) {
    if (state.hubs.length) location.replace(pageHash(state.hubs[0].id, "instances"));
    else replaceChildren(main, h("p", {}, "This dashboard has no task hubs configured."));
    return;
  }
  picker.value = hub.id;
  document.getElementById("nav-instances").href = pageHash(hub.id, "instances");
  document.getElementById("nav-entities").href = pageHash(hub.id, "entities");
  const context = {
    hubId: hub.id,
    readOnly: state.readOnly,
    params: route.params,
    main,
    // A page still loading when the user moved on must not draw over the next one.
    isCurrent: () => renderId === state.renderCount,
    onLeave: (handler) => state.leaveHandlers.push(handler),
    showError,
    rerender: render,
  };
  try {
    if (route.page === "entities") await renderEntities(context);
    else if (route.id !== undefined) await renderDetail(context, route.id);
    else await renderInstances(context);
  } catch (problem) {
    if (context.isCurrent()) showError(problem.message);
  }
}

picker.addEventListener("change", () => {
  const page = parseRoute().page === "entities" ? "entities" : "instances";
  location.hash = pageHash(picker.value, page);
});
window.addEventListener("hashchange", render);

try {
  await loadHubs();
  await render();
} catch (problem) {
  showError(problem.message);
}
