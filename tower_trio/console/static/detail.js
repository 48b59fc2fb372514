// The trigger detail dialog: the body as published, its plate, delivery record, AMQP routing, retry.

import { describeError, get, post } from "./api.js";
import { definitions, el, jsonBlock, statusBadge, timeEl } from "./dom.js";
import { specSummary, wellGrid, wellName } from "./wells.js";

const DELIVERY_FIELDS = new Set([
  "status",
  "publishedAt",
  "attempts",
  "lastError",
  "retries",
  "retriedAt",
  "createdAt",
]);
const RETRYABLE = new Set(["failed", "unroutable"]);

/** The record without its delivery fields: the body as it was published. */
export function publishedBody(record) {
  return Object.fromEntries(Object.entries(record).filter(([key]) => !DELIVERY_FIELDS.has(key)));
}

function amqpValue(name, value) {
  if (value === null || value === undefined) return null;
  if (name === "timestamp") {
    // RFC 3339, or seconds since the epoch as AMQP carries it.
    return timeEl(typeof value === "number" ? new Date(value * 1000).toISOString() : value);
  }
  if (typeof value === "object") return jsonBlock(value, `AMQP property ${name}`);
  return el("code", { text: String(value) });
}

export class Detail {
  constructor(dialog, { onClosed }) {
    this.dialog = dialog;
    this.title = dialog.querySelector("#d-title");
    this.body = dialog.querySelector("#d-body");
    this.onClosed = onClosed;
    this.uuid = null;
    this.opener = null;
    this.generation = 0;
    this.refreshing = false;
    dialog.querySelector("#d-close").addEventListener("click", () => this.close());
    dialog.addEventListener("close", () => {
      const was = this.uuid;
      this.uuid = null;
      this.generation += 1;
      if (this.opener?.isConnected) this.opener.focus();
      this.opener = null;
      if (was) this.onClosed?.(was);
    });
    // A click on the backdrop (outside the dialog's box) closes it too.
    dialog.addEventListener("click", (event) => {
      if (event.target === dialog) this.close();
    });
  }

  get isOpen() {
    return this.dialog.open;
  }

  async open(uuid) {
    if (!this.dialog.open) {
      this.opener = document.activeElement;
      this.dialog.showModal();
    }
    if (this.uuid === uuid) return;
    this.uuid = uuid;
    this.outcome = null;
    this.title.textContent = `Trigger ${uuid}`;
    this.body.replaceChildren(el("p", { class: "note", role: "status", text: "Loading…" }));
    await this.load();
  }

  close() {
    if (this.dialog.open) this.dialog.close();
  }

  /** A trigger event: reload the detail if it is about the trigger shown. */
  async onTrigger(row) {
    if (!this.dialog.open || row.uuid !== this.uuid) return;
    if (this.refreshing) {
      this.again = true;
      return;
    }
    this.refreshing = true;
    try {
      do {
        this.again = false;
        await this.load();
      } while (this.again && this.dialog.open);
    } finally {
      this.refreshing = false;
    }
  }

  async load() {
    const uuid = this.uuid;
    const generation = ++this.generation;
    const [record, amqp] = await Promise.all([
      get(`/triggers/${uuid}`),
      get(`/console/api/triggers/${uuid}/amqp`),
    ]);
    if (generation !== this.generation) return;
    if (!record.ok) {
      this.title.textContent = `Trigger ${uuid}`;
      const message =
        record.status === 404
          ? `No trigger ${uuid} in the journal. ${describeError(record)}`
          : `Could not load the trigger: ${describeError(record)}`;
      this.body.replaceChildren(el("p", { class: "alert", role: "alert", text: message }));
      return;
    }
    this.render(record.data, amqp);
  }

