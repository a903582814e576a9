// The audit (GET /api/audit): who read or changed what, and when, filtered by person,
// household and time (in the district's zone, whatever this PC's). A change to the
// register opens to the fields it changed, each with its value before and after.
import { api } from "../board/api.js";
import { formatTime } from "../board/clock.js";
import { h } from "../board/dom.js";
import { actorText } from "../board/history.js";
import { state } from "../board/state.js";
import { check, fill, text } from "./form.js";
import { a, aOr } from "./text.js";

// The offset of `zone` from UTC at the moment `ms`, in milliseconds.
function offsetAt(ms, zone) {
  const parts = Object.fromEntries(
    new Intl.DateTimeFormat("en-US", { timeZone: zone, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" })
      .formatToParts(new Date(ms))
      .map((part) => [part.type, part.value]),
  );
  return Date.UTC(Number(parts.year), Number(parts.month) - 1, Number(parts.day), Number(parts.hour), Number(parts.minute), Number(parts.second)) - ms;
}

// "2026-11-23T10:00" on the district's clock, as an ISO time in UTC.
export function districtTime(local, zone) {
  const [day, clock = "00:00"] = local.split("T");
  const [y, mo, d] = day.split("-").map(Number);
  const [hh, mi] = clock.split(":").map(Number);
  const wall = Date.UTC(y, mo - 1, d, hh, mi);
  let moment = wall;
  for (let i = 0; i < 3; i += 1) moment = wall - offsetAt(moment, zone);
  return new Date(moment).toISOString();
}

// A record as flat fields: `residents.1.allergies` -> ["青霉素", "花生"]. Lists of
// plain values are one field; lists of records count from 1, as the forms do.
export function flatten(value, prefix = "", out = {}) {
  if (value === null || value === undefined) {
    if (prefix) out[prefix] = "";
    return out;
  }
  if (Array.isArray(value)) {
    if (value.every((item) => item === null || typeof item !== "object")) {
      out[prefix] = value.map(String);
      return out;
    }
    value.forEach((item, i) => flatten(item, prefix ? `${prefix}.${i + 1}` : String(i + 1), out));
    return out;
  }
  if (typeof value === "object") {
    for (const [key, item] of Object.entries(value)) flatten(item, prefix ? `${prefix}.${key}` : key, out);
    return out;
  }
  out[prefix] = String(value);
  return out;
}

// The fields that differ between before and after, in the after's order.
export function changedFields(before, after) {
  const was = flatten(before ?? {});
  const now = flatten(after ?? {});
  const names = [...Object.keys(now), ...Object.keys(was).filter((name) => !(name in now))];
  const same = (x, y) => JSON.stringify(x ?? "") === JSON.stringify(y ?? "");
  return names.filter((name) => !same(was[name], now[name])).map((name) => ({ name, before: was[name], after: now[name] }));
}

// Which form's words name a record's fields, by the audit action that changed it.
function recordKind(action) {
  for (const kind of ["household", "device", "station", "carer", "policy"]) {
    if (action.endsWith(`_${kind}`)) return kind;
  }
  return "";
}

// A field's path in words: `residents.1.allergies` -> "居民 1 · 过敏".
const PARTS = { residents: "resident", contacts: "contact", phones: "phone", steps: "stepfield" };
const LISTS = { residents: "household.residents", contacts: "household.contacts", phones: "household.phones", steps: "policy.steps" };

export function fieldText(path, action) {
  const parts = path.split(".");
  let group = recordKind(action);
  const words = [];
  for (let i = 0; i < parts.length; i += 1) {
    const part = parts[i];
    if (PARTS[part] && /^\d+$/.test(parts[i + 1] ?? "")) {
      // One of a list: "居民 2", "第 1 位联系人".
      group = PARTS[part];
      words.push(aOr(`${group}.heading`, `${aOr(LISTS[part], part)} ${parts[i + 1]}`).replace("{n}", parts[i + 1]));
      i += 1;
    } else if (PARTS[part]) {
      words.push(aOr(LISTS[part], part));
    } else {
      words.push(aOr(`${group}.${part}`, part));
    }
  }
  return words.join(" · ");
}

// The words for a value the register keeps as a code (mobility, a device's kind, an
// action), by the field's last name; yes or no for a switch; anything else as it is.
const CODED = {
  sex: "sex", mobility: "mobility", hearing: "sense", sight: "sense", language: "language", role: "role", transport: "transport",
  unless: "milestone", counted_from: "counted", actions: "action", call_type: "type",
};

export function valueText(path, value, action) {
  const name = path.split(".").pop();
  const one = (item) => {
    if (item === "true") return a("yes");
    if (item === "false") return a("no");
    if (name === "kind") return aOr(recordKind(action) === "device" ? `kind.${item}` : `phone.${item}`, item);
    if (CODED[name]) return aOr(`${CODED[name]}.${item}`, item);
    return item;
  };
  if (Array.isArray(value)) return value.map(one).join("、");
  return value === undefined || value === "" ? "" : one(value);
}

// Who did it, in words: the board's words for the desk's people, a family member by
// their number.
function who(actor) {
  const [kind, ...rest] = String(actor).split(":");
  if (kind === "family") return a("audit.family", { phone: rest.join(":") });
  return actorText(actor);
}

export class AuditTab {
  constructor() {
    this.filters = { actor: "", household: "", since: "", until: "", changes: true };
    this.entries = null;
    this.open = new Set();
    this.problem = "";
  }

  // The filters are drawn once; rows that arrive redraw only the rows, so nothing being
  // typed in the filters is lost.
  async show(root) {
    this.root = root;
    this.render();
    await this.load();
    this.renderRows();
  }

  async load() {
    const f = this.filters;
    const params = new URLSearchParams({ limit: "200" });
    if (f.actor.trim()) params.set("actor", f.actor.trim());
    if (f.household.trim()) params.set("household", f.household.trim());
    if (f.since) params.set("since", districtTime(f.since, state.timezone));
    if (f.until) params.set("until", districtTime(f.until, state.timezone));
    if (f.changes) params.set("changes", "true");
    // Only the latest question's answer is shown (a slow one asked before is dropped).
    this.asked = (this.asked ?? 0) + 1;
    const asked = this.asked;
    try {
      const entries = (await api("GET", `/api/audit?${params}`)).entries;
      if (asked !== this.asked) return;
      this.entries = entries;
      this.problem = "";
      // Actors seen, offered when the person filter is typed.
      this.actors = [...new Set([...(this.actors ?? []), ...this.entries.map((e) => e.actor)])].sort();
    } catch (failure) {
      this.problem = a("failed.read", { message: failure.message });
    }
  }

  // Drawn again in the other language.
  relabel() {
    this.render();
  }

  // The filters as typed (shown again when the rows arrive; used on "show").
  keep() {
    const bar = this.root?.querySelector("#audit-filters");
    if (!bar) return;
    const value = (id) => bar.querySelector(`#${id}`).value;
    this.filters = { actor: value("audit-actor"), household: value("audit-household"), since: value("audit-since"), until: value("audit-until"), changes: bar.querySelector("#audit-changes").checked };
  }

  render() {
    const root = this.root;
    if (!root) return;
    this.keep();
    const f = this.filters;
    const actor = text(f.actor, { id: "audit-actor", list: "audit-actors" });
    const household = text(f.household, { id: "audit-household", size: 10 });
    const since = h("input", { type: "datetime-local", id: "audit-since", value: f.since });
    const until = h("input", { type: "datetime-local", id: "audit-until", value: f.until });
    const changes = check(f.changes, { id: "audit-changes" });
    const bar = h(
      "form",
      { class: "toolbar audit-filters", id: "audit-filters" },
      h("label", {}, a("audit.actor"), " ", actor),
      h("datalist", { id: "audit-actors" }, (this.actors ?? []).map((name) => h("option", { value: name }, who(name)))),
      h("label", {}, a("audit.household"), " ", household),
      h("label", {}, a("audit.from"), " ", since),
      h("label", {}, a("audit.until"), " ", until),
      h("label", { class: "inline" }, changes, " ", a("audit.changes")),
      h("button", { type: "submit", class: "primary" }, a("audit.show")),
      h("span", { class: "hint" }, a("audit.zone", { zone: state.timezone })),
    );
    bar.addEventListener("submit", async (event) => {
      event.preventDefault();
      this.keep();
      this.open.clear();
      await this.load();
      this.renderRows();
    });
    fill(root, bar, h("div", { id: "audit-rows" }));
    this.renderRows();
  }

  renderRows() {
    const place = this.root?.querySelector("#audit-rows");
    if (!place) return;
    fill(place, this.problem ? h("p", { class: "form-problem" }, this.problem) : null, this.table());
    const offered = this.root.querySelector("#audit-actors");
    fill(offered, (this.actors ?? []).map((name) => h("option", { value: name }, who(name))));
  }

  table() {
    if (this.entries === null) return h("p", { class: "hint" }, a("loading"));
    if (!this.entries.length) return h("p", { class: "empty" }, a("audit.none"));
    const rows = [];
    this.entries.forEach((entry, index) => {
      const change = entry.before !== null || entry.after !== null;
      const opened = this.open.has(index);
      const toggle = change
        ? h("button", { type: "button", class: "small expand", "aria-expanded": opened ? "true" : "false", title: a("audit.expand"), onclick: () => this.toggle(index) }, opened ? "▾" : "▸")
        : null;
      rows.push(
        h(
          "tr",
          { class: change ? "change" : "read", dataset: { action: entry.action, household: entry.household ?? "" } },
          h("td", {}, toggle),
          h("td", { class: "mono" }, formatTime(entry.at, true)),
          h("td", { title: entry.actor }, who(entry.actor)),
          h("td", { class: "mono" }, entry.household ?? ""),
          h("td", { title: entry.path }, aOr(`audit.action.${entry.action}`, entry.action), change ? h("span", { class: "subject" }, subject(entry)) : null),
        ),
      );
      if (opened) rows.push(h("tr", { class: "diff-row" }, h("td", {}, ""), h("td", { colspan: "4" }, diff(entry))));
    });
    return h(
      "div",
      {},
      h("p", { class: "hint" }, a("audit.count", { n: this.entries.length })),
      h(
        "table",
        { class: "records audit" },
        h("thead", {}, h("tr", {}, h("th", {}, ""), h("th", {}, a("audit.at")), h("th", {}, a("audit.actor")), h("th", {}, a("audit.household")), h("th", {}, a("audit.what")))),
        h("tbody", {}, rows),
      ),
    );
  }

  toggle(index) {
    if (this.open.has(index)) this.open.delete(index);
    else this.open.add(index);
    this.renderRows();
  }
}

// What the change was about: a code, a serial, a call type.
function subject(entry) {
  const record = entry.after ?? entry.before ?? {};
  const named = record.code ?? record.serial ?? (record.call_type ? aOr(`type.${record.call_type}`, record.call_type) : null) ?? record.carer;
  return named ? ` ${named}` : "";
}

function diff(entry) {
  const fields = changedFields(entry.before, entry.after);
  if (!fields.length) return h("p", { class: "hint" }, a("audit.unchanged"));
  return h(
    "table",
    { class: "diff" },
    h("thead", {}, h("tr", {}, h("th", {}, a("audit.field")), h("th", {}, a("audit.before")), h("th", {}, a("audit.after")))),
    h(
      "tbody",
      {},
      fields.map((f) =>
        h(
          "tr",
          { dataset: { field: f.name } },
          h("td", { class: "field-name", title: f.name }, fieldText(f.name, entry.action)),
          entry.before === null ? h("td", { class: "before new" }, a("audit.new")) : h("td", { class: "before" }, valueText(f.name, f.before, entry.action)),
          h("td", { class: "after" }, valueText(f.name, f.after, entry.action)),
        ),
      ),
    ),
  );
}
