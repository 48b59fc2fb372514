// The send form: protocols from GET /protocols, fields from simple JSON Schemas (a JSON editor
// otherwise), a well grid for plate protocols, and the tower's 422 field errors shown inline.

import { describeError, get, post } from "./api.js";
import { el } from "./dom.js";
import { specSummary, wellGrid, wellName } from "./wells.js";

const SIMPLE_TYPES = new Set(["string", "number", "integer", "boolean"]);
const COMBINERS = ["$ref", "allOf", "anyOf", "oneOf", "not", "if", "patternProperties", "dependentSchemas"];
const isPrimitive = (v) => v === null || ["string", "number", "boolean"].includes(typeof v);

/** Field descriptors for a schema whose properties are all simple; null when it is not. */
export function simpleFields(schema) {
  if (!schema || typeof schema !== "object" || Array.isArray(schema)) return null;
  if (schema.type !== undefined && schema.type !== "object") return null;
  if (COMBINERS.some((key) => key in schema)) return null;
  const properties = schema.properties;
  if (!properties || typeof properties !== "object" || !Object.keys(properties).length) return null;
  const required = new Set(Array.isArray(schema.required) ? schema.required : []);
  for (const name of required) if (!(name in properties)) return null;
  const fields = [];
  for (const [name, p] of Object.entries(properties)) {
    if (!p || typeof p !== "object" || COMBINERS.some((key) => key in p)) return null;
    let kind;
    if (Array.isArray(p.enum) && p.enum.length && p.enum.every(isPrimitive)) kind = "enum";
    else if (SIMPLE_TYPES.has(p.type)) kind = p.type;
    else return null;
    fields.push({ name, kind, required: required.has(name), schema: p });
  }
  return fields;
}

function optionText(value) {
  return typeof value === "string" ? value : JSON.stringify(value);
}

export class SendForm {
  constructor(form, { onSent }) {
    this.form = form;
    this.onSent = onSent;
    this.protocols = [];
    this.schema = null;
    this.fields = null;
    this.wells = [];
    this.selected = new Set();
    this.grid = null;
    this.$ = (id) => form.querySelector(`#${id}`);
    this.$("s-pick").addEventListener("change", () => this.pick());
    this.$("s-apiVersion").addEventListener("change", () => this.follow());
    this.$("s-protocol").addEventListener("change", () => this.follow());
    this.$("s-plate").addEventListener("change", () => this.setPlate());
    this.$("s-rows").addEventListener("input", () => this.resizePlate());
    this.$("s-columns").addEventListener("input", () => this.resizePlate());
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
  }

  async init() {
    const result = await get("/protocols");
    this.protocols = result.ok ? result.data.protocols ?? [] : [];
    const pick = this.$("s-pick");
    pick.replaceChildren(
      ...this.protocols.map((p, index) =>
        el("option", { value: String(index) }, `${p.protocol} · ${p.apiVersion ?? "any device"}`),
      ),
      el("option", { value: "other" }, "Other (type the protocol; spec as JSON)"),
    );
    if (!result.ok) this.$("s-pick-note").textContent = `Could not list the protocols: ${describeError(result)}`;
    this.pick();
  }

  /** The picker changed: fill apiVersion and protocol, and the spec editor for its schema. */
  pick() {
    const value = this.$("s-pick").value;
    const chosen = value === "other" ? null : this.protocols[Number(value)];
    if (chosen) {
      const apiVersion = this.$("s-apiVersion");
      // Keep a device suffix the user typed for the same api/version.
      if (!apiVersion.value.startsWith(`${chosen.apiVersion}/`)) apiVersion.value = chosen.apiVersion ?? "";
      this.$("s-protocol").value = chosen.protocol;
      if (chosen.plate !== undefined && chosen.plate !== this.$("s-plate").checked) {
        this.$("s-plate").checked = Boolean(chosen.plate);
        this.setPlate(false);
      }
    }
    this.useSchema(chosen?.schema ?? null);
  }

  /** apiVersion or protocol typed by hand: use the schema the tower will apply, if any. */
  follow() {
    const base = this.$("s-apiVersion").value.split("/").slice(0, 2).join("/");
    const protocol = this.$("s-protocol").value;
    const index = this.protocols.findIndex((p) => p.apiVersion === base && p.protocol === protocol);
    this.$("s-pick").value = index === -1 ? "other" : String(index);
    const schema = index === -1 ? null : this.protocols[index].schema;
    if (schema !== this.schema) this.useSchema(schema);
  }

