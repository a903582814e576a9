// The open calls as a dense list, one or two lines a call, so that a storm of 50 still
// fits a screen: calls offered to me and mine first, then the emergencies nobody has taken
// (loud: red, a blinking badge), then the rest by urgency and age (state.js sortedCalls).
// Two tabs: the calls people raised, and device faults (offline, clock, low battery),
// which never sit among the alarms. Filters by call type and by the household's station,
// kept in this browser; an alarm nobody has taken, a call offered to me and my own calls
// are shown whatever the filters say. A storm draws the 150 first rows of a tab and counts the
// rest; the list is redrawn once per burst of feed messages. And for supervisors, the
// queue of calls with escalation alerts sounding. A click opens the call's detail.
import { updateAlarmState } from "./alarm.js";
import { tick } from "./clock.js";
import { selectCall } from "./detail.js";
import { $, h } from "./dom.js";
import { t, tOr } from "./i18n.js";
import {
  carerName,
  DEVICE_FAULT_TYPES,
  isAlarm,
  isDeviceFault,
  isMine,
  isOfferedToMe,
  ownerName,
  rank,
  ROLE_RANK,
  sortedCalls,
  state,
} from "./state.js";

// Rows drawn at most per tab: the first in the list's order, so what is left out is the
// least urgent; a storm of hundreds of open calls must not freeze the board. The tab
// title and the alarm sound count every call, drawn or not.
const MAX_CARDS = 150;
// Up to this many rows the list is drawn larger; more, and it is dense.
const ROOMY_UP_TO = 8;
// Bursts of feed messages redraw the list once, this long after the first of them.
const REDRAW_AFTER_MS = 50;
// The types each tab holds, in the order its type filter offers them.
const TAB_TYPES = {
  calls: ["emergency", "fall", "service_request", "voice"],
  faults: [...DEVICE_FAULT_TYPES],
};
// Carers no longer on the call.
const GONE = new Set(["stood_down", "declined", "no_answer", "unreachable", "finished"]);
// The filters, remembered in this browser (written only when the operator changes them).
const FILTERS_KEY = "board.calls.filters";
let callsTimer = null;
let view = readFilters();
let wired = false;

function readFilters() {
  const chosen = { tab: "calls", type: { calls: "all", faults: "all" }, station: "all" };
  try {
    const kept = JSON.parse(localStorage.getItem(FILTERS_KEY) ?? "null");
    // The board always opens on the calls: an alarm must never wait behind the faults' tab.
    if (kept && typeof kept === "object") {
      for (const tab of Object.keys(TAB_TYPES)) {
        if (TAB_TYPES[tab].includes(kept.type?.[tab])) chosen.type[tab] = kept.type[tab];
      }
      if (typeof kept.station === "string") chosen.station = kept.station;
    }
  } catch {
    /* a browser that keeps nothing: the defaults */
  }
  return chosen;
}

function keepFilters() {
  try {
    localStorage.setItem(FILTERS_KEY, JSON.stringify(view));
  } catch {
    /* not kept, still applied */
  }
}

// The tab shown: "calls" or "faults".
export function currentTab() {
  return view.tab;
}

export function showTab(tab) {
  if (!(tab in TAB_TYPES) || tab === view.tab) return;
  view.tab = tab;
  keepFilters();
  drawCalls();
}

export function renderCalls() {
  updateAlarmState();
  if (callsTimer) return;
  callsTimer = setTimeout(() => {
    callsTimer = null;
    drawCalls();
  }, REDRAW_AFTER_MS);
}

// Whether a call is in the tab's list under the filters. Alarms nobody has taken, calls
// offered to me and my own pass every filter: a filter must never hide the call that needs
// a person, nor one I am working.
function passes(call, tab) {
  if (isDeviceFault(call) !== (tab === "faults")) return false;
  if (isAlarm(call) || isOfferedToMe(call) || isMine(call)) return true;
  const type = view.type[tab];
  if (type !== "all" && call.call_type !== type) return false;
  return view.station === "all" || call.household?.home_station === view.station;
}

// The calls of the tab shown, in the list's order, as drawn (for the keyboard: keys.js).
export function listedCalls() {
  return sortedCalls()
    .filter((call) => passes(call, view.tab))
    .slice(0, MAX_CARDS);
}

