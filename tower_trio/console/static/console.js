// The console page: wires the feed, the detail dialog, the sources panel and the send form
// to the tower's Server-Sent Events and to the URL (filters in the query, detail in the hash).

import { onUnauthorized, post } from "./api.js";
import { el } from "./dom.js";
import { Detail } from "./detail.js";
import { FILTERS, Feed } from "./feed.js";
import { SendForm } from "./send.js";
import { Sources } from "./sources.js";

const $ = (id) => document.getElementById(id);
const UUID = /^[0-9a-f]{32}$/;

/** `0f…` from a uuid typed with or without dashes, or null. */
function asUuid(text) {
  const hex = text.trim().toLowerCase().replaceAll("-", "");
  return UUID.test(hex) ? hex : null;
}

const feed = new Feed({
  table: $("triggers"),
  more: $("more"),
  empty: $("empty"),
  cap: $("cap"),
  note: $("feed-note"),
  lists: { apiVersion: $("known-devices"), protocol: $("known-protocols"), source: $("known-sources") },
});
const sources = new Sources({ cards: $("source-cards"), overall: $("overall"), announcer: $("announcer") });
const detail = new Detail($("detail"), {
  onClosed: () => {
    if (location.hash.startsWith("#/triggers/")) {
      history.pushState(null, "", location.pathname + location.search);
    }
  },
});
const send = new SendForm($("send-form"), {});

// --- filters and search, kept in the URL's query so a view can be linked -----------------

const filterForm = $("filters");
const searchInput = $("q");

function filtersFromUrl() {
  const params = new URLSearchParams(location.search);
  return Object.fromEntries(FILTERS.filter((name) => params.get(name)).map((name) => [name, params.get(name)]));
}

function showFilters(filters) {
  for (const control of filterForm.elements) {
    if (control.name) control.value = filters[control.name] ?? "";
  }
  if (filters.key) searchInput.value = filters.key;
}

function applyFilters(filters) {
  const params = new URLSearchParams(filters);
  const query = params.toString();
  history.replaceState(null, "", `${location.pathname}${query ? `?${query}` : ""}${location.hash}`);
  return feed.setFilters(filters);
}

function formFilters() {
  const filters = {};
  for (const control of filterForm.elements) {
    if (control.name && control.value.trim()) filters[control.name] = control.value.trim();
  }
  if (feed.filters.key) filters.key = feed.filters.key;
  return filters;
}

filterForm.addEventListener("submit", (event) => {
  event.preventDefault();
  applyFilters(formFilters());
});
filterForm.addEventListener("change", (event) => {
  if (event.target.tagName === "SELECT") applyFilters(formFilters());
});
filterForm.addEventListener("reset", () => {
  searchInput.value = "";
  $("search-note").textContent = "";
  // After the browser has emptied the controls.
  setTimeout(() => applyFilters({}), 0);
});

$("search").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = searchInput.value.trim();
  const note = $("search-note");
  const uuid = asUuid(text);
  const filters = formFilters();
  delete filters.key;
  if (uuid) {
    note.textContent = `Opening trigger ${uuid}.`;
    location.hash = `#/triggers/${uuid}`;
    return;
  }
  if (text) {
    filters.key = text;
    note.textContent = `Showing the trigger sent with Idempotency-Key “${text}”. Empty the box and press Find to see all.`;
  } else {
    note.textContent = "";
  }
  applyFilters(filters);
});

// --- the detail dialog follows the hash: #/triggers/<uuid> ------------------------------

function route() {
  const match = /^#\/triggers\/([0-9a-fA-F]{32})$/.exec(location.hash);
  if (match) detail.open(match[1].toLowerCase());
  else detail.close();
}
window.addEventListener("hashchange", route);

// --- session ----------------------------------------------------------------------------

$("sign-out")?.addEventListener("click", async () => {
  await post("/console/logout");
  location.reload();
});

let sessionEnded = false;
onUnauthorized(() => {
  if (sessionEnded) return;
  sessionEnded = true;
  document.body.prepend(
    el(
      "p",
      { class: "alert banner", role: "alert" },
      "Your session has ended. ",
      el("a", { href: location.pathname }, "Sign in again"),
      ".",
    ),
  );
});

// --- the live stream ----------------------------------------------------------------------

const stream = $("stream");
function streamState(state, text) {
  stream.dataset.state = state;
  stream.textContent = text;
}

function connect() {
  const events = new EventSource("/console/events");
  let opened = false;
  events.addEventListener("open", () => {
    opened = true;
    streamState("live", "Live: updates as they happen.");
    // On every (re)connect: whatever happened while away is in the listing.
    feed.load();
  });
  events.addEventListener("error", () => {
    sources.stale();
    if (events.readyState === EventSource.CLOSED) {
      streamState("closed", "Live updates stopped; reload the page to resume.");
    } else {
      streamState("reconnecting", "Reconnecting to the tower…");
    }
    if (!opened) {
      // The page is still useful without the stream.
      opened = true;
      feed.load();
    }
  });
  events.addEventListener("status", (event) => sources.render(JSON.parse(event.data)));
  events.addEventListener("trigger", (event) => {
    const row = JSON.parse(event.data);
    feed.apply(row);
    detail.onTrigger(row);
  });
  events.addEventListener("resync", () => feed.load());
}

const initial = filtersFromUrl();
showFilters(initial);
// On a phone the filters start folded away, unless the URL sets some.
if (window.matchMedia("(max-width: 640px)").matches && !Object.keys(initial).length) {
  $("finder").open = false;
}
feed.filters = initial;
connect();
send.init();
route();