  useSchema(schema) {
    this.schema = schema;
    this.fields = simpleFields(schema);
    this.renderEditor();
  }

  plate() {
    return this.$("s-plate").checked;
  }

  renderEditor() {
    const body = this.$("s-spec-body");
    const plate = this.plate();
    this.$("s-spec-legend").textContent = plate ? "Spec of the selected wells" : "Spec";
    const editor = this.fields ? this.fieldControls() : this.jsonControl();
    const parts = [editor];
    if (this.schema && !this.fields) {
      parts.unshift(el("p", { class: "note", text: "This protocol's schema is not a flat list of simple fields: write the spec as JSON; the tower checks it against the schema." }));
    }
    if (plate) {
      parts.push(
        el(
          "div",
          { class: "buttons" },
          el("button", { type: "button", id: "s-apply", onclick: () => this.applyToWells() }, "Apply to selected wells"),
          el("button", { type: "button", class: "secondary", onclick: () => this.clearWells() }, "Empty selected wells"),
        ),
      );
    }
    body.replaceChildren(...parts);
    body.dataset.field = "spec";
    if (plate) this.loadSelectedSpec();
  }

  fieldControls() {
    return el(
      "div",
      { class: "stack" },
      this.fields.map((field, index) => {
        const id = `s-spec-f${index}`;
        const s = field.schema;
        const hintId = `${id}-hint`;
        const hints = [];
        if (s.description) hints.push(s.description);
        if (s.minimum !== undefined) hints.push(`at least ${s.minimum}`);
        if (s.exclusiveMinimum !== undefined) hints.push(`more than ${s.exclusiveMinimum}`);
        if (s.maximum !== undefined) hints.push(`at most ${s.maximum}`);
        if (s.exclusiveMaximum !== undefined) hints.push(`less than ${s.exclusiveMaximum}`);
        if (s.pattern) hints.push(`matches ${s.pattern}`);
        const label = `${s.title ?? field.name}${field.required ? " (required)" : ""}`;
        let control;
        if (field.kind === "boolean") {
          control = el("input", { type: "checkbox", id, checked: s.default === true });
          return el(
            "div",
            { class: "check", dataset: { field: `spec.${field.name}` } },
            control,
            el("label", { for: id, text: label }),
            hints.length ? el("p", { class: "note", id: hintId, text: hints.join("; ") }) : null,
          );
        }
        if (field.kind === "enum") {
          control = el(
            "select",
            { id, required: field.required },
            field.required ? null : el("option", { value: "" }, "(not set)"),
            s.enum.map((value, i) => el("option", { value: String(i), selected: s.default === value }, optionText(value))),
          );
        } else if (field.kind === "string") {
          control = el("input", {
            id,
            type: "text",
            required: field.required,
            minlength: s.minLength,
            maxlength: s.maxLength,
            value: typeof s.default === "string" ? s.default : undefined,
            spellcheck: "false",
            autocomplete: "off",
          });
        } else {
          control = el("input", {
            id,
            type: "number",
            inputmode: field.kind === "integer" ? "numeric" : "decimal",
            required: field.required,
            min: s.minimum,
            max: s.maximum,
            step: field.kind === "integer" ? "1" : "any",
            value: typeof s.default === "number" ? String(s.default) : undefined,
          });
        }
        if (hints.length) control.setAttribute("aria-describedby", hintId);
        control.dataset.field = `spec.${field.name}`;
        return el(
          "div",
          { class: "field" },
          el("label", { for: id, text: label }),
          control,
          hints.length ? el("p", { class: "note", id: hintId, text: hints.join("; ") }) : null,
        );
      }),
    );
  }

  jsonControl() {
    const textarea = el("textarea", {
      id: "s-spec-json",
      rows: "6",
      spellcheck: "false",
      "aria-describedby": "s-spec-json-note",
      dataset: { field: "spec" },
    });
    textarea.value = "{}";
    const note = el("p", { id: "s-spec-json-note", class: "note", "aria-live": "polite", text: "A JSON object, e.g. {\"volume\": 100}." });
    textarea.addEventListener("input", () => this.checkJson());
    return el(
      "div",
      { class: "field" },
      el("label", { for: "s-spec-json", text: this.plate() ? "Spec of the selected wells (JSON object)" : "Spec (JSON object)" }),
      textarea,
      note,
    );
  }

