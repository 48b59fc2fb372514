// Well plates: names (column-first indexing, as the message format) and a keyboard-operable grid.

/** Row letters: A … Z, then AA, AB, … (a 1536-well plate has 32 rows). */
export function rowLabel(row) {
  let label = "";
  for (let n = row + 1; n > 0; n = Math.floor((n - 1) / 26)) {
    label = String.fromCharCode(65 + ((n - 1) % 26)) + label;
  }
  return label;
}

/** The name of well `index` on a plate of `rows` rows: A1 = 0, B1 = 1, … (column-first). */
export function wellName(index, rows) {
  return `${rowLabel(index % rows)}${Math.floor(index / rows) + 1}`;
}

/** A spec as one short line, for titles and labels. */
export function specSummary(spec) {
  if (spec === undefined) return "no spec";
  const text = JSON.stringify(spec);
  return text.length > 200 ? `${text.slice(0, 199)}…` : text;
}

/**
 * A table of wells, rows × columns, one button per well.
 *
 * One well is in the tab order at a time; the arrow keys, Home and End move
 * between wells. Hovering or focusing a well calls `onShow(index)`; clicking
 * it (or Enter/Space) calls `onActivate(index, button)`. `describe(index)`
 * gives the well's accessible description and tooltip; `mark(index)` its
 * visible mark ("●" for a well with a spec, "○" for an empty one).
 */
export function wellGrid({ rows, columns, caption, describe, mark, onShow, onActivate, pressed }) {
  const buttons = [];
  const table = document.createElement("table");
  table.className = "wells";
  const cap = table.createCaption();
  cap.textContent = caption;
  const head = table.createTHead().insertRow();
  head.append(document.createElement("td"));
  for (let c = 0; c < columns; c += 1) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = String(c + 1);
    head.append(th);
  }
  const body = table.createTBody();
  for (let r = 0; r < rows; r += 1) {
    const tr = body.insertRow();
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = rowLabel(r);
    tr.append(th);
    for (let c = 0; c < columns; c += 1) {
      const index = c * rows + r;
      const button = document.createElement("button");
      button.type = "button";
      button.className = "well";
      button.dataset.well = wellName(index, rows);
      button.dataset.index = String(index);
      button.tabIndex = index === 0 ? 0 : -1;
      if (pressed) button.setAttribute("aria-pressed", "false");
      tr.insertCell().append(button);
      buttons[index] = button;
    }
  }

  function refresh(index) {
    const button = buttons[index];
    const name = wellName(index, rows);
    const description = describe(index);
    button.textContent = mark(index);
    button.title = `${name}: ${description}`;
    button.setAttribute("aria-label", `${name}, well ${index}: ${description}`);
  }
  buttons.forEach((_, index) => refresh(index));

  function focusWell(index) {
    for (const b of buttons) b.tabIndex = -1;
    buttons[index].tabIndex = 0;
    buttons[index].focus();
  }

  table.addEventListener("keydown", (event) => {
    const button = event.target.closest("button.well");
    if (!button) return;
    const index = Number(button.dataset.index);
    let r = index % rows;
    let c = Math.floor(index / rows);
    switch (event.key) {
      case "ArrowUp": r = Math.max(0, r - 1); break;
      case "ArrowDown": r = Math.min(rows - 1, r + 1); break;
      case "ArrowLeft": c = Math.max(0, c - 1); break;
      case "ArrowRight": c = Math.min(columns - 1, c + 1); break;
      case "Home": c = 0; break;
      case "End": c = columns - 1; break;
      default: return;
    }
    event.preventDefault();
    focusWell(c * rows + r);
  });
  const show = (event) => {
    const button = event.target.closest?.("button.well");
    if (button) onShow(Number(button.dataset.index));
  };
  table.addEventListener("focusin", show);
  table.addEventListener("mouseover", show);
  table.addEventListener("click", (event) => {
    const button = event.target.closest("button.well");
    if (!button) return;
    const index = Number(button.dataset.index);
    for (const b of buttons) b.tabIndex = -1;
    button.tabIndex = 0;
    onActivate?.(index, button);
    onShow(index);
  });
  return { table, buttons, refresh };
}
