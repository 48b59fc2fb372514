// The live trigger feed: the journal's listing, then Server-Sent Events applied in place.

import { describeError, get } from "./api.js";
import { el, statusBadge, timeEl } from "./dom.js";

/** Rows kept in the page: a page left open for days does not grow without bound. */
export const MAX_ROWS = 500;
const PAGE = 100;
export const FILTERS = ["status", "apiVersion", "protocol", "source", "key"];

/** A listing record or an event row, in one shape. */
function normalise(item) {
  return {
    uuid: item.uuid,
    createdAt: item.createdAt,
    source: item.source ?? item.metadata?.source ?? "",
    apiVersion: item.apiVersion,
    protocol: item.protocol,
    status: item.status,
    lastError: item.lastError ?? null,
    attempts: item.attempts ?? 0,
  };
}

function statusTitle(row) {
  const parts = [`attempts: ${row.attempts}`];
  if (row.lastError) parts.push(`last error: ${row.lastError}`);
  return parts.join("; ");
}

export class Feed {
  constructor({ table, more, empty, cap, note, lists }) {
    this.table = table;
    this.tbody = table.tBodies[0];
    this.more = more;
    this.empty = empty;
    this.cap = cap;
    this.note = note;
    this.lists = lists;
    this.filters = {};
    this.rows = new Map();
    this.next = null;
    this.loading = 0;
    this.queue = [];
    this.known = { apiVersion: new Set(), protocol: new Set(), source: new Set() };
    more.addEventListener("click", () => this.loadMore());
  }

  /** Replace the filters and reload the listing. */
  setFilters(filters) {
    this.filters = Object.fromEntries(
      FILTERS.filter((name) => filters[name]).map((name) => [name, filters[name]]),
    );
    return this.load();
  }

  query(before, limit = PAGE) {
    const params = new URLSearchParams({ ...this.filters, limit: String(limit) });
    if (before) params.set("before", before);
    return `/triggers?${params}`;
  }

  /** The first page of the listing, newest first; live events wait until it is shown. */
  async load() {
    const generation = ++this.loading;
    this.queue = [];
    this.table.setAttribute("aria-busy", "true");
    const result = await get(this.query());
    if (generation !== this.loading) return;
    this.loading = 0;
    this.table.setAttribute("aria-busy", "false");
    if (!result.ok) {
      this.note.textContent = `Could not load the triggers: ${describeError(result)}`;
      this.applyQueued();
      return;
    }
    this.tbody.replaceChildren();
    this.rows.clear();
    for (const item of result.data.items) this.append(normalise(item));
    this.setNext(result.data.next);
    const described = Object.entries(this.filters).map(([k, v]) => `${k} = ${v}`).join(", ");
    this.note.textContent = described ? `Showing triggers where ${described}.` : "";
    this.applyQueued();
  }

  async loadMore() {
    const room = MAX_ROWS - this.rows.size;
    if (!this.next || this.loading || room <= 0) return;
    this.more.disabled = true;
    const result = await get(this.query(this.next, Math.min(PAGE, room)));
    this.more.disabled = false;
    if (!result.ok) {
      this.note.textContent = `Could not load older triggers: ${describeError(result)}`;
      return;
    }
    for (const item of result.data.items) {
      const row = normalise(item);
      if (!this.rows.has(row.uuid)) this.append(row);
    }
    this.setNext(result.data.next);
  }

  setNext(next) {
    this.next = next;
    this.updateFooter();
  }

  updateFooter() {
    this.empty.hidden = this.rows.size > 0;
    const full = this.rows.size >= MAX_ROWS;
    this.more.hidden = !this.next || full;
    this.cap.hidden = !full;
  }

  applyQueued() {
    const queued = this.queue;
    this.queue = [];
    for (const item of queued) this.apply(item);
  }

  /** A `trigger` event: update the row in place, or insert it if it matches the filters. */
  apply(item) {
    if (this.loading) {
      this.queue.push(item);
      return;
    }
    const row = normalise(item);
    const tr = this.rows.get(row.uuid);
    if (tr) {
      this.update(tr, row);
      return;
    }
    if (!this.matches(row)) return;
    this.insert(row);
  }

  matches(row) {
    // Live rows do not carry their Idempotency-Key: with that filter only the listing counts.
    if (this.filters.key) return false;
    return ["status", "apiVersion", "protocol", "source"].every(
      (name) => !this.filters[name] || this.filters[name] === row[name],
    );
  }

  render(row) {
    const tr = el(
      "tr",
      { role: "row", dataset: { uuid: row.uuid, status: row.status, created: row.createdAt } },
      el("td", { role: "cell", dataset: { label: "Time" } }, timeEl(row.createdAt)),
      el("td", { role: "cell", class: "source", dataset: { label: "Source" }, text: row.source || "—" }),
      el("td", { role: "cell", class: "device", dataset: { label: "Device" }, text: row.apiVersion }),
      el("td", { role: "cell", class: "protocol", dataset: { label: "Protocol" }, text: row.protocol }),
      el("td", { role: "cell", class: "state", dataset: { label: "Status" } }, statusBadge(row.status, statusTitle(row))),
      el(
        "td",
        { role: "cell", dataset: { label: "UUID" } },
        el("a", { class: "uuid", href: `#/triggers/${row.uuid}`, "aria-label": `Trigger ${row.uuid}` }, row.uuid),
      ),
    );
    this.rows.set(row.uuid, tr);
    this.remember(row);
    return tr;
  }

  remember(row) {
    for (const name of ["apiVersion", "protocol", "source"]) {
      const value = row[name];
      if (!value || this.known[name].has(value) || this.known[name].size >= 200) continue;
      this.known[name].add(value);
      this.lists[name]?.append(el("option", { value }));
    }
  }

  append(row) {
    this.tbody.append(this.render(row));
  }

  insert(row) {
    // Newest first by creation time; a retried old trigger goes back in its place.
    const created = Date.parse(row.createdAt);
    let before = null;
    for (const tr of this.tbody.rows) {
      if (Date.parse(tr.dataset.created) <= created) {
        before = tr;
        break;
      }
    }
    if (!before && this.next) return; // it belongs to a page not loaded yet
    const tr = this.render(row);
    tr.classList.add("fresh");
    this.tbody.insertBefore(tr, before);
    this.trim();
    this.updateFooter();
  }

  update(tr, row) {
    if (tr.dataset.status === row.status && !row.lastError) return;
    tr.dataset.status = row.status;
    tr.querySelector("td.state").replaceChildren(statusBadge(row.status, statusTitle(row)));
    tr.classList.remove("changed");
    // Restart the highlight: reading offsetWidth makes the browser see the class go.
    void tr.offsetWidth;
    tr.classList.add("changed");
  }

  trim() {
    // The oldest rows go: a page left open for days keeps MAX_ROWS rows.
    while (this.tbody.rows.length > MAX_ROWS) {
      const last = this.tbody.lastElementChild;
      this.rows.delete(last.dataset.uuid);
      last.remove();
    }
  }
}
