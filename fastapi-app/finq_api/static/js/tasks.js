// The task list: filters, pages, per-row actions, and each unfinished task's live status
// through Server-Sent Events.
import { $, actionButton, deleteButton, el, flash, fmtTime } from "./dom.js";
import { API, api, closeStreams, errorText, state } from "./session.js";

export const FINAL = new Set(["SUCCESS", "FAILED", "CANCELLED"]);

// Calls onChange with each change of one task until it reaches a final status. Each
// connection opens with a fresh single-use ticket (a token never goes into a URL); when the
// server ends the stream (STREAM_MAX_SECONDS) or it breaks, a new ticket and connection
// follow after a pause. Returns a handle whose close() stops it all.
export function stream(taskId, onChange) {
  let source = null;
  let timer = null;
  let closed = false;
  let pause = 1000;
  const reconnect = () => {
    if (source) source.close();
    source = null;
    if (!closed) timer = setTimeout(open, pause);
    pause = Math.min(pause * 2, 30000);
  };
  const open = async () => {
    timer = null;
    let resp;
    try {
      resp = await api(`${API}/tasks/${taskId}/events/ticket`, { method: "POST" });
    } catch (_) {
      resp = null;
    }
    if (closed || resp?.status === 401 || resp?.status === 404) return;
    if (!resp?.ok) {
      reconnect();
      return;
    }
    const { ticket } = await resp.json();
    source = new EventSource(`${API}/tasks/${taskId}/events?ticket=${encodeURIComponent(ticket)}`);
    source.addEventListener("task", (ev) => {
      pause = 1000;
      const data = JSON.parse(ev.data);
      onChange(data);
      if (FINAL.has(data.status)) handle.close();
    });
    // A ticket opens one connection: EventSource's own retry would reuse it.
    source.onerror = reconnect;
  };
  const handle = {
    close() {
      closed = true;
      if (timer) clearTimeout(timer);
      if (source) source.close();
    },
  };
  open();
  return handle;
}

function actions(task, refresh) {
  const box = el("div", { class: "actions" });
  if (!FINAL.has(task.status)) {
    box.append(
      actionButton("cancel", "Cancel", async () => {
        const r = await api(`${API}/tasks/${task.id}/cancel`, { method: "POST" });
        flash(r.ok ? `Cancel requested for ${task.id}.` : await errorText(r));
        refresh();
      }),
    );
  }
  if (task.status === "FAILED" || task.status === "CANCELLED") {
    box.append(
      actionButton("retry", "Retry", async () => {
        const r = await api(`${API}/tasks/${task.id}/retry`, { method: "POST" });
        flash(r.ok ? `Task ${task.id} queued again.` : await errorText(r));
        refresh();
      }),
    );
  }
  if (FINAL.has(task.status)) {
    box.append(
      deleteButton(`Delete task ${task.id}`, async () => {
        if ((await deleteTask(task.id)) !== null) refresh();
      }),
    );
  }
  return box;
}

// Deletes a finished task after asking; true when deleted, false when the API refused (its
// reason is in the flash), null when the user changed their mind.
export async function deleteTask(id) {
  if (
    !window.confirm(
      `Delete task ${id}? Its record, timeline, result and chart are removed for good.`,
    )
  )
    return null;
  const r = await api(`${API}/tasks/${id}`, { method: "DELETE" });
  flash(r.ok ? `Task ${id} deleted.` : await errorText(r));
  return r.ok;
}

export async function loadTasks() {
  closeStreams();
  const q = new URLSearchParams({ limit: "20" });
  for (const [key, id] of [
    ["status", "#filter-status"],
    ["type", "#filter-type"],
  ])
    if ($(id).value) q.set(key, $(id).value);
  if ($("#filter-after").value)
    q.set("created_after", new Date($("#filter-after").value).toISOString());
  if ($("#filter-before").value)
    q.set("created_before", new Date($("#filter-before").value).toISOString());
  const cursor = state.cursors[state.page];
  if (cursor) q.set("cursor", cursor);
  const resp = await api(`${API}/tasks?${q}`);
  if (!resp.ok) {
    flash(await errorText(resp));
    return;
  }
  const page = await resp.json();
  const body = $("#task-table tbody");
  body.replaceChildren();
  for (const task of page.items) {
    const bar = el("progress", {
      max: "1",
      value: String(task.progress),
      "aria-label": `progress of ${task.id}`,
    });
    const badge = el("span", { class: `badge s-${task.status}` }, task.status);
    const acts = el("td", {}, actions(task, loadTasks));
    const row = el(
      "tr",
      { "data-task": task.id },
      el("td", {}, el("a", { href: `#/tasks/${task.id}` }, fmtTime(task.created_at))),
      el("td", {}, task.type),
      el("td", {}, task.priority),
      el("td", {}, badge),
      el("td", {}, bar),
      acts,
    );
    body.append(row);
    if (!FINAL.has(task.status)) {
      state.streams.set(
        task.id,
        stream(task.id, (d) => {
          badge.textContent = d.status;
          badge.className = `badge s-${d.status}`;
          bar.value = d.progress ?? bar.value;
          if (FINAL.has(d.status))
            acts.replaceChildren(actions({ ...task, status: d.status }, loadTasks));
        }),
      );
    }
  }
  $("#tasks-empty").hidden = page.items.length > 0;
  state.cursors[state.page + 1] = page.next_cursor;
  $("#page-next").disabled = !page.next_cursor;
  $("#page-prev").disabled = state.page === 0;
}
