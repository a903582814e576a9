// Operators on duty and the calls offered to them (docs/calls.md, "Offers"): the duty
// switch in the top bar (pause / resume / go on duty), the call offered to me shown
// large above the list with its Accept button (data-action="accept-offer": accepting is
// taking the call, POST /api/calls/{id}/acknowledge), the calls offered to everyone, and
// the operators' list (who is on duty, paused or away, what each holds) in the side
// panel. It reads state.operators and each call's offer; board.js sets them from the feed.
import { api } from "./api.js";
import { hideConflict, showConflict, showNotice } from "./banners.js";
import { duration, serverNow } from "./clock.js";
import { selectCall } from "./detail.js";
import { $, h } from "./dom.js";
import { t, tOr } from "./i18n.js";
import { sortedCalls, state } from "./state.js";

// The calls offered to me (first) and to everyone, as the list and keys.js read them.
export function offeredToMe() {
  const me = state.me?.actor;
  return sortedCalls().filter((call) => call.offer && !call.owner && me && call.offer.operator === me);
}

export function offeredToAll() {
  return sortedCalls().filter((call) => call.offer && !call.owner && call.offer.to_all);
}

function myDuty() {
  const me = state.me?.actor;
  return (state.operators ?? []).find((operator) => operator.actor === me) ?? null;
}

// ------------------------------------------------------------------ the top bar's switch

export function renderDutySwitch() {
  const box = $("duty");
  if (!box) return;
  // Only operators are offered calls: supervisors oversee and are asked when everyone is.
  box.hidden = state.me?.role !== "operator";
  const mine = myDuty();
  const duty = mine?.duty ?? "off_duty";
  const next = duty === "on_duty" ? "paused" : "on_duty";
  const label = duty === "on_duty" ? "duty.pause" : duty === "paused" ? "duty.resume" : "duty.start";
  box.dataset.duty = duty;
  box.replaceChildren(
    h("span", { class: "duty-state", dataset: { duty } }, t(`duty.${duty}`)),
    h(
      "button",
      { type: "button", class: "quiet duty-toggle", dataset: { action: "duty", duty: next }, onclick: () => setDuty(next) },
      t(label),
    ),
  );
}

async function setDuty(duty) {
  try {
    const answer = await api("POST", "/api/desk/duty", { duty });
    state.operators = answer.operators ?? state.operators;
    hideConflict();
    renderDuty();
  } catch (failure) {
    showConflict(failure);
  }
}

// ---------------------------------------------------------------- the offers above the list

export function renderOffers() {
  const box = $("offers");
  if (!box) return;
  const mine = offeredToMe();
  // Calls offered to everyone head the list (with their badge) as well: above it, the most
  // urgent one with its Accept, and how many more wait, so a storm never pushes the list
  // out of sight.
  const everyone = offeredToAll();
  const more = everyone.length - 1;
  const lines = [...mine.map(myOffer), ...everyone.slice(0, 1).map(offerToAll)];
  if (more > 0) lines.push(h("p", { class: "offers-more hint", dataset: { more } }, t("offer.more", { n: more })));
  box.replaceChildren(...lines);
  box.hidden = mine.length === 0 && everyone.length === 0;
}

function callLine(call) {
  const household = call.household ?? {};
  return [
    h("span", { class: "type" }, tOr(`type.${call.call_type}`, call.call_type)),
    h("span", { class: "household" }, household.code ?? ""),
    h("span", { class: "residents" }, typeof household.residents === "string" ? household.residents : ""),
    h("span", { class: "call-id hint" }, t("call.id", { id: call.id })),
  ];
}

function acceptButton(call, big) {
  return h(
    "button",
    {
      type: "button",
      class: big ? "big take accept-offer" : "take accept-offer",
      dataset: { action: "accept-offer", callId: call.id },
      onclick: (event) => {
        event.stopPropagation();
        accept(call);
      },
    },
    t("offer.accept"),
  );
}

function myOffer(call) {
  const household = call.household ?? {};
  return h(
    "div",
    { class: "offer mine", role: "alert", dataset: { callId: call.id, offer: "mine" }, onclick: () => selectCall(call.id) },
    h("div", { class: "offer-title" }, t("offer.to_you"), " ", h("span", { class: "offer-left", dataset: { offerDue: call.offer.expires_at ?? "" } }, "")),
    h("div", { class: "line1" }, ...callLine(call)),
    h("div", { class: "address" }, household.address ?? ""),
    acceptButton(call, true),
  );
}

function offerToAll(call) {
  return h(
    "div",
    { class: "offer to-all", dataset: { callId: call.id, offer: "to_all" }, onclick: () => selectCall(call.id) },
    h("span", { class: "offer-title" }, t("offer.to_all")),
    ...callLine(call),
    acceptButton(call, false),
  );
}

async function accept(call) {
  try {
    await api("POST", `/api/calls/${call.id}/acknowledge`, {});
    hideConflict();
    showNotice(t("offer.accepted", { id: call.id }));
    selectCall(call.id);
  } catch (failure) {
    showConflict(failure);
  }
}

// Each second: how long an offer to me has left.
export function tickOffers() {
  const now = serverNow();
  for (const element of document.querySelectorAll("[data-offer-due]")) {
    const due = Date.parse(element.dataset.offerDue);
    element.textContent = Number.isNaN(due) ? "" : t("offer.left", { t: duration(due - now) });
  }
}

// ------------------------------------------------------------------- the operators' list

export function renderOperators() {
  const list = $("operators");
  if (!list) return;
  $("operators-heading").textContent = t("operators.heading");
  const waiting = sortedCalls().filter((call) => call.offer && !call.owner).length;
  $("operators-waiting").textContent = t("operators.waiting", { n: waiting });
  const people = [...(state.operators ?? [])].sort(
    (a, b) => dutyOrder(a.duty) - dutyOrder(b.duty) || String(a.name).localeCompare(String(b.name)),
  );
  list.replaceChildren(
    ...(people.length === 0
      ? [h("li", { class: "hint" }, t("operators.none"))]
      : people.map((operator) =>
          h(
            "li",
            { dataset: { actor: operator.actor, duty: operator.duty } },
            h("span", { class: "name" }, operator.name),
            operator.role !== "operator" ? h("span", { class: "hint" }, ` (${tOr(`role.${operator.role}`, operator.role)})`) : null,
            " ",
            h("span", { class: "duty-state", dataset: { duty: operator.duty } }, t(`duty.${operator.duty}`)),
            operator.duty !== "off_duty" && !operator.board ? h("span", { class: "no-board" }, ` · ${t("operators.no_board")}`) : null,
            operator.offer ? h("span", { class: "holding" }, ` · ${t("operators.offered", { id: operator.offer })}`) : null,
            operator.owned > 0 ? ` · ${t("operators.owned", { n: operator.owned })}` : null,
            operator.idle_since ? h("span", { class: "hint" }, " · ", t("operators.free"), " ", h("span", { dataset: { since: operator.idle_since } }, "")) : null,
          ),
        )),
  );
}

function dutyOrder(duty) {
  return { on_duty: 0, paused: 1, off_duty: 2 }[duty] ?? 3;
}

export function renderDuty() {
  renderDutySwitch();
  renderOffers();
  renderOperators();
  tickOffers();
}
