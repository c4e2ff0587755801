// The kit's only script: copy buttons, and the CSRF header for scripts that post.
// Pages work without it; it only adds conveniences.
(function () {
  "use strict";

  // A page that answers a POST (a secret shown once) names its GET address, so that reloading it asks for
  // that page instead of posting the form again (which would, say, create another key).
  var replaceUrl = document.body && document.body.getAttribute("data-replace-url");
  if (replaceUrl && window.history.replaceState) { window.history.replaceState(null, "", replaceUrl); }

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    // Plain-http pages other than localhost have no Clipboard API: fall back to a selected text area.
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "absolute";
    area.style.left = "-9999px";
    document.body.appendChild(area);
    area.select();
    try { document.execCommand("copy"); } finally { document.body.removeChild(area); }
    return Promise.resolve();
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy-target]");
    if (!button) { return; }
    var source = document.getElementById(button.getAttribute("data-copy-target"));
    if (!source) { return; }
    var text = source.value !== undefined ? source.value : source.textContent;
    copyText(text.trim()).then(function () {
      var label = button.textContent;
      button.textContent = "Copied";
      button.classList.add("copied");
      setTimeout(function () { button.textContent = label; button.classList.remove("copied"); }, 1500);
    });
  });

  document.addEventListener("change", function (event) {
    if (event.target.matches("select[data-autosubmit]")) { event.target.form.submit(); }
  });

  window.cohortflowPost = function (url, body) {
    var token = document.querySelector('meta[name="csrf-token"]').getAttribute("content");
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRF-Token": token, "X-Requested-With": "fetch", "Content-Type": "application/json" },
      body: JSON.stringify(body)
    });
  };
})();
