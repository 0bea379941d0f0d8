// The instance detail page: summary, actions, failure, payloads (full values fetched on demand),
// children and parent, a Gantt timeline (vis-timeline) and the full history, paged.

import { api, hubPath } from "./api.js";
import { confirmAction, parseJsonField } from "./dialog.js";
import { formatDuration, formatJson, formatTime, h, pageHash, replaceChildren, statusBadge } from "./dom.js";
import { autoRefreshOn, autoRefreshToggle, REFRESH_MS } from "./refresh.js";

const ACTIVE = ["Running", "Pending", "Suspended"];
const FINISHED = ["Completed", "Failed", "Terminated", "Canceled", "ContinuedAsNew"];
const HISTORY_PAGE = 500;
const VIS_TIMELINE = new URL("../vendor/vis-timeline/vis-timeline-graph2d.min.js", import.meta.url);
// What a timeline item adds around its label: vis-timeline's padding and border, both sides.
const LABEL_PADDING_PX = 12;

/**
 * The actions: when each applies, whether it asks for a reason, and what follows it. `raiseEvent`
 * asks for an event name and data instead of a reason.
 */
const ACTIONS = [
  { name: "raiseEvent", testid: "action-raise-event", label: "Raise event", when: ACTIVE },
  { name: "suspend", testid: "action-suspend", label: "Suspend", when: ["Running", "Pending"], reason: true },
  { name: "resume", testid: "action-resume", label: "Resume", when: ["Suspended"], reason: true },
  { name: "terminate", testid: "action-terminate", label: "Terminate", when: ACTIVE, reason: true },
  { name: "restart", testid: "action-restart", label: "Restart", when: [...ACTIVE, ...FINISHED] },
  { name: "rewind", testid: "action-rewind", label: "Rewind", when: ["Failed"], reason: true },
  { name: "purge", testid: "action-purge", label: "Purge", when: FINISHED },
];

/** Render the detail page of `instanceId` for `context` (see app.js). */
export async function renderDetail(context, instanceId) {
  const base = hubPath(context.hubId, "instances", instanceId);
  // The first history page is asked for with the rest, not after the timeline is drawn.
  const [instance, children, timeline, firstHistory] = await Promise.all([
    api.get(base),
    api.get(`${base}/children`),
    api.get(`${base}/timeline`),
    historyPage(base, null),
    loadVisTimeline(),
  ]);
  if (!context.isCurrent()) return;
  const history = h("tbody");
  const timelineBox = h("div", { className: "timeline", "data-testid": "timeline" });
  const historyMore = h("div", { className: "pager" });
  replaceChildren(
    context.main,
    h("p", {}, h("a", { href: pageHash(context.hubId, "instances"), "data-testid": "back-to-list" }, "← Instances")),
    h("h1", { className: "mono", "data-testid": "detail-instance-id" }, instance.instanceId),
    summary(context, instance),
    context.readOnly ? null : actionBar(context, instance),
    h("p", { className: "toolbar" }, h("button", { type: "button", "data-testid": "refresh", onclick: () => context.rerender() }, "Refresh"), autoRefreshToggle()),
    failure(instance.failure),
    h("h2", {}, "Timeline"),
    timelineBox,
    h("section", { className: "payloads" }, ["input", "output", "customStatus"].map((field) => payload(base, instance, field))),
    relatives(context, instance, children.children),
    h("h2", {}, "History"),
    h(
      "table",
      { className: "list history", "data-testid": "history" },
      h("thead", {}, h("tr", {}, ["#", "Event", "Timestamp", "Name", "Details"].map((title) => h("th", {}, title)))),
      history,
    ),
    historyMore,
  );
  drawTimeline(context, timelineBox, timeline.items);
  showHistory(base, history, historyMore, firstHistory);
  refreshWhileActive(context, instance);
}

function summary(context, instance) {
  const parent = instance.parent
    ? h("a", { href: pageHash(context.hubId, "instances", instance.parent.instanceId), className: "mono", "data-testid": "parent-link" }, instance.parent.instanceId)
    : "—";
  const rows = [
    ["Name", instance.name],
    ["Status", statusBadge(instance.runtimeStatus)],
    ["Created", formatTime(instance.createdTime)],
    ["Last updated", formatTime(instance.lastUpdatedTime)],
    ["Completed", formatTime(instance.completedTime)],
    ["Duration", h("span", { "data-testid": "duration" }, formatDuration(instance.durationMs))],
    ["Parent", parent],
  ];
  return h("dl", { className: "summary", "data-testid": "summary", "data-status": instance.runtimeStatus }, rows.map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]));
}

function failure(details) {
  if (!details) return null;
  return h(
    "section",
    { className: "failure", "data-testid": "failure" },
    h("h2", {}, "Failure"),
    h("p", { "data-testid": "failure-message" }, details.message),
    details.details ? h("pre", { className: "json" }, typeof details.details === "string" ? details.details : formatJson(details.details)) : null,
  );
}