  render(record, amqp) {
    this.title.textContent = `${record.protocol} · ${record.apiVersion}`;
    const parts = [
      el(
        "div",
        { class: "detail-head" },
        statusBadge(record.status),
        el("code", { class: "uuid", text: record.uuid }),
        el("a", { href: `#/triggers/${record.uuid}`, class: "permalink", text: "Link to this trigger" }),
      ),
    ];
    if (RETRYABLE.has(record.status)) {
      parts.push(
        el(
          "div",
          { class: "retry" },
          el("button", { type: "button", id: "d-retry", onclick: () => this.retry(record.uuid) }, "Retry"),
          el("span", { class: "note", text: `This trigger is ${record.status}; retry sends it to the broker again.` }),
        ),
      );
    }
    parts.push(
      el("p", {
        id: "d-outcome",
        class: "result",
        role: "status",
        dataset: this.outcome?.uuid === record.uuid ? { outcome: this.outcome.status } : {},
        text: this.outcome?.uuid === record.uuid ? this.outcome.text : "",
      }),
    );
    const delivery = el(
      "section",
      { "aria-labelledby": "d-delivery" },
      el("h3", { id: "d-delivery", text: "Delivery" }),
      definitions([
        ["Status", statusBadge(record.status)],
        ["Created", timeEl(record.createdAt)],
        ["Source", record.metadata?.source || null],
        ["Attempts", String(record.attempts ?? 0)],
        ["Last error", record.lastError],
        ["Published at", timeEl(record.publishedAt)],
        ["Retries", String(record.retries ?? 0)],
        ["Retried at", timeEl(record.retriedAt)],
      ]),
    );
    // A plate's grid is what its reader looks for first: it takes the routing's place.
    if (record.plate) {
      parts.push(el("div", { class: "detail-grid" }, delivery, this.plate(record)));
      parts.push(this.routing(amqp));
    } else {
      parts.push(el("div", { class: "detail-grid" }, delivery, this.routing(amqp)));
    }
    parts.push(
      el(
        "section",
        { "aria-labelledby": "d-body-title" },
        el("h3", { id: "d-body-title", text: "Body as published" }),
        jsonBlock(publishedBody(record), "The trigger's body as published, JSON"),
      ),
    );
    this.body.replaceChildren(...parts);
  }

  routing(amqp) {
    const section = el(
      "section",
      { "aria-labelledby": "d-routing" },
      el("h3", { id: "d-routing", text: "Routing and AMQP properties" }),
    );
    if (!amqp.ok) {
      section.append(el("p", { class: "note", text: `Not available: ${describeError(amqp)}` }));
      return section;
    }
    const { exchange, routingKey, properties } = amqp.data;
    section.append(
      definitions([
        ["Exchange", el("code", { text: exchange })],
        ["Routing key", el("code", { text: routingKey })],
        ...Object.entries(properties ?? {}).map(([name, value]) => [name, amqpValue(name, value)]),
      ]),
    );
    return section;
  }

  plate(record) {
    const { rows, columns } = record.plate;
    const specs = Array.isArray(record.spec) ? record.spec : [];
    const notes = Array.isArray(record.metadata?.spec) ? record.metadata.spec : null;
    const info = el("p", { class: "well-info", id: "d-well-info", "aria-live": "polite" }, "Hover over or focus a well to see its spec.");
    const describe = (index) => specSummary(specs[index]);
    const grid = wellGrid({
      rows,
      columns,
      caption: `Plate: ${rows} rows × ${columns} columns, ${rows * columns} wells (A1 = 0, B1 = 1, … column-first)`,
      describe,
      mark: (index) => (specs[index] && Object.keys(specs[index]).length ? "●" : "○"),
      onShow: (index) => {
        const note = notes ? `; notes: ${specSummary(notes[index])}` : "";
        info.textContent = `${wellName(index, rows)} (well ${index}): ${describe(index)}${note}`;
      },
    });
    return el(
      "section",
      { "aria-labelledby": "d-plate" },
      el("h3", { id: "d-plate", text: "Plate" }),
      el("div", { class: "wells-scroll" }, grid.table),
      info,
    );
  }

  async retry(uuid) {
    const button = this.body.querySelector("#d-retry");
    const outcome = this.body.querySelector("#d-outcome");
    button.disabled = true;
    outcome.textContent = "Sending the retry…";
    const result = await post(`/triggers/${uuid}/retry`);
    if (uuid !== this.uuid) return;
    let message;
    if (result.status === 202) message = "Retried: the trigger is pending again and goes to the broker.";
    else if (result.status === 200) message = "Already pending: it was retried before; nothing was queued twice.";
    else if (result.status === 409) message = `Not retried: ${describeError(result)}`;
    else message = `The retry failed: ${describeError(result)}`;
    this.outcome = { uuid, status: String(result.status), text: message };
    await this.load();
  }
}
