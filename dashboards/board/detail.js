// The detail panel: the selected call as the server has it (read again after every
// change), its resident card, carers, deadlines, the household's last calls, notes and
// history, and the buttons of what the signed-in person may do with it. What they are
// typing or choosing here survives a live redraw.
import { api } from "./api.js";
import { hideConflict, showConflict, showNotice } from "./banners.js";
import { formatTime, serverNow, tick } from "./clock.js";
import { $, append, h } from "./dom.js";
import { actionText, actorText, historyTitle } from "./history.js";
import { language, t, tOr } from "./i18n.js";
import { resolveRow, scriptSection } from "./script.js";
import { carerName, OPEN_STATES, ownerName, rank, ROLE_RANK, state } from "./state.js";

const OUTCOMES = ["helped_at_home", "taken_to_hospital", "emergency_services", "false_alarm", "no_access", "family_attended", "device_fixed", "other"];
const CANCEL_REASONS = ["resident_cancelled", "duplicate", "entered_in_error"];
const CARER_REPORTS = ["accepted", "on_the_way", "on_scene", "declined"];

let detailTimer = null;
// Carers who declined, did not answer or could not be reached on the selected call: the
// candidates leave them out, the panel says so (they can still be picked by hand).
let passedOver = [];

export async function selectCall(id) {
  if (state.selected !== id) {
    state.selected = id;
    state.detail = null;
    state.candidates = null;
    state.lastCalls = null;
    passedOver = [];
    renderDetail();
    for (const card of document.querySelectorAll(".call-card")) {
      card.classList.toggle("selected", Number(card.dataset.callId) === id);
    }
    // The map redraws its route line for the new selection (board.js listens).
    document.dispatchEvent(new CustomEvent("call-selected", { detail: id }));
  }
  await refreshDetail();
}

export function scheduleDetailRefresh() {
  clearTimeout(detailTimer);
  detailTimer = setTimeout(refreshDetail, 150);
}

export async function refreshDetail() {
  const id = state.selected;
  if (id === null) return;
  try {
    const detail = await api("GET", `/api/calls/${id}`);
    if (state.selected !== id) return;
    state.detail = detail;
    const open = OPEN_STATES.has(detail.state);
    const [candidates, lastCalls] = await Promise.all([
      // A call of no household (a number nobody registered rang) has no door to send to.
      open && detail.household ? api("GET", `/api/calls/${id}/candidates`).catch(() => null) : null,
      detail.household
        ? api(
            "GET",
            `/api/calls?state=closed&limit=6&household=${encodeURIComponent(detail.household.code)}`,
          ).catch(() => null)
        : null,
    ]);
    if (state.selected !== id) return;
    state.candidates = candidates?.candidates ?? null;
    passedOver = candidates?.passed_over ?? [];
    state.lastCalls = (lastCalls?.calls ?? [])
      .filter((call) => call.id !== id)
      .slice(0, 5);
  } catch (failure) {
    if (failure.status === 404) state.detail = null;
  }
  renderDetail();
}

