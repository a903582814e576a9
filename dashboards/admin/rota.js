// The rota as a calendar, for supervisors: each station a row, each day a cell whose bar
// shows how many carers are on through the day, and every stretch with nobody on shift
// marked before it comes, red when the station's B post has nobody either, amber when
// the B post covers it. The server draws the shifts and gaps from the one rule of who
// works when (GET /api/register/rota, domain/shifts.py), the rule the desk pages by and
// the watchdog counts by. A day off or an extra duty is set here (PUT/DELETE
// /api/register/roster/{carer}/{day}) and the calendar is read again.
import { api } from "../board/api.js";
import { h } from "../board/dom.js";
import { language } from "../board/i18n.js";
import { state } from "../board/state.js";
import { check, choice, field, formProblem, saidSaved, showProblems, text, valueOf } from "./form.js";
import { a } from "./text.js";

const SPANS = [7, 14, 28];
const DAY_MS = 24 * 60 * 60 * 1000;

// Today on the district's clock, as YYYY-MM-DD.
function districtToday() {
  const parts = new Intl.DateTimeFormat("en-CA", { timeZone: state.timezone, year: "numeric", month: "2-digit", day: "2-digit" }).format(new Date());
  return parts;
}

function addDays(day, n) {
  const moment = new Date(`${day}T12:00:00Z`);
  moment.setUTCDate(moment.getUTCDate() + n);
  return moment.toISOString().slice(0, 10);
}

function dayLabel(day) {
  const options = { timeZone: "UTC", month: "numeric", day: "numeric", weekday: "short" };
  return new Intl.DateTimeFormat(language() === "zh" ? "zh-CN" : "en-GB", options).format(new Date(`${day}T12:00:00Z`));
}

// "HH:MM" of a local time the server wrote with its offset (2026-12-25T07:00:00+08:00).
function clockOf(iso) {
  return iso.slice(11, 16);
}

// The day (YYYY-MM-DD) a local time falls on, as the server wrote it.
function dayOf(iso) {
  return iso.slice(0, 10);
}

// A stretch in words: "12月25日 周五 00:00 – 12月26日 07:00".
function stretch(start, end) {
  const same = dayOf(start) === dayOf(end) || (clockOf(end) === "00:00" && addDays(dayOf(start), 1) === dayOf(end));
  const to = clockOf(end) === "00:00" && same ? "24:00" : clockOf(end);
  return same ? `${dayLabel(dayOf(start))} ${clockOf(start)}–${to}` : `${dayLabel(dayOf(start))} ${clockOf(start)} – ${dayLabel(dayOf(end))} ${clockOf(end)}`;
}

// How many carers are on at each moment of one day: [{from, to, people: [...]}] in
// minutes of that day, from the station's shifts.
function headcount(shifts, dayStart) {
  const dayEnd = dayStart + DAY_MS;
  const cuts = new Set([dayStart, dayEnd]);
  const spans = [];
  for (const shift of shifts) {
    const from = Math.max(Date.parse(shift.start), dayStart);
    const to = Math.min(Date.parse(shift.end), dayEnd);
    if (from >= to) continue;
    spans.push({ from, to, shift });
    cuts.add(from);
    cuts.add(to);
  }
  const sorted = [...cuts].sort((x, y) => x - y);
  const found = [];
  for (let i = 0; i + 1 < sorted.length; i++) {
    const [from, to] = [sorted[i], sorted[i + 1]];
    const people = spans.filter((s) => s.from <= from && s.to >= to).map((s) => s.shift);
    found.push({ from: (from - dayStart) / 60000, to: (to - dayStart) / 60000, people });
  }
  return found;
}

function gapOverlaps(gap, dayStart) {
  return Date.parse(gap.start) < dayStart + DAY_MS && Date.parse(gap.end) > dayStart;
}

export class RotaTab {
  constructor() {
    this.first = districtToday();
    this.days = 7;
    this.rota = null;
    this.roster = [];
    this.carers = [];
    this.patterns = [];
    this.picked = null; // {station, day}
    this.problem = "";
    this.draft = null;
  }

  get last() {
    return addDays(this.first, this.days - 1);
  }

  async show(root) {
    this.root = root;
    this.render();
    await this.load();
    this.render();
  }

