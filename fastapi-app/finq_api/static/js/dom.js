// Page helpers shared by every screen: element lookup and creation, the flash line, which
// view is shown, and how times are written.

const VIEWS = ["login", "submit", "tasks", "task", "batches", "uploads", "schedules", "accounts"];

export const $ = (sel) => document.querySelector(sel);

export function flash(text) {
  const el = $("#flash");
  el.textContent = text;
  el.hidden = !text;
}

export function show(view) {
  for (const id of VIEWS) $(`#view-${id}`).hidden = id !== view;
  $("#nav").hidden = view === "login";
  for (const link of $("#nav").querySelectorAll("a")) {
    if (link.id === `nav-${view === "task" ? "tasks" : view}`)
      link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

export function fmtTime(iso) {
  return iso ? new Date(iso).toLocaleString() : "—";
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

// A table row's secondary button, named by data-action (and aria-label when `text` is not enough).
export function actionButton(action, text, onclick, label) {
  return el(
    "button",
    { type: "button", class: "secondary", "data-action": action, "aria-label": label, onclick },
    text,
  );
}

// A table row's "Delete" button; `label` says what it deletes.
export function deleteButton(label, onclick) {
  return actionButton("delete", "Delete", onclick, label);
}
