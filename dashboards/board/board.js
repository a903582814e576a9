// The operators' live call board. Plain ES module, no bundler, no framework: the state is
// whatever the last snapshot and the messages after it said, and the page is redrawn
// from it. Nothing the server sends is ever put in the page as HTML.
import { language, locale, setLanguage, t, tOr } from "./i18n.js";
import { BoardMap } from "./map.js";
import { WelfarePanel } from "./welfare.js";

const FEED_PATH = "/api/board/feed";
// The server closes the feed with this code when the sign-in has ended (the reason says why).
const SIGNED_OUT_CODE = 4401;
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 5000;
const ALARM_TYPES = new Set(["emergency", "fall"]);
const OPEN_STATES = new Set(["raised", "acknowledged", "dispatched", "accepted", "on_the_way", "on_scene"]);
const ROLE_RANK = { operator: 1, supervisor: 2, admin: 3 };
const OUTCOMES = ["helped_at_home", "taken_to_hospital", "false_alarm", "no_access", "family_attended", "device_fixed", "other"];
const CANCEL_REASONS = ["resident_cancelled", "duplicate", "entered_in_error"];
const CARER_REPORTS = ["accepted", "on_the_way", "on_scene", "declined"];
const BEEP_EVERY_MS = 1500;

const state = {
  me: null,
  timezone: "Asia/Shanghai",
  calls: new Map(),
  carers: [],
  stations: [],
  service: {},
  // The server's parts stuck for too long (GET /healthz, as the feed says): a banner.
  health: { failing: [] },
  // Server time minus client time, from the last message that said what time it was.
  offsetMs: 0,
  connection: "connecting",
  selected: null,
  detail: null,
  candidates: null,
  lastCalls: null,
  // Why the sign-in ended, once the server has said so (the board then stays signed out).
  ended: null,
  isAlarm,
};

// ---------------------------------------------------------------------------- helpers

const $ = (id) => document.getElementById(id);

// h("div", {class: "x", dataset: {a: 1}, onclick: f}, child, "text", [more]) -> Element
function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") element.className = value;
    else if (key === "dataset") Object.assign(element.dataset, value);
    else if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else if (key in element && typeof value !== "string") element[key] = value;
    else element.setAttribute(key, value === true ? "" : value);
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

function serverNow() {
  return Date.now() + state.offsetMs;
}

function noteServerTime(at) {
  const parsed = Date.parse(at ?? "");
  if (!Number.isNaN(parsed)) state.offsetMs = parsed - Date.now();
}

function duration(ms) {
  const total = Math.max(0, Math.floor(ms / 1000));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const seconds = String(total % 60).padStart(2, "0");
  return hours > 0 ? `${hours}:${String(minutes).padStart(2, "0")}:${seconds}` : `${minutes}:${seconds}`;
}

