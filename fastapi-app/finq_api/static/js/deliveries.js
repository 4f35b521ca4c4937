// The notifications of one task (webhook, e-mail) on its page, followed until they settle.
import { $, el, fmtTime } from "./dom.js";
import { API, api, state } from "./session.js";
import { FINAL } from "./tasks.js";

const SETTLED = new Set(["delivered", "failed", "refused", "skipped"]);

function deliveriesSettled(t) {
  if (!t.notify || !FINAL.has(t.status)) return true;
  const channels = [
    ["webhook", "webhook_url"],
    ["email", "email"],
  ].filter(([, key]) => t.notify[key]);
  return channels.every(([channel]) =>
    (t.deliveries || []).some(
      (d) => d.channel === channel && d.task_status === t.status && SETTLED.has(d.status),
    ),
  );
}

export function renderDeliveries(t) {
  $("#task-deliveries-card").hidden = !t.notify;
  const rows = (t.deliveries || []).map((d) =>
    el(
      "tr",
      { "data-delivery": d.status },
      el("td", {}, d.channel),
      el("td", { class: "wrap" }, d.target),
      el("td", {}, d.task_status),
      el("td", { class: "num" }, String(d.attempt)),
      el("td", {}, el("span", { class: `badge d-${d.status}` }, d.status)),
      el(
        "td",
        { class: "wrap" },
        [d.http_status ? `HTTP ${d.http_status}` : "", d.error || ""].filter(Boolean).join(" · ") ||
          "—",
      ),
      el("td", {}, fmtTime(d.at)),
    ),
  );
  $("#task-deliveries tbody").replaceChildren(...rows);
  $("#task-deliveries-empty").hidden = rows.length > 0;
}

// Deliveries happen after the final status (and retry with backoff): follow them for a while,
// reading the task without its params and result (`include=deliveries`).
export function watchDeliveries(id, t, polls = 60) {
  if (state.deliveryTimer) clearTimeout(state.deliveryTimer);
  if (deliveriesSettled(t) || polls <= 0) return;
  state.deliveryTimer = setTimeout(async () => {
    state.deliveryTimer = null;
    if (location.hash !== `#/tasks/${id}`) return;
    const r = await api(`${API}/tasks/${id}?include=deliveries`);
    if (!r.ok) return;
    const fresh = await r.json();
    renderDeliveries(fresh);
    watchDeliveries(id, fresh, polls - 1);
  }, 1500);
}