function payload(base, instance, field) {
  const labels = { input: "Input", output: "Output", customStatus: "Custom status" };
  const pre = h("pre", { className: "json", "data-testid": `payload-${field}` }, formatJson(instance[field] ?? null));
  const truncated = (instance.truncated || []).includes(field);
  const loadFull = truncated
    ? h("button", {
        type: "button",
        "data-testid": `load-full-${field}`,
        onclick: async (event) => {
          event.target.disabled = true;
          try {
            pre.textContent = formatJson(await api.get(`${base}/payload/${field}`));
            event.target.remove();
          } catch (problem) {
            pre.textContent = `Could not load: ${problem.message}`;
            event.target.disabled = false;
          }
        },
      }, "Load full")
    : null;
  return h("div", { className: "payload" }, h("h2", {}, labels[field], truncated ? h("span", { className: "muted" }, " (truncated) ") : null, loadFull), pre);
}

function relatives(context, instance, children) {
  if (!children.length) return null;
  return h(
    "section",
    { "data-testid": "children" },
    h("h2", {}, `Sub-orchestrations (${children.length})`),
    h(
      "ul",
      {},
      children.map((child) =>
        h("li", {}, h("a", { href: pageHash(context.hubId, "instances", child.instanceId), className: "mono", "data-testid": "child-link" }, child.instanceId), ` ${child.name} `, statusBadge(child.runtimeStatus)),
      ),
    ),
  );
}

function actionBar(context, instance) {
  return h(
    "div",
    { className: "actions", "data-testid": "actions" },
    ACTIONS.map((action) =>
      h("button", {
        type: "button",
        "data-testid": action.testid,
        disabled: !action.when.includes(instance.runtimeStatus),
        className: action.name === "terminate" || action.name === "purge" ? "danger" : "",
        onclick: () => runAction(context, instance, action),
      }, action.label),
    ),
  );
}

async function runAction(context, instance, action) {
  const path = hubPath(context.hubId, "instances", instance.instanceId, action.name);
  const answer = await confirmAction({
    title: `${action.label} ${instance.instanceId}`,
    text: ACTION_TEXT[action.name] ?? `${action.label} this ${instance.runtimeStatus.toLowerCase()} instance?`,
    fields: actionFields(action),
    confirmLabel: action.label,
    run: (values) => api.post(path, actionBody(action, values)),
  });
  if (!answer) return;
  const restarted = answer.result?.instanceId;
  if (action.name === "purge") location.hash = pageHash(context.hubId, "instances");
  else if (restarted && restarted !== instance.instanceId) location.hash = pageHash(context.hubId, "instances", restarted);
  else await context.rerender();
}

const ACTION_TEXT = {
  purge: "The instance and its history are deleted for good.",
  restart: "Start this orchestration again with the same input.",
  raiseEvent: "Send an external event to this instance.",
};

function actionFields(action) {
  if (action.name === "raiseEvent") {
    return [
      { name: "eventName", label: "Event name" },
      { name: "eventData", label: "Event data (JSON)", multiline: true, placeholder: "null" },
    ];
  }
  if (action.name === "restart") return [{ name: "newInstanceId", label: "With a new instance ID", checkbox: true, value: true }];
  return action.reason ? [{ name: "reason", label: "Reason" }] : [];
}

function actionBody(action, values) {
  if (action.name === "restart") return { newInstanceId: values.newInstanceId };
  if (action.name !== "raiseEvent") return action.reason ? { reason: values.reason } : {};
  if (!values.eventName.trim()) throw new Error("Enter the event's name.");
  return { eventName: values.eventName.trim(), eventData: parseJsonField(values.eventData, "Event data") };
}

let visTimeline = null;

/**
 * Load vis-timeline's standalone build (it defines window.vis) the first time a detail page opens:
 * only this page draws a timeline, and evaluating the script held every page's first draw back.
 */
function loadVisTimeline() {
  visTimeline ??= new Promise((resolve, reject) => {
    const script = h("script", { src: VIS_TIMELINE.href, onload: resolve });
    script.onerror = () => {
      visTimeline = null;
      script.remove();
      reject(new Error("Could not load the timeline library (vis-timeline)."));
    };
    document.head.append(script);
  });
  return visTimeline;
}

