// Supervisors' reports: pick a period, read GET /api/reports, draw the figures per
// station as SVG bar charts and tables, and link the CSV files for spreadsheets.
// The figures are defined in docs/reports.md; this page only shows them. The desk's own
// codes (escalation steps, reasons) are said in the board's words (board/i18n.js), and
// days are the district's days ([district] timezone), whatever the browser's zone.
import { setLanguage, tOr } from "../board/i18n.js";

const TEXT = {
  zh: {
    title: "服务报表", board: "值班台", lang: "English", from: "从", to: "到", show: "查看",
    lastWeek: "上一周", thisWeek: "本周", csvStation: "下载 CSV（按站点）", csvCarer: "下载 CSV（按护理员）",
    district: "全区", stations: "各站点", carers: "各护理员", escalations: "升级及原因",
    calls: "呼叫", ack60: "60 秒内接听", ack180: "180 秒内接听", sceneP50: "到场中位数",
    sceneP90: "到场 P90", sceneMax: "到场最长", circle: "{min} 分钟内到场", escalated: "升级的呼叫",
    handled: "已结束", resolved: "已解决", cancelled: "已取消", open: "未结束", rate: "解决率",
    chartAck: "接听及时率（各站点）", chartScene: "到场时间（分钟，各站点）",
    chartCalls: "呼叫与解决（各站点）", station: "站点", name: "名称", carer: "护理员",
    dispatched: "派出", accepted: "接受", declined: "拒绝", no_answer: "未回应",
    unreachable: "联系不上", on_scene: "到场", resolution_share: "解决占比",
    median_to_accept_s: "接受中位数", median_to_arrive_s: "到达中位数", step: "步骤",
    reason: "原因", count: "次数", nothing: "这段时间没有记录", loading: "正在读取…",
    types: { emergency: "紧急", fall: "跌倒", service_request: "服务", device_offline: "离线", low_battery: "低电量", device_clock: "时钟错误", voice: "来电" },
    refused: "读取失败：{message}",
  },
  en: {
    title: "Service reports", board: "Board", lang: "中文", from: "From", to: "To", show: "Show",
    lastWeek: "Last week", thisWeek: "This week", csvStation: "Download CSV (per station)", csvCarer: "Download CSV (per carer)",
    district: "District", stations: "Stations", carers: "Carers", escalations: "Escalations and why",
    calls: "Calls", ack60: "Answered within 60 s", ack180: "Answered within 180 s", sceneP50: "On scene, median",
    sceneP90: "On scene, p90", sceneMax: "On scene, longest", circle: "On scene within {min} min",
    escalated: "Escalated calls", handled: "Closed", resolved: "Resolved", cancelled: "Cancelled",
    open: "Still open", rate: "Resolution rate",
    chartAck: "Answered in time, per station", chartScene: "Time to on scene (minutes), per station",
    chartCalls: "Calls and resolved, per station", station: "Station", name: "Name", carer: "Carer",
    dispatched: "Sent", accepted: "Accepted", declined: "Declined", no_answer: "No answer",
    unreachable: "Unreachable", on_scene: "On scene", resolution_share: "Resolved share",
    median_to_accept_s: "Median to accept", median_to_arrive_s: "Median to arrive", step: "Step",
    reason: "Reason", count: "Times", nothing: "Nothing recorded in this period", loading: "Loading…",
    types: { emergency: "Emergency", fall: "Fall", service_request: "Service", device_offline: "Offline", low_battery: "Low battery", device_clock: "Clock wrong", voice: "Phone call in" },
    refused: "Could not read the report: {message}",
  },
};

let lang = "zh";
let me = null;
let shown = null;

const $ = (id) => document.getElementById(id);
function t(key, values = {}) {
  const text = TEXT[lang][key] ?? TEXT.zh[key] ?? key;
  return typeof text === "string" ? text.replace(/\{(\w+)\}/g, (_, k) => String(values[k] ?? "")) : text;
}

