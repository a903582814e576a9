// The operators' live call board, wired together here. Plain ES modules, no bundler, no
// framework: the state (state.js) is whatever the last snapshot and the messages after it
// said, and the page is redrawn from it. Nothing the server sends is ever put in the page
// as HTML. This module owns what a feed message changes and which views it redraws, the
// redraw of everything (a language switch, the sign-out), the map's updates, and the
// start: the top bar's buttons, who is signed in, the feed and the timers. The modules
// below never import it.
import { listenForSound, showAlarm, startAlarmLoop, wakeSound } from "./alarm.js";
import { api, saveLanguage, signOut, whenSignInEnds } from "./api.js";
import { hideConflict, renderHealth, setConnection, setHealth, showConflict, showNotice } from "./banners.js";
import { renderCalls } from "./calls.js";
import { noteServerTime, tick } from "./clock.js";
import { refreshDetail, renderDetail, scheduleDetailRefresh, selectCall } from "./detail.js";
import { $, h } from "./dom.js";
import { renderDuty, renderOffers, renderOperators, tickOffers } from "./duty.js";
import { closeFeed, openFeed } from "./feed.js";
import { language, setLanguage, t, tOr } from "./i18n.js";
import { listenForKeys } from "./keys.js";
import { BoardMap } from "./map.js";
import { renderService, renderStations, scheduleServiceRefresh } from "./service.js";
import { isAlarm, isAlarmType, OPEN_STATES, rank, ROLE_RANK, sortedCalls, state } from "./state.js";
import { WelfarePanel } from "./welfare.js";

// ------------------------------------------------------------------ the feed's messages

function applySnapshot(snapshot) {
  noteServerTime(snapshot.at);
  if (snapshot.timezone) state.timezone = snapshot.timezone;
  state.calls = new Map((snapshot.calls ?? []).map((call) => [call.id, call]));
  state.carers = snapshot.carers ?? [];
  state.stations = snapshot.stations ?? [];
  state.service = snapshot.service ?? {};
  setHealth(snapshot.health);
  state.operators = snapshot.operators ?? [];
  renderAll();
  if (state.selected !== null) refreshDetail();
}

function applyMessage(message, expectSnapshot) {
  if (message.at) noteServerTime(message.at);
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
      renderOffers();
      scheduleMap();
      if (call.id === state.selected) scheduleDetailRefresh();
      scheduleServiceRefresh();
      break;
    }
    case "closed":
      state.calls.delete(message.call_id);
      scheduleServiceRefresh();
      renderCalls();
      renderOffers();
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
      showAlarm(message, selectCall);
      break;
    case "health":
      setHealth(message.health);
      break;
    case "operators":
      state.operators = message.operators ?? [];
      renderDuty();
      break;
    case "resync":
      expectSnapshot();
      break;
    default:
      break;
  }
}

// The sign-in has ended: residents' details leave the screen, nothing reconnects, and the
// operator is told why and where to sign in again. The feed's close says why; a request
// refused first (a refresh between the sign-in's end and the feed's close) says only that
// it ended: the general text, which names both common causes.
function signedOut(reason) {
  closeFeed();
  // The reasons the server gives are those with an ended.<reason> text.
  state.ended = reason && tOr(`ended.${reason}`, null) !== null ? reason : "signed_out";
  state.calls = new Map();
  state.carers = [];
  state.selected = null;
  state.detail = null;
  state.candidates = null;
  state.lastCalls = null;
  state.operators = [];
  // Its banner (and the tab title's fault) would stand frozen: nothing tells it any more.
  state.health = { failing: [] };
  for (const id of ["alarms", "welfare-due", "welfare-missed", "detail"]) $(id).replaceChildren();
  setConnection("signed_out");
  renderAll();
}

// --------------------------------------------------------------------- rendering

function renderAll() {
  document.title = t("app.title");
  $("app-title").textContent = t("app.title");
  $("lang-toggle").textContent = t("lang.switch");
  $("signout").textContent = t("signout");
  $("reports-link").textContent = t("reports.link");
  $("admin-link").textContent = t("admin.link");
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
  renderDuty();
  welfare?.render();
  scheduleMap();
  tick();
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
    boardMap?.update({
      calls: sortedCalls(),
      carers: state.carers,
      stations: state.stations,
      isAlarm,
      isAlarmType,
      selected: state.selected,
    });
  }, 200);
}

// ------------------------------------------------------------------------ start

async function start() {
  listenForSound();
  $("lang-toggle").addEventListener("click", async () => {
    const next = language() === "zh" ? "en" : "zh";
    setLanguage(next);
    renderAll();
    await saveLanguage(next);
  });
  $("signout").addEventListener("click", signOut);
  $("conflict-dismiss").addEventListener("click", hideConflict);
  listenForKeys();
  // The map draws the selected call's route (detail.js says when the selection changes).
  document.addEventListener("call-selected", scheduleMap);

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
  wakeSound();
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
  // From here the board shows calls: a request refused for an ended sign-in clears them and
  // says so, as the feed's close does, rather than leaving for the login page.
  whenSignInEnds(() => signedOut(""));
  openFeed({ onSnapshot: applySnapshot, onMessage: applyMessage, onConnection: setConnection, onSignedOut: signedOut });
  setInterval(() => {
    tick();
    tickOffers();
  }, 1000);
  startAlarmLoop();
}

start();
