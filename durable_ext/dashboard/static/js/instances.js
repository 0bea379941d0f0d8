// The Instances page: filters, counts by status, one server page of instances at a time (continuation
// tokens, never the whole table), auto-refresh, and bulk actions on a selection or on the filter.

import { api, hubPath } from "./api.js";
import { confirmAction } from "./dialog.js";
import { autoRefreshOn, autoRefreshToggle, REFRESH_MS } from "./refresh.js";
import {
  formatTime,
  h,
  isoToLocalInput,
  localInputToIso,
  pageHash,
  replaceChildren,
  statusBadge,
} from "./dom.js";

const STATUSES = ["Pending", "Running", "Suspended", "Completed", "Failed", "Terminated", "ContinuedAsNew"];
const TEXT_FILTERS = ["name", "prefix", "customStatus"];
// The table service returns rows in instance ID order: other sorts order each page (see docs/dashboard.md).
const SORTS = { instanceId: "Instance ID", createdTime: "Created (within the page)", lastUpdatedTime: "Last updated (within the page)", name: "Name (within the page)" };
const BULK_ACTIONS = ["terminate", "suspend", "resume", "restart", "rewind", "purge"];

/** The list query the page's URL describes (filters, sort and page size), without empty values. */
function listQuery(params) {
  const query = {};
  for (const name of ["status", ...TEXT_FILTERS, "from", "to", "sort", "order", "top"]) {
    const value = params.get(name);
    if (value) query[name] = value;
  }
  query.sort ??= "instanceId";
  query.order ??= "asc";
  query.top ??= "50";
  return query;
}

/** The filter part of the query (what counts and bulk-by-filter use). */
function filterOf(query) {
  const { sort, order, top, ...filter } = query;
  return filter;
}

/** Render the page for `context` (see app.js). */
export async function renderInstances(context) {
  const query = listQuery(context.params);
  const page = {
    context,
    query,
    tokens: [null], // tokens[i] fetches page i; the last is the page shown
    selected: new Set(),
    table: h("tbody"),
    counts: h("div", { className: "counts", "data-testid": "status-counts" }),
    pager: h("div", { className: "pager" }),
    bulkResults: h("div", { className: "bulk-results" }),
  };
  replaceChildren(
    context.main,
    h("h1", {}, "Instances"),
    filterForm(context, query),
    page.counts,
    context.readOnly ? null : bulkBar(page),
    h(
      "table",
      { className: "list", "data-testid": "instance-table" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          h("th", {}, context.readOnly ? null : selectAllBox(page)),
          ["Instance ID", "Name", "Status", "Created", "Last updated", "Custom status"].map((title) =>
            h("th", {}, title),
          ),
        ),
      ),
      page.table,
    ),
    page.pager,
    page.bulkResults,
  );
  startAutoRefresh(page);
  // The rows first: counting scans every row the filter matches (10,000 rows: most of a second of the
  // server's time), and the page's own request would wait behind it.
  await loadPage(page);
  await loadCounts(page);
}

function filterForm(context, query) {
  const selected = new Set((query.status || "").split(",").filter(Boolean));
  const statusSelect = h(
    "select",
    { name: "status", multiple: true, size: STATUSES.length, "data-testid": "status-filter", "aria-label": "Status" },
    STATUSES.map((status) => h("option", { value: status, selected: selected.has(status) }, status)),
  );
  const text = (name, label, testid) =>
    h("label", {}, label, h("input", { name, type: "search", value: query[name] || "", "data-testid": testid }));
  const time = (name, label) =>
    h("label", {}, label, h("input", { name, type: "datetime-local", step: 1, value: isoToLocalInput(query[name]), "data-testid": `filter-${name}` }));
  const select = (name, options, testid) =>
    h(
      "select",
      { name, "data-testid": testid },
      Object.entries(options).map(([value, label]) => h("option", { value, selected: query[name] === value }, label)),
    );
  const form = h(
    "form",
    { className: "filters", "data-testid": "filters" },
    h("label", {}, "Status", statusSelect),
    h(
      "div",
      { className: "filter-fields" },
      text("prefix", "Instance ID prefix", "instance-search"),
      text("name", "Name", "filter-name"),
      text("customStatus", "Custom status contains", "filter-custom-status"),
      time("from", "Created from"),
      time("to", "Created to"),
      h(
        "label",
        {},
        "Sort",
        select("sort", SORTS, "sort"),
        select("order", { asc: "ascending", desc: "descending" }, "order"),
      ),
      h("label", {}, "Page size", select("top", { 10: "10", 25: "25", 50: "50", 100: "100" }, "page-size")),
    ),
    h(
      "div",
      { className: "filter-buttons" },
      h("button", { type: "submit", "data-testid": "apply-filters" }, "Apply"),
      h("button", { type: "button", "data-testid": "clear-filters", onclick: () => navigate(context, new URLSearchParams()) }, "Clear"),
      autoRefreshToggle(),
    ),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    navigate(context, formParams(form));
  });
  return form;
}

