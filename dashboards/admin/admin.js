// The administration page, wired together here: who is signed in (GET /api/me), the
// tabs their role may use, the language switch, and which tab is open (the address's
// #households, #devices, ...). Each tab is a module that draws into the page's main box
// and keeps its own state; nothing imports this one.
import { api, saveLanguage, signOut } from "../board/api.js";
import { $, h } from "../board/dom.js";
import { language, setLanguage } from "../board/i18n.js";
import { ROLE_RANK, state } from "../board/state.js";
import { AuditTab } from "./audit.js";
import { DevicesTab } from "./devices.js";
import { FilesTab } from "./files.js";
import { HouseholdsTab } from "./households.js";
import { PoliciesTab } from "./policies.js";
import { CARER_SPEC, PATTERN_SPEC, RecordsTab, STATION_SPEC } from "./records.js";
import { RotaTab } from "./rota.js";
import { a } from "./text.js";

// What the tabs share: the stations (choices, the map's landmarks) and shift patterns.
const shared = { stations: [], patterns: [] };

// Each tab: its name, the least role that may use it (the API enforces the same), and
// the module that draws it.
const TABS = [
  { name: "households", role: "admin", make: () => new HouseholdsTab(shared.stations) },
  { name: "devices", role: "admin", make: () => new DevicesTab() },
  { name: "stations", role: "admin", make: () => new RecordsTab(STATION_SPEC, shared, { stationsChanged: stationsChanged }) },
  { name: "carers", role: "admin", make: () => new RecordsTab(CARER_SPEC, shared) },
  { name: "rota", role: "supervisor", make: () => new RotaTab() },
  { name: "shifts", role: "supervisor", make: () => new RecordsTab(PATTERN_SPEC, shared, { patternsChanged }) },
  { name: "policies", role: "supervisor", make: () => new PoliciesTab() },
  { name: "files", role: "admin", make: () => new FilesTab() },
  { name: "audit", role: "admin", make: () => new AuditTab() },
];

const made = new Map();
let current = null;

function allowed() {
  const rank = ROLE_RANK[state.me?.role] ?? 0;
  return TABS.filter((tab) => rank >= ROLE_RANK[tab.role]);
}

function stationsChanged(records) {
  shared.stations.splice(0, shared.stations.length, ...records);
}

function patternsChanged(records) {
  shared.patterns.splice(0, shared.patterns.length, ...records);
}

function tabOf(name) {
  if (!made.has(name)) made.set(name, TABS.find((tab) => tab.name === name).make());
  return made.get(name);
}

function drawChrome() {
  document.title = a("title");
  $("title").textContent = a("title");
  $("to-board").textContent = a("board");
  $("lang-toggle").textContent = a("lang");
  $("signout").textContent = a("signout");
  if (state.me) $("who").textContent = `${state.me.name} · ${a(`role.${state.me.role}`)}`;
  $("tabs").replaceChildren(
    ...allowed().map((tab) =>
      h(
        "a",
        { href: `#${tab.name}`, role: "tab", id: `tab-${tab.name}`, class: tab.name === current ? "tab picked" : "tab", "aria-selected": tab.name === current ? "true" : "false" },
        a(`tab.${tab.name}`),
      ),
    ),
  );
}

async function openTab() {
  // What was typed in the tab being left is kept for when it is opened again.
  if (current) tabOf(current).keep?.();
  const tabs = allowed();
  const wanted = location.hash.slice(1);
  const tab = tabs.find((t) => t.name === wanted) ?? tabs[0];
  current = tab.name;
  document.body.dataset.tab = current;
  drawChrome();
  await tabOf(current).show($("main"));
}

async function boot() {
  let me;
  try {
    me = await api("GET", "/api/me");
  } catch (failure) {
    if (failure.status !== 401) $("main").replaceChildren(h("p", { class: "form-problem" }, a("failed.read", { message: failure.message })));
    return;
  }
  state.me = me;
  state.timezone = me.timezone ?? state.timezone;
  document.body.dataset.role = me.role;
  setLanguage(me.language ?? "zh");
  if ((ROLE_RANK[me.role] ?? 0) >= ROLE_RANK.admin) {
    const [stations, patterns] = await Promise.all([api("GET", "/api/register/stations"), api("GET", "/api/register/shift-patterns")]);
    shared.stations.push(...stations.records);
    shared.patterns.push(...patterns.records);
  }
  window.addEventListener("hashchange", openTab);
  $("lang-toggle").addEventListener("click", async () => {
    const next = language() === "zh" ? "en" : "zh";
    setLanguage(next);
    drawChrome();
    tabOf(current).relabel();
    await saveLanguage(next);
  });
  $("signout").addEventListener("click", signOut);
  await openTab();
  document.body.dataset.state = "ready";
}

boot();
