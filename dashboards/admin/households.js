// Households: the list (search by code, address or a resident's name; a station filter)
// and one household's form: where it is (a click on the map or the latitude and
// longitude), its stations and access notes, the numbers that reach it, its residents'
// records, its contacts in the order to call them, and its devices. The server judges
// every change (domain/register.py); its problems are shown beside their fields.
import { api } from "../board/api.js";
import { $, h } from "../board/dom.js";
import { state } from "../board/state.js";
import { addDeviceForm, deviceTable } from "./devices.js";
import { area, check, choice, field, formProblem, lines, number, saidSaved, showProblems, text, valueOf } from "./form.js";
import { PickMap } from "./pickmap.js";
import { a } from "./text.js";

const PHONE_KINDS = ["unit", "landline", "mobile"];
const SEXES = ["", "female", "male"];
const MOBILITY = ["independent", "walking_aid", "wheelchair", "bedbound"];
const SENSES = ["", "good", "impaired", "none"];
const LANGUAGES = ["zh", "en"];

function blankResident() {
  return { id: null, name: "", birth_date: null, birth_year: null, sex: "", mobility: "independent", conditions: [], medicines: [], allergies: [], doctor: "", clinic: "", clinic_phone: "", do_not_resuscitate: false, hospital: "", wishes: "", speaks: "", hearing: "", sight: "", care_notes: "" };
}

function blankContact() {
  return { name: "", relation: "", phone: "", phone_alt: "", language: "zh", holds_key: false, call_from: null, call_until: null, portal: true };
}

function blankHousehold() {
  return { code: "", address: "", lat: null, lon: null, home_station: "", backup_station: "", access_notes: "", phones: [], residents: [blankResident()], contacts: [] };
}

export class HouseholdsTab {
  constructor(stations) {
    // The stations, for the choices and the map's landmarks (admin.js reads them).
    this.stations = stations;
    this.query = "";
    this.station = "";
    this.list = null;
    this.problem = "";
    // The household open in the form: its record as last read or as being typed.
    this.record = null;
    this.existing = null;
    this.devices = [];
    this.map = null;
  }

  async show(root) {
    this.root = root;
    this.render();
    await this.search();
  }

  async search() {
    const params = new URLSearchParams();
    if (this.query.trim()) params.set("q", this.query.trim());
    if (this.station) params.set("station", this.station);
    try {
      this.list = (await api("GET", `/api/register/households?${params}`)).households;
      this.problem = "";
    } catch (failure) {
      this.problem = a("failed.read", { message: failure.message });
    }
    this.renderList();
  }

  async open(code) {
    try {
      const answer = await api("GET", `/api/register/households/${encodeURIComponent(code)}`);
      this.record = answer.household;
      this.existing = code;
      this.devices = answer.devices;
    } catch (failure) {
      this.problem = a("failed.read", { message: failure.message });
    }
    this.render();
  }

  openNew() {
    this.record = blankHousehold();
    this.existing = null;
    this.devices = [];
    this.render();
    $("f-code")?.focus();
  }

  // Drawn again in the other language, keeping what was typed.
  relabel() {
    this.keep();
    this.render();
  }

  // The form as typed, before it is drawn again (a row added, moved, the language).
  keep() {
    const form = this.root?.querySelector("form.household-form");
    if (form && this.record) this.record = collect(form, this.record);
  }

  render() {
    const root = this.root;
    if (!root) return;
    this.map?.remove();
    this.map = null;
    const search = text(this.query, { type: "search", id: "households-search", placeholder: a("households.search") });
    const station = choice(this.station, ["", ...this.stations.map((s) => s.code)], (c) => (c ? `${c} ${this.stations.find((s) => s.code === c)?.name ?? ""}` : a("households.all_stations")), { id: "households-station" });
    const bar = h(
      "form",
      { class: "toolbar", id: "households-bar" },
      search,
      station,
      h("button", { type: "submit" }, a("search")),
      h("button", { type: "button", class: "primary", id: "household-new", onclick: () => this.openNew() }, a("households.new")),
    );
    bar.addEventListener("submit", (event) => {
      event.preventDefault();
      this.query = search.value;
      this.station = station.value;
      this.search();
    });
    station.addEventListener("change", () => {
      this.station = station.value;
      this.search();
    });
    root.replaceChildren(
      h(
        "div",
        { class: "split" },
        h("div", { class: "list-side" }, bar, h("div", { id: "households-list" })),
        h("div", { class: "form-side", id: "household-side" }, this.record ? this.form() : null),
      ),
    );
    this.renderList();
    if (this.record) this.startMap();
  }

