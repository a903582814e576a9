// What makes the board loud: the beep (every 1.5 s while an emergency nobody has taken is
// open, and once for each alarm message or newly stuck part of the server), the mute
// switch that lasts one shift day, the tab title counting those calls, and the alarm
// lines at the top of the call list.
import { shiftKey } from "./clock.js";
import { $, h } from "./dom.js";
import { t, tOr } from "./i18n.js";
import { isAlarm, state } from "./state.js";

const BEEP_EVERY_MS = 1500;

let audio = null;

function audioContext() {
  if (!audio) {
    const Context = window.AudioContext ?? window.webkitAudioContext;
    if (!Context) return null;
    audio = new Context();
  }
  return audio;
}

// The sound switch, and any click on the page turning the sound on.
export function listenForSound() {
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
}

// Once signed in: sound on if the browser allows it already.
export function wakeSound() {
  audioContext()?.resume?.().catch(() => {});
}

// The beat of the alarm, and the title and switch kept true (a muted shift day ends, a
// blocked sound gets allowed).
export function startAlarmLoop() {
  setInterval(soundLoop, BEEP_EVERY_MS);
  setInterval(updateAlarmState, 5000);
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

export function beep() {
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

// The tab title and the sound switch, as the calls, the connection and the health are.
export function updateAlarmState() {
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

function alarmText(message) {
  if (message.watchdog === "station_uncovered") return t("alarm.station", { station: message.station ?? "" });
  const step = message.step ?? "";
  const params = { call: message.call_id ?? "", step: tOr(`step.${step}`, step) };
  if (message.watchdog === "overdue") return t("alarm.overdue", params);
  return message.call_id === null || message.call_id === undefined ? params.step : t("alarm.text", params);
}

// An alarm message of the feed (an escalation step, the watchdog): a red line at the top
// of the call list, clicked to open its call, and a beep.
export function showAlarm(message, onSelectCall) {
  const callId = message.call_id ?? null;
  const item = h(
    "div",
    { class: "banner banner-conflict alarm-message", dataset: { callId: callId ?? "" }, role: "alert" },
    `${t("alarm.title")}: ${alarmText(message)}`,
  );
  if (callId !== null) item.addEventListener("click", () => onSelectCall(Number(callId)));
  const alarms = $("alarms");
  alarms.prepend(item);
  // The newest few stay; each goes after a minute (the card keeps showing the alert).
  while (alarms.children.length > 4) alarms.lastElementChild.remove();
  setTimeout(() => item.remove(), 60000);
  beep();
}
