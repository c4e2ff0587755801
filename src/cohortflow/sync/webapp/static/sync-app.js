// The sync web app's script: the live request debugger and the run's counts, updated while the run is in flight,
// and small form conveniences. Pages work without it (reloading shows the same data).
(function () {
  "use strict";

  function text(tag, value, cls) {
    var el = document.createElement(tag);
    el.textContent = value === null || value === undefined ? "–" : String(value);
    if (cls) { el.className = cls; }
    return el;
  }

  function requestRow(r) {
    var row = document.createElement("tr");
    var ok = r.status !== null && r.status >= 200 && r.status < 300;
    row.appendChild(text("td", r.seq, "mono"));
    row.appendChild(text("td", r.at.substring(11, 23), "mono"));
    var status = text("td", r.status === null ? (r.error ? "error" : "–") : r.status);
    status.className = "badge-cell " + (ok ? "ok" : "bad");
    row.appendChild(status);
    row.appendChild(text("td", r.method + " " + r.path, "mono url"));
    row.appendChild(text("td", r.duration_ms + " ms", "num"));
    row.appendChild(text("td", r.attempt, "num"));
    var details = document.createElement("td");
    var box = document.createElement("details");
    box.appendChild(text("summary", r.error ? r.error : "body and answer"));
    box.appendChild(text("pre", r.body));
    box.appendChild(text("pre", r.answer === null ? (r.error || "no answer") : r.answer));
    details.appendChild(box);
    row.appendChild(details);
    return row;
  }

  var debuggerEl = document.querySelector("[data-live-run]");
  if (debuggerEl) {
    var url = debuggerEl.getAttribute("data-live-run");
    var body = document.querySelector("#requests tbody");
    var last = parseInt(debuggerEl.getAttribute("data-last-seq") || "0", 10);
    var poll = function () {
      fetch(url + "?after=" + last, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
        .then(function (answer) { return answer.ok ? answer.json() : null; })
        .then(function (data) {
          if (!data) { return; }
          var empty = document.getElementById("no-requests");
          if (data.requests.length && empty) { empty.remove(); }
          data.requests.forEach(function (r) { body.appendChild(requestRow(r)); last = Math.max(last, r.seq); });
          Object.keys(data.fields).forEach(function (key) {
            var cell = document.querySelector('[data-field="' + key + '"]');
            if (cell) { cell.textContent = data.fields[key]; }
          });
          var status = document.querySelector("[data-run-status]");
          if (status) { status.textContent = data.status; status.className = "badge " + data.status_class; }
          if (!data.finished) { setTimeout(poll, 1000); }
          else if (debuggerEl.getAttribute("data-reload-when-done") !== null) { window.location.reload(); }
        })
        .catch(function () { setTimeout(poll, 3000); });
    };
    if (debuggerEl.getAttribute("data-finished") === null) { setTimeout(poll, 500); }
  }

  // Forms whose fields depend on a choice (source type, cohort mode, schedule type, identifier kind).
  function sync(select) {
    var group = select.getAttribute("data-toggles");
    document.querySelectorAll('[data-when-' + group + ']').forEach(function (el) {
      var wanted = el.getAttribute("data-when-" + group).split(" ");
      el.hidden = wanted.indexOf(select.value) < 0;
    });
  }
  document.querySelectorAll("select[data-toggles], input[data-toggles]:checked").forEach(sync);
  document.addEventListener("change", function (event) {
    if (event.target.matches("[data-toggles]")) { sync(event.target); }
  });
})();
