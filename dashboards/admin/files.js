// The register as a file: the template and the whole register to download (.xlsx, or a
// .zip of CSV files), and a file to import, checked first: every problem with its sheet,
// row and column in the server's words, and what an import would add, update and leave.
// Only a clean file can be imported, in one transaction (docs/register.md, "Import and
// export"). The server judges the file; this page only shows what it says.
import { upload } from "../board/api.js";
import { h } from "../board/dom.js";
import { a } from "./text.js";

const KINDS = ["stations", "shift_patterns", "carers", "households", "residents", "contacts", "household_phones", "devices", "roster"];

export class FilesTab {
  constructor() {
    this.file = null;
    this.answer = null;
    this.failure = "";
    this.busy = false;
  }

  async show(root) {
    this.root = root;
    this.render();
  }

  relabel() {
    this.render();
  }

  keep() {}

  async check(dryRun) {
    if (!this.file) return;
    this.busy = true;
    this.failure = "";
    this.render();
    try {
      // A file with problems is answered 422 with them: that answer is shown, not thrown.
      this.answer = await upload(`/api/register/import?dry_run=${dryRun ? "true" : "false"}`, this.file, { alsoOk: [422] });
    } catch (failure) {
      this.answer = null;
      this.failure = a("files.failed", { message: failure.message });
    }
    this.busy = false;
    this.render();
  }

  render() {
    const root = this.root;
    if (!root) return;
    const input = h("input", { type: "file", id: "files-input", accept: ".xlsx,.zip" });
    input.addEventListener("change", () => {
      this.file = input.files?.[0] ?? null;
      this.answer = null;
      this.failure = "";
      this.render();
    });
    const clean = this.answer && this.answer.problems_total === 0;
    root.replaceChildren(
      h(
        "div",
        { class: "files" },
        h(
          "section",
          { class: "files-downloads" },
          h("h3", {}, a("files.download")),
          h("p", { class: "hint" }, a("files.download_hint")),
          h(
            "p",
            { class: "toolbar" },
            h("a", { class: "button", href: "/api/register/template?format=xlsx", download: "", id: "files-template" }, a("files.template_xlsx")),
            h("a", { class: "button", href: "/api/register/template?format=csv", download: "" }, a("files.template_csv")),
            h("a", { class: "button", href: "/api/register/export?format=xlsx", download: "", id: "files-export" }, a("files.export_xlsx")),
            h("a", { class: "button", href: "/api/register/export?format=csv", download: "" }, a("files.export_csv")),
          ),
        ),
        h(
          "section",
          { class: "files-import" },
          h("h3", {}, a("files.import")),
          h("p", { class: "hint" }, a("files.import_hint")),
          h(
            "p",
            { class: "toolbar" },
            input,
            this.file ? h("span", { class: "mono", id: "files-name" }, this.file.name) : null,
            h("button", { type: "button", id: "files-check", disabled: !this.file || this.busy, onclick: () => this.check(true) }, a("files.check")),
            h("button", { type: "button", class: "primary", id: "files-import", disabled: !clean || this.answer?.written || this.busy, onclick: () => this.check(false) }, a("files.do_import")),
            this.busy ? h("span", { class: "hint" }, a("files.working")) : null,
          ),
          this.failure ? h("p", { class: "form-problem", role: "alert" }, this.failure) : null,
          this.answer ? this.outcome(this.answer) : null,
        ),
      ),
    );
    // A file picked before a redraw stays picked (the input cannot be given it back).
    if (this.file) input.title = this.file.name;
  }

  outcome(answer) {
    const said = answer.written ? a("files.written") : answer.problems_total ? a("files.problems", { n: answer.problems_total }) : a("files.clean");
    return h(
      "div",
      { class: "files-outcome", id: "files-outcome", dataset: { written: answer.written ? "yes" : "no", problems: String(answer.problems_total) } },
      // The page's own words: the answer's one-line message is for programs and logs.
      h("p", { class: answer.problems_total ? "form-problem" : "form-problem saved", role: "status" }, said),
      this.counts(answer.counts ?? {}),
      answer.problems?.length ? this.problems(answer.problems, answer.problems_total) : null,
    );
  }

  counts(counts) {
    const kinds = KINDS.filter((k) => counts[k]);
    if (!kinds.length) return null;
    return h(
      "table",
      { class: "records files-counts" },
      h("thead", {}, h("tr", {}, h("th", {}, a("files.kind")), ["in_file", "added", "updated", "unchanged"].map((c) => h("th", { class: "num" }, a(`files.${c}`))))),
      h(
        "tbody",
        {},
        kinds.map((k) =>
          h(
            "tr",
            { dataset: { kind: k } },
            h("td", {}, a(`files.sheet.${k}`)),
            ["in_file", "added", "updated", "unchanged"].map((c) => h("td", { class: "num" }, String(counts[k][c]))),
          ),
        ),
      ),
    );
  }

  problems(problems, total) {
    return h(
      "div",
      {},
      h(
        "table",
        { class: "records files-problems", id: "files-problems" },
        h("thead", {}, h("tr", {}, h("th", {}, a("files.sheet")), h("th", { class: "num" }, a("files.row")), h("th", {}, a("files.column")), h("th", {}, a("files.what")))),
        h(
          "tbody",
          {},
          problems.map((p) =>
            h(
              "tr",
              { dataset: { code: p.code } },
              h("td", { class: "mono" }, p.sheet || a("files.whole_file")),
              h("td", { class: "num" }, p.row === null || p.row === undefined ? "" : String(p.row)),
              h("td", { class: "mono" }, p.column),
              h("td", {}, p.message),
            ),
          ),
        ),
      ),
      total > problems.length ? h("p", { class: "hint" }, a("files.more", { n: total - problems.length })) : null,
    );
  }
}
