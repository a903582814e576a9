// The service strip (today's figures of GET /api/service-levels and the free carers) and
// the stations' list of free and on-shift carers.
import { api } from "./api.js";
import { duration } from "./clock.js";
import { $, h } from "./dom.js";
import { t, tOr } from "./i18n.js";
import { state } from "./state.js";

// The feed sends service levels every few seconds; after a change the board asks sooner,
// at most once every SERVICE_REFRESH_MS, so "calls today" moves with the calls.
const SERVICE_REFRESH_MS = 2000;
let serviceTimer = null;

export function scheduleServiceRefresh() {
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

export function renderService() {
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
    h("span", { class: "label", title: tOr(`service.${key}`, key.replaceAll("_", " ")) }, tOr(`service.${key}`, key.replaceAll("_", " "))),
  );
}

export function renderStations() {
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
