// The wallboard: the day's service levels against their targets and the desk's load
// right now, for the supervisors' wall screen. It follows the board's own feed
// (/api/board/feed, board/feed.js): the snapshot, then every call raised, changed or
// closed, the carers, the operators on duty, the service levels and the server's health,
// as they happen; a call that arrives is on the wall within a second, with no polling.
// The figures are the server's (GET /api/service-levels, in the feed's snapshot and its
// `service` messages); this page only counts what the feed holds (calls waiting, alarms,
// carers and operators free) and shows them. Nothing from the server goes in as HTML.
import { drawHealth } from "../board/banners.js";
import { noteServerTime, tick } from "../board/clock.js";
import { $, h } from "../board/dom.js";
import { openFeed } from "../board/feed.js";
import { language, locale, setLanguage, t } from "../board/i18n.js";
import { isAlarm, isAlarmType, state } from "../board/state.js";

const STRINGS = {
  zh: {
    "wall.title": "服务大屏",
    "wall.board": "值班台",
    "wall.lang": "English",
    "wall.now": "当前",
    "wall.today": "今日服务水平",
    "wall.today_calls": "今日呼叫 {calls} 个，未结 {open} 个",
    "wall.waiting": "等待接手的呼叫",
    "wall.waiting_note": "其中报警（紧急、跌倒）{n} 个",
    "wall.alarms": "未结报警",
    "wall.alarms_note": "紧急和跌倒，已有人接手 {n} 个",
    "wall.operators": "空闲接线员",
    "wall.operators_note": "在岗 {on} 人，暂停 {paused} 人",
    "wall.operators_unknown": "暂无接线员在岗信息",
    "wall.carers": "空闲护理员",
    "wall.carers_note": "在班 {on} 人",
    "wall.ack60": "60秒内接手",
    "wall.ack180": "3分钟内接手",
    "wall.scene15": "{min}分钟内到达现场",
    "wall.resolution": "解决率",
    "wall.resolution_note": "已结案 {closed} 个，解决 {resolved} 个 · 目标 ≥ {target}",
    "wall.target": "目标 ≥ {target}",
    "wall.no_calls_yet": "今天还没有可计的呼叫 · 目标 ≥ {target}",
    "wall.as_of": "服务水平更新于 {at}",
    "wall.signed_out": "大屏已退出登录，已停止更新。",
  },
  en: {
    "wall.title": "Wallboard",
    "wall.board": "Board",
    "wall.lang": "中文",
    "wall.now": "Now",
    "wall.today": "Today's service levels",
    "wall.today_calls": "{calls} calls today, {open} open",
    "wall.waiting": "Calls waiting",
    "wall.waiting_note": "{n} of them alarms (emergency, fall)",
    "wall.alarms": "Alarms open",
    "wall.alarms_note": "emergencies and falls, {n} taken",
    "wall.operators": "Operators free",
    "wall.operators_note": "{on} on duty, {paused} paused",
    "wall.operators_unknown": "no duty information yet",
    "wall.carers": "Carers free",
    "wall.carers_note": "{on} on shift",
    "wall.ack60": "Taken within 60 s",
    "wall.ack180": "Taken within 3 min",
    "wall.scene15": "On scene within {min} min",
    "wall.resolution": "Resolution rate",
    "wall.resolution_note": "{closed} closed, {resolved} resolved · target ≥ {target}",
    "wall.target": "target ≥ {target}",
    "wall.no_calls_yet": "no call counts yet today · target ≥ {target}",
    "wall.as_of": "service levels as of {at}",
    "wall.signed_out": "The wallboard is signed out and no longer updates.",
  },
};

// The wall's own words, else the board's (connection, health lines).
function w(key, params = {}) {
  const template = STRINGS[language()]?.[key];
  if (template === undefined) return t(key, params);
  return template.replace(/\{(\w+)\}/g, (_, name) => (params[name] === undefined ? `{${name}}` : String(params[name])));
}

// What the wall holds: the feed's snapshot and every message after it.
const wall = {
  calls: new Map(),
  carers: [],
  // The operators on duty (the snapshot's `operators`); null while the server sends none.
  operators: null,
  service: {},
  health: { failing: [] },
  connection: "connecting",
  ended: false,
};

// ------------------------------------------------------------------ the feed