  renderList() {
    const place = this.root?.querySelector("#households-list");
    if (!place) return;
    if (this.problem) {
      place.replaceChildren(h("p", { class: "form-problem" }, this.problem));
      return;
    }
    if (this.list === null) {
      place.replaceChildren(h("p", { class: "hint" }, a("loading")));
      return;
    }
    if (!this.list.length) {
      place.replaceChildren(h("p", { class: "empty" }, a("households.none")));
      return;
    }
    place.replaceChildren(
      h("p", { class: "hint" }, a("households.count", { n: this.list.length })),
      h(
        "table",
        { class: "records households" },
        h("thead", {}, h("tr", {}, h("th", {}, a("col.code")), h("th", {}, a("col.address")), h("th", {}, a("col.residents")), h("th", {}, a("col.station")), h("th", {}, a("col.devices")))),
        h(
          "tbody",
          {},
          this.list.map((row) =>
            h(
              "tr",
              { class: row.code === this.existing ? "picked" : "", dataset: { code: row.code }, tabindex: "0", onclick: () => this.open(row.code), onkeydown: (e) => e.key === "Enter" && this.open(row.code) },
              h("td", { class: "mono" }, row.code),
              h("td", {}, row.address),
              h("td", {}, row.residents.join("、")),
              h("td", { class: "mono" }, row.home_station),
              h("td", { class: "num" }, String(row.devices)),
            ),
          ),
        ),
      ),
    );
  }

