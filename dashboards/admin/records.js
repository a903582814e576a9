// Stations, carers and shift patterns: a list and one record's form, each kept the same way (POST a new
// one, PUT a change by its code). What each holds is the spec below; the server judges
// every change and its problems are shown beside their fields.
import { api } from "../board/api.js";
import { h } from "../board/dom.js";
import { check, choice, field, formProblem, lines, number, saidSaved, showProblems, text, valueOf } from "./form.js";
import { a } from "./text.js";

const TRANSPORT = ["walk", "bicycle", "ebike", "car"];
const CARER_ROLES = ["carer", "station_lead"];
const LANGUAGES = ["zh", "en"];

// A field of a record: its name (as the API and its problems name it), its control, and
// how a list shows it.
function control(spec, value, context) {
  switch (spec.kind) {
    case "number":
      return number(value, { step: "any" });
    case "check":
      return check(value);
    case "lines":
      return lines(value);
    case "time":
      return h("input", { type: "time", value: value ?? "" });
    case "weekdays": {
      // ISO weekdays as typed, e.g. "1,2,3,4,5" (Monday = 1); form.js reads them back.
      const days = text((value ?? []).join(","), { placeholder: "1,2,3,4,5" });
      days.dataset.kind = "weekdays";
      return days;
    }
    case "choice": {
      const values = spec.values(context);
      return choice(value ?? values[0], values, (v) => spec.label(v, context));
    }
    default:
      return text(value);
  }
}

function stationLabel(code, context) {
  if (!code) return a("none");
  return `${code} ${context.stations.find((s) => s.code === code)?.name ?? ""}`;
}

export const STATION_SPEC = {
  name: "stations",
  path: "/api/register/stations",
  newLabel: "stations.new",
  heading: "stations.heading",
  blank: () => ({ code: "", name: "", address: "", lat: null, lon: null, phone: "", backup_station: null }),
  fields: [
    { name: "code", label: "station.code", fixed: true },
    { name: "name", label: "station.name" },
    { name: "address", label: "station.address", wide: true },
    { name: "lat", label: "station.lat", kind: "number" },
    { name: "lon", label: "station.lon", kind: "number" },
    { name: "phone", label: "station.phone" },
    { name: "backup_station", label: "station.backup_station", kind: "choice", values: (c) => ["", ...c.stations.map((s) => s.code)] },
  ],
  columns: [
    ["station.code", (r) => r.code, "mono nowrap"],
    ["station.name", (r) => r.name],
    ["station.phone", (r) => r.phone, "mono nowrap"],
    ["station.backup_station", (r) => r.backup_station ?? a("none"), "mono nowrap"],
  ],
  // An empty choice is no B post.
  body: (record) => ({ ...record, backup_station: record.backup_station || null }),
};

export const CARER_SPEC = {
  name: "carers",
  path: "/api/register/carers",
  newLabel: "carers.new",
  heading: "carers.heading",
  blank: () => ({ code: "", name: "", phone: "", station: "", shift_pattern: "", language: "zh", role: "carer", skills: [], transport: "walk", active: true }),
  fields: [
    { name: "code", label: "carer.code", fixed: true },
    { name: "name", label: "carer.name" },
    { name: "phone", label: "carer.phone" },
    { name: "station", label: "carer.station", kind: "choice", values: (c) => ["", ...c.stations.map((s) => s.code)] },
    { name: "shift_pattern", label: "carer.shift_pattern", kind: "choice", values: (c) => ["", ...c.patterns.map((p) => p.code)] },
    { name: "role", label: "carer.role", kind: "choice", values: () => CARER_ROLES },
    { name: "transport", label: "carer.transport", kind: "choice", values: () => TRANSPORT },
    { name: "language", label: "carer.language", kind: "choice", values: () => LANGUAGES },
    { name: "skills", label: "carer.skills", kind: "lines" },
    { name: "active", label: "carer.active", kind: "check" },
  ],
  columns: [
    ["carer.code", (r) => r.code, "mono nowrap"],
    ["carer.name", (r) => r.name, "nowrap"],
    ["carer.station", (r) => r.station, "mono nowrap"],
    ["carer.role", (r) => a(`role.${r.role}`), "nowrap"],
    ["carer.skills", (r) => r.skills.join("、")],
    ["carer.transport", (r) => a(`transport.${r.transport}`), "nowrap"],
    ["carer.phone", (r) => r.phone, "mono nowrap"],
    ["carer.active", (r) => (r.active ? a("yes") : a("carer.inactive")), "nowrap"],
  ],
  body: (record) => record,
};

export const PATTERN_SPEC = {
  name: "shift-patterns",
  path: "/api/register/shift-patterns",
  newLabel: "patterns.new",
  heading: "patterns.heading",
  blank: () => ({ code: "", name: "", starts_at: "", duration_minutes: null, weekdays: [] }),
  fields: [
    { name: "code", label: "pattern.code", fixed: true },
    { name: "name", label: "pattern.name" },
    { name: "starts_at", label: "pattern.starts_at", kind: "time" },
    { name: "duration_minutes", label: "pattern.duration_minutes", kind: "number" },
    { name: "weekdays", label: "pattern.weekdays", kind: "weekdays", hint: "pattern.weekdays_hint" },
  ],
  columns: [
    ["pattern.code", (r) => r.code, "mono nowrap"],
    ["pattern.name", (r) => r.name],
    ["pattern.starts_at", (r) => r.starts_at, "mono nowrap"],
    ["pattern.duration_minutes", (r) => a("pattern.hours", { n: Math.round((r.duration_minutes / 60) * 10) / 10 }), "nowrap"],
    ["pattern.weekdays", (r) => r.weekdays.map((d) => a(`weekday.${d}`)).join(" "), "nowrap"],
  ],
  body: (record) => record,
};