function applySnapshot(snapshot) {
  noteServerTime(snapshot.at);
  if (snapshot.timezone) state.timezone = snapshot.timezone;
  wall.calls = new Map((snapshot.calls ?? []).map((call) => [call.id, call]));
  wall.carers = snapshot.carers ?? [];
  wall.operators = Array.isArray(snapshot.operators) ? snapshot.operators : null;
  wall.service = snapshot.service ?? {};
  wall.health = { failing: [], ...(snapshot.health ?? {}) };
  render();
}

function applyMessage(message, expectSnapshot) {
  if (message.at) noteServerTime(message.at);
  switch (message.type) {
    case "call": {
      const call = message.call;
      const held = wall.calls.get(call.id);
      if (held && (held.version ?? 0) > (call.version ?? 0)) break;
      // Only open calls are sent as `call`; a closed one comes as `closed`.
      if (call.closed_at) wall.calls.delete(call.id);
      else wall.calls.set(call.id, call);
      scheduleService();
      break;
    }
    case "closed":
      wall.calls.delete(message.call_id);
      scheduleService();
      break;
    case "carers":
      if (message.carers) wall.carers = message.carers;
      break;
    case "operators":
      wall.operators = Array.isArray(message.operators) ? message.operators : null;
      break;
    case "service":
      wall.service = message.service ?? {};
      break;
    case "health":
      wall.health = { failing: [], ...(message.health ?? {}) };
      break;
    case "resync":
      expectSnapshot();
      return;
    default:
      return;
  }
  render();
}

// A call raised or closed moves the day's figures: ask for them a second later (one
// read for a burst) rather than wait for the feed's next `service` message (every 10 s).
let serviceTimer = null;
function scheduleService() {
  if (serviceTimer) return;
  serviceTimer = setTimeout(async () => {
    try {
      const reply = await fetch("/api/service-levels", { credentials: "same-origin" });
      if (reply.ok) {
        wall.service = await reply.json();
        render();
      }
    } catch {
      /* the feed's next service message will do */
    } finally {
      serviceTimer = null;
    }
  }, 1000);
}

function setConnection(value) {
  wall.connection = value;
  document.body.dataset.connection = value;
  render();
}

function signedOut() {
  wall.ended = true;
  wall.calls = new Map();
  wall.carers = [];
  wall.operators = null;
  wall.service = {};
  wall.health = { failing: [] };
  setConnection("signed_out");
}

// ------------------------------------------------------------------ drawing

function percent(share) {
  return share === null || share === undefined ? "—" : `${Math.round(share * 100)}%`;
}

function tile(id, label, value, note, level) {
  return h(
    "div",
    { class: "tile", id, dataset: { level } },
    h("div", { class: "label" }, label),
    h("div", { class: "value" }, value),
    h("div", { class: "note" }, note),
  );
}

function nowTiles() {
  const calls = [...wall.calls.values()];
  const waiting = calls.filter((call) => !call.owner);
  const waitingAlarms = calls.filter(isAlarm).length;
  const alarms = calls.filter(isAlarmType);
  const onShift = wall.carers.filter((carer) => carer.state !== "off_shift");
  const free = onShift.filter((carer) => carer.state === "free");
  let operators;
  if (wall.operators === null) {
    operators = tile("wall-operators", w("wall.operators"), "—", w("wall.operators_unknown"), "none");
  } else {
    // Operators only: a supervisor on the list is never offered a call (docs/calls.md, Offers).
    const desk = wall.operators.filter((o) => o.role === "operator");
    const on = desk.filter((o) => o.duty === "on_duty");
    const paused = desk.filter((o) => o.duty === "paused").length;
    const idle = on.filter((o) => !o.owned).length;
    operators = tile(
      "wall-operators",
      w("wall.operators"),
      h("span", {}, String(idle), h("span", { class: "of" }, ` / ${on.length}`)),
      w("wall.operators_note", { on: on.length, paused }),
      on.length === 0 ? "alarm" : idle === 0 ? "below" : "ok",
    );
  }
  return [
    tile(
      "wall-waiting",
      w("wall.waiting"),
      String(waiting.length),
      w("wall.waiting_note", { n: waitingAlarms }),
      waitingAlarms > 0 ? "alarm" : waiting.length > 0 ? "below" : "ok",
    ),
    tile(
      "wall-alarms",
      w("wall.alarms"),
      String(alarms.length),
      w("wall.alarms_note", { n: alarms.filter((call) => call.owner).length }),
      waitingAlarms > 0 ? "alarm" : "ok",
    ),
    operators,
    tile(
      "wall-carers",
      w("wall.carers"),
      h("span", {}, String(free.length), h("span", { class: "of" }, ` / ${onShift.length}`)),
      w("wall.carers_note", { on: onShift.length }),
      free.length === 0 ? "alarm" : "ok",
    ),
  ];
}

