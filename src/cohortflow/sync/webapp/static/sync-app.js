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

  function requestItem(r) {
    var ok = r.status !== null && r.status >= 200 && r.status < 300;
    var item = document.createElement("details");
    item.className = "req";
    var summary = document.createElement("summary");
    summary.appendChild(text("span", r.seq, "mono"));
    summary.appendChild(text("span", r.at.substring(11, 23), "mono time"));
    summary.appendChild(text("span", r.status === null ? "error" : r.status, "status " + (ok ? "ok" : "bad")));
    summary.appendChild(text("span", r.method + " " + r.path, "mono path"));
    summary.appendChild(text("span", r.duration_ms.toFixed(1) + " ms", "num duration"));
    summary.appendChild(text("span", "try " + r.attempt, "num attempt"));
    item.appendChild(summary);
    if (r.error) { item.appendChild(text("p", r.error, "error-line")); }
    var exchange = document.createElement("div");
    exchange.className = "exchange";
    [["Request body (sample)", r.body], ["Answer", r.answer === null ? "no answer" : r.answer]].forEach(function (pair) {
      var box = document.createElement("div");
      box.appendChild(text("h3", pair[0]));
      box.appendChild(text("pre", pair[1]));
      exchange.appendChild(box);
    });
    item.appendChild(exchange);
    return item;
  }

  var debuggerEl = document.querySelector("[data-live-run]");
  if (debuggerEl) {
    var url = debuggerEl.getAttribute("data-live-run");
    var list = document.getElementById("requests");
    var last = parseInt(debuggerEl.getAttribute("data-last-seq") || "0", 10);
    var poll = function () {
      fetch(url + "?after=" + last, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
        .then(function (answer) { return answer.ok ? answer.json() : null; })
        .then(function (data) {
          if (!data) { return; }
          var empty = document.getElementById("no-requests");
          if (data.requests.length && empty) { empty.remove(); }
          data.requests.forEach(function (r) { list.appendChild(requestItem(r)); last = Math.max(last, r.seq); });
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