function formParams(form) {
  const data = new FormData(form);
  const params = new URLSearchParams();
  const statuses = data.getAll("status");
  if (statuses.length) params.set("status", statuses.join(","));
  for (const name of TEXT_FILTERS) {
    const value = String(data.get(name) || "").trim();
    if (value) params.set(name, value);
  }
  for (const name of ["from", "to"]) {
    const iso = localInputToIso(String(data.get(name) || ""));
    if (iso) params.set(name, iso);
  }
  for (const name of ["sort", "order", "top"]) params.set(name, String(data.get(name)));
  return params;
}

function navigate(context, params) {
  const hash = pageHash(context.hubId, "instances") + (params.size ? `?${params}` : "");
  if (location.hash === hash) context.rerender();
  else location.hash = hash;
}

async function loadCounts(page) {
  const answer = await api.get(hubPath(page.context.hubId, "counts"), filterOf(page.query));
  if (!page.context.isCurrent()) return;
  const counts = Object.entries(answer.counts).filter(([, count]) => count > 0);
  replaceChildren(
    page.counts,
    h("span", { className: "count total", "data-testid": "count-total" }, `Total ${answer.total}`),
    counts.map(([status, count]) =>
      h("span", { className: `count status-${status.toLowerCase()}`, "data-testid": `count-${status}` }, `${status} ${count}`),
    ),
  );
}

async function loadPage(page) {
  const token = page.tokens.at(-1);
  const answer = await api.get(hubPath(page.context.hubId, "instances"), { ...page.query, continuation: token });
  if (!page.context.isCurrent()) return;
  replaceChildren(page.table, answer.instances.map((instance) => instanceRow(page, instance)));
  if (!answer.instances.length) {
    page.table.append(h("tr", {}, h("td", { colSpan: 7, className: "muted", "data-testid": "no-instances" }, "No instances match.")));
  }
  page.next = answer.continuation;
  renderPager(page);
}

function instanceRow(page, instance) {
  const link = pageHash(page.context.hubId, "instances", instance.instanceId);
  const box = page.context.readOnly
    ? null
    : h("input", {
        type: "checkbox",
        className: "select-instance",
        "data-testid": "select-instance",
        "aria-label": `Select ${instance.instanceId}`,
        checked: page.selected.has(instance.instanceId),
        onchange: (event) => {
          if (event.target.checked) page.selected.add(instance.instanceId);
          else page.selected.delete(instance.instanceId);
          page.updateSelection?.();
        },
      });
  const custom = instance.customStatus === null || instance.customStatus === undefined ? "" : JSON.stringify(instance.customStatus);
  return h(
    "tr",
    { "data-testid": "instance-row", "data-instance-id": instance.instanceId, "data-status": instance.runtimeStatus },
    h("td", {}, box),
    h("td", { className: "mono" }, h("a", { href: link, "data-testid": "instance-link" }, instance.instanceId)),
    h("td", {}, instance.name),
    h("td", {}, statusBadge(instance.runtimeStatus)),
    h("td", { className: "time" }, formatTime(instance.createdTime)),
    h("td", { className: "time" }, formatTime(instance.lastUpdatedTime)),
    h("td", { className: "mono clip", title: custom }, custom.length > 80 ? `${custom.slice(0, 80)}…` : custom),
  );
}