// One service level against its target: green when it meets it, red when below, grey
// while no call counts.
function levelTile(id, label, key, note) {
  const service = wall.service;
  const value = service[key];
  const target = service.targets?.[key];
  const known = value !== null && value !== undefined;
  const level = !known ? "none" : target === undefined || value >= target ? "ok" : "below";
  const shown = tile(id, label, percent(value), known ? note(percent(target)) : w("wall.no_calls_yet", { target: percent(target) }), level);
  shown.dataset.value = known ? String(value) : "";
  shown.dataset.target = target === undefined ? "" : String(target);
  return shown;
}

function todayTiles() {
  const service = wall.service;
  const target = (p) => w("wall.target", { target: p });
  return [
    levelTile("wall-ack60", w("wall.ack60"), "acknowledged_within_60s", target),
    levelTile("wall-ack180", w("wall.ack180"), "acknowledged_within_180s", target),
    levelTile("wall-scene", w("wall.scene15", { min: service.service_circle_min ?? 15 }), "on_scene_within_15min_share", target),
    levelTile("wall-resolution", w("wall.resolution"), "resolution_rate", (p) =>
      w("wall.resolution_note", { closed: service.closed_calls ?? 0, resolved: service.resolved_calls ?? 0, target: p }),
    ),
  ];
}

function renderHealth() {
  drawHealth(wall.health.failing ?? []);
}

function dayText() {
  if (!wall.service.day) return "";
  try {
    const [y, m, d] = wall.service.day.split("-").map(Number);
    return new Intl.DateTimeFormat(locale(), { dateStyle: "full", timeZone: "UTC" }).format(new Date(Date.UTC(y, m - 1, d)));
  } catch {
    return wall.service.day;
  }
}

function asOf() {
  if (!wall.service.at) return "";
  const options = { timeZone: state.timezone, hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" };
  try {
    return w("wall.as_of", { at: new Intl.DateTimeFormat(locale(), options).format(new Date(wall.service.at)) });
  } catch {
    return "";
  }
}

function render() {
  document.title = failingTitle() + w("wall.title");
  $("title").textContent = w("wall.title");
  $("to-board").textContent = w("wall.board");
  $("lang-toggle").textContent = w("wall.lang");
  $("connection").dataset.state = wall.connection;
  $("connection").textContent = t(`conn.${wall.connection}`);
  $("connection-banner").hidden = wall.connection !== "lost";
  $("connection-banner").textContent = t("conn.lost");
  $("signed-out-banner").hidden = !wall.ended;
  $("signed-out-text").textContent = w("wall.signed_out");
  $("signed-out-link").textContent = t("signin.again");
  $("now-heading").textContent = w("wall.now");
  $("today-heading").textContent = w("wall.today");
  $("today-calls").textContent =
    wall.service.calls === undefined ? "" : w("wall.today_calls", { calls: wall.service.calls, open: wall.service.open_calls ?? 0 });
  $("day").textContent = dayText();
  $("as-of").textContent = asOf();
  renderHealth();
  $("now-tiles").replaceChildren(...nowTiles());
  $("today-tiles").replaceChildren(...todayTiles());
  tick();
}

function failingTitle() {
  return (wall.health.failing ?? []).length > 0 ? `⚠ ${t("title.health")} · ` : "";
}

// ------------------------------------------------------------------ start

// The wall screen's language is its own (kept in this browser), not the account's: a
// supervisor switching the wall to English leaves their board as it is. Chinese first.
const LANGUAGE_KEY = "wall.language";

function savedLanguage() {
  try {
    return localStorage.getItem(LANGUAGE_KEY) === "en" ? "en" : "zh";
  } catch {
    return "zh";
  }
}

function start() {
  setLanguage(savedLanguage());
  $("lang-toggle").addEventListener("click", () => {
    const next = language() === "zh" ? "en" : "zh";
    setLanguage(next);
    try {
      localStorage.setItem(LANGUAGE_KEY, next);
    } catch {
      /* kept for this page only */
    }
    render();
  });
  render();
  openFeed({ onSnapshot: applySnapshot, onMessage: applyMessage, onConnection: setConnection, onSignedOut: signedOut });
  setInterval(tick, 1000);
}

start();
