// The sources panel: broker, journal and plugins from the `status` events, red/amber/green with words.

import { definitions, el, HEALTH_WORDS, healthBadge, timeEl } from "./dom.js";

function bytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

const pluginId = (name) => `source-plugin-${String(name).replace(/[^A-Za-z0-9_-]/g, "_")}`;

const PLUGIN_STATES = {
  starting: "starting",
  running: "running",
  "backing-off": "backing off after an error",
  standby: "standby (another replica leads it)",
  finished: "stopped (finished)",
  failed: "stopped (failed)",
  skipped: "skipped",
};

function card(id, title, health, ...content) {
  return el(
    "article",
    { class: "card", id, dataset: { health }, "aria-labelledby": `${id}-title` },
    el("h3", { id: `${id}-title` }, el("span", { class: "name", text: title }), " ", healthBadge(health)),
    ...content,
  );
}

function brokerCard(broker) {
  return card(
    "source-broker",
    "Broker",
    broker.health,
    definitions([
      ["State", el("strong", { class: "state", text: broker.state })],
      ["URL", el("code", { text: broker.url })],
      ...(broker.nodes?.length > 1 ? [["Node", el("code", { text: broker.node ?? "none" })]] : []),
      ["Exchange", el("code", { text: broker.exchange })],
      ["Reconnects", String(broker.reconnects)],
      ["Unconfirmed", String(broker.unconfirmed)],
      ["Last error", broker.lastError],
    ]),
  );
}

function journalCard(journal) {
  let used;
  if (journal.maxBytes && journal.bytes !== null && journal.bytes !== undefined) {
    used = el(
      "span",
      {},
      el("meter", {
        min: "0",
        max: String(journal.maxBytes),
        high: String(journal.maxBytes * 0.8),
        value: String(journal.bytes),
        "aria-label": "Journal disk used",
      }),
      ` ${bytes(journal.bytes)} of ${bytes(journal.maxBytes)}`,
    );
  } else {
    used = "no limit set (TOWER_JOURNAL_MAX_BYTES)";
  }
  return card(
    "source-journal",
    "Journal",
    journal.health,
    definitions([
      ["Pending", String(journal.pending)],
      ["Disk used", used],
      ...(journal.replica
        ? [
            [
              "Replica",
              journal.replica.live
                ? `live; took over ${journal.replica.takenOver} triggers of stopped towers`
                : `not publishing: ${journal.replica.problem ?? "heartbeat not renewed in time"}`,
            ],
          ]
        : []),
      ["Problem", journal.problem],
    ]),
  );
}

function pluginCard(plugin) {
  const lastError = plugin.lastError
    ? el("span", {}, plugin.lastError.message, " (", timeEl(plugin.lastError.at), ")")
    : null;
  const pairs = [
    ["State", el("strong", { class: "state", text: PLUGIN_STATES[plugin.state] ?? plugin.state })],
  ];
  if (plugin.reason) pairs.push(["Reason", plugin.reason]);
  // With replicas on one PostgreSQL journal, each plugin runs on one of them.
  if (plugin.leader !== undefined) {
    const leader = plugin.leader
      ? el("span", {}, el("code", { text: plugin.leader.instance }), ` (term ${plugin.leader.term})`)
      : "no replica holds it";
    pairs.push(["Leader", leader]);
  }
  pairs.push(
    ["Restarts", String(plugin.restarts)],
    ["Triggers sent", String(plugin.triggersSent)],
    ["Errors", String(plugin.errors)],
    ["Last error", lastError],
    ["Last trigger", timeEl(plugin.lastTriggerAt)],
  );
  return card(pluginId(plugin.name), `Plugin ${plugin.name}`, plugin.health, definitions(pairs));
}

export class Sources {
  constructor({ cards, overall, announcer }) {
    this.cards = cards;
    this.overall = overall;
    this.announcer = announcer;
    this.shown = new Map();
    this.health = new Map();
  }

  /** A `status` event: redraw only the cards whose data changed; announce health changes. */
  render(status) {
    this.cards.classList.remove("stale");
    this.setOverall(status);
    const wanted = [
      ["source-broker", status.broker, brokerCard, "Broker"],
      ["source-journal", status.journal, journalCard, "Journal"],
      ...(status.plugins ?? []).map((p) => [pluginId(p.name), p, pluginCard, `Plugin ${p.name}`]),
    ];
    if (this.shown.size === 0) this.cards.replaceChildren();
    const ids = new Set(wanted.map(([id]) => id));
    for (const [id] of this.shown) {
      if (!ids.has(id)) {
        document.getElementById(id)?.remove();
        this.shown.delete(id);
      }
    }
    let previous = null;
    for (const [id, data, make, label] of wanted) {
      const key = JSON.stringify(data);
      let node = document.getElementById(id);
      if (this.shown.get(id) !== key || !node) {
        const fresh = make(data);
        if (node) node.replaceWith(fresh);
        else this.cards.append(fresh);
        node = fresh;
        this.shown.set(id, key);
        this.announce(id, label, data);
      }
      // Keep the order: broker, journal, then plugins as listed.
      if (previous && previous.nextElementSibling !== node) previous.after(node);
      else if (!previous && this.cards.firstElementChild !== node) this.cards.prepend(node);
      previous = node;
    }
  }

  announce(id, label, data) {
    const before = this.health.get(id);
    this.health.set(id, data.health);
    if (before === undefined || before === data.health) return;
    const state = data.state ? ` (${data.state})` : "";
    this.announcer.textContent = `${label}: ${HEALTH_WORDS[data.health] ?? data.health}${state}`;
  }

  setOverall(status) {
    const reasons = status.reasons?.length ? ` — ${status.reasons.join("; ")}` : "";
    const name = status.instance ? ` ${status.instance}` : "";
    const text = `Tower${name} ${HEALTH_WORDS[status.health] ?? status.health}: ${status.ready ? "ready" : "not ready"}${reasons}`;
    if (this.overall.dataset.health !== status.health) this.overall.dataset.health = status.health;
    const icon = this.overall.querySelector(".icon");
    icon.textContent = { green: "✓", amber: "!", red: "✕" }[status.health] ?? "?";
    const span = this.overall.querySelector(".text");
    if (span.textContent !== text) span.textContent = text;
  }

  /** The stream is down: what is shown may be out of date. */
  stale() {
    this.cards.classList.add("stale");
    this.overall.dataset.health = "unknown";
    this.overall.querySelector(".icon").textContent = "?";
    this.overall.querySelector(".text").textContent = "Tower status unknown: reconnecting…";
  }
}
