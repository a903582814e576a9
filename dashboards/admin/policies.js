// Escalation policies, one per call type, edited as data: the policy's settings and its
// steps as rows (wait, counted from, the milestone that cancels it, actions), a timeline
// of the steps as they would fire, and the way back to the configured policy. The server
// checks the policy (config.py PolicyConfig, domain/policy.py) and says what is wrong,
// field by field; calls already open keep the policy they opened with.
import { api } from "../board/api.js";
import { formatTime } from "../board/clock.js";
import { h } from "../board/dom.js";
import { waited } from "../board/i18n.js";
import { check, choice, field, formProblem, lines, number, saidSaved, showProblems, text, valueOf } from "./form.js";
import { a, aOr } from "./text.js";

const MILESTONES = ["acknowledged", "accepted", "on_scene", "closed"];
const COUNTED_FROM = ["opened", "dispatched"];
const ACTIONS = ["alert_operators", "alert_supervisor", "redispatch", "notify_station_lead", "notify_family", "emergency_services", "ring_carer", "ring_family"];

export class PoliciesTab {
  constructor() {
    this.policies = null;
    this.type = null;
    this.draft = null;
    this.problem = "";
  }

  async show(root) {
    this.root = root;
    this.render();
    await this.load();
    this.render();
  }

  async load() {
    try {
      this.policies = (await api("GET", "/api/register/policies")).policies;
      this.problem = "";
      if (!this.type) this.type = this.policies[0]?.call_type ?? null;
      this.draft = structuredClone(this.current()?.policy ?? null);
    } catch (failure) {
      this.problem = a("failed.read", { message: failure.message });
    }
  }

  current() {
    return this.policies?.find((p) => p.call_type === this.type) ?? null;
  }

  // Drawn again in the other language, keeping what was typed.
  relabel() {
    this.keep();
    this.render();
  }

  keep() {
    const form = this.root?.querySelector("form.policy-form");
    if (form && this.draft) this.draft = collect(form, this.draft);
  }

  pick(type) {
    this.type = type;
    this.draft = structuredClone(this.current()?.policy ?? null);
        this.render();
  }

  render() {
    const root = this.root;
    if (!root) return;
    if (this.policies === null) {
      root.replaceChildren(this.problem ? h("p", { class: "form-problem" }, this.problem) : h("p", { class: "hint" }, a("loading")));
      return;
    }
    root.replaceChildren(
      h(
        "div",
        { class: "split policies" },
        h(
          "nav",
          { class: "list-side policy-types" },
          h("p", { class: "hint" }, a("policies.intro")),
          h(
            "ul",
            { class: "plain" },
            this.policies.map((p) =>
              h(
                "li",
                {},
                h(
                  "button",
                  { type: "button", class: p.call_type === this.type ? "policy-type picked" : "policy-type", dataset: { callType: p.call_type }, onclick: () => this.pick(p.call_type) },
                  h("span", { class: "type-name" }, aOr(`type.${p.call_type}`, p.call_type)),
                  h("span", { class: `source ${p.source}` }, p.source === "edited" ? a("policy.source.edited", { who: p.edited_by ?? "", at: formatTime(p.edited_at, true) }) : a("policy.source.configured")),
                ),
              ),
            ),
          ),
        ),
        h("div", { class: "form-side" }, this.draft ? this.form() : null),
      ),
    );
  }

