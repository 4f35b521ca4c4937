// Errors beside the fields of a form (the submit form, the account form).
import { $ } from "./dom.js";

export function clearErrors(form = $("#submit-form")) {
  for (const p of form.querySelectorAll("[data-error-for]")) {
    p.hidden = true;
    p.textContent = "";
  }
  for (const i of form.querySelectorAll("[aria-invalid]")) i.removeAttribute("aria-invalid");
  for (const p of form.querySelectorAll(".error[role=alert]")) p.hidden = true;
}

export function fieldError(name, message) {
  const p = document.querySelector(`[data-error-for="${CSS.escape(name)}"]`);
  const input =
    document.getElementById(`param-${name}`) ||
    document.querySelector(`[data-field="${CSS.escape(name)}"]`) ||
    document.getElementById(name.replace("_", "-"));
  if (input) input.setAttribute("aria-invalid", "true");
  if (p) {
    p.textContent = message;
    p.hidden = false;
    return true;
  }
  return false;
}

// A 422's errors beside their fields (`fieldOf` maps an error's loc to a field name); returns
// the messages that have no field on the page.
export function showFieldErrors(detail, fieldOf) {
  const general = [];
  for (const e of detail)
    if (!fieldError(String(fieldOf(e.loc)), e.msg)) general.push(`${e.loc.join(".")}: ${e.msg}`);
  return general;
}

export function formError(box, text) {
  box.textContent = text;
  box.hidden = !text;
}
