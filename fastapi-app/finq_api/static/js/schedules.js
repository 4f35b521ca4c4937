// The schedules screen: the user's recurring tasks (an admin may list everyone's).
import { $, deleteButton, el, flash, fmtTime } from "./dom.js";
import { API, api, errorText, isAdmin } from "./session.js";

function notifyText(n) {
  return n ? [n.webhook_url, n.email].filter(Boolean).join(", ") : "—";
}

// Runs the beat skipped (a quota, the submit limit, the minimum interval), under the last run.
const SKIP_REASONS = {
  queued_tasks: "queued-tasks quota full",
  result_bytes: "stored results over quota",
  rate_limit: "submit limit reached",
  interval: "too soon after the last run",
};

function skippedText(s) {
  if (!s.skipped_count) return "";
  const why = SKIP_REASONS[s.last_skip_reason] || s.last_skip_reason;
  return el(
    "span",
    { class: "muted skipped", title: s.last_skipped_at || "" },
    ` · ${s.skipped_count} skipped, last ${fmtTime(s.last_skipped_at)}: ${why}`,
  );
}

export async function showSchedules() {
  const all = isAdmin() && $("#schedules-all").checked;
  const resp = await api(`${API}/schedules${all ? "?all=true" : ""}`);
  if (!resp.ok) {
    flash(await errorText(resp));
    return;
  }
  const items = await resp.json();
  $("#schedule-table tbody").replaceChildren(
    ...items.map((s) =>
      el(
        "tr",
        { "data-schedule": s.id },
        el(
          "td",
          { class: "wrap" },
          s.name,
          all ? el("span", { class: "muted" }, ` · ${s.owner}`) : "",
        ),
        el("td", {}, el("code", {}, s.cron)),
        el("td", {}, s.type),
        el("td", {}, s.priority),
        el("td", { title: s.next_run_at }, fmtTime(s.next_run_at)),
        el("td", { title: s.last_run_at || "" }, fmtTime(s.last_run_at), skippedText(s)),
        el("td", {}, fmtTime(s.created_at)),
        el("td", { class: "wrap" }, notifyText(s.notify)),
        el(
          "td",
          {},
          deleteButton(`Delete schedule ${s.name}`, async () => {
            if (
              !window.confirm(
                `Delete the schedule “${s.name}”? The tasks it already created are kept.`,
              )
            )
              return;
            const r = await api(`${API}/schedules/${s.id}`, { method: "DELETE" });
            flash(r.ok ? `Deleted the schedule “${s.name}”.` : await errorText(r));
            await showSchedules();
          }),
        ),
      ),
    ),
  );
  $("#schedules-empty").hidden = items.length > 0;
}
