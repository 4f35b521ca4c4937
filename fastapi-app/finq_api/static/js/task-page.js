// One task's page: status, timeline, parameters, result tables and chart, its buttons, and
// its live status through Server-Sent Events.
import { renderDeliveries, watchDeliveries } from "./deliveries.js";
import { $, el, flash, fmtTime } from "./dom.js";
import { API, api, closeStreams, errorText, state } from "./session.js";
import { FINAL, stream } from "./tasks.js";

function valueCell(v) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "number")
    return Number.isInteger(v) ? String(v) : v.toPrecision(8).replace(/\.?0+$/, "");
  if (Array.isArray(v))
    return v.length > 12
      ? `${v.slice(0, 12).map(valueCell).join(", ")}, … (${v.length})`
      : v.map(valueCell).join(", ");
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

// A list of records: shown as a table of its own, not as one value of the key/value table.
function isRecords(v) {
  return (
    Array.isArray(v) &&
    v.length &&
    typeof v[0] === "object" &&
    v[0] !== null &&
    !Array.isArray(v[0])
  );
}

function kvTable(obj) {
  const table = el("table");
  for (const [k, v] of Object.entries(obj || {})) {
    if (isRecords(v)) continue;
    table.append(
      el(
        "tr",
        {},
        el("th", { scope: "row" }, k),
        el("td", { class: typeof v === "number" ? "num" : "" }, valueCell(v)),
      ),
    );
  }
  return table;
}

function rowsTable(name, rows) {
  const cols = Object.keys(rows[0]);
  const shown = rows.slice(0, 500);
  return el(
    "div",
    {},
    el(
      "h4",
      {},
      `${name} (${rows.length} rows${rows.length > shown.length ? ", first 500 shown" : ""})`,
    ),
    el(
      "table",
      {},
      el("thead", {}, el("tr", {}, ...cols.map((c) => el("th", { scope: "col" }, c)))),
      el(
        "tbody",
        {},
        ...shown.map((r) =>
          el("tr", {}, ...cols.map((c) => el("td", { class: "num" }, valueCell(r[c])))),
        ),
      ),
    ),
  );
}

export async function showTask(id) {
  closeStreams();
  const resp = await api(`${API}/tasks/${id}`);
  if (!resp.ok) {
    flash(await errorText(resp));
    location.hash = "#/tasks";
    return;
  }
  const task = await resp.json();
  $("#task-title").textContent = `${task.type} · ${task.id}`;
  const render = async (t) => {
    $("#task-status").textContent = t.status;
    $("#task-status").className = `badge s-${t.status}`;
    $("#task-attempts").textContent = `attempt ${t.attempts}, priority ${t.priority}`;
    $("#task-progress").value = t.progress ?? 0;
    $("#task-progress-text").textContent =
      `${Math.round((t.progress ?? 0) * 100)}%${t.progress_message ? ` · ${t.progress_message}` : ""}`;
    $("#task-cancel").hidden = FINAL.has(t.status);
    $("#task-retry").hidden = !(t.status === "FAILED" || t.status === "CANCELLED");
    $("#task-delete").hidden = !FINAL.has(t.status);
    const err = $("#task-error");
    err.hidden = !t.error;
    err.textContent = t.error ? `${t.error.type}: ${t.error.message}` : "";
    const hist = await (await api(`${API}/tasks/${id}/history`)).json();
    $("#task-timeline").replaceChildren(
      ...hist.map((e) =>
        el("li", {}, `${fmtTime(e.at)} — ${e.status}${e.message ? ` (${e.message})` : ""}`),
      ),
    );
  };
  await render(task);
  renderDeliveries(task);
  $("#task-deliveries-refresh").onclick = async () => {
    const r = await api(`${API}/tasks/${id}?include=deliveries`);
    if (r.ok) renderDeliveries(await r.json());
  };
  if (FINAL.has(task.status)) watchDeliveries(id, task);
  $("#task-params").replaceChildren(...kvTable(task.params).childNodes);
  const showResult = async (t) => {
    const box = $("#task-result");
    if (!t.result && !t.result_truncated) {
      box.replaceChildren(el("p", { class: "muted" }, "No result yet."));
      return;
    }
    // A result too big for the task view carries its scalar fields only: read the whole.
    let result = t.result;
    if (t.result_truncated && t.result_url) {
      box.replaceChildren(el("p", { class: "muted" }, "Loading the result…"));
      const whole = await api(t.result_url);
      if (!whole.ok) {
        box.replaceChildren(el("p", { class: "muted" }, await errorText(whole)));
        return;
      }
      result = await whole.json();
    }
    const parts = [kvTable(result)];
    for (const [k, v] of Object.entries(result)) {
      if (isRecords(v)) parts.push(rowsTable(k, v));
    }
    box.replaceChildren(...parts);
    // A worker draws the chart when it is first asked for (202 until then): ask again with a
    // growing pause until it exists, for as long as this task is on screen. 404: none.
    if (t.status !== "SUCCESS") return;
    for (
      let attempt = 0, pause = 300;
      attempt < 40;
      attempt += 1, pause = Math.min(pause * 1.5, 5000)
    ) {
      if (location.hash !== `#/tasks/${id}`) return;
      const chart = await api(`${API}/tasks/${id}/chart.png`);
      if (chart.status === 200) {
        $("#task-chart").src = URL.createObjectURL(await chart.blob());
        $("#task-chart-card").hidden = false;
        return;
      }
      if (chart.status !== 202) return;
      await new Promise((resolve) => {
        setTimeout(resolve, pause);
      });
    }
  };
  $("#task-chart-card").hidden = true;
  await showResult(task);
  $("#task-cancel").onclick = async () => {
    const r = await api(`${API}/tasks/${id}/cancel`, { method: "POST" });
    flash(r.ok ? "Cancel requested." : await errorText(r));
    if (r.ok) await render(await r.json());
  };
  $("#task-retry").onclick = async () => {
    const r = await api(`${API}/tasks/${id}/retry`, { method: "POST" });
    flash(r.ok ? "Queued again." : await errorText(r));
    if (r.ok) showTask(id);
  };
  if (!FINAL.has(task.status)) {
    state.taskStream = stream(id, async (d) => {
      $("#task-progress").value = d.progress ?? 0;
      $("#task-progress-text").textContent =
        `${Math.round((d.progress ?? 0) * 100)}%${d.message ? ` · ${d.message}` : ""}`;
      $("#task-status").textContent = d.status;
      $("#task-status").className = `badge s-${d.status}`;
      if (FINAL.has(d.status)) {
        const fresh = await (await api(`${API}/tasks/${id}`)).json();
        await render(fresh);
        await showResult(fresh);
        renderDeliveries(fresh);
        watchDeliveries(id, fresh);
      }
    });
  }
}