function percent(part) {
  return part.share === null ? "–" : `${(part.share * 100).toFixed(1)}% (${part.count}/${part.of})`;
}
function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 120) return lang === "zh" ? `${Math.round(seconds)} 秒` : `${Math.round(seconds)} s`;
  const minutes = (seconds / 60).toFixed(1);
  return lang === "zh" ? `${minutes} 分钟` : `${minutes} min`;
}
function share(value) {
  return value === null || value === undefined ? "–" : `${(value * 100).toFixed(1)}%`;
}

function element(tag, attributes = {}, text = "") {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attributes)) node.setAttribute(k, v);
  if (text !== "") node.textContent = text;
  return node;
}

// ---------------------------------------------------------------------- the period

function isoDay(d) {
  return d.toISOString().slice(0, 10);
}

// Today in the district (its [district] timezone, from /api/me), as a UTC midnight: the
// server's date where it said it, else the browser's clock read in the district's zone.
function districtToday() {
  let day = me?.today;
  if (day) return new Date(`${day}T00:00:00Z`);
  try {
    day = new Intl.DateTimeFormat("en-CA", { timeZone: me?.timezone, year: "numeric", month: "2-digit", day: "2-digit" }).format(new Date());
  } catch {
    day = new Intl.DateTimeFormat("en-CA", { year: "numeric", month: "2-digit", day: "2-digit" }).format(new Date());
  }
  return new Date(`${day}T00:00:00Z`);
}

// This week so far, Monday to today, in the district's calendar: what the page opens on.
function thisWeek() {
  const today = districtToday();
  const monday = new Date(today);
  monday.setUTCDate(today.getUTCDate() - ((today.getUTCDay() + 6) % 7));
  return [isoDay(monday), isoDay(today)];
}

// The week before the current one, Monday to Sunday, in the district's calendar.
function lastWeek() {
  const monday = new Date(`${thisWeek()[0]}T00:00:00Z`);
  monday.setUTCDate(monday.getUTCDate() - 7);
  const sunday = new Date(monday);
  sunday.setUTCDate(monday.getUTCDate() + 6);
  return [isoDay(monday), isoDay(sunday)];
}

function periodQuery() {
  return `from=${encodeURIComponent($("from").value)}&to=${encodeURIComponent($("to").value)}`;
}

// ------------------------------------------------------------------------ the charts

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attributes = {}, text = "") {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attributes)) node.setAttribute(k, String(v));
  if (text !== "") node.textContent = text;
  return node;
}

// Grouped bars: one group per label, one bar per series; values null are left out.
// ``whole``: the axis counts things, so its four steps are whole numbers.
function barChart(container, labels, series, { max, format, whole = false }) {
  container.replaceChildren();
  const legend = element("div", { class: "legend" });
  for (const s of series) {
    const item = element("span");
    const swatch = element("i");
    swatch.style.background = s.color;
    item.append(swatch, document.createTextNode(s.name));
    legend.append(item);
  }
  const width = 520, height = 220, left = 40, bottom = 40, top = 10;
  const plotH = height - bottom - top;
  let top_ = Math.max(max ?? 0, ...series.flatMap((s) => s.values.filter((v) => v !== null))) || 1;
  if (whole) top_ = Math.ceil(top_ / 4) * 4;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  for (let i = 0; i <= 4; i++) {
    const y = top + plotH - (plotH * i) / 4;
    chart.append(svg("line", { x1: left, x2: width, y1: y, y2: y, stroke: "#e3e7ec" }));
    chart.append(svg("text", { x: left - 4, y: y + 4, "text-anchor": "end" }, format((top_ * i) / 4)));
  }
  const group = (width - left) / Math.max(labels.length, 1);
  const bar = Math.max(2, (group * 0.8) / series.length);
  labels.forEach((label, i) => {
    const x0 = left + i * group + group * 0.1;
    series.forEach((s, j) => {
      const value = s.values[i];
      if (value === null || value === undefined) return;
      const h = (plotH * value) / top_;
      const rect = svg("rect", { x: x0 + j * bar, y: top + plotH - h, width: bar - 1, height: h, fill: s.color });
      rect.append(svg("title", {}, `${label} · ${s.name}: ${format(value)}`));
      chart.append(rect);
    });
    chart.append(svg("text", { x: x0 + (bar * series.length) / 2, y: height - bottom + 14, "text-anchor": "middle" }, label));
  });
  container.append(legend, chart);
}

