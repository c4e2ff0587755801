// The audience builder: edits an audience's definition (the JSON of cohortflow.yaml's audiences.NAME) as AND / OR /
// NOT groups of conditions, writes it into the form's "definition" field (what Save posts), and asks the server for
// the size, a sample and the compiled SQL as it changes. The engine checks everything: its problems come back keyed
// by their place in the definition and are shown next to the condition they are about.
(function () {
  "use strict";

  var dataEl = document.getElementById("audience-data");
  var root = document.getElementById("builder");
  if (!dataEl || !root) { return; }
  var data = JSON.parse(dataEl.textContent);
  var field = document.getElementById("definition");
  var previewUrl = root.getAttribute("data-preview-url");
  var editable = data.editable;
  var parents = {};
  data.schema.forEach(function (p) { parents[p.parent] = p; });

  var OPERATOR_WORDS = {
    equals: "is", not_equals: "is not", "in": "is one of", not_in: "is none of", contains: "contains",
    does_not_contain: "does not contain", starts_with: "starts with", ends_with: "ends with",
    greater_than: "is greater than", greater_than_or_equal: "is at least", less_than: "is less than",
    less_than_or_equal: "is at most", between: "is between", before: "is before", after: "is after",
    within_last_days: "is in the last (days)", more_than_days_ago: "is more than (days) ago",
    exists: "has a value", does_not_exist: "has no value"
  };
  var COUNT_WORDS = { at_least: "at least", at_most: "at most", exactly: "exactly" };
  var nextId = 1;

  // ------------------------------------------------------------------ the definition <-> the builder's nodes

  function group(op, children) { return { id: nextId++, kind: "group", op: op, negate: false, children: children }; }

  function whereList(where) {
    if (!where) { return { list: [], raw: null }; }
    if (where.type === "property") { return { list: [fromJson(where, false)], raw: null }; }
    if (where.type === "and" && where.filters.every(function (f) { return f.type === "property"; })) {
      return { list: where.filters.map(function (f) { return fromJson(f, false); }), raw: null };
    }
    return { list: [], raw: where };  // an OR / NOT inside a where: kept as written
  }

  function fromJson(node, negate) {
    var out;
    if (node.type === "not") { return fromJson(node.filter, !negate); }
    if (node.type === "and" || node.type === "or") {
      out = group(node.type, node.filters.map(function (f) { return fromJson(f, false); }));
    } else if (node.type === "property") {
      out = { kind: "property", column: node.column, operator: node.operator, value: node.value === undefined ? null : node.value };
    } else if (node.type === "related" || node.type === "performed") {
      var w = whereList(node.where);
      // The JSON leaves defaults out: a count of {value: 2} is "at least 2".
      var count = Object.assign({ operator: "at_least", value: 1 }, node.count || {});
      out = { kind: node.type, count: count, where: w.list, whereRaw: w.raw };
      if (node.type === "related") { out.relation = node.relation; } else {
        out.event = node.event;
        out.window = node.within_last_days ? "last" : (node.after || node.before ? "range" : "ever");
        out.days = node.within_last_days || 30;
        out.after = node.after || ""; out.before = node.before || "";
      }
    } else if (node.type === "in_audience") {
      out = { kind: "in_audience", audience: node.audience };
    } else {
      out = { kind: "unknown", raw: node };
    }
    out.id = out.id || nextId++;
    out.negate = negate;
    return out;
  }

  var def = data.definition || {};
  var state = {
    parent: def.parent || (data.schema[0] && data.schema[0].parent) || "",
    description: def.description || "",
    root: def.filter ? fromJson(def.filter, false) : group("and", []),
    splits: def.splits ? Object.keys(def.splits.groups).map(function (g) { return { name: g, percent: String(def.splits.groups[g]) }; }) : [],
    salt: def.splits && def.splits.salt ? def.splits.salt : ""
  };
  if (state.root.kind !== "group") { state.root = group("and", [state.root]); }

  var pathOf = {};  // a key of the definition ("filter.filters.0") -> the node's id

  function columnType(columns, name) {
    var c = columns.filter(function (x) { return x.name === name; })[0];
    return c ? c.type : null;
  }

  function typedValue(type, raw) {
    if (raw === null || raw === undefined) { return null; }
    var text = String(raw).trim();
    if (text === "") { return null; }  // "needs a value", not "'' is not a date"
    if (type === "number" && /^-?\d+(\.\d+)?(e-?\d+)?$/i.test(text)) { return Number(text); }
    if (type === "boolean") { return text === "true" ? true : (text === "false" ? false : text); }
    return text;
  }

  function propertyJson(node, columns) {
    var type = columnType(columns, node.column);
    var out = { type: "property", column: node.column, operator: node.operator };
    var kind = valueKind(type, node.operator);
    if (kind === "list") {
      out.value = String(node.value === null ? "" : node.value).split(",").map(function (s) { return s.trim(); })
        .filter(function (s) { return s !== ""; }).map(function (s) { return typedValue(type, s); });
    } else if (kind === "range") {
      var pair = Array.isArray(node.value) ? node.value : ["", ""];
      out.value = [typedValue(type, pair[0]), typedValue(type, pair[1])];
    } else if (kind === "days") {
      out.value = /^\d+$/.test(String(node.value)) ? Number(node.value) : node.value;
    } else if (kind !== "none") {
      out.value = typedValue(type, node.value);
    }
    return out;
  }

  function whereJson(list, raw, columns) {
    if (raw) { return raw; }
    if (!list.length) { return undefined; }
    var items = list.map(function (n) { return propertyJson(n, columns); });
    return items.length === 1 ? items[0] : { type: "and", filters: items };
  }

  function toJson(node, path) {
    var inner = node.negate ? path + ".filter" : path;
    pathOf[path] = node.id;
    pathOf[inner] = node.id;
    var parent = parents[state.parent] || { columns: [], traits: [], related: [], events: [] };
    var out;
    if (node.kind === "group") {
      out = { type: node.op, filters: node.children.map(function (c, i) { return toJson(c, inner + ".filters." + i); }) };
    } else if (node.kind === "property") {
      out = propertyJson(node, parent.columns.concat(parent.traits));
    } else if (node.kind === "related" || node.kind === "performed") {
      var rel = (node.kind === "related" ? parent.related : parent.events)
        .filter(function (r) { return r.name === (node.relation || node.event); })[0];
      out = { type: node.kind };
      if (node.kind === "related") { out.relation = node.relation; } else { out.event = node.event; }
      out.count = { operator: node.count.operator, value: /^\d+$/.test(String(node.count.value)) ? Number(node.count.value) : node.count.value };
      if (node.kind === "performed") {
        if (node.window === "last") { out.within_last_days = /^\d+$/.test(String(node.days)) ? Number(node.days) : node.days; }
        if (node.window === "range") {
          if (node.after) { out.after = node.after; }
          if (node.before) { out.before = node.before; }
        }
      }
      var where = whereJson(node.where, node.whereRaw, rel ? rel.columns : []);
      if (where) { out.where = where; }
    } else if (node.kind === "in_audience") {
      out = { type: "in_audience", audience: node.audience };
    } else {
      out = node.raw;
    }
    return node.negate ? { type: "not", filter: out } : out;
  }

  function definition() {
    pathOf = {};
    var out = { parent: state.parent };
    if (state.description.trim()) { out.description = state.description.trim(); }
    if (state.root.children.length || state.root.negate) { out.filter = toJson(state.root, "filter"); }
    if (state.splits.length) {
      var groups = {};
      state.splits.forEach(function (s) {
        var p = String(s.percent).trim();
        groups[s.name.trim()] = /^\d+(\.\d+)?$/.test(p) ? Number(p) : p;
      });
      out.splits = { groups: groups };
      if (state.salt.trim()) { out.splits.salt = state.salt.trim(); }
    }
    return out;
  }

  // ------------------------------------------------------------------ rendering

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") { node.textContent = attrs[k]; } else if (k === "class") { node.className = attrs[k]; } else { node.setAttribute(k, attrs[k]); }
    });
    (children || []).forEach(function (c) { if (c) { node.appendChild(c); } });
    return node;
  }

  function select(label, options, value, onChange) {
    var s = el("select", { "aria-label": label });
    var found = false;
    options.forEach(function (o) {
      if (o.group) {
        var g = el("optgroup", { label: o.group });
        o.options.forEach(function (x) { g.appendChild(el("option", { value: x[0], text: x[1] })); found = found || x[0] === value; });
        if (o.options.length) { s.appendChild(g); }
      } else {
        s.appendChild(el("option", { value: o[0], text: o[1] }));
        found = found || o[0] === value;
      }
    });
    if (!found && value !== null && value !== undefined && value !== "") {
      s.appendChild(el("option", { value: value, text: value + " (unknown)" }));
    }
    s.value = value === null || value === undefined ? "" : value;
    s.disabled = !editable;
    s.addEventListener("change", function () { onChange(s.value); changed(true); });
    return s;
  }

  function input(label, value, onInput, attrs) {
    var i = el("input", Object.assign({ type: "text", "aria-label": label }, attrs || {}));
    i.value = value === null || value === undefined ? "" : value;
    i.disabled = !editable;
    i.addEventListener("input", function () { onInput(i.value); changed(false); });
    return i;
  }

  function removeButton(label, onRemove) {
    if (!editable) { return null; }
    var b = el("button", { type: "button", class: "icon", "aria-label": label, title: label, text: "×" });
    b.addEventListener("click", function () { onRemove(); changed(true); });
    return b;
  }

  function valueKind(type, operator) {
    if (operator === "exists" || operator === "does_not_exist") { return "none"; }
    if (operator === "within_last_days" || operator === "more_than_days_ago") { return "days"; }
    if (operator === "in" || operator === "not_in") { return "list"; }
    if (operator === "between") { return "range"; }
    if (type === "boolean") { return "bool"; }
    return "one";
  }

  function valueInputType(type) {
    if (type === "date") { return { type: "date" }; }
    if (type === "timestamp") { return { type: "datetime-local", step: "1" }; }
    if (type === "number") { return { inputmode: "decimal" }; }
    return {};
  }

  function valueControls(node, type) {
    var kind = valueKind(type, node.operator);
    if (kind === "none") { return []; }
    if (kind === "bool") {
      return [select("Value", [["true", "true"], ["false", "false"]], node.value === false ? "false" : "true",
        function (v) { node.value = v === "true"; })];
    }
    if (kind === "range") {
      var pair = Array.isArray(node.value) ? node.value.slice() : ["", ""];
      node.value = pair;
      return [input("From", pair[0], function (v) { pair[0] = v; }, valueInputType(type)), el("span", { class: "muted", text: "and" }),
        input("To", pair[1], function (v) { pair[1] = v; }, valueInputType(type))];
    }
    if (kind === "list") {
      var shown = Array.isArray(node.value) ? node.value.join(", ") : node.value;
      return [input("Values", shown, function (v) { node.value = v; }, { placeholder: "a, b, c", class: "wide" })];
    }
    if (kind === "days") { return [input("Days", node.value, function (v) { node.value = v; }, { inputmode: "numeric", class: "short" })]; }
    return [input("Value", node.value, function (v) { node.value = v; }, valueInputType(type))];
  }

  function propertyRow(node, columns, groups, label) {
    var touched = function () { node.fresh = false; };
    var type = columnType(columns, node.column);
    var operators = (columns.filter(function (c) { return c.name === node.column; })[0] || { operators: [] }).operators;
    var parts = [];
    if (node.negate) { parts.push(el("span", { class: "tag", text: "NOT" })); }
    parts.push(select(label || "Column", groups, node.column, function (v) {
      node.column = v;
      var now = (columns.filter(function (c) { return c.name === v; })[0] || { operators: [] }).operators;
      if (now.indexOf(node.operator) < 0) { node.operator = now[0]; node.value = null; }
    }));
    parts.push(select("Operator", operators.map(function (o) { return [o, OPERATOR_WORDS[o] || o]; }), node.operator, function (v) {
      if (valueKind(type, v) !== valueKind(type, node.operator)) { node.value = null; }
      node.operator = v;
    }));
    parts = parts.concat(valueControls(node, type));
    parts.forEach(function (p) {
      if (p.addEventListener) { p.addEventListener("input", touched); p.addEventListener("change", touched); }
    });
    return parts;
  }

  function columnChoices(columns) {
    return columns.map(function (c) { return [c.name, c.name]; });
  }

  function newProperty(columns) {
    var c = columns[0] || { name: "", operators: ["equals"] };
    // Fresh until edited: its "needs a value" is a prompt, not an error.
    return { id: nextId++, kind: "property", negate: false, column: c.name, operator: c.operators[0], value: null, fresh: true };
  }

  function whereBlock(node, rel) {
    var columns = rel ? rel.columns : [];
    var box = el("div", { class: "where" });
    if (node.whereRaw) {
      box.appendChild(el("p", { class: "muted", text: "where (as written in the file): " + JSON.stringify(node.whereRaw) }));
      return box;
    }
    node.where.forEach(function (w, i) {
      var row = el("div", { class: "cond-row" }, [el("span", { class: "word", text: i ? "and" : "where" })]
        .concat(propertyRow(w, columns, [{ group: (rel ? rel.name : "") + " columns", options: columnChoices(columns) }], "Where column")));
      row.appendChild(removeButton("Remove this where", function () { node.where.splice(i, 1); }));
      box.appendChild(row);
    });
    if (editable && columns.length) {
      var add = el("button", { type: "button", class: "small", text: "+ where" });
      // An event's own columns come before its timestamp, which the window already filters on.
      var ordered = columns.filter(function (c) { return !rel || c.name !== rel.timestamp; })
        .concat(columns.filter(function (c) { return rel && c.name === rel.timestamp; }));
      add.addEventListener("click", function () { node.where.push(newProperty(ordered)); changed(true); });
      box.appendChild(add);
    }
    return box;
  }

  function countControls(node, unit) {
    return [
      select("Count", Object.keys(COUNT_WORDS).map(function (k) { return [k, COUNT_WORDS[k]]; }), node.count.operator, function (v) { node.count.operator = v; }),
      input("Times", node.count.value, function (v) { node.count.value = v; }, { inputmode: "numeric", class: "short" }),
      el("span", { class: "word", text: unit })
    ];
  }

  function conditionBox(node, remove) {
    var parent = parents[state.parent] || { columns: [], traits: [], related: [], events: [] };
    var box = el("div", { class: "cond", "data-node": String(node.id) });
    var row = el("div", { class: "cond-row" });
    var parts = [];
    if (node.kind === "property") {
      var all = parent.columns.concat(parent.traits.filter(function (t) { return t.type; }));
      parts = propertyRow(node, all, [
        { group: "Columns", options: columnChoices(parent.columns) },
        { group: "Traits", options: columnChoices(parent.traits.filter(function (t) { return t.type; })) }
      ]);
    } else if (node.kind === "related") {
      var rel = parent.related.filter(function (r) { return r.name === node.relation; })[0];
      parts = [select("Has", [["has", "has"], ["not", "does not have"]], node.negate ? "not" : "has", function (v) { node.negate = v === "not"; })]
        .concat(countControls(node, ""))
        .concat([select("Related model", parent.related.map(function (r) { return [r.name, r.name]; }), node.relation, function (v) { node.relation = v; node.where = []; node.whereRaw = null; })]);
      row.className = "cond-row";
      parts.forEach(function (p) { row.appendChild(p); });
      row.appendChild(removeButton("Remove condition", remove));
      box.appendChild(row);
      box.appendChild(whereBlock(node, rel));
      return box;
    } else if (node.kind === "performed") {
      var ev = parent.events.filter(function (r) { return r.name === node.event; })[0];
      parts = [select("Performed", [["did", "performed"], ["not", "did not perform"]], node.negate ? "not" : "did", function (v) { node.negate = v === "not"; }),
        select("Event", parent.events.map(function (r) { return [r.name, r.name]; }), node.event, function (v) { node.event = v; node.where = []; node.whereRaw = null; })]
        .concat(countControls(node, "times"))
        .concat([select("Window", [["ever", "ever"], ["last", "in the last"], ["range", "between dates"]], node.window, function (v) { node.window = v; })]);
      if (node.window === "last") {
        parts.push(input("Days", node.days, function (v) { node.days = v; }, { inputmode: "numeric", class: "short" }));
        parts.push(el("span", { class: "word", text: "days" }));
      } else if (node.window === "range") {
        parts.push(el("span", { class: "word", text: "after" }));
        parts.push(input("After", node.after, function (v) { node.after = v; }, { type: "date" }));
        parts.push(el("span", { class: "word", text: "and before" }));
        parts.push(input("Before", node.before, function (v) { node.before = v; }, { type: "date" }));
      }
      parts.forEach(function (p) { row.appendChild(p); });
      row.appendChild(removeButton("Remove condition", remove));
      box.appendChild(row);
      box.appendChild(whereBlock(node, ev));
      return box;
    } else if (node.kind === "in_audience") {
      var names = Object.keys(data.audiences).filter(function (n) { return data.audiences[n] === state.parent; });
      parts = [select("In audience", [["in", "is in audience"], ["not", "is not in audience"]], node.negate ? "not" : "in", function (v) { node.negate = v === "not"; }),
        select("Audience", names.map(function (n) { return [n, n]; }), node.audience, function (v) { node.audience = v; })];
    } else {
      parts = [el("code", { text: JSON.stringify(node.raw) })];
    }
    parts.forEach(function (p) { row.appendChild(p); });
    row.appendChild(removeButton("Remove condition", remove));
    box.appendChild(row);
    return box;
  }

  function groupBox(node, remove, depth) {
    var parent = parents[state.parent] || { columns: [], traits: [], related: [], events: [] };
    var box = el("div", { class: "group" + (depth ? " nested" : ""), "data-node": String(node.id) });
    var head = el("div", { class: "group-head" }, [
      el("span", { class: "word", text: "People who match" }),
      select(depth ? "Match (group)" : "Match", [["and", "all"], ["or", "any"]], node.op, function (v) { node.op = v; }),
      el("span", { class: "word", text: "of these conditions" })
    ]);
    var neg = el("label", { class: "plain negate" });
    var box2 = el("input", { type: "checkbox" });
    box2.checked = node.negate;
    box2.disabled = !editable;
    box2.addEventListener("change", function () { node.negate = box2.checked; changed(true); });
    neg.appendChild(box2);
    neg.appendChild(document.createTextNode(" exclude them instead (NOT)"));
    head.appendChild(neg);
    if (remove) { head.appendChild(removeButton("Remove group", remove)); }
    box.appendChild(head);
    var body = el("div", { class: "group-body" });
    if (!node.children.length) {
      body.appendChild(el("p", { class: "muted empty-group", text: depth ? "An empty group: add a condition." : "No condition yet: everyone of " + state.parent + ". Add a condition below." }));
    }
    node.children.forEach(function (child, i) {
      var removeChild = function () { node.children.splice(i, 1); };
      if (i) { body.appendChild(el("div", { class: "joiner", text: node.op === "and" ? "and" : "or" })); }
      body.appendChild(child.kind === "group" ? groupBox(child, removeChild, depth + 1) : conditionBox(child, removeChild));
    });
    box.appendChild(body);
    if (editable) {
      var adds = el("div", { class: "group-add" });
      var all = parent.columns.concat(parent.traits.filter(function (t) { return t.type; }));
      var audiences = Object.keys(data.audiences).filter(function (n) { return data.audiences[n] === state.parent; });
      [["+ Column or trait", all.length, function () { return newProperty(all); }],
       ["+ Related rows", parent.related.length, function () {
         return { id: nextId++, kind: "related", negate: false, relation: parent.related[0].name, count: { operator: "at_least", value: 1 }, where: [], whereRaw: null };
       }],
       ["+ Event", parent.events.length, function () {
         return { id: nextId++, kind: "performed", negate: false, event: parent.events[0].name, count: { operator: "at_least", value: 1 }, window: "last", days: 30, after: "", before: "", where: [], whereRaw: null };
       }],
       ["+ In audience", audiences.length, function () { return { id: nextId++, kind: "in_audience", negate: false, audience: audiences[0] }; }],
       ["+ Group", true, function () { return group(node.op === "and" ? "or" : "and", []); }]
      ].forEach(function (spec) {
        if (!spec[1]) { return; }
        var b = el("button", { type: "button", class: "small", text: spec[0] });
        b.addEventListener("click", function () { node.children.push(spec[2]()); changed(true); });
        adds.appendChild(b);
      });
      box.appendChild(adds);
    }
    return box;
  }

  function splitsBox() {
    var box = el("fieldset", { class: "splits", "data-key": "splits" }, [el("legend", { text: "Splits (holdout, A/B groups)" })]);
    box.appendChild(el("p", { class: "muted", text: state.splits.length ? "Stable random groups: a person keeps their group from run to run; each group can be synced on its own." : "No split: the whole audience is synced." }));
    state.splits.forEach(function (s, i) {
      var row = el("div", { class: "cond-row" }, [
        input("Group name", s.name, function (v) { s.name = v; }, { placeholder: "holdout" }),
        input("Percent", s.percent, function (v) { s.percent = v; }, { inputmode: "decimal", class: "short" }),
        el("span", { class: "word", text: "%" })
      ]);
      row.appendChild(removeButton("Remove group " + (s.name || i + 1), function () { state.splits.splice(i, 1); }));
      box.appendChild(row);
    });
    if (state.splits.length) {
      box.appendChild(el("div", { class: "cond-row" }, [el("span", { class: "word", text: "Salt" }),
        input("Salt", state.salt, function (v) { state.salt = v; }, { placeholder: "default: the audience's name" })]));
    }
    if (editable) {
      var add = el("button", { type: "button", class: "small", text: state.splits.length ? "+ Split group" : "Split this audience" });
      add.addEventListener("click", function () {
        if (!state.splits.length) { state.splits.push({ name: "treatment", percent: "90" }, { name: "holdout", percent: "10" }); } else { state.splits.push({ name: "", percent: "" }); }
        changed(true);
      });
      box.appendChild(add);
    }
    return box;
  }

  function render() {
    root.textContent = "";
    var head = el("div", { class: "form-grid" });
    var parentSelect = select("Parent model", data.schema.map(function (p) { return [p.parent, p.parent + " (model " + p.model + ")"]; }), state.parent, function (v) {
      if (v !== state.parent) { state.parent = v; state.root = group("and", []); }
    });
    parentSelect.id = "aud-parent";
    head.appendChild(el("label", { for: "aud-parent", text: "Parent model" }));
    head.appendChild(parentSelect);
    head.appendChild(el("p", { class: "hint", "data-key": "parent", text: "One row per person; conditions pick among them." }));
    var desc = input("Description", state.description, function (v) { state.description = v; }, { id: "aud-description", placeholder: "Who they are, in a sentence" });
    head.appendChild(el("label", { for: "aud-description", text: "Description" }));
    head.appendChild(desc);
    root.appendChild(head);
    root.appendChild(el("h2", { text: "Conditions" }));
    root.appendChild(groupBox(state.root, null, 0));
    root.appendChild(splitsBox());
  }

  // ------------------------------------------------------------------ problems, size, sample, SQL

  function clearProblems() {
    root.querySelectorAll(".problem").forEach(function (p) { p.remove(); });
    root.querySelectorAll(".has-problem").forEach(function (p) { p.classList.remove("has-problem"); });
    var general = document.getElementById("aud-problems");
    general.textContent = ""; general.hidden = true;
  }

  function placeOf(path) {
    if (path === null || path === undefined) { return null; }
    var best = null;
    Object.keys(pathOf).forEach(function (key) {
      if ((path === key || path.indexOf(key + ".") === 0) && (best === null || key.length > best.length)) { best = key; }
    });
    if (best !== null) { return root.querySelector('[data-node="' + pathOf[best] + '"]'); }
    var top = path.split(".")[0];
    return root.querySelector('[data-key="' + top + '"]');
  }

  var nodes = {};  // id -> node, to know whether a condition is still fresh
  function index(node) {
    nodes[node.id] = node;
    (node.children || []).forEach(index);
  }

  function showProblems(problems) {
    clearProblems();
    nodes = {};
    index(state.root);
    var general = document.getElementById("aud-problems");
    problems.forEach(function (p) {
      var place = placeOf(p.path);
      var node = place ? nodes[place.getAttribute("data-node")] : null;
      var fresh = node && node.fresh;
      var msg = el("p", fresh ? { class: "problem pending", text: "Enter a value to count these people." } : { class: "problem", role: "alert", text: p.message });
      if (place) {
        if (!fresh) { place.classList.add("has-problem"); }
        var first = place.querySelector(":scope > .cond-row, :scope > .group-head");
        if (first) { first.after(msg); } else { place.appendChild(msg); }
      } else {
        general.appendChild(msg); general.hidden = false;
      }
    });
  }

  function fmt(n) { return Number(n).toLocaleString("en-US"); }

  function showSize(answer) {
    var sizeEl = document.getElementById("aud-size");
    sizeEl.textContent = fmt(answer.size);
    var share = answer.parent_rows ? " (" + (100 * answer.size / answer.parent_rows).toFixed(1) + "%)" : "";
    document.getElementById("aud-of").textContent = "of " + fmt(answer.parent_rows) + " people" + share;
    document.getElementById("aud-chip-size").textContent = fmt(answer.size) + " of " + fmt(answer.parent_rows) + " people" + share;
    var groups = document.getElementById("aud-groups");
    groups.textContent = "";
    Object.keys(answer.groups).forEach(function (g) {
      groups.appendChild(el("li", {}, [el("span", { text: g }), el("strong", { class: "num", text: fmt(answer.groups[g]) })]));
    });
    groups.hidden = !Object.keys(answer.groups).length;
    var table = document.getElementById("aud-sample");
    table.textContent = "";
    var thead = el("thead", {}, [el("tr", {}, answer.columns.map(function (c) { return el("th", { text: c }); }))]);
    var tbody = el("tbody");
    answer.sample.forEach(function (row) {
      tbody.appendChild(el("tr", {}, answer.columns.map(function (c) { return el("td", { class: "mono", text: row[c] === null ? "NULL" : String(row[c]) }); })));
    });
    if (!answer.sample.length) { tbody.appendChild(el("tr", {}, [el("td", { class: "empty", text: "Nobody matches." })])); }
    table.appendChild(thead); table.appendChild(tbody);
    document.getElementById("aud-sql").textContent = answer.sql;
  }

  var seq = 0;
  var timer = null;
  var panel = document.getElementById("aud-panel");
  var chip = document.getElementById("aud-chip");

  function refresh() {
    var mine = ++seq;
    panel.classList.add("loading");
    chip.classList.add("loading");
    panel.setAttribute("aria-busy", "true");
    var meta = document.querySelector('meta[name="csrf-token"]');
    fetch(previewUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": meta ? meta.content : "", "X-Requested-With": "fetch" },
      body: JSON.stringify({ definition: definition(), name: data.name })
    }).then(function (answer) {
      if (answer.status === 401) { window.location.reload(); return null; }
      return answer.json();
    }).then(function (answer) {
      if (!answer || mine !== seq) { return; }
      panel.classList.remove("loading");
      chip.classList.remove("loading");
      panel.removeAttribute("aria-busy");
      if (answer.ok) {
        clearProblems();
        // A refused save's summary is about a definition that is no longer the one on screen.
        var refused = document.getElementById("aud-refused");
        if (refused) { refused.remove(); }
        panel.classList.remove("stale");
        showSize(answer);
      } else {
        panel.classList.add("stale");
        document.getElementById("aud-size").textContent = "–";
        document.getElementById("aud-of").textContent = "fix the problems to see the size";
        document.getElementById("aud-chip-size").textContent = "fix the problems first";
        showProblems(answer.problems || [{ path: null, message: answer.message || "the preview failed" }]);
      }
    }).catch(function () {
      if (mine === seq) { panel.classList.remove("loading"); panel.classList.add("stale"); }
    });
  }

  function changed(structural) {
    if (structural) { render(); }
    field.value = JSON.stringify(definition(), null, 2);
    clearTimeout(timer);
    timer = setTimeout(refresh, structural ? 50 : 400);
  }

  field.readOnly = true;
  render();
  field.value = JSON.stringify(definition(), null, 2);
  if (data.problems.length) { showProblems(data.problems); }
  refresh();
})();