  form() {
    const d = this.draft;
    const current = this.current();
    const form = h(
      "form",
      { class: "policy-form record-form", novalidate: true, dataset: { callType: this.type } },
      h(
        "div",
        { class: "form-head" },
        h("h2", {}, aOr(`type.${this.type}`, this.type)),
        h("button", { type: "submit", class: "primary", id: "policy-save" }, a("save")),
        current?.source === "edited" ? h("button", { type: "button", id: "policy-reset", onclick: () => this.reset() }, a("policy.reset")) : null,
      ),
      formProblem(),
      h(
        "div",
        { class: "fields" },
        field("auto_dispatch", a("policy.auto_dispatch"), check(d.auto_dispatch)),
        field("carers_required", a("policy.carers_required"), number(d.carers_required, { min: "1" })),
        field("cancel_grace_s", a("policy.cancel_grace_s"), number(d.cancel_grace_s, { min: "0", step: "any" })),
        field("skills", a("policy.skills"), lines(d.skills)),
      ),
      h(
        "fieldset",
        { class: "steps", dataset: { for: "steps" } },
        h("legend", {}, a("policy.steps")),
        h("span", { class: "problem", role: "alert", hidden: true }),
        d.steps.map((step, index) => this.stepRow(step, index + 1)),
        h("button", { type: "button", id: "add-step", onclick: () => this.rows((p) => p.steps.push({ name: "", after_s: 60, unless: "acknowledged", counted_from: "opened", actions: ["alert_operators"] })) }, a("policy.add_step")),
      ),
      h("section", { class: "preview" }, h("h3", {}, a("policy.preview")), h("div", { id: "policy-preview" }, timeline(d.steps))),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.save(form);
    });
    // The timeline follows what is typed.
    form.addEventListener("input", () => {
      const place = form.querySelector("#policy-preview");
      place.replaceChildren(timeline(collect(form, this.draft).steps));
    });
    return form;
  }

  stepRow(step, n) {
    const p = `steps.${n}`;
    return h(
      "div",
      { class: "step-row", dataset: { for: p, step: n } },
      h(
        "div",
        { class: "fields" },
        field(`${p}.name`, a("stepfield.name"), text(step.name), { hint: aOr(`step.${step.name}`, "") }),
        field(`${p}.after_s`, a("stepfield.after_s"), number(step.after_s, { min: "0", step: "any" })),
        field(`${p}.counted_from`, a("stepfield.counted_from"), choice(step.counted_from, COUNTED_FROM, (v) => a(`counted.${v}`))),
        field(`${p}.unless`, a("stepfield.unless"), choice(step.unless, MILESTONES, (v) => a(`milestone.${v}`))),
        h(
          "div",
          { class: "field wide actions-field", dataset: { for: `${p}.actions` } },
          h("span", { class: "label" }, a("stepfield.actions")),
          h(
            "div",
            { class: "checks" },
            ACTIONS.map((action) =>
              h("label", { class: "inline" }, h("input", { type: "checkbox", checked: step.actions.includes(action), dataset: { step: n, action } }), " ", a(`action.${action}`)),
            ),
          ),
          h("span", { class: "problem", role: "alert", hidden: true }),
        ),
        h("button", { type: "button", class: "small danger", onclick: () => this.rows((policy) => policy.steps.splice(n - 1, 1)) }, a("remove")),
      ),
      h("span", { class: "problem", role: "alert", hidden: true }),
    );
  }

  rows(change) {
    this.keep();
    change(this.draft);
        this.render();
  }

  async save(form) {
    const body = collect(form, this.draft);
    this.draft = body;
    try {
      await api("PUT", `/api/register/policies/${encodeURIComponent(this.type)}`, body);
      await this.load();
            this.render();
      saidSaved(this.root.querySelector("form.policy-form"));
    } catch (failure) {
      showProblems(form, failure);
    }
  }

  async reset() {
    if (!window.confirm(a("policy.reset_confirm", { type: aOr(`type.${this.type}`, this.type) }))) return;
    try {
      await api("DELETE", `/api/register/policies/${encodeURIComponent(this.type)}`);
      await this.load();
            this.render();
      saidSaved(this.root.querySelector("form.policy-form"));
    } catch (failure) {
      showProblems(this.root.querySelector("form.policy-form"), failure);
    }
  }
}

// The policy as the form holds it, in the configuration file's form (PolicyConfig).
function collect(form, draft) {
  const v = (name) => valueOf(form, name);
  return {
    auto_dispatch: v("auto_dispatch"),
    carers_required: v("carers_required"),
    cancel_grace_s: v("cancel_grace_s"),
    skills: v("skills"),
    steps: draft.steps.map((_, i) => {
      const n = i + 1;
      return {
        name: v(`steps.${n}.name`),
        after_s: v(`steps.${n}.after_s`),
        counted_from: v(`steps.${n}.counted_from`),
        unless: v(`steps.${n}.unless`),
        actions: [...form.querySelectorAll(`input[data-step="${n}"][data-action]`)].filter((box) => box.checked).map((box) => box.dataset.action),
      };
    }),
  };
}

// The steps as they would fire: one lane counted from the call opening, one from each
// dispatch, each on its own scale from 0 to its last step, the steps numbered on it as in
// the list under it, with what each does and what stops it.
function timeline(steps) {
  const usable = steps.filter((s) => Number.isFinite(s.after_s));
  if (!usable.length) return h("p", { class: "empty" }, a("policy.preview.none"));
  return h(
    "div",
    { class: "timeline" },
    COUNTED_FROM.map((from) => {
      const lane = usable.filter((s) => s.counted_from === from).sort((x, y) => x.after_s - y.after_s);
      if (!lane.length) return null;
      const longest = Math.max(...lane.map((s) => s.after_s), 1);
      const bar = h("div", { class: "lane-bar" });
      lane.forEach((step, i) => {
        const dot = h("span", { class: "lane-dot", title: `${waited(step.after_s)} ${step.name}` }, String(i + 1));
        dot.style.left = `${(step.after_s / longest) * 100}%`;
        bar.append(dot);
      });
      return h(
        "div",
        { class: "lane", dataset: { from } },
        h("h4", {}, a(`policy.preview.${from}`)),
        bar,
        h("div", { class: "lane-scale" }, h("span", {}, waited(0)), h("span", {}, waited(longest))),
        h(
          "ol",
          { class: "lane-steps" },
          lane.map((step) =>
            h(
              "li",
              { dataset: { step: step.name } },
              h("span", { class: "when" }, a("policy.preview.at", { t: waited(step.after_s) })),
              h("span", { class: "step-name" }, aOr(`step.${step.name}`, step.name)),
              h("span", { class: "does" }, step.actions.map((action) => a(`action.${action}`)).join("、")),
              h("span", { class: "unless" }, a("policy.preview.unless", { milestone: a(`milestone.${step.unless}`) })),
            ),
          ),
        ),
      );
    }),
  );
}