  async load() {
    try {
      const [rota, roster, carers, patterns] = await Promise.all([
        api("GET", `/api/register/rota?first=${this.first}&last=${this.last}`),
        api("GET", `/api/register/roster?first=${this.first}&last=${this.last}`),
        api("GET", "/api/register/carers"),
        api("GET", "/api/register/shift-patterns"),
      ]);
      this.rota = rota;
      this.roster = roster.records;
      this.carers = carers.records.filter((c) => c.active);
      this.patterns = patterns.records;
      this.problem = "";
    } catch (failure) {
      this.problem = a("failed.read", { message: failure.message });
    }
  }

  relabel() {
    this.keep();
    this.render();
  }

  keep() {
    const form = this.root?.querySelector("form.roster-form");
    if (form) this.draft = this.collect(form);
  }

  collect(form) {
    return {
      carer: valueOf(form, "carer"),
      day: valueOf(form, "day"),
      on_duty: valueOf(form, "on_duty"),
      shift_pattern: valueOf(form, "shift_pattern"),
      note: valueOf(form, "note"),
    };
  }

  offset() {
    const any = this.rota?.stations.flatMap((s) => [...s.shifts.map((x) => x.start), ...s.gaps.map((g) => g.start)])[0];
    return any ? any.slice(19) : "+00:00";
  }

  dayStart(day) {
    return Date.parse(`${day}T00:00:00${this.offset()}`);
  }

  render() {
    const root = this.root;
    if (!root) return;
    if (this.rota === null) {
      root.replaceChildren(this.problem ? h("p", { class: "form-problem" }, this.problem) : h("p", { class: "hint" }, a("loading")));
      return;
    }
    root.replaceChildren(
      h("div", { class: "rota" }, this.toolbar(), this.problem ? h("p", { class: "form-problem" }, this.problem) : null, this.coming(), this.calendar(), h("div", { class: "rota-lower" }, this.dayDetail(), this.rosterForm())),
    );
  }

  toolbar() {
    const first = h("input", { type: "date", value: this.first, id: "rota-first" });
    const span = choice(String(this.days), SPANS.map(String), (n) => a("rota.days", { n }), { id: "rota-days" });
    const go = async () => {
      this.first = first.value || districtToday();
      this.days = Number(span.value);
      await this.load();
      this.render();
    };
    first.addEventListener("change", go);
    span.addEventListener("change", go);
    return h(
      "div",
      { class: "toolbar" },
      h("label", { class: "inline", for: "rota-first" }, a("rota.from"), first),
      span,
      h("button", { type: "button", onclick: async () => { this.first = districtToday(); first.value = this.first; await go(); } }, a("rota.today")),
      h("span", { class: "hint" }, a("rota.intro")),
    );
  }

  // The gaps still to come, the uncovered ones first: what a supervisor must fill.
  coming() {
    const now = Date.now();
    const gaps = this.rota.stations
      .flatMap((s) => s.gaps.map((g) => ({ ...g, station: s })))
      .filter((g) => Date.parse(g.end) > now)
      .sort((x, y) => Number(x.backup_covers) - Number(y.backup_covers) || Date.parse(x.start) - Date.parse(y.start));
    if (!gaps.length) return h("p", { class: "rota-none", id: "rota-coming" }, a("rota.no_gaps"));
    return h(
      "section",
      { class: "rota-coming", id: "rota-coming" },
      h("h3", {}, a("rota.coming", { n: gaps.length })),
      h(
        "ul",
        {},
        gaps.slice(0, 12).map((g) =>
          h(
            "li",
            { class: g.backup_covers ? "covered" : "uncovered", dataset: { station: g.station.code, start: g.start } },
            h("strong", { class: "mono" }, g.station.code),
            ` ${g.station.name} · ${stretch(g.start, g.end)} · `,
            g.backup_covers ? a("rota.backup_covers", { code: g.station.backup ?? "" }) : g.station.backup ? a("rota.backup_too", { code: g.station.backup }) : a("rota.no_backup"),
          ),
        ),
        gaps.length > 12 ? h("li", { class: "hint" }, a("rota.more", { n: gaps.length - 12 })) : null,
      ),
    );
  }

