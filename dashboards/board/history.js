// A call's history in words: who (by the actor's kind: the system, a device, a carer by
// code and name, an operator by name) and what (`history.<action>` with its detail's
// carer, outcome, reason or text filled in), in the board's language. The server writes
// codes (docs/calls.md "History"); this is the one place the board turns them into words.
import { because, t, tOr, waited } from "./i18n.js";
import { carerName, ownerName } from "./state.js";

// Who did it. "operator:li.na" is the operator's name when the board knows it.
export function actorText(actor) {
  const [kind, ...rest] = String(actor ?? "").split(":");
  const name = rest.join(":");
  if (kind === "system" || kind === "device") return t(`actor.${kind}`);
  if (kind === "carer") return t("actor.carer", { code: name, name: carerName(name) }).trim();
  if (kind === "operator" || kind === "supervisor") {
    return t(`actor.${kind}`, { name: ownerName(actor) });
  }
  return String(actor ?? "");
}

function carerText(code, name) {
  if (!code) return "";
  return `${code} ${name ?? carerName(code)}`.trim();
}

// Who a text went to: "family:1" → 家属, "operator:li.na" → 值班主管, "carer:C012" → 护理员 C012.
function recipientText(label, detail = {}) {
  const [kind, name] = String(label ?? "").split(":");
  // Click-to-call (docs/voice.md): the operator's own phone, then the household's numbers.
  if (kind === "household") {
    const who = t("history.to.household", { code: name });
    return detail.number ? t("history.to.number", { who, attempt: detail.attempt ?? "", number: detail.number }) : who;
  }
  if ((kind === "operator" || kind === "supervisor") && (detail.purpose === "bridge" || detail.bridge)) {
    return t("history.to.operator", { name: ownerName(label) });
  }
  if (kind === "family") return t("history.to.family");
  if (kind === "operator") return t("history.to.supervisor");
  if (kind === "carer") return t("history.to.carer", { code: name });
  return String(label ?? "");
}

// What was done, in words; an action this board does not know yet reads as its code.
export function actionText(entry) {
  const detail = entry.detail ?? {};
  const action = entry.action;
  // The detail's own fields first (a script answer's question and answer in both
  // languages), then the codes put into words.
  const params = {
    ...detail,
    carer: carerText(detail.carer, detail.carer_name),
    type: tOr(`type.${detail.call_type}`, detail.call_type ?? ""),
    presses: detail.presses ?? "",
    grace: waited(detail.grace_s ?? 0),
    text: detail.text ?? "",
    minutes: detail.travel_min ?? "",
    waited: waited(detail.waited_s ?? 0),
    step: tOr(`step.${detail.step}`, detail.step ?? ""),
    because: because(detail.because),
    outcome: tOr(`outcome.${detail.outcome}`, detail.outcome ?? ""),
    reason: tOr(`reason.${detail.reason}`, detail.reason ?? ""),
    to: Array.isArray(detail.to) ? detail.to.map((to) => recipientText(to)).join("、") : recipientText(detail.to, action === "call_household" ? { bridge: true } : detail),
    key: detail.key ?? "",
    duration: waited(detail.duration_s ?? 0),
    ring: tOr(`ring.${detail.ring}`, detail.ring ?? ""),
    // A call to the centre's number: who rang, whose phones rang, who picked up.
    from: detail.from ?? "",
    rung: (detail.rung ?? []).map(ownerName).join("、"),
    by: detail.by ? ownerName(detail.by) : "",
  };
  // A carer's own report: "护理员 C034 郭秀梅 拒绝了派单", not the carer named twice.
  if (entry.actor === `carer:${detail.carer}`) params.carer = "";
  if (action === "escalated" && detail.because) return t("history.escalated.early", params);
  // A phone call's progress reads by its status; a carer released because a ring went
  // unanswered, by the ring (docs/voice.md).
  let key = `history.${action}`;
  if (action === "ring") key = `history.ring.${detail.status}`;
  if (action === "no_answer" && detail.ring) key = "history.no_answer.ring";
  if (action === "inbound") key = `history.inbound.${detail.step}`;
  // A ring_family step that found the family rung already names no contact.
  if (action === "ring_family" && !detail.to) {
    key = detail.heard_by ? "history.ring_family.heard" : "history.ring_family.ringing";
  }
  let text = tOr(key, tOr(`history.${action}`, action));
  text = text.replace(/\{(\w+)\}/g, (_, name) => (params[name] === undefined ? "" : String(params[name])));
  // Words a person typed (a stand-down's why, a closing note) follow as typed; the
  // system's own notes (in English, for the log) are not shown.
  const kind = String(entry.actor ?? "").split(":")[0];
  const typed = kind === "operator" || kind === "supervisor" || kind === "carer";
  const why = typed ? (detail.why ?? detail.note) : null;
  if (why && action !== "note") text += t("history.why", { why });
  if (detail.by_hand) text += t("history.by_hand");
  // A reason said in words replaces the colon's empty tail when none was recorded.
  return text.replace(/[:：]\s*$/, "").trim();
}

export function historyTitle(entry) {
  // The technician's detail (e.g. a provider's error for a text) for whoever hovers.
  const detail = entry.detail ?? {};
  return [detail.why, detail.early, detail.phone].filter(Boolean).join(" · ");
}