function drawCharts(report) {
  const labels = report.stations.map((s) => s.code);
  barChart($("chart-ack"), labels, [
    { name: t("ack60"), color: "#1565c0", values: report.stations.map((s) => s.acknowledged_within_60s.share) },
    { name: t("ack180"), color: "#90caf9", values: report.stations.map((s) => s.acknowledged_within_180s.share) },
  ], { max: 1, format: (v) => `${Math.round(v * 100)}%` });
  const minutes = (v) => (v === null ? null : v / 60);
  barChart($("chart-scene"), labels, [
    { name: t("sceneP50"), color: "#2e7d32", values: report.stations.map((s) => minutes(s.on_scene.p50_s)) },
    { name: t("sceneP90"), color: "#f9a825", values: report.stations.map((s) => minutes(s.on_scene.p90_s)) },
  ], { max: report.service_circle_min, format: (v) => v.toFixed(0) });
  barChart($("chart-calls"), labels, [
    { name: t("calls"), color: "#546e7a", values: report.stations.map((s) => s.calls) },
    { name: t("resolved"), color: "#2e7d32", values: report.stations.map((s) => s.resolved) },
  ], { max: 1, format: (v) => v.toFixed(0), whole: true });
}

// ------------------------------------------------------------------------ the tables

function fillTable(table, headers, rows, totalRow) {
  table.replaceChildren();
  const head = element("tr");
  for (const h of headers) head.append(element("th", {}, h));
  table.append(element("thead"));
  table.tHead.append(head);
  const body = element("tbody");
  const all = totalRow ? [...rows, totalRow] : rows;
  if (all.length === 0) {
    const row = element("tr");
    row.append(element("td", { colspan: headers.length, class: "none" }, t("nothing")));
    body.append(row);
  }
  all.forEach((cells, i) => {
    const row = element("tr", totalRow && i === all.length - 1 ? { class: "total" } : {});
    cells.forEach((cell, j) => row.append(element("td", j < 2 ? { class: "text" } : {}, String(cell))));
    body.append(row);
  });
  table.append(body);
}

function stationCells(code, name, f) {
  return [
    code, name, f.calls,
    ...Object.keys(TEXT.zh.types).map((k) => f.by_type[k] ?? 0),
    percent(f.acknowledged_within_60s), percent(f.acknowledged_within_180s),
    duration(f.on_scene.p50_s), duration(f.on_scene.p90_s), duration(f.on_scene.max_s),
    percent(f.on_scene_within_circle), f.escalations.calls,
    f.handled, f.resolved, f.cancelled, f.open, share(f.resolution_rate),
  ];
}