  /** The JSON editor's object, or null with the reason shown next to it. */
  checkJson() {
    const textarea = this.$("s-spec-json");
    const note = this.$("s-spec-json-note");
    let value;
    let problem = null;
    try {
      value = JSON.parse(textarea.value);
      if (value === null || typeof value !== "object" || Array.isArray(value)) problem = "The spec must be a JSON object, like {\"volume\": 100}.";
    } catch (err) {
      problem = `Not valid JSON: ${err.message}`;
    }
    textarea.setAttribute("aria-invalid", problem ? "true" : "false");
    note.classList.toggle("field-error", Boolean(problem));
    note.textContent = problem ?? "Valid JSON object.";
    return problem ? null : value;
  }

  /** The spec from the field controls, or null when a control is invalid (its error shown). */
  readFields() {
    const spec = {};
    let ok = true;
    this.fields.forEach((field, index) => {
      const control = this.$(`s-spec-f${index}`);
      const s = field.schema;
      control.setCustomValidity("");
      if (field.kind === "boolean") {
        spec[field.name] = control.checked;
        return;
      }
      if (field.kind === "enum") {
        if (control.value !== "") spec[field.name] = s.enum[Number(control.value)];
      } else if (field.kind === "string") {
        if (control.value !== "" || field.required) {
          if (s.pattern && control.value !== "" && !new RegExp(s.pattern, "u").test(control.value)) {
            control.setCustomValidity(`Must match the pattern ${s.pattern}.`);
          }
          spec[field.name] = control.value;
        }
      } else if (control.value !== "") {
        const n = control.valueAsNumber;
        if (s.exclusiveMinimum !== undefined && !(n > s.exclusiveMinimum)) control.setCustomValidity(`Must be more than ${s.exclusiveMinimum}.`);
        if (s.exclusiveMaximum !== undefined && !(n < s.exclusiveMaximum)) control.setCustomValidity(`Must be less than ${s.exclusiveMaximum}.`);
        spec[field.name] = n;
      }
      if (!control.checkValidity()) {
        ok = false;
        this.showFieldError(control, control.validationMessage);
      }
    });
    return ok ? spec : null;
  }

  readSpec() {
    return this.fields ? this.readFields() : this.checkJson();
  }

  writeSpec(spec) {
    if (!this.fields) {
      this.$("s-spec-json").value = JSON.stringify(spec ?? {}, null, 2);
      this.checkJson();
      return;
    }
    this.fields.forEach((field, index) => {
      const control = this.$(`s-spec-f${index}`);
      const value = spec?.[field.name];
      if (field.kind === "boolean") control.checked = value === true;
      else if (field.kind === "enum") {
        const i = field.schema.enum.findIndex((v) => v === value);
        control.value = i === -1 ? "" : String(i);
      } else control.value = value === undefined ? "" : String(value);
    });
  }

  // --- plates -------------------------------------------------------------------------

  setPlate(render = true) {
    const plate = this.plate();
    this.$("s-plate-size").hidden = !plate;
    this.$("s-wells").hidden = !plate;
    if (plate) this.resizePlate(false);
    if (render) this.renderEditor();
  }

  size() {
    const rows = this.$("s-rows").valueAsNumber;
    const columns = this.$("s-columns").valueAsNumber;
    const ok = (n, max) => Number.isInteger(n) && n >= 1 && n <= max;
    return ok(rows, 32) && ok(columns, 48) ? { rows, columns } : null;
  }

  resizePlate(render = true) {
    const size = this.size();
    const holder = this.$("s-wells");
    if (!size) {
      holder.replaceChildren(el("p", { class: "note", text: "Rows 1 to 32 and columns 1 to 48." }));
      this.grid = null;
      this.rows = null;
      return;
    }
    const { rows, columns } = size;
    // Only a new size redraws the grid: a redraw under the pointer would lose a click.
    if (this.grid && this.rows === rows && this.columns === columns) return;
    const count = rows * columns;
    if (this.wells.length !== count || this.rows !== rows) {
      this.wells = Array.from({ length: count }, () => ({}));
      this.selected = new Set();
    }
    this.rows = rows;
    this.columns = columns;
    const info = el("p", { id: "s-well-info", class: "well-info", "aria-live": "polite", text: "Select wells, then give them a spec below." });
    this.grid = wellGrid({
      rows,
      columns,
      caption: `Wells of a ${rows} × ${columns} plate; press a well to select it`,
      pressed: true,
      describe: (index) => (Object.keys(this.wells[index]).length ? specSummary(this.wells[index]) : "empty spec"),
      mark: (index) => (Object.keys(this.wells[index]).length ? "●" : "○"),
      onShow: (index) => {
        info.textContent = `${wellName(index, rows)} (well ${index}): ${specSummary(this.wells[index])}`;
      },
      onActivate: (index, button) => {
        if (this.selected.has(index)) this.selected.delete(index);
        else this.selected.add(index);
        button.setAttribute("aria-pressed", String(this.selected.has(index)));
        this.selectionChanged();
      },
    });
    const count_ = el("span", { id: "s-selected", class: "note", "aria-live": "polite" });
    holder.replaceChildren(
      el(
        "div",
        { class: "buttons" },
        el("button", { type: "button", class: "secondary", onclick: () => this.selectAll(true) }, "Select all wells"),
        el("button", { type: "button", class: "secondary", onclick: () => this.selectAll(false) }, "Clear the selection"),
        count_,
      ),
      el("div", { class: "wells-scroll", dataset: { field: "spec-wells" } }, this.grid.table),
      info,
    );
    for (const index of this.selected) this.grid.buttons[index].setAttribute("aria-pressed", "true");
    this.selectionChanged(false);
    if (render) this.renderEditor();
  }