function drawCalls() {
  wireControls();
  const calls = sortedCalls();
  const people = calls.filter((call) => !isDeviceFault(call));
  const faults = calls.filter(isDeviceFault);
  drawTabs(people, faults);
  drawFilters();
  for (const tab of Object.keys(TAB_TYPES)) {
    const all = tab === "calls" ? people : faults;
    const listed = all.filter((call) => passes(call, tab));
    const shown = listed.slice(0, MAX_CARDS);
    const list = $(tab === "calls" ? "calls" : "faults");
    list.hidden = tab !== view.tab;
    if (tab !== view.tab) {
      list.replaceChildren();
      continue;
    }
    list.replaceChildren(...shown.map(callRow));
    // A calm night's few calls are drawn larger, readable from across the desk.
    list.dataset.roomy = String(shown.length <= ROOMY_UP_TO);
    const more = $("calls-more");
    more.hidden = listed.length <= shown.length;
    more.textContent = t("calls.more", { n: listed.length - shown.length });
    const hidden = all.length - listed.length;
    $("calls-filtered").hidden = hidden === 0;
    $("calls-filtered-text").textContent = t("dense.filtered", { n: hidden });
    $("calls-filter-clear").textContent = t("dense.filter.clear");
    const empty = $("calls-empty");
    empty.hidden = listed.length > 0;
    empty.textContent = all.length > 0 ? t("dense.none_filtered") : tab === "calls" ? t("calls.none") : t("dense.faults.none");
  }
  renderEscalations();
  updateAlarmState();
  tick();
}

function drawTabs(people, faults) {
  $("calls-count").textContent = t("calls.count", { n: people.length });
  $("faults-heading").textContent = t("dense.faults");
  $("faults-count").textContent = t("calls.count", { n: faults.length });
  const untaken = people.filter(isAlarm).length;
  for (const [tab, button] of [["calls", $("tab-calls")], ["faults", $("tab-faults")]]) {
    button.setAttribute("aria-selected", String(tab === view.tab));
  }
  // Looking at the device faults while an emergency waits: the calls' tab says so.
  $("tab-calls").dataset.alarm = String(untaken > 0 && view.tab !== "calls");
  $("keys-help-button").textContent = t("keys.button");
  $("keys-help-button").title = t("keys.help.title");
}

function drawFilters() {
  const type = $("filter-type");
  const types = TAB_TYPES[view.tab];
  type.setAttribute("aria-label", t("dense.filter.type"));
  setOptions(type, [["all", t("dense.filter.all_types")], ...types.map((value) => [value, tOr(`type.${value}`, value)])]);
  type.value = view.type[view.tab];
  type.dataset.active = String(type.value !== "all");
  const station = $("filter-station");
  station.setAttribute("aria-label", t("dense.filter.station"));
  const codes = state.stations.map((s) => s.code);
  if (view.station !== "all" && !codes.includes(view.station)) codes.push(view.station);
  setOptions(station, [
    ["all", t("dense.filter.all_stations")],
    ...codes.map((code) => {
      const name = state.stations.find((s) => s.code === code)?.name ?? "";
      return [code, name ? `${code} ${name}` : code];
    }),
  ]);
  station.value = view.station;
  station.dataset.active = String(station.value !== "all");
}

// A select's options, replaced only when they change (a redraw must not close it while open).
function setOptions(select, options) {
  const signature = JSON.stringify(options);
  if (select.dataset.options === signature) return;
  select.dataset.options = signature;
  select.replaceChildren(...options.map(([value, text]) => h("option", { value }, text)));
}

// The tabs' and filters' controls are in the page; they are wired once.
function wireControls() {
  if (wired) return;
  wired = true;
  $("tab-calls").addEventListener("click", () => showTab("calls"));
  $("tab-faults").addEventListener("click", () => showTab("faults"));
  // A filter chosen leaves the control, so the keys (keys.js) work on the list at once.
  $("filter-type").addEventListener("change", (event) => {
    view.type[view.tab] = event.target.value;
    keepFilters();
    drawCalls();
    event.target.blur();
  });
  $("filter-station").addEventListener("change", (event) => {
    view.station = event.target.value;
    keepFilters();
    drawCalls();
    event.target.blur();
  });
  $("calls-filter-clear").addEventListener("click", () => {
    view.type[view.tab] = "all";
    view.station = "all";
    keepFilters();
    drawCalls();
  });
}