  form() {
    const r = this.record;
    const stationChoice = (value) =>
      choice(value, ["", ...this.stations.map((s) => s.code)], (c) => (c ? `${c} ${this.stations.find((s) => s.code === c)?.name ?? ""}` : a("household.pick_station")));
    const lat = number(r.lat, { step: "any", id: "f-lat" });
    const lon = number(r.lon, { step: "any", id: "f-lon" });
    const form = h(
      "form",
      { class: "household-form record-form", novalidate: true, dataset: { code: this.existing ?? "" } },
      h(
        "div",
        { class: "form-head" },
        h("h2", {}, this.existing ? a("household.heading", { code: this.existing }) : a("household.heading.new")),
        h("button", { type: "submit", class: "primary", id: "household-save" }, a("save")),
        h("button", { type: "button", onclick: () => this.closeForm() }, a("close")),
      ),
      formProblem(),
      h(
        "fieldset",
        { class: "where" },
        h(
          "div",
          { class: "fields" },
          field("code", a("household.code"), text(r.code, { readOnly: Boolean(this.existing) })),
          field("address", a("household.address"), text(r.address), { wide: true }),
          field("home_station", a("household.home_station"), stationChoice(r.home_station)),
          field("backup_station", a("household.backup_station"), stationChoice(r.backup_station)),
          field("lat", a("household.lat"), lat),
          field("lon", a("household.lon"), lon),
        ),
        h("p", { class: "hint" }, a("household.map_hint")),
        h("div", { id: "pick-map", class: "pick-map" }),
        field("access_notes", a("household.access_notes"), area(r.access_notes), { wide: true }),
      ),
      this.residentsSection(),
      this.contactsSection(),
      this.phonesSection(),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.save(form);
    });
    this.latInput = lat;
    this.lonInput = lon;
    return h("div", {}, form, this.devicesSection());
  }

  startMap() {
    const box = this.root.querySelector("#pick-map");
    if (!box) return;
    this.map = new PickMap(box, { lat: this.latInput, lon: this.lonInput, stations: this.stations, tiles: state.me?.map ?? {} });
  }

  // A change to the form's rows: keep what was typed, change the rows, draw again.
  rows(change) {
    this.keep();
    change(this.record);
    this.render();
  }

  residentsSection() {
    return h(
      "fieldset",
      { class: "residents", dataset: { for: "residents" } },
      h("legend", {}, a("household.residents")),
      h("span", { class: "problem", role: "alert", hidden: true }),
      this.record.residents.map((resident, index) => residentFields(resident, index + 1, () => this.rows((rec) => rec.residents.splice(index, 1)))),
      h("button", { type: "button", id: "add-resident", onclick: () => this.rows((rec) => rec.residents.push(blankResident())) }, a("household.add_resident")),
    );
  }

  contactsSection() {
    const contacts = this.record.contacts;
    const swap = (i, j) => this.rows((rec) => ([rec.contacts[i], rec.contacts[j]] = [rec.contacts[j], rec.contacts[i]]));
    return h(
      "fieldset",
      { class: "contacts", dataset: { for: "contacts" } },
      h("legend", {}, a("household.contacts")),
      h("span", { class: "problem", role: "alert", hidden: true }),
      h(
        "ol",
        { class: "contact-list" },
        contacts.map((contact, index) =>
          h(
            "li",
            { class: "contact", dataset: { position: index + 1 } },
            h(
              "div",
              { class: "row-head" },
              h("strong", {}, a("contact.heading", { n: index + 1 })),
              h("button", { type: "button", class: "small", dataset: { action: "up" }, disabled: index === 0, onclick: () => swap(index, index - 1) }, `↑ ${a("up")}`),
              h("button", { type: "button", class: "small", dataset: { action: "down" }, disabled: index === contacts.length - 1, onclick: () => swap(index, index + 1) }, `↓ ${a("down")}`),
              h("button", { type: "button", class: "small danger", dataset: { action: "remove" }, onclick: () => this.rows((rec) => rec.contacts.splice(index, 1)) }, a("remove")),
            ),
            contactFields(contact, index + 1),
          ),
        ),
      ),
      h("button", { type: "button", id: "add-contact", onclick: () => this.rows((rec) => rec.contacts.push(blankContact())) }, a("household.add_contact")),
    );
  }

  phonesSection() {
    return h(
      "fieldset",
      { class: "phones", dataset: { for: "phones" } },
      h("legend", {}, a("household.phones")),
      this.record.phones.map((phone, index) => {
        const n = index + 1;
        return h(
          "div",
          { class: "fields phone-row" },
          field(`phones.${n}.kind`, a("phone.kind"), choice(phone.kind, PHONE_KINDS, (k) => a(`phone.${k}`))),
          field(`phones.${n}.number`, a("phone.number"), text(phone.number, { placeholder: a("phone.e164") })),
          field(`phones.${n}.label`, a("phone.label"), text(phone.label)),
          h("button", { type: "button", class: "small danger", onclick: () => this.rows((rec) => rec.phones.splice(index, 1)) }, a("remove")),
        );
      }),
      h("button", { type: "button", id: "add-phone", onclick: () => this.rows((rec) => rec.phones.push({ kind: "landline", number: "", label: "" })) }, a("household.add_phone")),
    );
  }

  devicesSection() {
    const box = h("section", { class: "household-devices" }, h("h3", {}, a("household.devices")));
    if (!this.existing) {
      box.append(h("p", { class: "hint" }, a("household.save_first")));
      return box;
    }
    const refresh = () => this.open(this.existing);
    box.append(deviceTable(this.devices, { showHousehold: false, changed: refresh }), addDeviceForm({ household: this.existing, added: refresh }));
    return box;
  }

  async save(form) {
    const body = collect(form, this.record);
    this.record = body;
    const existing = this.existing;
    try {
      const answer = existing
        ? await api("PUT", `/api/register/households/${encodeURIComponent(existing)}`, body)
        : await api("POST", "/api/register/households", body);
      this.record = answer.household;
      this.existing = answer.household.code;
      this.devices = answer.devices;
      this.render();
      saidSaved(this.root.querySelector("form.household-form"));
      this.search();
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

function residentFields(r, n, remove) {
  const p = `residents.${n}`;
  const senses = (v) => a(`sense.${v}`);
  return h(
    "div",
    { class: "resident-fields", dataset: { resident: n } },
    h("div", { class: "row-head" }, h("strong", {}, a("resident.heading", { n })), h("button", { type: "button", class: "small danger", onclick: remove }, a("remove"))),
    h(
      "div",
      { class: "fields" },
      field(`${p}.name`, a("resident.name"), text(r.name)),
      field(`${p}.birth_date`, a("resident.birth_date"), h("input", { type: "date", value: r.birth_date ?? "" })),
      field(`${p}.birth_year`, a("resident.birth_year"), number(r.birth_date ? null : r.birth_year, { min: "1890", max: "2100" })),
      field(`${p}.sex`, a("resident.sex"), choice(r.sex, SEXES, (v) => a(`sex.${v}`))),
      field(`${p}.mobility`, a("resident.mobility"), choice(r.mobility, MOBILITY, (v) => a(`mobility.${v}`))),
      field(`${p}.speaks`, a("resident.speaks"), text(r.speaks)),
      field(`${p}.hearing`, a("resident.hearing"), choice(r.hearing, SENSES, senses)),
      field(`${p}.sight`, a("resident.sight"), choice(r.sight, SENSES, senses)),
    ),
    h(
      "div",
      { class: "fields" },
      field(`${p}.allergies`, a("resident.allergies"), lines(r.allergies)),
      field(`${p}.medicines`, a("resident.medicines"), lines(r.medicines)),
      field(`${p}.conditions`, a("resident.conditions"), lines(r.conditions)),
    ),
    h(
      "div",
      { class: "fields" },
      field(`${p}.doctor`, a("resident.doctor"), text(r.doctor)),
      field(`${p}.clinic`, a("resident.clinic"), text(r.clinic)),
      field(`${p}.clinic_phone`, a("resident.clinic_phone"), text(r.clinic_phone, { placeholder: a("phone.e164") })),
      field(`${p}.hospital`, a("resident.hospital"), text(r.hospital)),
      field(`${p}.do_not_resuscitate`, a("resident.do_not_resuscitate"), check(r.do_not_resuscitate), { hint: "" }),
    ),
    h(
      "div",
      { class: "fields" },
      field(`${p}.wishes`, a("resident.wishes"), area(r.wishes), { wide: true }),
      field(`${p}.care_notes`, a("resident.care_notes"), area(r.care_notes), { wide: true }),
    ),
  );
}

function contactFields(c, n) {
  const p = `contacts.${n}`;
  return h(
    "div",
    { class: "fields" },
    field(`${p}.name`, a("contact.name"), text(c.name)),
    field(`${p}.relation`, a("contact.relation"), text(c.relation)),
    field(`${p}.phone`, a("contact.phone"), text(c.phone, { placeholder: a("phone.e164") })),
    field(`${p}.phone_alt`, a("contact.phone_alt"), text(c.phone_alt)),
    field(`${p}.language`, a("contact.language"), choice(c.language, LANGUAGES, (v) => a(`language.${v}`))),
    field(`${p}.holds_key`, a("contact.holds_key"), check(c.holds_key)),
    field(`${p}.call_from`, a("contact.call_from"), h("input", { type: "time", value: c.call_from ?? "" }), { hint: a("contact.any_time") }),
    field(`${p}.call_until`, a("contact.call_until"), h("input", { type: "time", value: c.call_until ?? "" })),
    field(`${p}.portal`, a("contact.portal"), check(c.portal)),
  );
}

// The household as the form holds it, in the body the API takes (web/register.py
// HouseholdBody); residents keep their id, so a change keeps their history.
function collect(form, record) {
  const v = (name) => valueOf(form, name);
  return {
    code: v("code"),
    address: v("address"),
    lat: v("lat"),
    lon: v("lon"),
    home_station: v("home_station"),
    backup_station: v("backup_station"),
    access_notes: v("access_notes"),
    phones: record.phones.map((_, i) => ({ kind: v(`phones.${i + 1}.kind`), number: v(`phones.${i + 1}.number`), label: v(`phones.${i + 1}.label`) })),
    residents: record.residents.map((resident, i) => {
      const p = `residents.${i + 1}`;
      const out = { name: v(`${p}.name`) };
      if (resident.id !== null && resident.id !== undefined) out.id = resident.id;
      for (const key of ["birth_date", "birth_year", "sex", "mobility", "conditions", "medicines", "allergies", "doctor", "clinic", "clinic_phone", "do_not_resuscitate", "hospital", "wishes", "speaks", "hearing", "sight", "care_notes"]) {
        out[key] = v(`${p}.${key}`);
      }
      return out;
    }),
    contacts: record.contacts.map((_, i) => {
      const p = `contacts.${i + 1}`;
      const out = {};
      for (const key of ["name", "relation", "phone", "phone_alt", "language", "holds_key", "call_from", "call_until", "portal"]) out[key] = v(`${p}.${key}`);
      return out;
    }),
  };
}
