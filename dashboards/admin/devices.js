// Devices: the whole list (last seen, battery, signal, online, retired), one household's, and
// what an administrator does with one: register it, move its serial to another household
// (its history stays), retire it. A new or moved device's broker login is shown once.
import { api } from "../board/api.js";
import { formatTime } from "../board/clock.js";
import { h } from "../board/dom.js";
import { choice, clearProblems, field, fill, formProblem, showProblems, text, valueOf } from "./form.js";
import { a } from "./text.js";

export const DEVICE_KINDS = ["call_button", "base_unit", "pager"];

// The login a device was given, shown once in a dialog that says it will not be again.
export function showLogin(serial, login) {
  const done = h("button", { type: "button", class: "primary", id: "login-done" }, login ? a("login.done") : a("close"));
  const dialog = h(
    "div",
    { class: "dialog-backdrop" },
    h(
      "div",
      { class: "dialog login-once", role: "dialog", "aria-modal": "true", "aria-labelledby": "login-heading" },
      h("h2", { id: "login-heading" }, a("login.heading", { serial })),
      login
        ? [
            h("p", { class: "once-warning" }, a("login.warning")),
            h(
              "dl",
              { class: "login" },
              h("dt", {}, a("login.username")),
              h("dd", { id: "login-username" }, login.username),
              h("dt", {}, a("login.password")),
              h("dd", { id: "login-password" }, login.password),
            ),
          ]
        : h("p", {}, a("login.none", { serial })),
      done,
    ),
  );
  done.addEventListener("click", () => dialog.remove());
  document.body.append(dialog);
  done.focus();
}

function stateCell(d) {
  if (d.retired_at) return h("span", { class: "retired" }, a("device.retired", { at: formatTime(d.retired_at, true) }));
  return h("span", { class: d.online ? "online" : "offline" }, d.online ? a("device.online") : a("device.offline"));
}

function batteryCell(d) {
  if (d.battery_pct === null || d.battery_pct === undefined) return a("none");
  return h("span", { class: d.battery_pct <= 20 ? "low" : "" }, a("device.battery_pct", { n: d.battery_pct }));
}

// A weak signal (about -100 dBm and below) is where alarms start to go astray.
const WEAK_SIGNAL_DBM = -100;

function signalCell(d) {
  if (d.rssi_dbm === null || d.rssi_dbm === undefined) return a("none");
  return h("span", { class: d.rssi_dbm <= WEAK_SIGNAL_DBM ? "low" : "" }, a("device.rssi_dbm", { n: d.rssi_dbm }));
}

// The devices as a table; each in service can be moved or retired. `changed()` is
// called after either.
export function deviceTable(devices, { showHousehold = true, changed }) {
  if (!devices.length) return h("p", { class: "empty" }, a("devices.none"));
  return h(
    "table",
    { class: "records devices" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", {}, a("device.serial")),
        h("th", {}, a("device.kind")),
        showHousehold ? h("th", {}, a("device.household")) : null,
        h("th", {}, a("device.state")),
        h("th", {}, a("device.battery")),
        h("th", {}, a("device.signal")),
        h("th", {}, a("device.last_seen")),
        h("th", {}, ""),
      ),
    ),
    h(
      "tbody",
      {},
      devices.map((d) =>
        h(
          "tr",
          { dataset: { serial: d.serial, retired: d.retired_at ? "yes" : "no" } },
          h("td", { class: "mono" }, d.serial),
          h("td", {}, a(`kind.${d.kind}`)),
          showHousehold ? h("td", { class: "mono" }, d.household) : null,
          h("td", {}, stateCell(d)),
          h("td", {}, batteryCell(d)),
          h("td", {}, signalCell(d)),
          h("td", {}, d.last_seen_at ? formatTime(d.last_seen_at, true) : a("none")),
          h("td", { class: "actions" }, d.retired_at ? null : deviceActions(d, changed)),
        ),
      ),
    ),
  );
}