// One call, two lines: what and who (type, household, its station, residents, the call's
// number, how long it has waited); then where it stands (state, alerts, owner, the next
// escalation step counting down, carers).
function callRow(call) {
  const alarm = isAlarm(call);
  const offered = isOfferedToMe(call);
  const mine = isMine(call);
  const household = call.household ?? {};
  // review (issue 19): on a call awaiting review the carer who reported it done still shows.
  const carers = (call.carers ?? []).filter((c) => !GONE.has(c.state) || (call.state === "awaiting_review" && c.state === "finished"));
  const deadline = call.next_deadline;
  const alerts = call.alerts ?? [];
  return h(
    "li",
    {
      class: `call-card${alarm ? " alarm" : ""}${call.id === state.selected ? " selected" : ""}`,
      dataset: {
        callId: call.id,
        household: household.code ?? "",
        station: household.home_station ?? "",
        state: call.state,
        priority: call.priority,
        callType: call.call_type,
        owned: String(Boolean(call.owner)),
        mine: String(mine),
        offered: String(offered),
      },
      tabindex: "0",
      onclick: () => selectCall(call.id),
      onkeydown: (event) => event.key === "Enter" && selectCall(call.id),
    },
    h(
      "div",
      { class: "line1" },
      h("span", { class: "type" }, tOr(`type.${call.call_type}`, call.call_type)),
      alarm ? h("span", { class: "flag" }, t("call.unacked")) : null,
      offered ? h("span", { class: "offered-flag" }, t("dense.offered")) : null,
      mine ? h("span", { class: "mine-flag" }, t("dense.mine")) : null,
      h("span", { class: "household" }, household.code ?? ""),
      h("span", { class: "station hint", title: t("dense.filter.station") }, household.home_station ?? ""),
      h("span", { class: "residents", title: household.address ?? "" }, residentNames(household)),
      (call.presses ?? 1) > 1 ? h("span", { class: "presses" }, t("call.presses", { n: call.presses })) : null,
      h("span", { class: "call-id hint" }, `#${call.id}`),
      h("span", { class: "age", dataset: { since: call.opened_at }, title: t("call.age") }, ""),
    ),
    h(
      "div",
      { class: "line2" },
      h("span", { class: "state-badge", dataset: { state: call.state } }, tOr(`state.${call.state}`, call.state)),
      alerts.length > 0 ? h("span", { class: "alerts overdue" }, alerts.map((a) => tOr(`step.${a}`, a)).join(" · ")) : null,
      // An alarm nobody has taken says so in its badge; its line keeps the room for the rest.
      alarm ? null : h("span", { class: "owner" }, h("span", { class: "k" }, t("dense.owner")), call.owner ? shortName(call.owner) : t("dense.owner.none")),
      deadline
        ? h(
            "span",
            { class: "next-step" },
            h("span", { class: "k" }, t("dense.next")),
            `${tOr(`step.${deadline.step}`, deadline.step)} `,
            h("span", { class: "deadline", dataset: { due: deadline.due_at } }, ""),
          )
        : h("span", { class: "next-step" }, h("span", { class: "deadline" }, t("call.deadline.none"))),
      h(
        "span",
        // An emergency or fall with nobody on the way stands out, taken or not.
        { class: `carers${carers.length === 0 && call.priority === 1 ? " nobody" : ""}`, title: t("call.carers") },
        carers.length === 0
          ? t("call.carers.none")
          : carers.map((c, index) => [
              index > 0 ? ", " : "",
              h("span", { title: c.name ?? carerName(c.code) }, `${c.code} `),
              h("span", { class: "carer-state", dataset: { state: c.state } }, tOr(`carer.${c.state}`, c.state)),
            ]),
      ),
    ),
  );
}

// An operator as the row names them: the username (the detail gives the full name).
function shortName(actor) {
  const [, username] = String(actor).split(":");
  return username || String(actor);
}

function residentNames(household) {
  const residents = household.residents;
  if (Array.isArray(residents)) return residents.map((r) => r.name ?? r).join("、");
  return residents ?? "";
}

export function renderEscalations() {
  const box = $("escalations");
  if (rank() < ROLE_RANK.supervisor) {
    box.replaceChildren();
    return;
  }
  // The live calls are fresher than the service figures' list; they carry the same alerts.
  const waiting = sortedCalls()
    .filter((call) => (call.alerts ?? []).length > 0)
    .sort((a, b) => Date.parse(a.opened_at) - Date.parse(b.opened_at));
  box.replaceChildren(
    ...(waiting.length === 0
      ? [h("li", { class: "hint" }, t("escalations.none"))]
      : waiting.map((call) =>
          h(
            "li",
            { dataset: { callId: call.id }, onclick: () => selectCall(call.id) },
            `${t("call.id", { id: call.id })} · ${call.household?.code ?? ""} · `,
            h("span", { class: "step" }, call.alerts.map((a) => tOr(`step.${a}`, a)).join(", ")),
            " · ",
            h("span", { dataset: { since: call.opened_at } }, ""),
            ` · ${call.owner ? ownerName(call.owner) : t("call.owner.none")}`,
          ),
        )),
  );
}