function formatTime(iso, withDate = false) {
  if (!iso) return "—";
  const options = { timeZone: state.timezone, hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" };
  if (withDate) Object.assign(options, { month: "2-digit", day: "2-digit" });
  try {
    return new Intl.DateTimeFormat(locale(), options).format(new Date(iso));
  } catch {
    return iso;
  }
}

// The shift's date in the district, e.g. "2026-11-23": the mute switch lasts one shift day.
function shiftKey() {
  try {
    return new Intl.DateTimeFormat("en-CA", { timeZone: state.timezone, year: "numeric", month: "2-digit", day: "2-digit" }).format(new Date(serverNow()));
  } catch {
    return new Date(serverNow()).toISOString().slice(0, 10);
  }
}

function isAlarm(call) {
  return ALARM_TYPES.has(call.call_type) && !call.acknowledged_at && !call.owner && OPEN_STATES.has(call.state);
}

function rank() {
  return ROLE_RANK[state.me?.role] ?? 0;
}

function carerName(code) {
  return state.carers.find((carer) => carer.code === code)?.name ?? "";
}

function sortedCalls() {
  return [...state.calls.values()].sort(
    (a, b) =>
      a.priority - b.priority ||
      (b.presses ?? 1) - (a.presses ?? 1) ||
      Date.parse(a.opened_at) - Date.parse(b.opened_at) ||
      a.id - b.id,
  );
}

// ------------------------------------------------------------------------------- API

class ApiFailure extends Error {
  constructor(status, code, message, body) {
    super(message);
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

async function api(method, path, body) {
  // Signed out: nothing more is asked for (refreshes in hand and timers included).
  if (state.connection === "signed_out") throw new ApiFailure(401, "unauthorised", "signed out");
  const options = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (method !== "GET") {
    options.headers["Content-Type"] = "application/json";
    options.headers["X-CSRF-Token"] = state.me?.csrf_token ?? "";
    options.body = JSON.stringify(body ?? {});
  }
  let reply;
  try {
    reply = await fetch(path, options);
  } catch {
    throw new ApiFailure(0, "network", t("error.network"));
  }
  if (reply.status === 401) {
    // A request answered after the feed said why the sign-in ended leaves that on screen.
    if (state.connection !== "signed_out") location.assign("/login");
    throw new ApiFailure(401, "unauthorised", "signed out");
  }
  const isJson = (reply.headers.get("Content-Type") ?? "").includes("json");
  const data = isJson ? await reply.json() : { message: await reply.text() };
  if (!reply.ok) {
    throw new ApiFailure(reply.status, data.error ?? String(reply.status), data.message ?? reply.statusText, data);
  }
  return data;
}

// ------------------------------------------------------------------------ the feed

let socket = null;
let backoffMs = BACKOFF_FIRST_MS;
let reconnectTimer = null;

function connect() {
  clearTimeout(reconnectTimer);
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}${FEED_PATH}`);
  socket = ws;
  // The seq the next message must have; null until a snapshot says where we are.
  let expected = null;
  ws.addEventListener("message", (event) => {
    if (socket !== ws) return;
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return;
    }
    if (message.type === "snapshot") {
      applySnapshot(message);
      expected = message.seq + 1;
      backoffMs = BACKOFF_FIRST_MS;
      setConnection("live");
      return;
    }
    if (expected === null) return;
    if (message.seq !== expected) {
      // A message went missing: what we show may be wrong. Start again from a snapshot.
      console.warn(`board feed: expected seq ${expected}, got ${message.seq}; reconnecting`);
      dropSocket(ws);
      return;
    }
    expected = message.seq + 1;
    if (message.at) noteServerTime(message.at);
    applyMessage(message, () => {
      expected = null;
    });
  });
  ws.addEventListener("close", (event) => {
    if (socket !== ws) return;
    if (event.code === SIGNED_OUT_CODE) signedOut(event.reason);
    else dropSocket(ws);
  });
}

// The sign-in has ended: residents' details leave the screen, nothing reconnects, and the
// operator is told why and where to sign in again.
function signedOut(reason) {
  socket = null;
  clearTimeout(reconnectTimer);
  // The reasons the server gives are those with an ended.<reason> text.
  state.ended = reason && tOr(`ended.${reason}`, null) !== null ? reason : "signed_out";
  state.calls = new Map();
  state.carers = [];
  state.selected = null;
  state.detail = null;
  state.candidates = null;
  state.lastCalls = null;
  // Its banner (and the tab title's fault) would stand frozen: nothing tells it any more.
  state.health = { failing: [] };
  for (const id of ["alarms", "welfare-due", "welfare-missed", "detail"]) $(id).replaceChildren();
  setConnection("signed_out");
  renderAll();
}

function dropSocket(ws) {
  if (socket === ws) socket = null;
  try {
    ws.close();
  } catch {
    /* already closed */
  }
  setConnection("lost");
  clearTimeout(reconnectTimer);
  reconnectTimer = setTimeout(reconnect, backoffMs);
  backoffMs = Math.min(backoffMs * 2, BACKOFF_MAX_MS);
}

async function reconnect() {
  // A refused WebSocket does not say why; a signed-out operator belongs on the login page.
  try {
    const reply = await fetch("/api/me", { credentials: "same-origin" });
    if (reply.status === 401) {
      location.assign("/login");
      return;
    }
  } catch {
    /* server away: keep trying */
  }
  connect();
}

function applySnapshot(snapshot) {
  noteServerTime(snapshot.at);
  if (snapshot.timezone) state.timezone = snapshot.timezone;
  state.calls = new Map((snapshot.calls ?? []).map((call) => [call.id, call]));
  state.carers = snapshot.carers ?? [];
  state.stations = snapshot.stations ?? [];
  state.service = snapshot.service ?? {};
  setHealth(snapshot.health);
  renderAll();
  if (state.selected !== null) refreshDetail();
}

function applyMessage(message, expectSnapshot) {
  switch (message.type) {
    case "call": {
      const call = message.call;
      // A call message is read when sent, so it may repeat what the snapshot had; an
      // older version never replaces a newer one.
      const held = state.calls.get(call.id);
      if (held && (held.version ?? 0) > (call.version ?? 0)) break;
      if (OPEN_STATES.has(call.state)) state.calls.set(call.id, call);
      else state.calls.delete(call.id);
      renderCalls();
      scheduleMap();
      if (call.id === state.selected) scheduleDetailRefresh();
      scheduleServiceRefresh();
      break;
    }
    case "closed":
      state.calls.delete(message.call_id);
      scheduleServiceRefresh();
      renderCalls();
      scheduleMap();
      if (message.call_id === state.selected) scheduleDetailRefresh();
      break;
    case "carers":
      if (message.carers) state.carers = message.carers;
      if (message.stations) state.stations = message.stations;
      renderStations();
      renderService();
      scheduleMap();
      break;
    case "service":
      state.service = message.service ?? {};
      renderService();
      break;
    case "alarm":
      showAlarm(message);
      break;
    case "health":
      setHealth(message.health);
      break;
    case "resync":
      expectSnapshot();
      break;
    default:
      break;
  }
}

// The feed sends service levels every few seconds; after a change the board asks sooner,
// at most once every SERVICE_REFRESH_MS, so "calls today" moves with the calls.
const SERVICE_REFRESH_MS = 2000;
let serviceTimer = null;

function scheduleServiceRefresh() {
  if (serviceTimer) return;
  serviceTimer = setTimeout(async () => {
    try {
      const service = await api("GET", "/api/service-levels");
      if (state.connection === "live") {
        state.service = service;
        renderService();
      }
    } catch {
      /* the feed's next service message will do */
    } finally {
      serviceTimer = null;
    }
  }, SERVICE_REFRESH_MS);
}

function setConnection(value) {
  state.connection = value;
  document.body.dataset.connection = value;
  document.body.classList.toggle("stale", value !== "live");
  document.body.classList.remove("connecting");
  const pill = $("connection");
  pill.dataset.state = value;
  pill.textContent = t(`conn.${value}`);
  const banner = $("connection-banner");
  banner.hidden = value !== "lost";
  banner.textContent = t("conn.lost");
  $("signed-out-banner").hidden = value !== "signed_out";
  updateAlarmState();
}

// --------------------------------------------------------------------- rendering

function renderAll() {
  document.title = t("app.title");
  $("app-title").textContent = t("app.title");
  $("lang-toggle").textContent = t("lang.switch");
  $("signout").textContent = t("signout");
  $("reports-link").textContent = t("reports.link");
  $("conflict-dismiss").textContent = t("dismiss");
  $("calls-heading").textContent = t("calls.heading");
  $("detail-heading").textContent = t("detail.heading");
  $("map-heading").textContent = t("map.heading");
  $("stations-heading").textContent = t("stations.heading");
  $("escalations-heading").textContent = t("escalations.heading");
  $("service-heading").textContent = t("service.heading");
  $("connection").textContent = t(`conn.${state.connection}`);
  $("connection-banner").textContent = t("conn.lost");
  $("signed-out-text").textContent = t(`ended.${state.ended ?? "signed_out"}`);
  $("signed-out-link").textContent = t("signin.again");
  renderHealth();
  if (state.me) {
    $("who").textContent = `${state.me.name} · ${tOr(`role.${state.me.role}`, state.me.role)}`;
  }
  for (const element of document.querySelectorAll("[data-min-role]")) {
    element.hidden = rank() < (ROLE_RANK[element.dataset.minRole] ?? 99);
  }
  $("map-mode").textContent = mapModeText();
  renderService();
  renderCalls();
  renderStations();
  renderDetail();
  welfare?.render();
  scheduleMap();
  tick();
}

// Cards drawn at most: the most urgent first, so what is left out is the least urgent;
// a storm of hundreds of open calls must not freeze the board. The tab title and the
// alarm sound count every call, drawn or not.
const MAX_CARDS = 150;
// Bursts of feed messages redraw the list once, this long after the first of them.
const REDRAW_AFTER_MS = 50;
let callsTimer = null;

function renderCalls() {
  updateAlarmState();
  if (callsTimer) return;
  callsTimer = setTimeout(() => {
    callsTimer = null;
    drawCalls();
  }, REDRAW_AFTER_MS);
}

function drawCalls() {
  const list = $("calls");
  const calls = sortedCalls();
  const shown = calls.slice(0, MAX_CARDS);
  list.replaceChildren(...shown.map(callCard));
  const more = $("calls-more");
  more.hidden = calls.length <= shown.length;
  more.textContent = t("calls.more", { n: calls.length - shown.length });
  $("calls-count").textContent = t("calls.count", { n: calls.length });
  const empty = $("calls-empty");
  empty.hidden = calls.length > 0;
  empty.textContent = t("calls.none");
  renderEscalations();
  updateAlarmState();
  tick();
}

function callCard(call) {
  const alarm = isAlarm(call);
  const household = call.household ?? {};
  const carers = (call.carers ?? []).filter((c) => !["stood_down", "declined", "no_answer", "finished"].includes(c.state));
  const deadline = call.next_deadline;
  return h(
    "li",
    {
      class: `call-card${alarm ? " alarm" : ""}${call.id === state.selected ? " selected" : ""}`,
      dataset: { callId: call.id, household: household.code ?? "", state: call.state, priority: call.priority, callType: call.call_type },
      tabindex: "0",
      onclick: () => selectCall(call.id),
      onkeydown: (event) => event.key === "Enter" && selectCall(call.id),
    },
    h(
      "div",
      { class: "line1" },
      h("span", { class: "type" }, tOr(`type.${call.call_type}`, call.call_type)),
      alarm ? h("span", { class: "flag" }, t("call.unacked")) : null,
      h("span", { class: "household" }, household.code ?? ""),
      h("span", { class: "residents" }, residentNames(household)),
      h("span", { class: "state-badge", dataset: { state: call.state } }, tOr(`state.${call.state}`, call.state)),
      (call.presses ?? 1) > 1 ? h("span", { class: "presses" }, t("call.presses", { n: call.presses })) : null,
      h("span", { class: "call-id hint" }, t("call.id", { id: call.id })),
    ),
    h("div", { class: "address" }, household.address ?? ""),
    h(
      "div",
      { class: "grid" },
      h("span", { class: "k" }, t("call.age")),
      h("span", { class: "k" }, t("call.owner")),
      h("span", { class: "k" }, t("call.carers")),
      h("span", { class: "k" }, deadline ? tOr(`step.${deadline.step}`, deadline.step) : t("call.deadline")),
      h("span", { class: "v age", dataset: { since: call.opened_at } }, ""),
      h("span", { class: "v owner" }, call.owner ? ownerName(call.owner) : t("call.owner.none")),
      h(
        "span",
        { class: "v carers" },
        carers.length === 0
          ? t("call.carers.none")
          : carers.map((c, index) => [
              index > 0 ? ", " : "",
              `${c.code} ${c.name ?? carerName(c.code)} `,
              h("span", { class: "carer-state", dataset: { state: c.state } }, tOr(`carer.${c.state}`, c.state)),
            ]),
      ),
      h("span", { class: "v deadline", dataset: deadline ? { due: deadline.due_at } : {} }, deadline ? "" : t("call.deadline.none")),
    ),
    (call.alerts ?? []).length > 0
      ? h("div", { class: "alerts overdue" }, call.alerts.map((a) => tOr(`step.${a}`, a)).join(" · "))
      : null,
  );
}

function residentNames(household) {
  const residents = household.residents;
  if (Array.isArray(residents)) return residents.map((r) => r.name ?? r).join("、");
  return residents ?? "";
}

function ownerName(actor) {
  const [, username] = String(actor).split(":");
  if (state.me && actor === state.me.actor) return `${state.me.name} (${username})`;
  return username ?? actor;
}

// Ages and countdowns, once a second, from the corrected clock.
function tick() {
  const now = serverNow();
  for (const element of document.querySelectorAll("[data-since]")) {
    element.textContent = duration(now - Date.parse(element.dataset.since));
  }
  for (const element of document.querySelectorAll("[data-due]")) {
    const left = Date.parse(element.dataset.due) - now;
    element.classList.toggle("overdue", left < 0);
    element.textContent = left < 0 ? t("call.overdue", { t: duration(-left) }) : duration(left);
  }
  $("clock").textContent = formatTime(new Date(now).toISOString());
}

// The figures of GET /api/service-levels (docs/board.md), in the order a person reads them.
const SERVICE_FIGURES = [
  ["calls", "count"],
  ["open_calls", "count"],
  ["acknowledged_within_60s", "share"],
  ["acknowledged_within_180s", "share"],
  ["median_ack_s", "seconds"],
  ["median_to_on_scene_s", "seconds"],
  ["on_scene_within_15min_share", "share"],
  ["open_escalations", "alarm_count"],
];

function renderService() {
  const service = state.service ?? {};
  const figures = SERVICE_FIGURES.map(([key, kind]) => {
    const value = service[key];
    let text = "—";
    if (value !== null && value !== undefined) {
      if (kind === "share") text = `${Math.round(value * 100)}%`;
      else if (kind === "seconds") text = duration(value * 1000);
      else text = String(value);
    }
    return figure(key, text, kind === "alarm_count" && value > 0);
  });
  const onShift = state.stations.reduce((sum, s) => sum + (s.on_shift ?? 0), 0);
  const free = state.stations.reduce((sum, s) => sum + (s.free ?? 0), 0);
  if (state.stations.length > 0) figures.push(figure("free_carers", `${free}/${onShift}`, free === 0));
  $("service-figures").replaceChildren(...figures);
}

function figure(key, text, bad) {
  return h(
    "div",
    { class: `figure${bad ? " bad" : ""}`, dataset: { figure: key } },
    h("span", { class: "value" }, text),
    h("span", { class: "label" }, tOr(`service.${key}`, key.replaceAll("_", " "))),
  );
}

function renderStations() {
  const items = state.stations.map((station) =>
    h(
      "li",
      { dataset: { station: station.code } },
      h("span", {}, `${station.code} ${station.name ?? ""}`),
      h(
        "span",
        { class: (station.free ?? 0) === 0 ? "none" : "" },
        t("stations.free", { free: station.free ?? 0, on_shift: station.on_shift ?? 0 }),
      ),
    ),
  );
  $("stations").replaceChildren(...items);
}

function renderEscalations() {
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

// ------------------------------------------------------------------------ the map

let boardMap = null;
let mapTimer = null;

// Above the map: offline mode, or tiles that do not load (positions still shown).
function mapModeText() {
  if (boardMap?.offline) return t("map.offline");
  return boardMap?.tilesFailing ? t("map.tiles_failing") : "";
}

function scheduleMap() {
  if (mapTimer) return;
  mapTimer = setTimeout(() => {
    mapTimer = null;
    if (!boardMap && typeof L !== "undefined") {
      boardMap = new BoardMap($("map"), {
        onSelectCall: selectCall,
        label: t,
        tiles: state.me?.map ?? {},
      });
      $("map-mode").textContent = mapModeText();
      $("map").addEventListener("tiles-failing", () => {
        $("map-mode").textContent = mapModeText();
      });
    }
    boardMap?.update({ calls: sortedCalls(), carers: state.carers, stations: state.stations, isAlarm });
  }, 200);
}

// -------------------------------------------------------------- the selected call

let detailTimer = null;

async function selectCall(id) {
  if (state.selected !== id) {
    state.selected = id;
    state.detail = null;
    state.candidates = null;
    state.lastCalls = null;
    renderDetail();
    for (const card of document.querySelectorAll(".call-card")) {
      card.classList.toggle("selected", Number(card.dataset.callId) === id);
    }
  }
  await refreshDetail();
}

function scheduleDetailRefresh() {
  clearTimeout(detailTimer);
  detailTimer = setTimeout(refreshDetail, 150);
}

async function refreshDetail() {
  const id = state.selected;
  if (id === null) return;
  try {
    const detail = await api("GET", `/api/calls/${id}`);
    if (state.selected !== id) return;
    state.detail = detail;
    const open = OPEN_STATES.has(detail.state);
    const [candidates, lastCalls] = await Promise.all([
      open ? api("GET", `/api/calls/${id}/candidates`).catch(() => null) : null,
      api(
        "GET",
        `/api/calls?state=closed&limit=6&household=${encodeURIComponent(detail.household?.code ?? "")}`,
      ).catch(() => null),
    ]);
    if (state.selected !== id) return;
    state.candidates = candidates?.candidates ?? null;
    state.lastCalls = (lastCalls?.calls ?? [])
      .filter((call) => call.id !== id)
      .slice(0, 5);
  } catch (failure) {
    if (failure.status === 404) state.detail = null;
  }
  renderDetail();
}

function renderDetail() {
  const panel = $("detail");
  const call = state.detail;
  if (state.selected === null) {
    panel.replaceChildren(h("p", { class: "empty" }, t("detail.pick")));
    return;
  }
  if (!call || call.id !== state.selected) {
    panel.replaceChildren(h("p", { class: "hint" }, t("detail.loading")));
    return;
  }
  const household = call.household ?? {};
  const focused = document.activeElement?.dataset?.draft;
  const caret = focused ? [document.activeElement.selectionStart, document.activeElement.selectionEnd] : null;
  const scroll = panel.parentElement.scrollTop;
  panel.replaceChildren(
    h(
      "div",
      { class: "detail", dataset: { callId: call.id, state: call.state } },
      h(
        "div",
        { class: "title" },
        `${t("call.id", { id: call.id })} · ${tOr(`type.${call.call_type}`, call.call_type)} `,
        h("span", { class: "state-badge", id: "detail-state", dataset: { state: call.state } }, tOr(`state.${call.state}`, call.state)),
      ),
      h("div", {}, h("strong", {}, household.code ?? ""), " ", household.address ?? ""),
      household.access_notes ? h("div", { class: "notes" }, `${t("detail.access")}: ${household.access_notes}`) : null,
      actionsSection(call),
      residentCard(household),
      assignmentsSection(call),
      timersSection(call),
      lastCallsSection(),
      notesSection(call),
      historySection(call),
    ),
  );
  panel.parentElement.scrollTop = scroll;
  if (focused) {
    const again = panel.querySelector(`[data-draft="${CSS.escape(focused)}"]`);
    again?.focus();
    if (again && caret && typeof again.setSelectionRange === "function" && again.tagName !== "SELECT") {
      try {
        again.setSelectionRange(caret[0], caret[1]);
      } catch {
        /* not a text field */
      }
    }
  }
  tick();
}

function canWork(call) {
  if (!OPEN_STATES.has(call.state)) return false;
  return !call.owner || call.owner === state.me?.actor || rank() >= ROLE_RANK.supervisor;
}

function actionsSection(call) {
  const section = h("section", { class: "actions" });
  if (!OPEN_STATES.has(call.state)) {
    append(section, [
      h("p", { class: "owner-note" }, t("detail.closed"), call.outcome ? ` · ${t("detail.outcome")}: ${tOr(`outcome.${call.outcome}`, call.outcome)}` : "", call.cancel_reason ? ` · ${tOr(`reason.${call.cancel_reason}`, call.cancel_reason)}` : ""),
    ]);
    return section;
  }
  if (!call.owner) {
    append(section, [
      h("button", { type: "button", class: "big take", dataset: { action: "acknowledge" }, onclick: () => act("acknowledge", call, "acknowledge") }, t("action.acknowledge")),
    ]);
  } else if (call.owner !== state.me?.actor) {
    append(section, [
      h("p", { class: "owner-note", id: "owned-by" }, rank() >= ROLE_RANK.supervisor ? t("detail.step_in", { owner: ownerName(call.owner) }) : t("detail.owned_by", { owner: ownerName(call.owner) })),
    ]);
  }
  if (!canWork(call)) return section;

  // Dispatch: the engine's ranking, or a carer picked by hand.
  append(section, [
    h("h3", {}, t("action.candidates")),
    h("div", { class: "row" }, h("button", { type: "button", dataset: { action: "dispatch-best" }, onclick: () => act("dispatch", call, "dispatch", {}) }, t("action.dispatch_best"))),
  ]);
  if (state.candidates) {
    append(section, [
      state.candidates.length === 0
        ? h("p", { class: "hint" }, t("action.candidates.none"))
        : h(
            "table",
            { class: "candidates" },
            h(
              "tbody",
              {},
              state.candidates.slice(0, 6).map((c) =>
                h(
                  "tr",
                  { dataset: { carer: c.code } },
                  h("td", {}, `${c.code} ${c.name}`),
                  h("td", {}, c.station),
                  h("td", {}, t("action.minutes", { n: c.travel_min })),
                  h("td", {}, c.within_circle ? t("action.within_circle") : ""),
                  h("td", {}, h("span", { class: "carer-state", dataset: { state: c.state } }, tOr(`carer.${c.state}`, c.state ?? ""))),
                  h("td", {}, h("button", { type: "button", dataset: { action: "dispatch", carer: c.code }, onclick: () => act("dispatch", call, "dispatch", { carer: c.code }) }, t("action.dispatch"))),
                ),
              ),
            ),
          ),
    ]);
  }
  const pick = draft(h("input", { id: "pick-carer", list: "carer-codes", placeholder: t("action.pick.placeholder"), size: 14 }), "pick");
  append(section, [
    h(
      "div",
      { class: "row" },
      h("label", { for: "pick-carer" }, t("action.pick")),
      pick,
      h("datalist", { id: "carer-codes" }, state.carers.filter((c) => c.state !== "off_shift").map((c) => h("option", { value: c.code }, `${c.name} · ${tOr(`carer.${c.state}`, c.state)}`))),
      h("button", { type: "button", dataset: { action: "dispatch-pick" }, onclick: () => pick.value.trim() && act("dispatch", call, "dispatch", { carer: pick.value.trim().toUpperCase() }) }, t("action.dispatch")),
    ),
  ]);

  // Close the call.
  const outcome = draft(h("select", { id: "outcome", "aria-label": t("detail.outcome") }, OUTCOMES.map((o) => h("option", { value: o }, t(`outcome.${o}`)))), "outcome");
  const reason = draft(h("select", { id: "cancel-reason", "aria-label": t("action.reason") }, CANCEL_REASONS.map((r) => h("option", { value: r }, t(`reason.${r}`)))), "reason");
  append(section, [
    h("div", { class: "row" }, outcome, h("button", { type: "button", dataset: { action: "resolve" }, onclick: () => act("resolve", call, "resolve", { outcome: outcome.value }) }, t("action.resolve"))),
    h("div", { class: "row" }, reason, h("button", { type: "button", class: "danger", dataset: { action: "cancel" }, onclick: () => act("cancel", call, "cancel", { reason: reason.value }) }, t("action.cancel"))),
  ]);
  return section;
}

function residentCard(household) {
  const year = new Date(serverNow()).getUTCFullYear();
  return h(
    "section",
    { class: "resident-card" },
    h("h3", {}, t("detail.residents")),
    (household.residents ?? []).map((r) =>
      h(
        "div",
        { class: "resident" },
        h("span", { class: "name" }, r.name),
        r.birth_year ? ` ${t("detail.age", { n: year - r.birth_year })}` : "",
        r.mobility ? ` · ${tOr(`mobility.${r.mobility}`, r.mobility)}` : "",
        r.care_notes ? h("div", { class: "notes" }, r.care_notes) : null,
      ),
    ),
    h("h3", {}, t("detail.family")),
    h(
      "ul",
      { class: "plain family" },
      (household.family ?? []).map((f) => h("li", {}, `${f.name}（${f.relation}）`, " ", h("a", { href: `tel:${f.phone}` }, f.phone))),
    ),
    h("h3", {}, t("detail.devices")),
    h(
      "ul",
      { class: "plain devices" },
      (household.devices ?? []).map((d) =>
        h(
          "li",
          { dataset: { online: d.online } },
          `${d.serial} · `,
          h("span", { class: d.online ? "" : "overdue" }, d.online ? t("detail.device.online") : t("detail.device.offline")),
          d.battery_pct !== null && d.battery_pct !== undefined ? ` · ${t("detail.device.battery", { n: d.battery_pct })}` : "",
          d.last_seen_at ? ` · ${t("detail.device.seen", { t: formatTime(d.last_seen_at, true) })}` : "",
        ),
      ),
    ),
  );
}

function assignmentsSection(call) {
  const working = canWork(call);
  const rows = (call.assignments ?? []).map((a) => {
    const why = draft(h("input", { placeholder: t("action.stand_down.why"), size: 10, "aria-label": t("action.stand_down.why") }), `why.${a.carer}`);
    return h(
      "tr",
      { dataset: { carer: a.carer, state: a.state, active: a.active } },
      h("td", {}, `${a.carer} ${a.name ?? carerName(a.carer)}`),
      h("td", {}, h("span", { class: "carer-state", dataset: { state: a.state } }, tOr(`carer.${a.state}`, a.state))),
      h("td", {}, a.travel_min !== null && a.travel_min !== undefined ? t("action.minutes", { n: a.travel_min }) : ""),
      h(
        "td",
        {},
        working && a.active
          ? [
              CARER_REPORTS.map((status) =>
                h("button", { type: "button", class: "quiet", dataset: { action: "status", carer: a.carer, status }, onclick: () => act(`status.${status}`, call, `carers/${a.carer}/status`, { status }) }, t(`status.${status}`)),
              ),
              why,
              h("button", { type: "button", class: "quiet", dataset: { action: "stand-down", carer: a.carer }, onclick: () => act("stand_down", call, `carers/${a.carer}/stand-down`, { why: why.value.trim() || t("action.stand_down") }).then((done) => done && forgetDraft(`why.${a.carer}`)) }, t("action.stand_down")),
            ]
          : "",
      ),
    );
  });
  return h("section", { class: "assignments" }, h("h3", {}, t("detail.assignments")), rows.length ? h("table", {}, h("tbody", {}, rows)) : h("p", { class: "hint" }, t("call.carers.none")));
}

function timersSection(call) {
  const timers = call.timers ?? [];
  if (timers.length === 0) return null;
  return h(
    "section",
    { class: "timers" },
    h("h3", {}, t("detail.timers")),
    h(
      "table",
      {},
      h(
        "tbody",
        {},
        timers.map((timer) =>
          h("tr", {}, h("td", {}, tOr(`step.${timer.step}`, timer.step), timer.carer ? ` (${timer.carer})` : ""), h("td", {}, formatTime(timer.due_at)), h("td", { dataset: { due: timer.due_at } }, "")),
        ),
      ),
    ),
  );
}

function lastCallsSection() {
  if (state.lastCalls === null) return null;
  return h(
    "section",
    { class: "last-calls" },
    h("h3", {}, t("detail.last_calls")),
    state.lastCalls.length === 0
      ? h("p", { class: "hint" }, t("detail.last_calls.none"))
      : h(
          "ul",
          { class: "plain" },
          state.lastCalls.map((c) =>
            h("li", {}, `${formatTime(c.opened_at, true)} · ${tOr(`type.${c.call_type}`, c.call_type)} · ${c.outcome ? tOr(`outcome.${c.outcome}`, c.outcome) : tOr(`reason.${c.cancel_reason}`, c.cancel_reason ?? "")}`),
          ),
        ),
  );
}

function notesSection(call) {
  const text = draft(h("textarea", { id: "note-text", placeholder: t("action.note.placeholder"), "aria-label": t("action.note") }), "note");
  return h(
    "section",
    { class: "note" },
    text,
    h("button", { type: "button", class: "quiet", dataset: { action: "note" }, onclick: () => text.value.trim() && act("note", call, "notes", { text: text.value.trim() }) }, t("action.note")),
  );
}

function historySection(call) {
  const entries = [...(call.history ?? [])].reverse();
  return h(
    "section",
    {},
    h("h3", {}, t("detail.history")),
    h(
      "ul",
      { class: "plain history" },
      entries.map((entry) =>
        h("li", {}, `${formatTime(entry.at)} ${entry.actor} ${entry.action}`, entry.detail?.text ? `: ${entry.detail.text}` : "", entry.detail?.carer ? ` ${entry.detail.carer}` : ""),
      ),
    ),
  );
}

// What the operator is typing or choosing in the detail panel, kept across redraws (a
// live change to the call redraws the panel; nobody's half-written note may vanish).
const drafts = new Map();

function draft(element, field) {
  const key = `${state.selected}:${field}`;
  element.dataset.draft = field;
  if (drafts.has(key)) element.value = drafts.get(key);
  const keep = () => drafts.set(key, element.value);
  element.addEventListener("input", keep);
  element.addEventListener("change", keep);
  return element;
}

function forgetDraft(field) {
  drafts.delete(`${state.selected}:${field}`);
}

// ---------------------------------------------------------------------- actions

async function act(label, call, path, body = {}) {
  hideConflict();
  const buttons = [...document.querySelectorAll("#detail button")];
  buttons.forEach((button) => (button.disabled = true));
  try {
    const result = await api("POST", `/api/calls/${call.id}/${path}`, body);
    if (state.selected === call.id) {
      state.detail = result;
      if (label === "note") forgetDraft("note");
      if (label === "dispatch") forgetDraft("pick");
    }
    showNotice(t("action.done", { what: actionName(label) }));
    await refreshDetail();
    return true;
  } catch (failure) {
    showConflict(failure);
    // The refusal usually means this board was behind: show the call as it now is.
    await refreshDetail();
    return false;
  }
}

function actionName(label) {
  const [kind, status] = label.split(".");
  if (kind === "status") return t(`status.${status}`);
  if (kind === "dispatch") return t("action.dispatched");
  return tOr(`action.${kind}`, kind);
}

function showConflict(failure) {
  $("conflict-title").textContent = failure.status === 409 ? t("conflict.title") : t("error.title");
  $("conflict-text").textContent = failure.message;
  const banner = $("conflict-banner");
  banner.dataset.status = failure.status;
  banner.dataset.error = failure.code ?? "";
  banner.hidden = false;
}

function hideConflict() {
  $("conflict-banner").hidden = true;
}

let noticeTimer = null;
function showNotice(text) {
  const notice = $("notice");
  notice.textContent = text;
  notice.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => (notice.hidden = true), 4000);
}

// --------------------------------------------------------- the server's own health

function setHealth(health) {
  const before = new Set(state.health.failing.map((f) => f.part));
  state.health = { failing: [], ...(health ?? {}) };
  renderHealth();
  // A part newly stuck sounds once, as an alarm does (the banner stays meanwhile).
  if (state.health.failing.some((f) => !before.has(f.part))) beep();
}

// "03:12" in the district's zone (with the date when it is not today's).
function sinceText(iso) {
  const options = { timeZone: state.timezone, hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
  const moment = new Date(iso);
  if (Number.isNaN(moment.getTime())) return "?";
  if (serverNow() - moment.getTime() > 12 * 3600 * 1000) Object.assign(options, { month: "2-digit", day: "2-digit" });
  try {
    return new Intl.DateTimeFormat(locale(), options).format(moment);
  } catch {
    return iso;
  }
}

function renderHealth() {
  const failing = state.health.failing ?? [];
  const banner = $("health-banner");
  banner.hidden = failing.length === 0;
  banner.dataset.parts = failing.map((f) => f.part).join(" ");
  banner.replaceChildren(
    ...failing.map((f) => {
      const params = { since: sinceText(f.since), part: f.part };
      const what = tOr(`health.${f.part}`, null) === null ? t("health.unknown", params) : t(`health.${f.part}`, params);
      // The technician's detail (in English) for whoever hovers; the line is for everyone.
      return h(
        "div",
        { class: "health-line", dataset: { part: f.part }, title: f.detail ?? "" },
        h("span", { class: "health-icon", "aria-hidden": "true" }, "⚠"),
        h("span", {}, `${what}${t("health.sep")}`, h("span", { class: "health-call" }, t("health.call"))),
      );
    }),
  );
  updateAlarmState();
}

function alarmText(message) {
  if (message.watchdog === "station_uncovered") return t("alarm.station", { station: message.station ?? "" });
  const step = message.step ?? "";
  const params = { call: message.call_id ?? "", step: tOr(`step.${step}`, step) };
  if (message.watchdog === "overdue") return t("alarm.overdue", params);
  return message.call_id === null || message.call_id === undefined ? params.step : t("alarm.text", params);
}

function showAlarm(message) {
  const callId = message.call_id ?? null;
  const item = h(
    "div",
    { class: "banner banner-conflict alarm-message", dataset: { callId: callId ?? "" }, role: "alert" },
    `${t("alarm.title")}: ${alarmText(message)}`,
  );
  if (callId !== null) item.addEventListener("click", () => selectCall(Number(callId)));
  const alarms = $("alarms");
  alarms.prepend(item);
  // The newest few stay; each goes after a minute (the card keeps showing the alert).
  while (alarms.children.length > 4) alarms.lastElementChild.remove();
  setTimeout(() => item.remove(), 60000);
  beep();
}

// ------------------------------------------------------- sound and the tab title

let audio = null;

function audioContext() {
  if (!audio) {
    const Context = window.AudioContext ?? window.webkitAudioContext;
    if (!Context) return null;
    audio = new Context();
  }
  return audio;
}

function muteKey() {
  return `board.muted.${shiftKey()}`;
}

function isMuted() {
  try {
    return localStorage.getItem(muteKey()) === "1";
  } catch {
    return false;
  }
}

function setMuted(muted) {
  try {
    if (muted) localStorage.setItem(muteKey(), "1");
    else localStorage.removeItem(muteKey());
  } catch {
    /* private mode: the switch lasts this page only */
  }
  updateAlarmState();
}

function beep() {
  if (isMuted()) return;
  const context = audioContext();
  if (!context || context.state !== "running") return;
  const start = context.currentTime;
  for (const [offset, frequency] of [[0, 880], [0.25, 660]]) {
    const oscillator = context.createOscillator();
    const gain = context.createGain();
    oscillator.frequency.value = frequency;
    gain.gain.setValueAtTime(0.0001, start + offset);
    gain.gain.exponentialRampToValueAtTime(0.3, start + offset + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, start + offset + 0.2);
    oscillator.connect(gain).connect(context.destination);
    oscillator.start(start + offset);
    oscillator.stop(start + offset + 0.22);
  }
  document.body.dataset.beeps = String(Number(document.body.dataset.beeps ?? 0) + 1);
}

function alarmCount() {
  let count = 0;
  for (const call of state.calls.values()) if (isAlarm(call)) count += 1;
  return count;
}

function updateAlarmState() {
  const count = state.connection === "live" ? alarmCount() : 0;
  const fault = (state.health.failing ?? []).length > 0 ? `⚠ ${t("title.health")} · ` : "";
  if (state.connection === "lost") document.title = `${t("title.lost")} · ${t("app.title")}`;
  else if (count > 0) document.title = `${fault}(${count}) ${t("title.emergency")} · ${t("app.title")}`;
  else document.title = `${fault}${t("app.title")}`;
  const muted = isMuted();
  const context = audio;
  const blocked = context && context.state !== "running";
  document.body.dataset.sound = count === 0 ? "quiet" : muted ? "muted" : blocked ? "blocked" : "alarm";
  const toggle = $("sound-toggle");
  toggle.textContent = muted ? t("sound.muted") : blocked ? t("sound.blocked") : t("sound.on");
  toggle.setAttribute("aria-pressed", String(muted));
}

function soundLoop() {
  if (state.connection === "live" && alarmCount() > 0 && !isMuted()) beep();
}

// ------------------------------------------------------------------------ start

async function start() {
  $("sound-toggle").addEventListener("click", () => {
    const context = audioContext();
    if (context && context.state !== "running") {
      context.resume().then(updateAlarmState);
      return;
    }
    setMuted(!isMuted());
  });
  // Browsers keep sound off until the page is touched: any click turns it on.
  document.addEventListener("click", () => {
    const context = audioContext();
    if (context && context.state === "suspended") context.resume().then(updateAlarmState);
  });
  $("lang-toggle").addEventListener("click", async () => {
    const next = language() === "zh" ? "en" : "zh";
    setLanguage(next);
    renderAll();
    try {
      await api("POST", "/api/me/language", { language: next });
    } catch (failure) {
      console.warn("language not saved:", failure.message);
    }
  });
  $("signout").addEventListener("click", async () => {
    try {
      await api("POST", "/logout", {});
    } finally {
      location.assign("/login");
    }
  });
  $("conflict-dismiss").addEventListener("click", hideConflict);

  boot();
}

// The weekly welfare calls (welfare.js), made once we know who is signed in.
let welfare = null;

async function boot() {
  let me;
  try {
    me = await api("GET", "/api/me");
  } catch (failure) {
    if (failure.status !== 401) setTimeout(boot, 2000);
    return;
  }
  state.me = me;
  document.body.dataset.role = me.role;
  setLanguage(me.language ?? "zh");
  audioContext()?.resume?.().catch(() => {});
  welfare = new WelfarePanel({
    api,
    h,
    t,
    rank,
    supervisorRank: ROLE_RANK.supervisor,
    showNotice,
    showConflict,
    hideConflict,
  });
  renderAll();
  welfare.start();
  setConnection("connecting");
  connect();
  setInterval(tick, 1000);
  setInterval(soundLoop, BEEP_EVERY_MS);
  setInterval(updateAlarmState, 5000);
}

start();
