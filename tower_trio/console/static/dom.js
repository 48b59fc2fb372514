// Small DOM helpers shared by the console's modules: elements, times, badges.

/** An element with attributes (or `class`, `text`, `dataset`, `on<event>`) and children. */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const pad = (n) => String(n).padStart(2, "0");
const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;

/** `2025-03-01 14:05:09`, in the browser's time zone. */
export function localTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
  );
}

/** A `<time>` for an RFC 3339 string, shown in the browser's time zone; a dash for none. */
export function timeEl(iso) {
  if (!iso) return el("span", { class: "none", text: "—" });
  return el("time", { datetime: iso, title: `${iso} (shown in ${zone})`, text: localTime(iso) });
}

const STATUS_ICONS = { pending: "○", published: "✓", unroutable: "↯", failed: "✕" };

/** A delivery status as an icon and its word (colour is never the only signal). */
export function statusBadge(status, title) {
  return el(
    "span",
    { class: "status", dataset: { status }, title },
    el("span", { class: "icon", "aria-hidden": "true", text: STATUS_ICONS[status] ?? "?" }),
    el("span", { class: "word", text: status }),
  );
}

export const HEALTH_WORDS = { green: "OK", amber: "Warning", red: "Problem", off: "Not running" };
const HEALTH_ICONS = { green: "✓", amber: "!", red: "✕", off: "–" };

/** A red/amber/green health as an icon and a word. */
export function healthBadge(health) {
  return el(
    "span",
    { class: "health", dataset: { health } },
    el("span", { class: "icon", "aria-hidden": "true", text: HEALTH_ICONS[health] ?? "?" }),
    el("span", { class: "text", text: HEALTH_WORDS[health] ?? "Unknown" }),
  );
}

/** A `<dl>` from [term, description] pairs; descriptions may be nodes or text. */
export function definitions(pairs, className = "facts") {
  return el(
    "dl",
    { class: className },
    pairs.flatMap(([term, description]) => [
      el("dt", { text: term }),
      el("dd", {}, description ?? el("span", { class: "none", text: "—" })),
    ]),
  );
}

/** Pretty JSON in a scrollable, focusable block. */
export function jsonBlock(value, label) {
  return el("pre", { class: "json", tabindex: "0", "aria-label": label }, JSON.stringify(value, null, 2));
}