function drawTimeline(context, container, items) {
  if (!items.length) {
    container.append(h("p", { className: "muted" }, "Nothing scheduled yet."));
    return;
  }
  const now = new Date().toISOString();
  const kinds = [...new Set(items.map((item) => item.kind))];
  const data = items.map((item) => {
    const instant = item.kind === "event" || (item.end === null && item.status !== "Running" && item.kind !== "timer");
    const label = h("span", {}, item.name || item.kind);
    return {
      id: item.id,
      group: item.kind,
      content: label,
      title: `${item.kind} ${item.name || ""}: ${item.canceled ? "Canceled" : item.terminated ? "Terminated" : item.status}`,
      start: item.start,
      end: instant ? undefined : item.end || now,
      type: instant ? "point" : "range",
      className: [`tl-${item.kind}`, `tl-${String(item.status).toLowerCase()}`, item.canceled && "tl-canceled", item.terminated && "tl-terminated"]
        .filter(Boolean)
        .join(" "),
      instanceId: item.instanceId,
    };
  });
  const timeline = new window.vis.Timeline(
    container,
    null,
    kinds.map((kind) => ({ id: kind, content: kind })),
    { stack: true, zoomKey: "ctrlKey", maxHeight: 480, orientation: "top", tooltip: { followMouse: true }, zoomMin: 5 },
  );
  // vis-timeline draws an item added inside the window at once, each forcing a layout (a second for
  // 500 items); added outside it, the items are drawn and measured together by the next redraw.
  timeline.setWindow(0, 1000, { animation: false });
  timeline.setItems(data);
  // Drawn with nothing in view (cheap), the panels have their widths, which the window fitted to the
  // items and their labels needs. Passing start/end as options keeps vis-timeline 8 hidden for good,
  // and its own initial fit at the first "changed" would undo this window (a days-wide one, and a
  // second full redraw of every item: 150-200 ms for 500): it is marked done.
  timeline.redraw();
  timeline.initialFitDone = true;
  const { start, end } = itemsWindow(container, data);
  timeline.setWindow(start, end, { animation: false });
  container.dataset.fitted = "true";
  timeline.on("select", ({ items: selected }) => {
    const item = data.find((candidate) => candidate.id === selected[0]);
    if (item && item.instanceId) location.hash = pageHash(context.hubId, "instances", item.instanceId);
  });
  context.onLeave(() => timeline.destroy());
}

/**
 * A window showing every item with a 5% margin on both sides, widened on the right so that a label
 * running past its bar (app.css) still ends inside the window: an item starting at `start` whose label
 * takes the share `s` of the panel's width needs start + s × (window length) ≤ window end.
 */
function itemsWindow(container, data) {
  const times = data.flatMap((item) => [item.start, item.end ?? item.start]).map((time) => new Date(time).getTime());
  const first = Math.min(...times);
  const last = Math.max(...times);
  const margin = Math.max((last - first) * 0.05, 5);
  const panel = container.querySelector(".vis-panel.vis-center")?.clientWidth || container.clientWidth;
  const labelWidth = textWidth(container.querySelector(".vis-item-content") ?? container);
  let right = margin;
  for (const item of data) {
    const share = Math.min((labelWidth(item.content.textContent) + LABEL_PADDING_PX) / panel, 0.5);
    const start = new Date(item.start).getTime();
    right = Math.max(right, (start - last + share * (last - first + margin)) / (1 - share));
  }
  return { start: new Date(first - margin), end: new Date(last + right) };
}

/** A function giving the width in pixels of a text in `element`'s font. */
function textWidth(element) {
  const canvas = document.createElement("canvas").getContext("2d");
  canvas.font = getComputedStyle(element).font;
  return (text) => canvas.measureText(text).width;
}

function historyPage(base, continuation) {
  return api.get(`${base}/history`, { continuation, top: HISTORY_PAGE });
}

/** Append a history page's rows to `body`, and a "Load more history" button while there are more. */
function showHistory(base, body, more, answer) {
  const start = body.rows.length;
  body.append(...answer.events.map((event, index) => historyRow(event, start + index)));
  replaceChildren(
    more,
    answer.continuation
      ? h("button", {
          type: "button",
          "data-testid": "history-more",
          onclick: async (event) => {
            // Disabled while the page loads: a second click would append the same rows twice.
            event.target.disabled = true;
            try {
              showHistory(base, body, more, await historyPage(base, answer.continuation));
            } finally {
              event.target.disabled = false;
            }
          },
        }, "Load more history")
      : null,
  );
}

function historyRow(event, index) {
  const { eventId, eventType, timestamp, name, ...rest } = event;
  const details = Object.keys(rest).length ? JSON.stringify(rest) : "";
  return h(
    "tr",
    { "data-testid": "history-row", "data-event-type": eventType },
    h("td", {}, String(index + 1)),
    h("td", {}, eventType, eventId !== undefined && eventId !== null && eventId >= 0 ? h("span", { className: "muted" }, ` #${eventId}`) : null),
    h("td", { className: "time" }, formatTime(timestamp)),
    h("td", {}, name ?? ""),
    h("td", { className: "mono clip", title: details }, details.length > 200 ? `${details.slice(0, 200)}…` : details),
  );
}

function refreshWhileActive(context, instance) {
  if (!ACTIVE.includes(instance.runtimeStatus)) return;
  const timer = setInterval(() => {
    if (autoRefreshOn() && !document.querySelector("dialog[open]")) context.rerender();
  }, REFRESH_MS);
  context.onLeave(() => clearInterval(timer));
}