function deviceActions(device, changed) {
  const box = h("div", { class: "device-actions" });
  const to = text("", { placeholder: a("device.move_to"), size: 10 });
  const problem = h("span", { class: "problem", role: "alert", hidden: true });
  const fields = h("div", { class: "inline-form" }, h("div", { class: "field", dataset: { for: "household" } }, to, problem));
  to.dataset.field = "household";
  const move = h("button", { type: "button", dataset: { action: "move" } }, a("device.move"));
  const retire = h("button", { type: "button", class: "danger", dataset: { action: "retire" } }, a("device.retire"));
  move.addEventListener("click", async () => {
    try {
      const answer = await api("POST", `/api/register/devices/${encodeURIComponent(device.serial)}/move`, { household: to.value.trim() });
      showLogin(device.serial, answer.login);
      changed?.();
    } catch (failure) {
      problem.hidden = false;
      problem.textContent = (failure.body?.problems ?? []).map((p) => p.message).join("；") || failure.message;
    }
  });
  // A new login: its password lost, or it came in by an import (which issues none).
  const renew = h("button", { type: "button", dataset: { action: "login" } }, a("device.new_login"));
  renew.addEventListener("click", async () => {
    if (!window.confirm(a("device.new_login_confirm", { serial: device.serial }))) return;
    try {
      const answer = await api("POST", `/api/register/devices/${encodeURIComponent(device.serial)}/login`, {});
      showLogin(device.serial, answer.login);
    } catch (failure) {
      problem.hidden = false;
      problem.textContent = failure.message;
    }
  });
  retire.addEventListener("click", async () => {
    if (!window.confirm(a("device.retire_confirm", { serial: device.serial }))) return;
    try {
      await api("POST", `/api/register/devices/${encodeURIComponent(device.serial)}/retire`, {});
      changed?.();
    } catch (failure) {
      problem.hidden = false;
      problem.textContent = failure.message;
    }
  });
  box.append(fields, move, renew, retire);
  return box;
}

// Register a device: serial, kind and (unless given) the household.
export function addDeviceForm({ household = null, added }) {
  const form = h("form", { class: "record-form add-device", novalidate: true });
  form.append(
    h("h3", {}, a("devices.add")),
    formProblem(),
    h(
      "div",
      { class: "fields" },
      field("serial", a("device.serial"), text("")),
      field("kind", a("device.kind"), choice("call_button", DEVICE_KINDS, (k) => a(`kind.${k}`))),
      household ? null : field("household", a("device.household"), text("")),
      h("div", { class: "field submit" }, h("button", { type: "submit", class: "primary" }, a("add"))),
    ),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { serial: valueOf(form, "serial"), kind: valueOf(form, "kind"), household: household ?? valueOf(form, "household") };
    try {
      const answer = await api("POST", "/api/register/devices", body);
      clearProblems(form);
      showLogin(body.serial, answer.login);
      added?.(answer.device);
    } catch (failure) {
      showProblems(form, failure);
    }
  });
  return form;
}

// The devices tab: every device, filtered by serial or household, and the form to add one.
export class DevicesTab {
  constructor() {
    this.devices = null;
    this.filter = "";
    this.problem = "";
  }

  async load() {
    try {
      this.devices = (await api("GET", "/api/register/devices")).devices;
      this.problem = "";
    } catch (failure) {
      this.problem = a("failed.read", { message: failure.message });
    }
  }

  // The filter and the form are drawn once; the list alone is drawn again when it
  // arrives or changes, so nothing being typed is lost.
  async show(root) {
    this.root = root;
    this.render();
    await this.refresh();
  }

  async refresh() {
    await this.load();
    this.renderList();
  }

  // Drawn again in the other language.
  relabel() {
    this.render();
  }

  render() {
    const root = this.root;
    if (!root) return;
    const search = text(this.filter, { placeholder: a("devices.filter"), id: "devices-filter", type: "search" });
    search.addEventListener("input", () => {
      this.filter = search.value;
      this.renderList();
    });
    fill(root, h("div", { class: "toolbar" }, search), addDeviceForm({ added: () => this.refresh() }), h("div", { class: "device-list" }));
    this.renderList();
  }

  renderList() {
    const place = this.root?.querySelector(".device-list");
    if (!place) return;
    if (this.problem) {
      fill(place, h("p", { class: "form-problem" }, this.problem));
      return;
    }
    if (this.devices === null) {
      fill(place, h("p", { class: "hint" }, a("loading")));
      return;
    }
    const wanted = this.filter.trim().toLowerCase();
    const shown = this.devices.filter((d) => !wanted || d.serial.toLowerCase().includes(wanted) || d.household.toLowerCase().includes(wanted));
    fill(place, deviceTable(shown, { changed: () => this.refresh() }));
  }
}