  selectAll(on) {
    this.selected = on ? new Set(this.wells.keys()) : new Set();
    this.grid.buttons.forEach((b, index) => b.setAttribute("aria-pressed", String(this.selected.has(index))));
    this.selectionChanged();
  }

  selectionChanged(load = true) {
    const n = this.selected.size;
    const shown = this.$("s-selected");
    if (shown) shown.textContent = `${n} well${n === 1 ? "" : "s"} selected`;
    const apply = this.$("s-apply");
    if (apply) apply.textContent = n ? `Apply to ${n} selected well${n === 1 ? "" : "s"}` : "Apply to selected wells";
    if (load) this.loadSelectedSpec();
  }

  loadSelectedSpec() {
    if (this.selected.size === 1) this.writeSpec(this.wells[[...this.selected][0]]);
  }

  applyToWells() {
    this.clearErrors();
    if (!this.selected.size) {
      this.showErrors([{ message: "Select one or more wells first." }]);
      return;
    }
    const spec = this.readSpec();
    if (spec === null) return;
    for (const index of this.selected) {
      this.wells[index] = structuredClone(spec);
      this.grid.refresh(index);
    }
    this.$("s-well-info").textContent = `Spec ${specSummary(spec)} applied to ${this.selected.size} well(s).`;
  }

  clearWells() {
    for (const index of this.selected) {
      this.wells[index] = {};
      this.grid.refresh(index);
    }
  }

  // --- errors and submit ---------------------------------------------------------------

  clearErrors() {
    for (const node of this.form.querySelectorAll(".field-error[data-for]")) node.remove();
    for (const node of this.form.querySelectorAll("[aria-invalid='true']")) {
      node.setAttribute("aria-invalid", "false");
      const ids = (node.getAttribute("aria-describedby") ?? "").split(" ").filter((id) => !id.startsWith("err-"));
      if (ids.length) node.setAttribute("aria-describedby", ids.join(" "));
      else node.removeAttribute("aria-describedby");
    }
    for (const well of this.form.querySelectorAll("button.well.invalid")) well.classList.remove("invalid");
    const box = this.$("s-errors");
    box.hidden = true;
    box.replaceChildren();
  }

  /** Shows `message` next to `target` (a control, or a container holding one). */
  showFieldError(target, message) {
    const control = target.matches("input, select, textarea") ? target : target.querySelector("input, select, textarea");
    const id = `err-${Math.random().toString(36).slice(2, 10)}`;
    const error = el("p", { class: "field-error", id, dataset: { for: target.dataset.field ?? "" } }, el("span", { "aria-hidden": "true" }, "✕ "), message);
    const place = target.closest(".field, .check") ?? target;
    if (place === target && !target.matches("input, select, textarea")) place.prepend(error);
    else place.append(error);
    if (control) {
      control.setAttribute("aria-invalid", "true");
      const ids = (control.getAttribute("aria-describedby") ?? "").split(" ").filter(Boolean);
      control.setAttribute("aria-describedby", [...ids, id].join(" "));
    }
  }

