// The keyboard: the common path of a call without the mouse (docs/board.md, "Keyboard").
// J/K or ↓/↑ move through the list, N opens the next call that needs me, A accepts the call
// offered to me, T takes the selected call, D sends the best carer, M goes to the note,
// R to the outcome, C calls the household (the operator's phone rings first), Esc leaves
// a field, ? shows them all. Keys do nothing while the operator types in a field (but
// Ctrl+Enter saves the note, Enter on the outcome resolves). The actions click the
// detail panel's own buttons (their data-action), so a key does exactly what the button
// does, checks and banners included.
import { showNotice } from "./banners.js";
import { currentTab, listedCalls, showTab } from "./calls.js";
import { actionsSettled, selectCall } from "./detail.js";
import { $, h } from "./dom.js";
import { t } from "./i18n.js";
import { isAlarm, isDeviceFault, isOfferedToMe, sortedCalls, state } from "./state.js";

// The shortcuts as the help lists them: keys shown, what they do (an i18n key).
const HELP = [
  ["J / ↓", "keys.down"],
  ["K / ↑", "keys.up"],
  ["N", "keys.next"],
  ["A", "keys.accept"],
  ["T", "keys.take"],
  ["D", "keys.dispatch"],
  ["M", "keys.note"],
  ["Ctrl+Enter", "keys.note_save"],
  ["R", "keys.resolve"],
  ["Enter", "keys.resolve_enter"],
  ["Esc", "keys.escape"],
  ["?", "keys.help"],
  ["C", "keys.call"],
];

// The key pressed, layout-proof: with a Chinese input method on, `key` reads "Process",
// so letters are read from the physical key.
function keyOf(event) {
  if (event.code?.startsWith("Key")) return event.code.slice(3).toLowerCase();
  if (event.key === "?" || (event.code === "Slash" && event.shiftKey)) return "?";
  return event.key;
}

function inField(target) {
  if (!(target instanceof Element)) return false;
  return target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName);
}

// The detail panel's element for the selected call (not a panel still showing another):
// the first of the selectors (a comma-separated list) found there.
function inDetail(selectors) {
  if (state.selected === null) return null;
  const panel = document.querySelector(`#detail .detail[data-call-id="${state.selected}"]`);
  if (!panel) return null;
  for (const selector of selectors.split(",")) {
    const found = panel.querySelector(selector.trim());
    if (found) return found;
  }
  return null;
}

async function click(selector, missing) {
  await actionsSettled();
  const button = inDetail(selector);
  if (!button || button.disabled) {
    showNotice(state.selected === null ? t("keys.pick_first") : t(missing));
    return;
  }
  button.click();
}

function focus(selector, missing) {
  const field = inDetail(selector);
  if (!field) {
    showNotice(state.selected === null ? t("keys.pick_first") : t(missing));
    return;
  }
  field.scrollIntoView({ block: "nearest" });
  field.focus();
}

function showRow(id) {
  document.querySelector(`.call-card[data-call-id="${id}"]`)?.scrollIntoView({ block: "nearest" });
}

async function open(call) {
  if (isDeviceFault(call) !== (currentTab() === "faults")) showTab(isDeviceFault(call) ? "faults" : "calls");
  const done = selectCall(call.id);
  showRow(call.id);
  await done;
}

function move(step) {
  const calls = listedCalls();
  if (calls.length === 0) return;
  const at = calls.findIndex((call) => call.id === state.selected);
  const next = at < 0 ? (step > 0 ? 0 : calls.length - 1) : Math.min(Math.max(at + step, 0), calls.length - 1);
  open(calls[next]);
}

// The next call that needs me: offered to me, then the emergencies and falls nobody has
// taken, then any other call of a person nobody has taken; most urgent and oldest first
// (the list's own order).
export function nextCall() {
  const calls = sortedCalls().filter((call) => !isDeviceFault(call));
  return (
    calls.find(isOfferedToMe) ??
    calls.find(isAlarm) ??
    calls.find((call) => !call.owner) ??
    null
  );
}

async function next() {
  const call = nextCall();
  if (!call) {
    showNotice(t("keys.nothing_waits"));
    return;
  }
  await open(call);
}

// A: the call offered to me, opened and accepted (acknowledged: it becomes mine).
async function accept() {
  const call = sortedCalls().find(isOfferedToMe);
  if (!call) {
    showNotice(t("keys.no_offer"));
    return;
  }
  await open(call);
  click('[data-action="accept-offer"], [data-action="acknowledge"]', "keys.cannot_take");
}

function showHelp(show) {
  const box = $("keys-help");
  if (show) {
    $("keys-help-heading").textContent = t("keys.help.title");
    $("keys-help-close").textContent = t("keys.help.close");
    $("keys-help-list").replaceChildren(
      ...HELP.map(([keys, what]) => h("tr", {}, h("td", {}, h("kbd", {}, keys)), h("td", {}, t(what)))),
    );
  }
  box.hidden = !show;
}

function onKey(event) {
  if (event.defaultPrevented || event.isComposing) return;
  const key = keyOf(event);
  const helpOpen = !$("keys-help").hidden;
  if (key === "Escape") {
    if (helpOpen) showHelp(false);
    else if (inField(document.activeElement)) document.activeElement.blur();
    return;
  }
  if (helpOpen) {
    if (key === "?") showHelp(false);
    return;
  }
  const target = event.target;
  // Two keys that finish what a field was for.
  if (target instanceof Element && target.id === "note-text" && event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    click('[data-action="note"]', "keys.cannot_note");
    return;
  }
  if (target instanceof Element && target.id === "outcome" && event.key === "Enter" && !event.ctrlKey && !event.altKey && !event.metaKey) {
    event.preventDefault();
    click('[data-action="resolve"]', "keys.cannot_resolve");
    return;
  }
  if (inField(target) || event.ctrlKey || event.altKey || event.metaKey) return;
  // Nothing is done on a board that is not live: what it shows may be stale.
  const live = state.connection === "live";
  const actions = {
    j: () => move(1),
    ArrowDown: () => move(1),
    k: () => move(-1),
    ArrowUp: () => move(-1),
    n: next,
    a: accept,
    t: () => click('[data-action="acknowledge"]', "keys.cannot_take"),
    d: () => click('[data-action="dispatch-best"]', "keys.cannot_dispatch"),
    m: () => focus("#note-text", "keys.cannot_note"),
    r: () => focus("#outcome", "keys.cannot_resolve"),
    "?": () => showHelp(true),
    c: () => click('[data-action="call-household"]', "keys.cannot_call"),
  };
  const action = actions[key];
  if (!action) return;
  event.preventDefault();
  if (!live && key !== "?") {
    showNotice(t("keys.not_live"));
    return;
  }
  action();
}

// Called once by board.js.
export function listenForKeys() {
  document.addEventListener("keydown", onKey);
  $("keys-help-button").addEventListener("click", () => showHelp(true));
  $("keys-help").addEventListener("click", (event) => {
    if (event.target === $("keys-help")) showHelp(false);
  });
}