function renderPager(page) {
  const number = page.tokens.length;
  replaceChildren(
    page.pager,
    h("button", {
      type: "button",
      "data-testid": "prev-page",
      disabled: number === 1,
      onclick: () => {
        page.tokens.pop();
        loadPage(page).catch((problem) => page.context.showError(problem.message));
      },
    }, "← Previous page"),
    h("span", { "data-testid": "page-number" }, `Page ${number}`),
    h("button", {
      type: "button",
      "data-testid": "next-page",
      disabled: !page.next,
      onclick: () => {
        page.tokens.push(page.next);
        loadPage(page).catch((problem) => page.context.showError(problem.message));
      },
    }, "Next page →"),
  );
}

function selectAllBox(page) {
  return h("input", {
    type: "checkbox",
    "data-testid": "select-all",
    "aria-label": "Select all on this page",
    onchange: (event) => {
      for (const box of page.table.querySelectorAll("input.select-instance")) {
        box.checked = event.target.checked;
        box.dispatchEvent(new Event("change"));
      }
    },
  });
}

function bulkBar(page) {
  const action = h("select", { "data-testid": "bulk-action", "aria-label": "Bulk action" }, BULK_ACTIONS.map((name) => h("option", { value: name }, name)));
  const limit = h("input", { type: "number", min: 1, max: 1000, value: 100, "data-testid": "bulk-limit", "aria-label": "At most" });
  const onSelection = h("button", { type: "button", "data-testid": "bulk-selected", disabled: true }, "Apply to 0 selected");
  const onFilter = h("button", { type: "button", "data-testid": "bulk-filter" }, "Apply to all matching the filter");
  page.updateSelection = () => {
    onSelection.textContent = `Apply to ${page.selected.size} selected`;
    onSelection.disabled = page.selected.size === 0;
  };
  onSelection.onclick = () =>
    runBulk(page, action.value, { instanceIds: [...page.selected] }, `the ${page.selected.size} selected instances`);
  onFilter.onclick = () => {
    const count = Number(limit.value);
    runBulk(page, action.value, { filter: filterOf(page.query), limit: count }, `up to ${count} instances matching the filter`);
  };
  return h("div", { className: "bulk", "data-testid": "bulk-bar" }, "Bulk:", action, onSelection, onFilter, h("label", { className: "inline" }, "at most", limit));
}

async function runBulk(page, action, target, description) {
  const answer = await confirmAction({
    title: `Bulk ${action}`,
    text: `${action} ${description}?`,
    fields: action === "purge" || action === "restart" ? [] : [{ name: "reason", label: "Reason", value: "" }],
    confirmLabel: action,
    run: (values) => api.post(hubPath(page.context.hubId, "bulk", action), { ...target, reason: values.reason }),
  });
  if (!answer) return;
  page.selected.clear();
  page.updateSelection();
  showBulkResults(page, action, answer.results);
  await Promise.all([loadCounts(page), loadPage(page)]).catch((problem) => page.context.showError(problem.message));
}

function showBulkResults(page, action, results) {
  const succeeded = results.filter((result) => result.ok).length;
  replaceChildren(
    page.bulkResults,
    h("h2", { "data-testid": "bulk-summary" }, `Bulk ${action}: ${succeeded} of ${results.length} succeeded`),
    h(
      "table",
      { className: "list", "data-testid": "bulk-results" },
      h("thead", {}, h("tr", {}, ["Instance ID", "Outcome", "Status", "Error"].map((title) => h("th", {}, title)))),
      h(
        "tbody",
        {},
        results.map((result) =>
          h(
            "tr",
            { "data-testid": "bulk-result", "data-instance-id": result.instanceId, "data-ok": String(Boolean(result.ok)) },
            h("td", { className: "mono" }, result.instanceId),
            h("td", {}, result.ok ? "ok" : "failed"),
            h("td", {}, String(result.status ?? "")),
            h("td", {}, result.error ?? ""),
          ),
        ),
      ),
    ),
  );
}

function startAutoRefresh(page) {
  const timer = setInterval(() => {
    // Skipped while a dialog is open: the list must not change under a confirmation.
    if (!autoRefreshOn() || document.querySelector("dialog[open]")) return;
    Promise.all([loadCounts(page), loadPage(page)]).catch((problem) => page.context.showError(problem.message));
  }, REFRESH_MS);
  page.context.onLeave(() => clearInterval(timer));
}
