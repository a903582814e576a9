// Guided handling in the call detail: the call type's handling script as the server
// sends it (call.script: questions with their latest answers, the recommended next
// actions, most serious first), each question answered with one click, and the resolve
// row, which asks for a confirmation on the outcomes that matter and for a reason when
// no carer reached the door (call.closing, decided by the server: docs/calls.md).
// detail.js calls scriptSection and resolveRow and hands them its act(), so an answer or
// a resolve is sent, announced and refused like every other command on the call.
import { api } from "./api.js";
import { $, h } from "./dom.js";
import { language, t, tOr } from "./i18n.js";

const ANSWERS = ["yes", "no", "unknown"];

// The resolve waiting for its confirmation, kept across live redraws of the detail:
// { callId, outcome, reason, missing }.
let pending = null;
// Questions shown or folded away, by call, as the operator last left them. Unset, they
// are shown on a call the operator can work and someone owns (once taken, the questions
// are the work), and folded otherwise, so "take" stays in view on a new alarm.
const unfolded = new Map();

function words(text) {
  return text?.[language()] ?? text?.zh ?? "";
}

export function scriptSection(call, { act, working }) {
  const script = call.script;
  if (!script) return null;
  const questions = new Map(script.questions.map((q) => [q.id, q]));
  const because = (item) =>
    item.because.length
      ? t("script.because", {
          why: item.because
            .map((id) => `${words(questions.get(id)?.text)} ${t(`script.answer.${questions.get(id)?.answer}`)}`)
            .join(t("script.joiner")),
        })
      : t("script.usual");
  const [first, ...more] = script.recommendation;
  const answered = script.questions.filter((q) => q.answer).length;
  // Answers that raised an action are marked: a "yes" to a head injury is bad news.
  const raising = new Set(script.recommendation.flatMap((item) => item.because));
  const details = h(
    "details",
    {
      class: "script-details",
      open: unfolded.get(call.id) ?? (working && Boolean(call.owner)),
      ontoggle: (event) => unfolded.set(call.id, event.target.open),
    },
    h("summary", {}, t("script.questions", { answered, n: script.questions.length })),
    h(
      "ol",
      { class: "plain script-questions" },
      script.questions.map((q) => questionRow(call, q, raising.has(q.id), working, act)),
    ),
  );
  return h(
    "section",
    { class: "script", dataset: { callType: call.call_type } },
    first
      ? h(
          "div",
          { class: "recommend", id: "script-recommend", dataset: { recommend: first.action } },
          h("span", { class: "label" }, t("script.recommend")),
          h("strong", {}, words(first.text)),
          h("div", { class: "because" }, because(first)),
        )
      : null,
    more.length
      ? h(
          "ul",
          { class: "plain recommend-more" },
          more.map((item) => h("li", { dataset: { recommend: item.action } }, t("script.also", { what: words(item.text) }), h("span", { class: "because" }, ` · ${because(item)}`))),
        )
      : null,
    details,
  );
}

function questionRow(call, q, raises, working, act) {
  return h(
    "li",
    { dataset: { question: q.id, kind: q.kind, answer: q.answer ?? "", raises } },
    h("span", { class: "kind" }, t(`script.kind.${q.kind}`)),
    h("span", { class: "text" }, words(q.text)),
    h(
      "span",
      { class: "answers", role: "group", "aria-label": words(q.text) },
      ANSWERS.map((answer) =>
        h(
          "button",
          {
            type: "button",
            class: q.answer === answer ? `answer chosen${raises ? " raises" : ""}` : "answer quiet",
            "aria-pressed": q.answer === answer ? "true" : "false",
            disabled: !working,
            dataset: { action: "script-answer", question: q.id, answer },
            onclick: () => act("script_answer", call, "script-answers", { question: q.id, answer }),
          },
          t(`script.answer.${answer}`),
        ),
      ),
    ),
  );
}

// The outcome select (made by detail.js, so its draft survives redraws) and the resolve
// button; below them, while one is pending, the confirmation with the reason.
export function resolveRow(call, { outcome, act, redraw }) {
  const box = h("div", { class: "resolve", id: "resolve-box" });
  fill(box, call, outcome, act, redraw);
  return box;
}