  calendar() {
    const days = Array.from({ length: this.days }, (_, i) => addDays(this.first, i));
    return h(
      "table",
      { class: "rota-grid", id: "rota-grid" },
      h("thead", {}, h("tr", {}, h("th", {}, a("rota.station")), days.map((d) => h("th", { class: d === districtToday() ? "today" : "" }, dayLabel(d))))),
      h(
        "tbody",
        {},
        this.rota.stations.map((s) =>
          h(
            "tr",
            { dataset: { station: s.code } },
            h("th", { class: "station", title: `${s.code} ${s.name}` }, h("span", { class: "mono" }, s.code), " ", s.name, s.backup ? h("span", { class: "hint" }, ` · ${a("rota.b_post", { code: s.backup })}`) : null),
            days.map((d) => this.cell(s, d)),
          ),
        ),
      ),
    );
  }

  cell(station, day) {
    const start = this.dayStart(day);
    const counts = headcount(station.shifts, start);
    const gaps = station.gaps.filter((g) => gapOverlaps(g, start));
    const uncovered = gaps.some((g) => !g.backup_covers);
    const picked = this.picked?.station === station.code && this.picked?.day === day;
    const bar = h(
      "div",
      { class: "rota-bar" },
      counts.map((c) => {
        const segment = h("span", {
          class: c.people.length === 0 ? (gaps.some((g) => !g.backup_covers && Date.parse(g.start) < start + c.to * 60000 && Date.parse(g.end) > start + c.from * 60000) ? "seg gap" : "seg gap covered") : c.people.length === 1 ? "seg one" : "seg many",
          title: c.people.length ? c.people.map((p) => `${p.name} ${clockOf(p.start)}–${clockOf(p.end)}`).join("\n") : a("rota.nobody"),
        });
        // Through the style object: the page's policy refuses inline style attributes.
        segment.style.left = `${(c.from / 1440) * 100}%`;
        segment.style.width = `${((c.to - c.from) / 1440) * 100}%`;
        return segment;
      }),
    );
    const most = Math.max(0, ...counts.map((c) => c.people.length));
    return h(
      "td",
      { class: `rota-cell${uncovered ? " has-gap" : gaps.length ? " has-covered-gap" : ""}${picked ? " picked" : ""}`, dataset: { day, gaps: String(gaps.length) }, tabindex: "0", onclick: () => this.pick(station.code, day) },
      bar,
      h("span", { class: "rota-count" }, gaps.length ? a(uncovered ? "rota.cell_gap" : "rota.cell_covered") : a("rota.cell_most", { n: most })),
    );
  }

  pick(station, day) {
    this.keep();
    this.picked = { station, day };
    if (!this.draft || !this.draft.carer) this.draft = { ...(this.draft ?? {}), day };
    else this.draft.day = day;
    this.render();
  }

  dayDetail() {
    if (!this.picked) return h("section", { class: "rota-detail" }, h("p", { class: "hint" }, a("rota.pick")));
    const station = this.rota.stations.find((s) => s.code === this.picked.station);
    const start = this.dayStart(this.picked.day);
    const shifts = station.shifts.filter((x) => Date.parse(x.start) < start + DAY_MS && Date.parse(x.end) > start);
    const gaps = station.gaps.filter((g) => gapOverlaps(g, start));
    return h(
      "section",
      { class: "rota-detail", id: "rota-detail" },
      h("h3", {}, `${station.code} ${station.name} · ${dayLabel(this.picked.day)}`),
      gaps.length
        ? h("ul", { class: "rota-gaps" }, gaps.map((g) => h("li", { class: g.backup_covers ? "covered" : "uncovered" }, `${a("rota.gap")} ${stretch(g.start, g.end)} · `, g.backup_covers ? a("rota.backup_covers", { code: station.backup ?? "" }) : station.backup ? a("rota.backup_too", { code: station.backup }) : a("rota.no_backup"))))
        : null,
      shifts.length
        ? h(
            "table",
            { class: "records" },
            h("thead", {}, h("tr", {}, h("th", {}, a("rota.carer")), h("th", {}, a("rota.hours")), h("th", {}, a("rota.pattern")), h("th", {}, ""))),
            h(
              "tbody",
              {},
              shifts.map((x) =>
                h(
                  "tr",
                  {},
                  h("td", {}, h("span", { class: "mono" }, x.carer), ` ${x.name}`),
                  h("td", { class: "nowrap" }, stretch(x.start, x.end)),
                  h("td", { class: "mono" }, x.pattern),
                  h("td", {}, x.rostered ? a("rota.rostered") : ""),
                ),
              ),
            ),
          )
        : h("p", { class: "empty" }, a("rota.nobody_that_day")),
    );
  }

