// The administration page's forms: a labelled field per value, named by the path the
// server's problems use (`residents.1.birth_date`), values read back in the types the
// API takes, and a refusal's problems shown beside their fields in the server's words.
import { append, h } from "../board/dom.js";
import { a } from "./text.js";

// The element's children replaced by these (null and false leave nothing).
export function fill(element, ...children) {
  element.replaceChildren();
  append(element, children);
}

// A labelled field: `name` is the problem path, `control` the input. The problem line
// under it is filled by showProblems.
export function field(name, label, control, { wide = false, hint = "" } = {}) {
  control.dataset.field = name;
  if (!control.id) control.id = `f-${name.replace(/[^A-Za-z0-9_-]/g, "-")}`;
  return h(
    "div",
    { class: wide ? "field wide" : "field", dataset: { for: name } },
    h("label", { for: control.id }, label),
    control,
    hint ? h("span", { class: "hint" }, hint) : null,
    h("span", { class: "problem", role: "alert", hidden: true }),
  );
}

export function text(value, options = {}) {
  return h("input", { type: "text", value: value ?? "", autocomplete: "off", ...options });
}

export function number(value, options = {}) {
  return h("input", { type: "number", value: value === null || value === undefined ? "" : String(value), ...options });
}

export function area(value, options = {}) {
  const element = h("textarea", { rows: 2, ...options });
  element.value = value ?? "";
  return element;
}

// One item per line (allergies, medicines, skills).
export function lines(items, options = {}) {
  const element = area((items ?? []).join("\n"), { rows: Math.max(2, (items ?? []).length + 1), placeholder: a("list.one_per_line"), ...options });
  element.dataset.kind = "lines";
  return element;
}

export function check(value, options = {}) {
  return h("input", { type: "checkbox", checked: Boolean(value), ...options });
}

// A choice: `values` as sent, each shown as `label(value)`.
export function choice(value, values, label, options = {}) {
  const element = h(
    "select",
    options,
    values.map((v) => h("option", { value: v }, label(v))),
  );
  element.value = value ?? values[0] ?? "";
  return element;
}

// The value of the control for `name` inside `root`, in the type the API takes: text
// trimmed, numbers as numbers (null when empty), lines as a list, checkboxes as booleans,
// empty dates and times as null.
export function valueOf(root, name) {
  const control = root.querySelector(`[data-field="${CSS.escape(name)}"]`);
  if (!control) return undefined;
  if (control.type === "checkbox") return control.checked;
  if (control.type === "number") return control.value.trim() === "" ? null : Number(control.value);
  if (control.type === "date" || control.type === "time") return control.value || null;
  if (control.dataset.kind === "weekdays") {
    // "1,2,3" or "1 2 3": numbers as numbers; anything else is sent as typed, for the
    // server to say what is wrong with it.
    return control.value
      .split(/[\s,，、]+/)
      .filter(Boolean)
      .map((day) => (/^\d+$/.test(day) ? Number(day) : day));
  }
  if (control.dataset.kind === "lines") {
    return control.value
      .split("\n")
      .map((line) => line.trim())
      .filter(Boolean);
  }
  return control.value.trim();
}

export function clearProblems(root) {
  for (const line of root.querySelectorAll(".problem")) {
    line.textContent = "";
    line.hidden = true;
  }
  for (const box of root.querySelectorAll(".field.refused")) box.classList.remove("refused");
  const summary = root.querySelector(".form-problem");
  if (summary) {
    summary.replaceChildren();
    summary.hidden = true;
  }
}

// The field a problem is about, or the nearest field holding it: `residents.1.allergies.2`
// (one line of a list) is shown at `residents.1.allergies`; `residents` (none given) at
// the residents' list. A 400 (the body's types) counts list items from 0, the rules
// (422) from 1, as the form does.
function placeOf(root, name, fromZero) {
  let parts = String(name).split(".");
  if (fromZero) parts = parts.map((part) => (/^\d+$/.test(part) ? String(Number(part) + 1) : part));
  while (parts.length) {
    const path = parts.join(".");
    const box = root.querySelector(`[data-for="${CSS.escape(path)}"]`);
    if (box) return box;
    parts.pop();
  }
  return null;
}

// A refused change (ApiFailure): each problem's message beside its field, those with no
// field in a line at the top of the form. Returns whether anything was shown.
export function showProblems(root, failure) {
  clearProblems(root);
  const summary = root.querySelector(".form-problem");
  const problems = failure?.body?.problems ?? [];
  const loose = [];
  for (const problem of problems) {
    const box = placeOf(root, problem.field ?? "", failure.status === 400);
    const line = box?.querySelector(":scope > .problem");
    if (!line) {
      loose.push(`${problem.field}: ${problem.message}`);
      continue;
    }
    line.hidden = false;
    line.textContent = line.textContent ? `${line.textContent}；${problem.message}` : problem.message;
    box.classList.add("refused");
  }
  if (summary) {
    summary.hidden = false;
    const headline = problems.length ? a("refused.summary") : a("refused.other", { message: failure?.message ?? "" });
    fill(summary, h("strong", {}, headline), loose.length ? h("ul", {}, loose.map((line) => h("li", {}, line))) : null);
  }
  root.querySelector(".field.refused")?.scrollIntoView({ block: "center" });
  return true;
}

// The line at the top of a form where a refusal with no field, or "saved", is said.
export function formProblem() {
  return h("div", { class: "form-problem", role: "alert", hidden: true });
}

// "Saved" in the form's line at the top, after a change the server took.
export function saidSaved(form) {
  const line = form?.querySelector(".form-problem");
  if (!line) return;
  line.hidden = false;
  line.classList.add("saved");
  line.textContent = a("saved");
  line.scrollIntoView({ block: "center" });
}