// How a choice's value reads, by field.
function choiceLabel(name, value, context) {
  switch (name) {
    case "station":
    case "backup_station":
      return stationLabel(value, context);
    case "shift_pattern":
      return value ? `${value} ${context.patterns.find((p) => p.code === value)?.name ?? ""}` : a("none");
    case "role":
      return a(`role.${value}`);
    case "transport":
      return a(`transport.${value}`);
    case "language":
      return a(`language.${value}`);
    default:
      return value;
  }
}

export class RecordsTab {
  // context: {stations, patterns}, shared with the page (stations change here).
  constructor(spec, context, { stationsChanged, patternsChanged } = {}) {
    this.spec = spec;
    this.context = context;
    this.stationsChanged = stationsChanged;
    this.patternsChanged = patternsChanged;
    this.records = null;
    this.record = null;
    this.existing = null;
    this.problem = "";
    this.showInactive = false;
  }

  async show(root) {
    this.root = root;
    this.render();
    await this.load();
    // A form opened while the list loaded keeps what was typed in it.
    this.relabel();
  }

  async load() {
    try {
      this.records = (await api("GET", this.spec.path)).records;
      this.problem = "";
    } catch (failure) {
      this.problem = a("failed.read", { message: failure.message });
    }
  }

  // Drawn again in the other language, keeping what was typed.
  relabel() {
    this.keep();
    this.render();
  }

  keep() {
    const form = this.root?.querySelector("form.record-form");
    if (form && this.record) this.record = this.collect(form);
  }

  collect(form) {
    const out = {};
    for (const spec of this.spec.fields) out[spec.name] = valueOf(form, spec.name);
    return this.spec.body(out);
  }

  render() {
    const root = this.root;
    if (!root) return;
    const inactive = this.spec.name === "carers" ? check(this.showInactive, { id: "carers-inactive" }) : null;
    inactive?.addEventListener("change", () => {
      this.showInactive = inactive.checked;
      this.render();
    });
    const shown = (this.records ?? []).filter((r) => this.showInactive || r.active !== false);
    root.replaceChildren(
      h(
        "div",
        { class: "split wide-list" },
        h(
          "div",
          { class: "list-side" },
          h(
            "div",
            { class: "toolbar" },
            h("button", { type: "button", class: "primary", id: `${this.spec.name}-new`, onclick: () => this.edit(null) }, a(this.spec.newLabel)),
            inactive ? h("label", { class: "inline" }, inactive, " ", a("carers.show_inactive")) : null,
          ),
          this.problem ? h("p", { class: "form-problem" }, this.problem) : null,
          this.records === null
            ? h("p", { class: "hint" }, a("loading"))
            : h(
                "table",
                { class: `records ${this.spec.name}` },
                h("thead", {}, h("tr", {}, this.spec.columns.map(([label]) => h("th", { class: "nowrap" }, a(label))))),
                h(
                  "tbody",
                  {},
                  shown.map((r) =>
                    h(
                      "tr",
                      { class: r.code === this.existing ? "picked" : "", dataset: { code: r.code }, tabindex: "0", onclick: () => this.edit(r), onkeydown: (e) => e.key === "Enter" && this.edit(r) },
                      this.spec.columns.map(([, value, cls]) => h("td", { class: cls ?? "" }, value(r))),
                    ),
                  ),
                ),
              ),
        ),
        h("div", { class: "form-side" }, this.record ? this.form() : null),
      ),
    );
  }

  edit(record) {
    this.record = record ? { ...record } : this.spec.blank();
    this.existing = record ? record.code : null;
        this.render();
  }

  form() {
    const form = h(
      "form",
      { class: "record-form", novalidate: true },
      h(
        "div",
        { class: "form-head" },
        h("h2", {}, this.existing ? a(this.spec.heading, { code: this.existing }) : a(this.spec.newLabel)),
        h("button", { type: "submit", class: "primary", id: `${this.spec.name}-save` }, a("save")),
        h("button", { type: "button", onclick: () => this.closeForm() }, a("close")),
      ),
      formProblem(),
      h(
        "div",
        { class: "fields" },
        this.spec.fields.map((spec) => {
          const made = control({ ...spec, label: (v) => choiceLabel(spec.name, v, this.context) }, this.record[spec.name] ?? (spec.kind === "choice" ? "" : null), this.context);
          if (spec.fixed && this.existing) made.readOnly = true;
          return field(spec.name, a(spec.label), made, { wide: Boolean(spec.wide), hint: spec.hint ? a(spec.hint) : "" });
        }),
      ),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.save(form);
    });
    return form;
  }

  async save(form) {
    const body = this.collect(form);
    this.record = body;
    try {
      const answer = this.existing
        ? await api("PUT", `${this.spec.path}/${encodeURIComponent(this.existing)}`, body)
        : await api("POST", this.spec.path, body);
      this.record = answer.record;
      this.existing = answer.record.code;
      await this.load();
      if (this.spec.name === "stations") this.stationsChanged?.(this.records);
      if (this.spec.name === "shift-patterns") this.patternsChanged?.(this.records);
      this.render();
      saidSaved(this.root.querySelector("form.record-form"));
    } catch (failure) {
      showProblems(form, failure);
    }
  }

  closeForm() {
    this.record = null;
    this.existing = null;
        this.render();
  }
}
