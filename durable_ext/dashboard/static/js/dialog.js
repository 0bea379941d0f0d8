// The confirmation dialog every action goes through, and the key prompt.

import { h, replaceChildren } from "./dom.js";

const byId = (id) => document.getElementById(id);

/**
 * Ask to confirm an action. `fields` are extra inputs ({name, label, value, multiline, checkbox,
 * placeholder}); a checkbox's value is a boolean.
 * `run(values)` does the work once confirmed: if it throws, its message is shown and the dialog stays
 * open. Resolves to run's result, or to null when cancelled.
 */
export function confirmAction({ title, text, fields = [], confirmLabel = "Confirm", run }) {
  const dialog = byId("confirm-dialog");
  const form = byId("confirm-form");
  const error = byId("confirm-error");
  const ok = byId("confirm-ok");
  byId("confirm-title").textContent = title;
  byId("confirm-text").textContent = text;
  ok.textContent = confirmLabel;
  error.hidden = true;
  const inputs = fields.map((field) => fieldInput(field));
  replaceChildren(
    byId("confirm-fields"),
    fields.map((field, index) => h("label", { className: "field" }, field.label, inputs[index])),
  );
  return new Promise((resolve) => {
    const finish = (result) => {
      form.onsubmit = null;
      byId("confirm-cancel").onclick = null;
      dialog.oncancel = null;
      dialog.close();
      resolve(result);
    };
    byId("confirm-cancel").onclick = () => finish(null);
    dialog.oncancel = () => finish(null);
    form.onsubmit = async (event) => {
      event.preventDefault();
      const values = Object.fromEntries(
        fields.map((field, index) => [field.name, field.checkbox ? inputs[index].checked : inputs[index].value]),
      );
      ok.disabled = true;
      try {
        finish(await run(values));
      } catch (problem) {
        error.textContent = problem.message;
        error.hidden = false;
      } finally {
        ok.disabled = false;
      }
    };
    dialog.showModal();
    (inputs[0] ?? ok).focus();
  });
}

function fieldInput({ name, value = "", multiline = false, checkbox = false, placeholder = "" }) {
  const attrs = { name, placeholder, "data-testid": `confirm-${name}` };
  if (checkbox) return h("input", { ...attrs, type: "checkbox", checked: Boolean(value) });
  return multiline ? h("textarea", { ...attrs, value, rows: 4 }) : h("input", { ...attrs, value, type: "text" });
}

/** Parse the JSON typed in a dialog field: "" is null; anything else must be valid JSON. */
export function parseJsonField(text, label) {
  if (!text.trim()) return null;
  try {
    return JSON.parse(text);
  } catch (problem) {
    throw new Error(`${label} is not valid JSON: ${problem.message}`);
  }
}

/** Show the key prompt; resolves once a key was entered (the prompt cannot be dismissed without one). */
export function promptForKey(message) {
  const dialog = byId("key-dialog");
  const form = byId("key-form");
  const input = byId("key-input");
  const error = byId("key-error");
  error.textContent = message;
  error.hidden = !message;
  input.value = "";
  return new Promise((resolve) => {
    dialog.oncancel = (event) => event.preventDefault();
    form.onsubmit = (event) => {
      event.preventDefault();
      if (!input.value) return;
      form.onsubmit = null;
      dialog.close();
      resolve(input.value);
    };
    if (!dialog.open) dialog.showModal();
    input.focus();
  });
}
