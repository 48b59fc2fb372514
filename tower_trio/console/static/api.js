// Calls to the tower: JSON in and out, the CSRF header on every POST.

const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";
const listeners = new Set();

/** Calls `callback` when the tower says the session is no longer valid (401). */
export function onUnauthorized(callback) {
  listeners.add(callback);
}

/** `{ok, status, data, headers}`; `data` is the decoded JSON body (or an error object). */
export async function call(method, url, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    return {
      ok: false,
      status: 0,
      data: { error: "the tower did not answer", details: [String(err)] },
      headers: new Headers(),
    };
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { error: text.slice(0, 300), details: [] };
    }
  }
  if (response.status === 401) for (const callback of listeners) callback();
  return { ok: response.ok, status: response.status, data, headers: response.headers };
}

export const get = (url) => call("GET", url);
export const post = (url, body) => call("POST", url, body);

/** "error: detail; detail" from an error body. */
export function describeError(result) {
  const data = result.data ?? {};
  const details = (data.details ?? []).map((d) =>
    typeof d === "string" ? d : d.field ? `${d.field}: ${d.message}` : JSON.stringify(d),
  );
  const head = data.error ?? `HTTP ${result.status}`;
  return details.length ? `${head}: ${details.join("; ")}` : head;
}