function render(report) {
  shown = report;
  document.body.dataset.state = "shown";
  const d = report.district;
  const circle = t("circle", { min: report.service_circle_min });
  const figures = [
    [t("calls"), d.calls], [t("ack60"), percent(d.acknowledged_within_60s)],
    [t("ack180"), percent(d.acknowledged_within_180s)], [t("sceneP50"), duration(d.on_scene.p50_s)],
    [t("sceneP90"), duration(d.on_scene.p90_s)], [circle, percent(d.on_scene_within_circle)],
    [t("escalated"), d.escalations.calls], [t("rate"), share(d.resolution_rate)],
  ];
  $("district-figures").replaceChildren(...figures.map(([label, value]) => {
    const box = element("div", { class: "figure" });
    box.append(element("div", { class: "value" }, String(value)), element("div", { class: "label" }, label));
    return box;
  }));
  drawCharts(report);
  const types = Object.values(t("types"));
  fillTable($("stations"), [
    t("station"), t("name"), t("calls"), ...types, t("ack60"), t("ack180"), t("sceneP50"), t("sceneP90"),
    t("sceneMax"), circle, t("escalated"), t("handled"), t("resolved"), t("cancelled"), t("open"), t("rate"),
  ], report.stations.map((s) => stationCells(s.code, s.name, s)), stationCells(t("district"), "", d));
  fillTable($("escalations"), [t("step"), t("reason"), t("count")],
    d.escalations.by_step.map((e) => [
      tOr(`step.${e.step}`, e.step),
      e.reason_code ? tOr(`why.${e.reason_code}`, e.reason) : e.reason,
      e.count,
    ]));
  const carerKeys = ["dispatched", "accepted", "declined", "no_answer", "unreachable", "on_scene"];
  fillTable($("carers"), [
    t("carer"), t("name"), t("station"), ...carerKeys.map((k) => t(k)), t("resolution_share"),
    t("median_to_accept_s"), t("median_to_arrive_s"),
  ], report.carers.map((c) => [
    c.code, c.name, c.station, ...carerKeys.map((k) => c[k]), share(c.resolution_share),
    duration(c.median_to_accept_s), duration(c.median_to_arrive_s),
  ]));
}

// --------------------------------------------------------------------------- loading

async function load() {
  $("problem").hidden = true;
  document.body.dataset.state = "loading";
  const query = periodQuery();
  $("csv-station").href = `/api/reports.csv?${query}&by=station`;
  $("csv-carer").href = `/api/reports.csv?${query}&by=carer`;
  history.replaceState(null, "", `?${query}`);
  const reply = await fetch(`/api/reports?${query}`, { credentials: "same-origin" });
  if (reply.status === 401) {
    location.assign("/login");
    return;
  }
  const body = await reply.json();
  if (!reply.ok) {
    document.body.dataset.state = "refused";
    $("problem").textContent = t("refused", { message: body.message ?? reply.statusText });
    $("problem").hidden = false;
    return;
  }
  render(body);
}

function label() {
  setLanguage(lang);
  document.title = t("title");
  const ids = {
    title: "title", "to-board": "board", "lang-toggle": "lang", "from-label": "from", "to-label": "to",
    show: "show", "this-week": "thisWeek", "last-week": "lastWeek", "csv-station": "csvStation", "csv-carer": "csvCarer",
    "district-heading": "district", "stations-heading": "stations", "carers-heading": "carers",
    "escalations-heading": "escalations", "chart-ack-caption": "chartAck",
    "chart-scene-caption": "chartScene", "chart-calls-caption": "chartCalls",
  };
  for (const [id, key] of Object.entries(ids)) $(id).textContent = t(key);
  if (me) $("who").textContent = me.name;
}

async function start() {
  const reply = await fetch("/api/me", { credentials: "same-origin" });
  if (reply.status === 401) {
    location.assign("/login");
    return;
  }
  me = await reply.json();
  lang = me.language === "en" ? "en" : "zh";
  label();
  const asked = new URLSearchParams(location.search);
  const [from, to] = thisWeek();
  $("from").value = asked.get("from") ?? from;
  $("to").value = asked.get("to") ?? to;
  $("period").addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });
  $("this-week").addEventListener("click", () => {
    [$("from").value, $("to").value] = thisWeek();
    load();
  });
  $("last-week").addEventListener("click", () => {
    [$("from").value, $("to").value] = lastWeek();
    load();
  });
  $("lang-toggle").addEventListener("click", async () => {
    lang = lang === "zh" ? "en" : "zh";
    label();
    if (shown) render(shown);
    await fetch("/api/me/language", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": me.csrf_token ?? "" },
      body: JSON.stringify({ language: lang }),
    });
  });
  await load();
}

start();
