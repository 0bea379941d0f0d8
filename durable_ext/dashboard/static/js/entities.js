// The Entities page: entities by name prefix, a page at a time, with their state, last operation
// time, lock holder and queued operations; signal an operation or delete an entity.

import { api, hubPath } from "./api.js";
import { confirmAction, parseJsonField } from "./dialog.js";
import { formatJson, formatTime, h, pageHash, replaceChildren } from "./dom.js";

const PAGE_SIZE = 50;

/** Render the page for `context` (see app.js). */
export async function renderEntities(context) {
  const prefix = context.params.get("prefix") || "";
  const page = { context, prefix, tokens: [null], body: h("tbody"), pager: h("div", { className: "pager" }) };
  const search = h("input", { name: "prefix", type: "search", value: prefix, "data-testid": "entity-search", "aria-label": "Entity name prefix" });
  const form = h("form", { className: "filters" }, h("label", {}, "Entity name prefix, or name@key prefix", search), h("button", { type: "submit", "data-testid": "apply-entity-filter" }, "Apply"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = search.value.trim();
    const hash = pageHash(context.hubId, "entities") + (value ? `?${new URLSearchParams({ prefix: value })}` : "");
    if (location.hash === hash) context.rerender();
    else location.hash = hash;
  });
  const headings = ["Entity", "Key", "State", "Last operation", "Locked by", "Queued", context.readOnly ? null : ""];
  replaceChildren(
    context.main,
    h("h1", {}, "Entities"),
    form,
    h(
      "table",
      { className: "list", "data-testid": "entity-table" },
      h("thead", {}, h("tr", {}, headings.filter((title) => title !== null).map((title) => h("th", {}, title)))),
      page.body,
    ),
    page.pager,
  );
  await loadPage(page);
}

async function loadPage(page) {
  const answer = await api.get(hubPath(page.context.hubId, "entities"), { prefix: page.prefix, top: PAGE_SIZE, continuation: page.tokens.at(-1) });
  if (!page.context.isCurrent()) return;
  replaceChildren(page.body, answer.entities.map((entity) => entityRow(page, entity)));
  if (!answer.entities.length) page.body.append(h("tr", {}, h("td", { colSpan: 7, className: "muted" }, "No entities.")));
  const reload = () => loadPage(page).catch((problem) => page.context.showError(problem.message));
  replaceChildren(
    page.pager,
    h("button", { type: "button", "data-testid": "entity-prev-page", disabled: page.tokens.length === 1, onclick: () => { page.tokens.pop(); reload(); } }, "← Previous page"),
    h("button", { type: "button", "data-testid": "entity-next-page", disabled: !answer.continuation, onclick: () => { page.tokens.push(answer.continuation); reload(); } }, "Next page →"),
  );
}

function entityRow(page, entity) {
  const state = formatJson(entity.state ?? null);
  return h(
    "tr",
    { "data-testid": "entity-row", "data-entity-name": entity.name, "data-entity-key": entity.key },
    h("td", {}, entity.name),
    h("td", { className: "mono" }, entity.key),
    h("td", {}, h("pre", { className: "json", "data-testid": "entity-state" }, state)),
    h("td", { className: "time" }, formatTime(entity.lastOperationTime)),
    h("td", { className: "mono", "data-testid": "entity-locked-by" }, entity.lockedBy ?? "—"),
    h("td", { "data-testid": "entity-queued" }, String(entity.queuedOperations ?? 0)),
    page.context.readOnly ? null : h("td", {}, h("div", { className: "row-actions" }, entityActions(page, entity))),
  );
}

function entityActions(page, entity) {
  const path = hubPath(page.context.hubId, "entities", entity.name, entity.key);
  const afterwards = (answer) => answer && loadPage(page).catch((problem) => page.context.showError(problem.message));
  const signal = () =>
    confirmAction({
      title: `Signal @${entity.name}@${entity.key}`,
      text: "The operation is queued for the entity; it runs when the entity gets to it.",
      fields: [{ name: "operation", label: "Operation" }, { name: "input", label: "Input (JSON)", multiline: true, placeholder: "null" }],
      confirmLabel: "Signal",
      run: (values) => {
        if (!values.operation.trim()) throw new Error("Enter the operation's name.");
        return api.post(`${path}/signal`, { operation: values.operation.trim(), input: parseJsonField(values.input, "Input") });
      },
    }).then(afterwards);
  const remove = () =>
    confirmAction({
      title: `Delete @${entity.name}@${entity.key}`,
      text: "The entity's state is deleted for good.",
      confirmLabel: "Delete",
      run: () => api.del(path),
    }).then(afterwards);
  return [
    h("button", { type: "button", "data-testid": "entity-signal", onclick: signal }, "Signal"),
    h("button", { type: "button", className: "danger", "data-testid": "entity-delete", onclick: remove }, "Delete"),
  ];
}