  /** Field errors go next to their field; the rest (and a summary) into the alert box. */
  showErrors(details, heading) {
    const unplaced = [];
    const byWell = new Map();
    let placed = 0;
    for (const detail of details) {
      if (typeof detail === "string") {
        unplaced.push(detail);
        continue;
      }
      const well = this.wellOf(detail.field);
      if (well) {
        // One line per problem, naming its wells: a 96-well plate can break a schema 96 times.
        const key = `${well.rest ? `${well.rest.replace(/^\./, "")}: ` : ""}${detail.message}`;
        if (!byWell.has(key)) byWell.set(key, []);
        byWell.get(key).push(well.name);
        continue;
      }
      const target = detail.field ? this.target(detail) : null;
      if (target) {
        this.showFieldError(target, detail.message);
        placed += 1;
      } else {
        unplaced.push(detail.field ? `${detail.field}: ${detail.message}` : detail.message);
      }
    }
    for (const [problem, wells] of byWell) {
      const listed = wells.length > 12 ? `${wells.slice(0, 12).join(", ")} and ${wells.length - 12} more` : wells.join(", ");
      unplaced.push(`${problem} (well${wells.length === 1 ? "" : "s"} ${listed})`);
    }
    const box = this.$("s-errors");
    const head = heading ?? "Not sent.";
    const summary = placed ? ` ${placed} problem${placed === 1 ? "" : "s"} marked at the fields below.` : "";
    const marked = byWell.size ? " Wells with problems are marked in the grid." : "";
    box.replaceChildren(el("p", { text: head + summary + marked }));
    if (unplaced.length) box.append(el("ul", {}, unplaced.map((m) => el("li", { text: m }))));
    box.hidden = false;
    const first = this.form.querySelector("[aria-invalid='true']");
    first?.focus();
  }

  /** `{name, rest}` of the well a field like `spec[3].volume` names, marking it; or null. */
  wellOf(field) {
    const match = /^spec\[(\d+)\](.*)$/.exec(field ?? "");
    if (!match || !this.grid) return null;
    const index = Number(match[1]);
    const button = this.grid.buttons[index];
    if (!button) return null;
    button.classList.add("invalid");
    return { name: wellName(index, this.rows), rest: match[2] };
  }

  /** The element a `{field, message}` error belongs to, or null. */
  target(detail) {
    let field = detail.field;
    // jsonschema reports a missing property at its object: "'volume' is a required property".
    const missing = /^'([^']+)' is a required property$/.exec(detail.message);
    if (missing && field === "spec" && this.fields) field = `spec.${missing[1]}`;
    return [...this.form.querySelectorAll("[data-field]")].find((node) => node.dataset.field === field) ?? null;
  }

  async submit() {
    this.clearErrors();
    const result = this.$("s-result");
    result.replaceChildren();
    const problems = [];
    for (const id of ["s-apiVersion", "s-protocol"]) {
      const control = this.$(id);
      if (!control.checkValidity()) {
        this.showFieldError(control, control.validationMessage);
        problems.push(id);
      }
    }
    const body = { apiVersion: this.$("s-apiVersion").value, protocol: this.$("s-protocol").value };
    if (this.plate()) {
      const size = this.size();
      if (!size) {
        this.showFieldError(this.$("s-rows"), "Rows 1 to 32 and columns 1 to 48.");
        problems.push("plate");
      } else {
        body.plate = size;
        body.spec = this.wells;
      }
    } else {
      const spec = this.readSpec();
      if (spec === null) problems.push("spec");
      body.spec = spec;
    }
    if (problems.length) {
      this.showErrors([], "Not sent: correct the fields marked below.");
      return;
    }
    const wait = this.$("s-wait").checked;
    const submit = this.$("s-submit");
    submit.disabled = true;
    result.textContent = wait ? "Sending, and waiting for the broker…" : "Sending…";
    const answer = await post(`/triggers${wait ? "?wait=published" : ""}`, body);
    submit.disabled = false;
    result.replaceChildren();
    const uuid = answer.data?.uuid;
    if (answer.ok && uuid) {
      result.dataset.status = answer.data.status;
      result.append(
        `Accepted: the trigger is ${answer.data.status}. `,
        el("a", { href: `#/triggers/${uuid}`, id: "s-sent-link" }, `Open trigger ${uuid}`),
      );
      this.onSent?.(answer.data);
      return;
    }
    if (answer.status === 422) {
      this.showErrors(answer.data?.details ?? [], "The tower refused the trigger: nothing was sent.");
      return;
    }
    const link = uuid || answer.headers.get("Location")?.split("/").pop();
    this.showErrors([describeError(answer)], `Not sent (HTTP ${answer.status || "error"}).`);
    if (link && answer.status >= 500) {
      result.append(el("a", { href: `#/triggers/${link}` }, `Look up trigger ${link}`));
    }
  }
}
