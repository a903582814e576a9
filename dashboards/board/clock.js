// The district's time on the board: the server's clock (corrected for this PC's), times
// shown in the district's zone, and the ages and countdowns that move once a second.
import { $ } from "./dom.js";
import { locale, t } from "./i18n.js";
import { state } from "./state.js";

export function serverNow() {
  return Date.now() + state.offsetMs;
}

export function noteServerTime(at) {
  const parsed = Date.parse(at ?? "");
  if (!Number.isNaN(parsed)) state.offsetMs = parsed - Date.now();
}

export function duration(ms) {
  const total = Math.max(0, Math.floor(ms / 1000));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const seconds = String(total % 60).padStart(2, "0");
  return hours > 0 ? `${hours}:${String(minutes).padStart(2, "0")}:${seconds}` : `${minutes}:${seconds}`;
}

export function formatTime(iso, withDate = false) {
  if (!iso) return "—";
  const options = { timeZone: state.timezone, hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" };
  if (withDate) Object.assign(options, { month: "2-digit", day: "2-digit" });
  try {
    return new Intl.DateTimeFormat(locale(), options).format(new Date(iso));
  } catch {
    return iso;
  }
}

// "03:12" in the district's zone (with the date when it is not today's).
export function sinceText(iso) {
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

// The shift's date in the district, e.g. "2026-11-23": the mute switch lasts one shift day.
export function shiftKey() {
  try {
    return new Intl.DateTimeFormat("en-CA", { timeZone: state.timezone, year: "numeric", month: "2-digit", day: "2-digit" }).format(new Date(serverNow()));
  } catch {
    return new Date(serverNow()).toISOString().slice(0, 10);
  }
}

// Ages and countdowns, once a second, from the corrected clock.
export function tick() {
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
