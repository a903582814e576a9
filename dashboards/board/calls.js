// The open calls: one card per call, most urgent first (a storm draws the 150 most urgent
// and counts the rest), redrawn once per burst of feed messages; and for supervisors the
// queue of calls with escalation alerts sounding. A click opens the call's detail.
import { updateAlarmState } from "./alarm.js";
import { tick } from "./clock.js";
import { selectCall } from "./detail.js";
import { $, h } from "./dom.js";
import { t, tOr } from "./i18n.js";
import { carerName, isAlarm, ownerName, rank, ROLE_RANK, sortedCalls, state } from "./state.js";

// Cards drawn at most: the most urgent first, so what is left out is the least urgent;
// a storm of hundreds of open calls must not freeze the board. The tab title and the
// alarm sound count every call, drawn or not.
const MAX_CARDS = 150;
// Bursts of feed messages redraw the list once, this long after the first of them.
const REDRAW_AFTER_MS = 50;
let callsTimer = null;

export function renderCalls() {
  updateAlarmState();
  if (callsTimer) return;
  callsTimer = setTimeout(() => {
    callsTimer = null;
    drawCalls();
  }, REDRAW_AFTER_MS);
}

function drawCalls() {
  const list = $("calls");
  const calls = sortedCalls();
  const shown = calls.slice(0, MAX_CARDS);
  list.replaceChildren(...shown.map(callCard));
  const more = $("calls-more");
  more.hidden = calls.length <= shown.length;
  more.textContent = t("calls.more", { n: calls.length - shown.length });
  $("calls-count").textContent = t("calls.count", { n: calls.length });
  const empty = $("calls-empty");
  empty.hidden = calls.length > 0;
  empty.textContent = t("calls.none");
  renderEscalations();
  updateAlarmState();
  tick();
}

function callCard(call) {
  const alarm = isAlarm(call);
  const household = call.household ?? {};
  // review (issue 19): on a call awaiting review the carer who reported it done still shows.
  const gone = call.state === "awaiting_review" ? ["stood_down", "declined", "no_answer", "unreachable"] : ["stood_down", "declined", "no_answer", "unreachable", "finished"];
  const carers = (call.carers ?? []).filter((c) => !gone.includes(c.state));
  const deadline = call.next_deadline;
  return h(
    "li",
    {
      class: `call-card${alarm ? " alarm" : ""}${call.id === state.selected ? " selected" : ""}`,
      dataset: { callId: call.id, household: household.code ?? "", state: call.state, priority: call.priority, callType: call.call_type },
      tabindex: "0",
      onclick: () => selectCall(call.id),
      onkeydown: (event) => event.key === "Enter" && selectCall(call.id),
    },
    h(
      "div",
      { class: "line1" },
      h("span", { class: "type" }, tOr(`type.${call.call_type}`, call.call_type)),
      alarm ? h("span", { class: "flag" }, t("call.unacked")) : null,
      h("span", { class: "household" }, household.code ?? ""),
      h("span", { class: "residents" }, residentNames(household)),
      h("span", { class: "state-badge", dataset: { state: call.state } }, tOr(`state.${call.state}`, call.state)),
      (call.presses ?? 1) > 1 ? h("span", { class: "presses" }, t("call.presses", { n: call.presses })) : null,
      h("span", { class: "call-id hint" }, t("call.id", { id: call.id })),
    ),
    h("div", { class: "address" }, household.address ?? ""),
    h(
      "div",
      { class: "grid" },
      h("span", { class: "k" }, t("call.age")),
      h("span", { class: "k" }, t("call.owner")),
      h("span", { class: "k" }, t("call.carers")),
      h("span", { class: "k" }, deadline ? tOr(`step.${deadline.step}`, deadline.step) : t("call.deadline")),
      h("span", { class: "v age", dataset: { since: call.opened_at } }, ""),
      h("span", { class: "v owner" }, call.owner ? ownerName(call.owner) : t("call.owner.none")),
      h(
        "span",
        { class: "v carers" },
        carers.length === 0
          ? t("call.carers.none")
          : carers.map((c, index) => [
              index > 0 ? ", " : "",
              `${c.code} ${c.name ?? carerName(c.code)} `,
              h("span", { class: "carer-state", dataset: { state: c.state } }, tOr(`carer.${c.state}`, c.state)),
            ]),
      ),
      h("span", { class: "v deadline", dataset: deadline ? { due: deadline.due_at } : {} }, deadline ? "" : t("call.deadline.none")),
    ),
    (call.alerts ?? []).length > 0
      ? h("div", { class: "alerts overdue" }, call.alerts.map((a) => tOr(`step.${a}`, a)).join(" · "))
      : null,
  );
}

function residentNames(household) {
  const residents = household.residents;
  if (Array.isArray(residents)) return residents.map((r) => r.name ?? r).join("、");
  return residents ?? "";
}

export function renderEscalations() {
  const box = $("escalations");
  if (rank() < ROLE_RANK.supervisor) {
    box.replaceChildren();
    return;
  }
  // The live calls are fresher than the service figures' list; they carry the same alerts.
  const waiting = sortedCalls()
    .filter((call) => (call.alerts ?? []).length > 0)
    .sort((a, b) => Date.parse(a.opened_at) - Date.parse(b.opened_at));
  box.replaceChildren(
    ...(waiting.length === 0
      ? [h("li", { class: "hint" }, t("escalations.none"))]
      : waiting.map((call) =>
          h(
            "li",
            { dataset: { callId: call.id }, onclick: () => selectCall(call.id) },
            `${t("call.id", { id: call.id })} · ${call.household?.code ?? ""} · `,
            h("span", { class: "step" }, call.alerts.map((a) => tOr(`step.${a}`, a)).join(", ")),
            " · ",
            h("span", { dataset: { since: call.opened_at } }, ""),
            ` · ${call.owner ? ownerName(call.owner) : t("call.owner.none")}`,
          ),
        )),
  );
}
