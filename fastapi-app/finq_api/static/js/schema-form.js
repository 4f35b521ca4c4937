// The submit form's parameter fields, generated from the chosen task type's JSON schema, and
// their values read back into the task's params.
import { $, el } from "./dom.js";
import { state } from "./session.js";
import { fillUploadSelect } from "./uploads.js";

function resolve(schema, root) {
  if (schema?.$ref) return root.$defs[schema.$ref.split("/").pop()];
  return schema;
}

function fieldKind(prop) {
  if (prop.enum) return "enum";
  if (prop.format === "uuid") return "upload";
  const types = (prop.anyOf || [prop]).map((s) => s.type).filter(Boolean);
  if (types.includes("array")) {
    const arr = (prop.anyOf || [prop]).find((s) => s.type === "array");
    if (arr?.items && (arr.items.type === "array" || arr.items.anyOf)) return "json";
    if (arr?.items?.enum || arr?.items?.type === "string") return "choice-or-list";
    return types.includes("number") || types.includes("integer") ? "number-or-list" : "list";
  }
  if (types.includes("integer")) return "integer";
  if (types.includes("number")) return "number";
  if (types.includes("boolean")) return "boolean";
  return "text";
}

function bounds(prop) {
  const s = (prop.anyOf || [prop]).find((x) => x.type === "number" || x.type === "integer") || prop;
  return { min: s.minimum ?? s.exclusiveMinimum, max: s.maximum ?? s.exclusiveMaximum };
}

// The allowed values of a choice-or-list field ([] for free text such as dates).
function choices(prop) {
  return (prop.anyOf || []).find((s) => s.enum)?.enum || [];
}

function choiceHint(prop) {
  const allowed = choices(prop);
  const date = (prop.anyOf || []).some((s) => s.format === "date");
  const one = allowed.length
    ? `One of ${allowed.join(", ")}`
    : date
      ? "A date (YYYY-MM-DD)"
      : "A value";
  return `${one}, or a comma-separated list.`;
}

export function buildForm() {
  const type = state.types.find((t) => t.name === $("#task-type").value);
  const box = $("#param-fields");
  box.replaceChildren(el("legend", {}, "Parameters"));
  if (!type) return;
  $("#task-type-help").textContent = type.description || type.title;
  const schema = type.params_schema;
  const required = new Set(schema.required || []);
  for (const [name, raw] of Object.entries(schema.properties || {})) {
    const prop = resolve(raw, schema);
    const id = `param-${name}`;
    const kind = fieldKind(prop);
    const example = type.example[name] ?? prop.default;
    let input;
    if (kind === "upload") {
      input = el("select", { id, name, "aria-describedby": `${id}-help` });
      fillUploadSelect(input, null);
    } else if (kind === "enum") {
      input = el("select", { id, name });
      for (const v of prop.enum) input.append(el("option", { value: v }, v));
      if (example !== undefined) input.value = example;
    } else if (kind === "boolean") {
      input = el("input", { id, name, type: "checkbox" });
      input.checked = Boolean(example);
    } else if (kind === "json") {
      input = el("textarea", { id, name, "aria-describedby": `${id}-help` });
      if (example !== undefined) input.value = JSON.stringify(example);
    } else if (kind === "number" || kind === "integer") {
      const b = bounds(prop);
      input = el("input", {
        id,
        name,
        type: "number",
        step: kind === "integer" ? "1" : "any",
        min: b.min,
        max: b.max,
        "aria-describedby": `${id}-help`,
      });
      if (example !== undefined && example !== null) input.value = example;
    } else {
      input = el("input", { id, name, "aria-describedby": `${id}-help` });
      if (example !== undefined && example !== null)
        input.value = Array.isArray(example) ? example.join(", ") : example;
    }
    input.dataset.kind = kind;
    if (
      kind === "choice-or-list" &&
      choices(prop).length &&
      choices(prop).every((c) => typeof c === "number")
    )
      input.dataset.numeric = "1";
    if (required.has(name)) input.required = true;
    const hint = [
      prop.description,
      kind === "number-or-list" || kind === "list" ? "A number or a comma-separated list." : "",
      kind === "choice-or-list" ? choiceHint(prop) : "",
      kind === "json" ? "JSON." : "",
      kind === "upload" ? "Add CSV files under Uploads." : "",
    ]
      .filter(Boolean)
      .join(" ");
    box.append(
      el("label", { for: id }, prop.title || name, required.has(name) ? " *" : ""),
      input,
      el("p", { id: `${id}-help`, class: "muted" }, hint),
      el("p", { class: "error", "data-error-for": name, hidden: "" }),
    );
  }
}

export function readParams() {
  const params = {};
  const problems = [];
  for (const input of $("#param-fields").querySelectorAll("input, select, textarea")) {
    const { name } = input;
    const kind = input.dataset.kind;
    const raw = input.type === "checkbox" ? input.checked : input.value.trim();
    if (raw === "" || raw === null) {
      if (input.required) problems.push([name, "required"]);
      continue;
    }
    if (kind === "number" || kind === "integer") {
      if (!input.checkValidity()) {
        problems.push([name, input.validationMessage || "invalid number"]);
        continue;
      }
      params[name] = Number(raw);
    } else if (kind === "number-or-list" || kind === "list") {
      const parts = String(raw)
        .split(",")
        .map((p) => p.trim())
        .filter(Boolean);
      const nums = parts.map(Number);
      if (nums.some((n) => Number.isNaN(n))) {
        problems.push([name, "numbers separated by commas"]);
        continue;
      }
      params[name] = kind === "list" || nums.length > 1 ? nums : nums[0];
    } else if (kind === "choice-or-list") {
      const parts = String(raw)
        .split(",")
        .map((p) => p.trim())
        .filter(Boolean);
      const values = input.dataset.numeric ? parts.map(Number) : parts;
      params[name] = values.length > 1 ? values : values[0];
    } else if (kind === "json") {
      try {
        params[name] = JSON.parse(raw);
      } catch (_) {
        problems.push([name, "not valid JSON"]);
      }
    } else if (kind === "boolean") {
      params[name] = raw;
    } else {
      params[name] = raw;
    }
  }
  return { params, problems };
}
