// The accounts screen (admins): every account, a form for a new one, deletion.
import { $, deleteButton, el, flash, fmtTime } from "./dom.js";
import { clearErrors, fieldError, formError, showFieldErrors } from "./form-errors.js";
import { API, api, errorText, state } from "./session.js";

const USERNAME = /^[A-Za-z0-9_.-]{3,64}$/;

export async function showAccounts() {
  const resp = await api(`${API}/users`);
  if (!resp.ok) {
    flash(await errorText(resp));
    return;
  }
  const users = await resp.json();
  $("#account-table tbody").replaceChildren(
    ...users.map((u) =>
      el(
        "tr",
        { "data-user": u.username },
        el(
          "td",
          { class: "wrap" },
          u.username,
          u.username === state.me.username ? el("span", { class: "muted" }, " (you)") : "",
        ),
        el("td", {}, u.role),
        el("td", {}, fmtTime(u.created_at)),
        el(
          "td",
          {},
          deleteButton(`Delete account ${u.username}`, async () => {
            if (!window.confirm(`Delete the account “${u.username}”? They can no longer log in.`))
              return;
            const r = await api(`${API}/users/${encodeURIComponent(u.username)}`, {
              method: "DELETE",
            });
            flash(r.ok ? `Deleted the account “${u.username}”.` : await errorText(r));
            await showAccounts();
          }),
        ),
      ),
    ),
  );
}

export async function createAccount(event) {
  event.preventDefault();
  const form = $("#account-form");
  clearErrors(form);
  const body = {
    username: $("#account-username").value.trim(),
    password: $("#account-password").value,
    role: $("#account-role").value,
  };
  const problems = [];
  if (!USERNAME.test(body.username))
    problems.push(["account.username", "3 to 64 letters, digits, “_”, “.” or “-”"]);
  if (body.password.length < 12) problems.push(["account.password", "at least 12 characters"]);
  for (const [name, msg] of problems) fieldError(name, msg);
  if (problems.length) return;
  const resp = await api(`${API}/users`, { method: "POST", json: body });
  if (resp.status === 201) {
    flash(`Created the account “${body.username}” (${body.role}).`);
    form.reset();
    await showAccounts();
    return;
  }
  // 409: the name is taken (ignoring case) or was a deleted account's; both name their field.
  if (resp.status === 409 || resp.status === 422) {
    const general = showFieldErrors((await resp.json()).detail, (loc) => `account.${loc[1]}`);
    if (general.length) formError($("#account-error"), general.join("; "));
    return;
  }
  formError($("#account-error"), await errorText(resp));
}