  rosterForm() {
    const draft = this.draft ?? {};
    const carers = [...this.carers].sort((x, y) => x.station.localeCompare(y.station) || x.code.localeCompare(y.code));
    const carer = choice(draft.carer ?? "", ["", ...carers.map((c) => c.code)], (code) => {
      if (!code) return a("rota.choose_carer");
      const c = carers.find((x) => x.code === code);
      return `${c.station} · ${c.code} ${c.name}`;
    });
    const day = h("input", { type: "date", value: draft.day ?? this.picked?.day ?? this.first });
    const onDuty = check(draft.on_duty ?? false);
    const pattern = choice(draft.shift_pattern ?? "", ["", ...this.patterns.map((p) => p.code)], (code) => (code ? `${code} ${this.patterns.find((p) => p.code === code)?.name ?? ""}` : a("rota.own_pattern")));
    const note = text(draft.note ?? "", { placeholder: a("rota.note_hint") });
    const form = h(
      "form",
      { class: "roster-form", id: "roster-form" },
      h("h3", {}, a("rota.set_day")),
      formProblem(),
      h("div", { class: "fields" }, field("carer", a("rota.carer"), carer), field("day", a("rota.day"), day), field("on_duty", a("rota.on_duty"), onDuty, { hint: a("rota.on_duty_hint") }), field("shift_pattern", a("rota.pattern"), pattern), field("note", a("rota.note"), note, { wide: true })),
      h("div", { class: "toolbar" }, h("button", { type: "submit", class: "primary", id: "roster-save" }, a("save")), h("button", { type: "button", class: "danger", onclick: () => this.clear(form) }, a("rota.clear"))),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.save(form);
    });
    const entries = this.roster.filter((r) => !this.picked || r.day === this.picked.day);
    return h(
      "section",
      { class: "rota-roster" },
      form,
      h("h3", {}, this.picked ? a("rota.entries_day", { day: dayLabel(this.picked.day) }) : a("rota.entries")),
      entries.length
        ? h("ul", { class: "roster-entries", id: "roster-entries" }, entries.map((r) => h("li", {}, `${dayLabel(r.day)} · `, h("span", { class: "mono" }, r.carer), " ", this.carers.find((c) => c.code === r.carer)?.name ?? "", " · ", r.on_duty ? a("rota.duty_on", { pattern: r.shift_pattern ?? a("rota.own_pattern") }) : a("rota.day_off"), r.note ? ` · ${r.note}` : "")))
        : h("p", { class: "empty" }, a("rota.no_entries")),
    );
  }

  async save(form) {
    const entry = this.collect(form);
    if (!entry.carer || !entry.day) {
      showProblems(form, { status: 422, body: { problems: [!entry.carer ? { field: "carer", message: a("rota.choose_carer") } : { field: "day", message: a("rota.choose_day") }] } });
      return;
    }
    try {
      await api("PUT", `/api/register/roster/${encodeURIComponent(entry.carer)}/${entry.day}`, { on_duty: entry.on_duty, shift_pattern: entry.shift_pattern || null, note: entry.note });
    } catch (failure) {
      showProblems(form, failure);
      return;
    }
    this.draft = entry;
    await this.load();
    this.render();
    saidSaved(this.root.querySelector("form.roster-form"));
  }

  async clear(form) {
    const entry = this.collect(form);
    if (!entry.carer || !entry.day) return;
    try {
      await api("DELETE", `/api/register/roster/${encodeURIComponent(entry.carer)}/${entry.day}`);
    } catch (failure) {
      showProblems(form, failure);
      return;
    }
    this.draft = entry;
    await this.load();
    this.render();
    saidSaved(this.root.querySelector("form.roster-form"));
  }
}