function needs(closing, value) {
  const rules = closing ?? { confirm: [], reason_needed: [] };
  return { confirm: rules.confirm.includes(value), reason: rules.reason_needed.includes(value) };
}

function fill(box, call, outcome, act, redraw) {
  if (pending && pending.callId !== call.id) pending = null;
  // A carer reached the door since it was asked: nothing is left to confirm or explain.
  if (pending && !needs(call.closing, pending.outcome).confirm && !needs(call.closing, pending.outcome).reason) pending = null;
  const send = async (body) => {
    const done = await act("resolve", call, "resolve", body);
    if (done) pending = null;
  };
  const ask = async () => {
    const value = outcome.value;
    // Asked on the call as it is now: the panel may be a moment behind the feed (a
    // carer's "on scene" just in), and the reason is asked for only if still needed.
    const fresh = await api("GET", `/api/calls/${call.id}`).catch(() => call);
    const need = needs(fresh.closing ?? call.closing, value);
    if (!need.confirm && !need.reason) {
      send({ outcome: value });
      return;
    }
    if (fresh.closing) call = { ...call, closing: fresh.closing };
    pending = { callId: call.id, outcome: value, reason: pending?.reason ?? "", missing: false };
    // A live change may have redrawn the panel while the call was read: then this box is
    // gone from the page, and the panel is drawn again with the confirmation in it.
    if (box.isConnected) fill(box, call, outcome, act, redraw);
    else redraw?.();
    const live = $("resolve-box");
    live?.querySelector(".confirm-resolve")?.scrollIntoView({ block: "nearest" });
    (live?.querySelector("#resolve-reason") ?? live?.querySelector('[data-action="resolve-confirm"]'))?.focus();
  };
  const row = h(
    "div",
    { class: "row" },
    outcome,
    h("button", { type: "button", dataset: { action: "resolve" }, disabled: Boolean(pending), onclick: ask }, t("action.resolve")),
  );
  outcome.disabled = Boolean(pending);
  if (!pending) {
    box.replaceChildren(row);
    return;
  }
  const need = needs(call.closing, pending.outcome);
  const reason = need.reason
    ? h("textarea", {
        id: "resolve-reason",
        rows: 2,
        placeholder: t("resolve.reason.placeholder"),
        "aria-label": t("resolve.reason"),
        dataset: { draft: "resolve-reason" },
        oninput: (event) => {
          pending.reason = event.target.value;
          pending.missing = false;
          $("resolve-missing")?.remove();
        },
      })
    : null;
  if (reason) reason.value = pending.reason;
  const confirm = () => {
    const text = (pending.reason ?? "").trim();
    if (need.reason && !text) {
      pending.missing = true;
      fill(box, call, outcome, act, redraw);
      $("resolve-reason")?.focus();
      return;
    }
    send(need.reason ? { outcome: pending.outcome, reason: text } : { outcome: pending.outcome });
  };
  const back = () => {
    pending = null;
    fill(box, call, outcome, act, redraw);
  };
  box.replaceChildren(
    row,
    h(
      "div",
      { class: "confirm-resolve", role: "alertdialog", "aria-labelledby": "resolve-question", dataset: { outcome: pending.outcome } },
      h("p", { id: "resolve-question", class: "question" }, t("resolve.confirm.title", { outcome: tOr(`outcome.${pending.outcome}`, pending.outcome) })),
      need.reason ? h("label", { for: "resolve-reason" }, t("resolve.reason")) : null,
      reason,
      pending.missing ? h("p", { class: "missing", id: "resolve-missing", role: "alert" }, t("resolve.reason.missing")) : null,
      h(
        "div",
        { class: "row" },
        h("button", { type: "button", class: "danger", dataset: { action: "resolve-confirm" }, onclick: confirm }, t("resolve.confirm")),
        h("button", { type: "button", class: "quiet", dataset: { action: "resolve-back" }, onclick: back }, t("resolve.back")),
      ),
    ),
  );
}