export function renderDetail() {
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
      call.household
        ? h("div", {}, h("strong", {}, household.code ?? ""), " ", household.address ?? "")
        : h("div", { class: "notes" }, t("detail.no_household"), " ", callerOf(call)),
      household.access_notes ? h("div", { class: "notes" }, `${t("detail.access")}: ${household.access_notes}`) : null,
      (household.residents ?? []).map((r) => recordAlerts(r, true)),
      scriptSection(call, { act, working: canWork(call) }),
      actionsSection(call),
      residentCard(household, call),
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
  if (call.state === "awaiting_review" && call.reported) append(section, [reviewBox(call)]);
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
  if (passedOver.length) {
    append(section, [
      h(
        "p",
        { class: "hint passed-over", id: "passed-over" },
        t("passed_over.heading"),
        " ",
        passedOver.map((p) => `${p.code} ${p.name}（${t(`passed_over.${p.why}`)}）`).join("、"),
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
  const outcome = draft(h("select", { id: "outcome", "aria-label": t("detail.outcome") }, OUTCOMES.map((o) => h("option", { value: o, selected: o === call.reported?.outcome }, t(`outcome.${o}`)))), "outcome");
  const reason = draft(h("select", { id: "cancel-reason", "aria-label": t("action.reason") }, CANCEL_REASONS.map((r) => h("option", { value: r }, t(`reason.${r}`)))), "reason");
  append(section, [
    resolveRow(call, { outcome, act, redraw: renderDetail }),
    h("div", { class: "row" }, reason, h("button", { type: "button", class: "danger", dataset: { action: "cancel" }, onclick: () => act("cancel", call, "cancel", { reason: reason.value }) }, t("action.cancel"))),
  ]);
  return section;
}

// A call a carer reported done while no operator had taken it: what they said, for the
// operator to check before resolving (review, issue 19).
function reviewBox(call) {
  const reported = call.reported;
  const carer = String(reported.by).split(":")[1] ?? reported.by;
  return h(
    "div",
    { class: "review-box", id: "review-box" },
    h("strong", {}, t("review.heading")),
    h("div", {}, t("review.reported", { carer: carerLabel(carer, call), t: formatTime(reported.at), outcome: tOr(`outcome.${reported.outcome}`, reported.outcome) })),
  );
}

// The number that rang the centre about a call (its first "inbound" history line).
function callerOf(call) {
  const rang = (call.history ?? []).find((entry) => entry.action === "inbound");
  return rang?.detail?.from ?? "";
}

function residentCard(household, call) {
  return h(
    "section",
    { class: "resident-card" },
    h("h3", {}, t("detail.residents")),
    (household.residents ?? []).map(residentRecord),
    h("h3", {}, t("detail.phones")),
    phoneList(household.phones ?? []),
    callHouseholdButton(call, household.phones ?? []),
    h("h3", {}, t("detail.family")),
    h("ol", { class: "family" }, (household.family ?? []).map(contactLine)),
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

// One resident as the operator needs them on the phone: what must not be missed first
// (allergies, do not resuscitate), then medicines and conditions, who treats them and
// where they want to go, how to speak to them, and the care notes.
function residentRecord(r) {
  const year = new Date(serverNow()).getUTCFullYear();
  const listed = (key, items, cls) =>
    items?.length ? h("div", { class: `record-line ${cls ?? ""}` }, h("span", { class: "record-key" }, t(key)), " ", items.join("、")) : null;
  const line = (key, ...parts) => (parts.some(Boolean) ? h("div", { class: "record-line" }, h("span", { class: "record-key" }, t(key)), " ", ...parts) : null);
  const senses = [
    r.hearing && r.hearing !== "good" ? tOr(`sense.hearing.${r.hearing}`, r.hearing) : "",
    r.sight && r.sight !== "good" ? tOr(`sense.sight.${r.sight}`, r.sight) : "",
  ].filter(Boolean);
  const doctor = [r.doctor, r.clinic].filter(Boolean).join(" · ");
  return h(
    "div",
    { class: "resident" },
    h("span", { class: "name" }, r.name),
    r.birth_year ? ` ${t("detail.age", { n: year - r.birth_year })}` : "",
    r.sex ? ` · ${tOr(`sex.${r.sex}`, r.sex)}` : "",
    r.mobility ? ` · ${tOr(`mobility.${r.mobility}`, r.mobility)}` : "",
    recordAlerts(r, false),
    listed("detail.medicines", r.medicines),
    listed("detail.conditions", r.conditions),
    doctor || r.clinic_phone ? line("detail.doctor", doctor, r.clinic_phone ? " " : "", r.clinic_phone ? h("a", { href: `tel:${r.clinic_phone}` }, r.clinic_phone) : "") : null,
    line("detail.hospital", r.hospital),
    line("detail.wishes", r.wishes),
    line("detail.speaks", r.speaks),
    senses.length ? h("div", { class: "record-line senses" }, senses.join(" · ")) : null,
    r.care_notes ? h("div", { class: "notes" }, r.care_notes) : null,
  );
}

// What must not be missed on the phone: do not resuscitate, allergies. Under the address
// (`named`: with the resident's name, before the buttons) and on the resident's record.
function recordAlerts(r, named) {
  if (!r.do_not_resuscitate && !r.allergies?.length) return null;
  return h(
    "div",
    { class: named ? "record-alerts top" : "record-alerts" },
    named ? h("span", { class: "who" }, r.name) : null,
    r.do_not_resuscitate ? h("span", { class: "dnr", dataset: { record: "dnr" } }, t("detail.dnr")) : null,
    r.allergies?.length ? h("span", { class: "allergies", dataset: { record: "allergies" } }, t("detail.allergies", { list: r.allergies.join("、") })) : null,
  );
}

// A contact in the order to call them: who they are, their numbers, whether they hold a
// key, and the hours they may be called (none: any time).
function contactLine(f) {
  const hours = f.call_from && f.call_until ? t("detail.contact.hours", { from: f.call_from, until: f.call_until }) : "";
  return h(
    "li",
    { dataset: { keyHolder: f.holds_key ? "yes" : "no" } },
    `${f.name}（${f.relation}）`,
    " ",
    h("a", { href: `tel:${f.phone}` }, f.phone),
    f.phone_alt ? [" / ", h("a", { href: `tel:${f.phone_alt}` }, f.phone_alt)] : "",
    f.holds_key ? h("span", { class: "key-holder" }, t("detail.contact.key")) : "",
    hours ? h("span", { class: "contact-hours" }, hours) : "",
  );
}

// The numbers that reach the home, in the order to try them (the base unit's own SIM
// first: it answers hands-free beside the button), each a tel: link.
function phoneList(phones) {
  if (!phones.length) return h("p", { class: "phones-none" }, t("detail.phones.none"));
  return h(
    "ol",
    { class: "phones" },
    phones.map((p) =>
      h(
        "li",
        { dataset: { kind: p.kind } },
        h("span", { class: "phone-kind" }, tOr(`detail.phone.${p.kind}`, p.kind)),
        p.label ? ` · ${p.label}` : "",
        " ",
        h("a", { href: `tel:${p.number}` }, p.number),
      ),
    ),
  );
}

// Click-to-call (docs/voice.md): the desk rings the operator's own phone, then the
// household's numbers in the order above. Shown to whoever may work the call; the server
// says why it cannot (no phone on the account, no numbers).
function callHouseholdButton(call, phones) {
  if (!canWork(call) || !phones.length) return null;
  const phone = state.me?.phone ?? "";
  return h(
    "div",
    { class: "row" },
    h(
      "button",
      { type: "button", class: "call-household", dataset: { action: "call-household" }, title: t("action.call_household.hint", { phone }), onclick: () => act("call_household", call, "call-household") },
      `☎ ${t("action.call_household")}`,
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
      // language (issue 19): actors by kind, actions by history.<action> (history.js).
      entries.map((entry) =>
        h(
          "li",
          { dataset: { history: entry.action, actor: entry.actor }, title: historyTitle(entry) },
          h("span", { class: "history-at" }, formatTime(entry.at)),
          " ",
          h("span", { class: "history-who" }, actorText(entry.actor)),
          " ",
          h("span", { class: "history-what" }, actionText(entry)),
        ),
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

// The action the operator started last, until its answer is drawn: a key pressed
// meanwhile (Ctrl+Enter on a note typed while "send the best carer" was answered) waits
// for it rather than finding the panel's buttons disabled and refusing.
let inFlight = Promise.resolve();

export function actionsSettled() {
  return inFlight;
}

function act(label, call, path, body = {}) {
  const done = doAct(label, call, path, body);
  inFlight = done.then(() => undefined);
  return done;
}

async function doAct(label, call, path, body) {
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
    const [text, tone] = whatHappened(label, call, result, path);
    showNotice(text, tone);
    await refreshDetail();
    return true;
  } catch (failure) {
    showConflict(failure);
    // The refusal usually means this board was behind: show the call as it now is.
    await refreshDetail();
    return false;
  }
}

// --- review (issue 19): what an action actually did, read from the call before and after
// (and dispatch's own answer), never just "done". Returns [text, "ok" | "warn"].

function carerLabel(code, call) {
  const name = (call.assignments ?? []).find((a) => a.carer === code)?.name || carerName(code);
  return name ? `${code} ${name}` : code;
}

function activeCarers(call) {
  return new Set((call.assignments ?? []).filter((a) => a.active).map((a) => a.carer));
}

function newlySent(before, after) {
  const had = activeCarers(before);
  return [...activeCarers(after)].filter((code) => !had.has(code));
}

export function whatHappened(label, before, after, path = "") {
  const [kind, status] = label.split(".");
  const list = (codes) => codes.map((code) => carerLabel(code, after)).join("、");
  if (kind === "dispatch") {
    const result = after.result ?? { sent: newlySent(before, after), nobody_free: false, escalated: [] };
    if (result.sent.length && !result.nobody_free) return [t("done.sent", { carers: list(result.sent) }), "ok"];
    if (!result.nobody_free) return [t("done.sent_none"), "warn"];
    // Some or all of the carers wanted could not be sent: say who went, that nobody
    // (else) was free, what escalated because of it, and what the operator can do now.
    const steps = result.escalated ?? [];
    const parts = [
      result.sent.length ? t("done.sent_some", { carers: list(result.sent) }) : t("done.nobody_free"),
      steps.length ? t("done.escalated", { steps: steps.map((s) => tOr(`step.${s}`, s)).join("、") }) : t("done.no_step_left"),
      t("done.pick_by_hand"),
    ];
    return [parts.join(language() === "zh" ? "" : " "), "warn"];
  }
  if (kind === "call_household") return [t("done.call_household", { phone: state.me?.phone ?? "" }), "ok"];
  if (after.version !== undefined && after.version === before.version && kind !== "note") {
    return [t("done.unchanged", { what: actionName(label) }), "warn"];
  }
  if (kind === "acknowledge") return [t("done.acknowledge", { id: after.id }), "ok"];
  if (kind === "status" || kind === "stand_down") {
    const carer = carerLabel(path.split("/")[1] ?? "", after);
    const head = kind === "status" ? t("done.status", { carer, status: t(`status.${status}`) }) : t("done.stand_down", { carer });
    if (kind === "status" && status !== "declined") return [head, "ok"];
    // A carer released: the desk pages someone else if the call is now short.
    const refilled = newlySent(before, after);
    if (refilled.length) return [head + t("done.refilled", { carers: list(refilled) }), "ok"];
    if (activeCarers(after).size === 0) return [head + t("done.not_refilled"), "warn"];
    return [head, "ok"];
  }
  if (kind === "note") return [t("done.note", { id: after.id }), "ok"];
  if (kind === "resolve") return [t("done.resolved", { id: after.id, outcome: tOr(`outcome.${after.outcome}`, after.outcome ?? "") }), "ok"];
  if (kind === "cancel") return [t("done.cancelled", { id: after.id, reason: tOr(`reason.${after.cancel_reason}`, after.cancel_reason ?? "") }), "ok"];
  return [t("action.done", { what: actionName(label) }), "ok"];
}

function actionName(label) {
  const [kind, status] = label.split(".");
  if (kind === "status") return t(`status.${status}`);
  if (kind === "dispatch") return t("action.dispatched");
  return tOr(`action.${kind}`, kind);
}
