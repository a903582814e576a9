// What the board says about itself and the server, above the calls: the connection pill
// and the lost or signed-out banner, the health banner while a part of the server is
// stuck, the red banner of a refused action, and the short notice of one that was done.
import { beep, updateAlarmState } from "./alarm.js";
import { sinceText } from "./clock.js";
import { $, h } from "./dom.js";
import { language, t, tOr } from "./i18n.js";
import { ownerName, state } from "./state.js";

export function setConnection(value) {
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

export function setHealth(health) {
  const before = new Set(state.health.failing.map((f) => f.part));
  state.health = { failing: [], ...(health ?? {}) };
  renderHealth();
  // The tab title says a fault as the banner does, at once (not at the next 5 s tick).
  updateAlarmState();
  // A part newly stuck sounds once, as an alarm does (the banner stays meanwhile).
  if (state.health.failing.some((f) => !before.has(f.part))) beep();
}

export function renderHealth() {
  drawHealth(state.health.failing ?? []);
}

// The health banner (#health-banner) for the parts stuck, one line each; the wallboard
// draws its banner with it too.
export function drawHealth(failing) {
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
}

export function showConflict(failure) {
  $("conflict-title").textContent = failure.status === 409 ? t("conflict.title") : t("error.title");
  $("conflict-text").textContent = refusalText(failure);
  $("conflict-text").title = failure.message ?? "";
  const banner = $("conflict-banner");
  banner.dataset.status = failure.status;
  banner.dataset.error = failure.code ?? "";
  banner.hidden = false;
}

// --- language (issue 19): a refusal in the board's language, from its code and fields
// (docs/api.md "Errors"); the server's English message stays on hover.
export function refusalText(failure) {
  const body = failure.body ?? {};
  let key = `error.${failure.code}`;
  if (failure.code === "carer_unavailable" && !body.carer_state) key = "error.carer_unavailable.inactive";
  const params = {
    owner: body.owner ? ownerName(body.owner) : "",
    carer: body.carer ?? "",
    on_call: body.on_call ?? "",
    state: tOr(`carer.${body.carer_state}`, body.carer_state ?? ""),
  };
  if (tOr(key, null) !== null) return t(key, params);
  // A refusal with no words of its own here: in Chinese, say so plainly rather than show
  // the server's English (it is on hover for the technician).
  return language() === "zh" && /[A-Za-z]{3}/.test(failure.message ?? "") ? t("error.other") : failure.message;
}
// --- end of language (issue 19)

export function hideConflict() {
  $("conflict-banner").hidden = true;
}

let noticeTimer = null;
// tone "ok": it was done as asked (green); "warn": it was not, or not all of it (amber,
// and it stays longer: the operator must do something about it).
export function showNotice(text, tone = "ok") {
  const notice = $("notice");
  notice.textContent = text;
  notice.dataset.tone = tone;
  notice.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => (notice.hidden = true), tone === "warn" ? 12000 : 4000);
}
