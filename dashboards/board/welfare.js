// The weekly welfare calls on the board: this week's calls still to make, each with a
// form for its outcome, and for supervisors the missed ones of past weeks. Read from
// GET /api/welfare every few minutes and after each outcome; not on the live feed, since
// nothing about them is urgent (docs/welfare.md).
import { formatTime } from "./clock.js";

const OUTCOMES = ["well", "needs_visit", "no_answer", "in_hospital", "other"];
const REFRESH_MS = 120_000;
// Items drawn at most per list: a week has hundreds of calls, and the first ones are
// worked first; the rest are counted under the list.
const MAX_ITEMS = 200;

export class WelfarePanel {
  // tools: { api, h, t, rank, supervisorRank, showNotice, showConflict, hideConflict }
  constructor(tools) {
    this.tools = tools;
    this.week = null;
    this.due = [];
    this.missed = null; // null: not a supervisor, or not read yet
    this.missedTotal = 0;
    // What an operator has chosen or typed per welfare call, kept across redraws.
    this.drafts = new Map();
    this.timer = null;
  }

  start() {
    this.load();
    this.timer = setInterval(() => {
      // Not while someone is typing in it: a redraw would take their caret away.
      if (!document.getElementById("welfare-panel")?.contains(document.activeElement)) this.load();
    }, REFRESH_MS);
  }

  async load() {
    const { api, rank, supervisorRank } = this.tools;
    try {
      const week = await api("GET", "/api/welfare");
      this.week = week;
      this.due = week.calls.filter((call) => call.state === "due");
      if (rank() >= supervisorRank) {
        const missed = await api("GET", "/api/welfare?state=missed");
        this.missed = missed.calls;
        this.missedTotal = missed.missed_total ?? missed.calls.length;
      } else {
        this.missed = null;
      }
    } catch (failure) {
      console.warn("welfare calls not read:", failure.message);
      return;
    }
    this.render();
  }

  render() {
    const { h, t } = this.tools;
    const panel = document.getElementById("welfare-panel");
    if (!panel) return;
    document.getElementById("welfare-heading").textContent = t("welfare.heading");
    document.getElementById("welfare-count").textContent = this.week ? t("welfare.due", { n: this.due.length }) : "";
    document.getElementById("welfare-week").textContent = this.week
      ? t("welfare.week", { week: this.week.week_start, age: this.week.min_age })
      : "";
    const list = document.getElementById("welfare-due");
    list.replaceChildren(
      ...(this.week && this.due.length === 0
        ? [h("li", { class: "hint" }, t("welfare.none"))]
        : this.drawn(this.due, false)),
    );
    document.getElementById("welfare-missed-heading").textContent = t("welfare.missed.heading");
    const missedCount = document.getElementById("welfare-missed-count");
    const missedList = document.getElementById("welfare-missed");
    if (this.missed === null) {
      missedCount.textContent = "";
      missedList.replaceChildren();
      return;
    }
    missedCount.textContent = t("welfare.missed.count", { n: this.missedTotal });
    missedList.replaceChildren(
      ...(this.missed.length === 0
        ? [h("li", { class: "hint" }, t("welfare.missed.none"))]
        : this.drawn(this.missed, true)),
    );
  }

  drawn(calls, missed) {
    const { h, t } = this.tools;
    const items = calls.slice(0, MAX_ITEMS).map((call) => this.item(call, missed));
    if (calls.length > MAX_ITEMS) items.push(h("li", { class: "hint" }, t("welfare.more", { n: calls.length - MAX_ITEMS })));
    return items;
  }

  item(call, missed = false) {
    const { h, t } = this.tools;
    const draft = this.drafts.get(call.id) ?? { outcome: "", note: "" };
    const outcome = h(
      "select",
      {
        class: "welfare-outcome",
        "aria-label": t("welfare.outcome"),
        onchange: (event) => this.keep(call.id, { outcome: event.target.value }),
      },
      h("option", { value: "" }, `${t("welfare.outcome")}…`),
      OUTCOMES.map((value) => h("option", { value, selected: draft.outcome === value }, t(`welfare.outcome.${value}`))),
    );
    const note = h("input", {
      class: "welfare-note",
      type: "text",
      maxlength: "2000",
      placeholder: t("welfare.note"),
      "aria-label": t("welfare.note"),
      value: draft.note,
      oninput: (event) => this.keep(call.id, { note: event.target.value }),
    });
    const save = h(
      "button",
      { type: "button", class: "welfare-save", onclick: () => this.record(call, save) },
      missed ? `${t("welfare.save")} ${t("welfare.late")}` : t("welfare.save"),
    );
    // Ring the resident through the click-to-call bridge (docs/voice.md): the operator's
    // phone first, then the household's numbers, the resident's own mobile first.
    const ring = h(
      "button",
      { type: "button", class: "welfare-ring", dataset: { action: "ring-welfare" }, onclick: () => this.ring(call, ring) },
      `☎ ${t("welfare.ring")}`,
    );
    const rung = call.ring ? h("span", { class: "welfare-rung hint" }, this.rungText(call.ring)) : null;
    const contacts = (call.contacts ?? []).map((contact) =>
      h("a", { href: `tel:${contact.phone}` }, `${contact.name}（${contact.relation}）${contact.phone}`),
    );
    return h(
      "li",
      { class: "welfare-call", dataset: { welfareId: call.id, household: call.household.code, state: call.state } },
      h(
        "div",
        { class: "who" },
        h("strong", {}, call.resident.name),
        ` · ${t("welfare.age", { age: call.age })} · ${call.household.code} · ${call.household.address}`,
        missed ? ` · ${t("welfare.missed.week", { week: call.week_start })}` : "",
      ),
      contacts.length ? h("div", { class: "contacts" }, `${t("welfare.contacts")}: `, contacts.flatMap((a, i) => (i ? [" · ", a] : [a]))) : null,
      h("div", { class: "welfare-form" }, ring, rung, outcome, note, save),
    );
  }

  rungText(ring) {
    const { t } = this.tools;
    if (ring.next_at) return t("welfare.rung.retry", { n: ring.tries, t: formatTime(ring.next_at) });
    if (ring.result) return t(`welfare.rung.${ring.result}`, { n: ring.tries });
    return t("welfare.rung.ringing", { n: ring.tries });
  }

  async ring(call, button) {
    const { api, t, showNotice, showConflict, hideConflict } = this.tools;
    hideConflict();
    button.disabled = true;
    try {
      const rung = await api("POST", `/api/welfare/${call.id}/ring`, {});
      showNotice(t("welfare.ringing", { phone: rung.ringing, name: call.resident.name }));
    } catch (failure) {
      showConflict(failure);
    } finally {
      await this.load();
    }
  }

  keep(id, change) {
    this.drafts.set(id, { ...(this.drafts.get(id) ?? { outcome: "", note: "" }), ...change });
  }

  async record(call, button) {
    const { api, t, showNotice, showConflict, hideConflict } = this.tools;
    const draft = this.drafts.get(call.id) ?? { outcome: "", note: "" };
    if (!draft.outcome) {
      showConflict({ status: 400, code: "bad_request", message: t("welfare.pick") });
      return;
    }
    hideConflict();
    button.disabled = true;
    try {
      await api("POST", `/api/welfare/${call.id}`, { outcome: draft.outcome, note: draft.note });
      this.drafts.delete(call.id);
      showNotice(t("welfare.saved", { name: call.resident.name }));
    } catch (failure) {
      // A 409 names the operator who recorded it first; the list below shows it gone.
      showConflict(failure);
    } finally {
      await this.load();
    }
  }
}
