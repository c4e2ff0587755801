// cohortflow-live 1.0: the live parts of server-rendered pages, declared in HTML (a small subset of htmx).
// Pages work without it: every live control is also a plain form control the server answers in full.
//
//   <form data-live-url="URL">          the form posts itself to URL with fetch (CSRF header, X-Requested-With)
//                                       and swaps in the element the server answers (its outerHTML)
//     <select data-live="ID">           on change: post with fragment=ID; the element #ID is replaced
//     <input data-live-input="ID">      on input, debounced: the same
//     <button name="action" value="x" data-live="ID">   submitting with it posts action=x and fragment=ID
//     <div id="ID" data-live-autoload>  posted once when the page has loaded, or when it arrives in a fragment
//   <input aria-invalid="true" aria-describedby="MSG">  once edited, loses the mark, and the message #MSG goes
//                                       if it has data-clears-on-input (the server has the last word on save)
//   <div id="ID" data-poll-url="URL" data-poll-seconds="1">   GET URL every N seconds and replace the element;
//                                       polling stops when the answer carries no data-poll-url
//
// Answers that arrive out of order are dropped (only the latest request per fragment is swapped in). A 401
// (the session ended) reloads the page, which leads to the sign-in form.
(function () {
  "use strict";

  var latest = {};
  var timers = {};
  // Typing that happens while a fragment is on its way is kept: the answer was made from the older value.
  var typedMeanwhile = {};

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function swap(id, html) {
    var current = document.getElementById(id);
    if (!current) { return; }
    var focusedId = document.activeElement && document.activeElement.id;
    var selection = null;
    if (focusedId && document.activeElement.selectionStart !== undefined) {
      try { selection = [document.activeElement.selectionStart, document.activeElement.selectionEnd]; } catch (e) { selection = null; }
    }
    var holder = document.createElement("template");
    holder.innerHTML = html.trim();
    var replacement = holder.content.firstElementChild;
    if (!replacement) { return; }
    current.replaceWith(replacement);
    var kept = typedMeanwhile[id] || {};
    delete typedMeanwhile[id];
    Object.keys(kept).forEach(function (fieldId) {
      var field = document.getElementById(fieldId);
      if (field && replacement.contains(field) && field.value !== kept[fieldId]) {
        field.value = kept[fieldId];
        field.dispatchEvent(new Event("input", { bubbles: true }));
      }
    });
    if (focusedId) {
      var again = document.getElementById(focusedId);
      if (again && again !== document.activeElement && replacement.contains(again)) {
        again.focus();
        if (selection && again.setSelectionRange) {
          try { again.setSelectionRange(selection[0], selection[1]); } catch (e) { /* not a text field */ }
        }
      }
    }
    startPolling(replacement);
    replacement.querySelectorAll("[data-poll-url]").forEach(startPolling);
    autoload(replacement);
    document.dispatchEvent(new CustomEvent("cohortflow:swapped", { detail: { id: id } }));
  }

  function failed(form, status) {
    if (status === 401) { window.location.reload(); return; }
    var note = form.querySelector(".live-failure");
    if (!note) {
      note = document.createElement("p");
      note.className = "flash flash-error live-failure";
      note.setAttribute("role", "alert");
      form.insertBefore(note, form.firstChild);
    }
    note.textContent = "The page could not be updated (" + status + "). Reload it and try again.";
  }

  function post(form, fragment, submitter) {
    var data = new FormData(form);
    if (submitter && submitter.name) { data.append(submitter.name, submitter.value); }
    data.set("fragment", fragment);
    var ticket = (latest[fragment] || 0) + 1;
    latest[fragment] = ticket;
    typedMeanwhile[fragment] = {};
    var target = document.getElementById(fragment);
    if (target) { target.setAttribute("aria-busy", "true"); }
    fetch(form.getAttribute("data-live-url"), {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRF-Token": csrfToken(), "X-Requested-With": "cohortflow-live" },
      body: new URLSearchParams(data)
    }).then(function (response) {
      return response.text().then(function (text) { return { status: response.status, text: text }; });
    }).then(function (answer) {
      if (latest[fragment] !== ticket) { return; }
      var stale = form.querySelector(".live-failure");
      if (answer.status >= 200 && answer.status < 300) {
        if (stale) { stale.remove(); }
        swap(fragment, answer.text);
      } else {
        if (target) { target.removeAttribute("aria-busy"); }
        failed(form, answer.status);
      }
    }).catch(function () {
      if (target) { target.removeAttribute("aria-busy"); }
      failed(form, "network error");
    });
  }

  function liveForm(element) {
    var form = element.form || element.closest("form");
    return form && form.hasAttribute("data-live-url") ? form : null;
  }

  document.addEventListener("change", function (event) {
    var element = event.target;
    var fragment = element.getAttribute && element.getAttribute("data-live");
    var form = fragment && liveForm(element);
    if (form) { post(form, fragment, null); }
  });

  document.addEventListener("input", function (event) {
    var element = event.target;
    if (element.getAttribute && element.getAttribute("aria-invalid") === "true") {
      element.removeAttribute("aria-invalid");
      (element.getAttribute("aria-describedby") || "").split(/\s+/).forEach(function (id) {
        var message = id && document.getElementById(id);
        if (message && message.hasAttribute("data-clears-on-input")) { message.hidden = true; }
      });
    }
    if (element.id && element.value !== undefined) {
      Object.keys(typedMeanwhile).forEach(function (pending) { typedMeanwhile[pending][element.id] = element.value; });
    }
    var fragment = element.getAttribute && element.getAttribute("data-live-input");
    var form = fragment && liveForm(element);
    if (!form) { return; }
    clearTimeout(timers[fragment]);
    timers[fragment] = setTimeout(function () { post(form, fragment, null); }, 350);
  });

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.hasAttribute || !form.hasAttribute("data-live-url")) { return; }
    var submitter = event.submitter;
    var fragment = submitter && submitter.getAttribute("data-live");
    if (!fragment) { return; }  // an ordinary submit (Save): the browser posts the form
    event.preventDefault();
    post(form, fragment, submitter);
  });

  function startPolling(element) {
    if (!element.getAttribute || !element.getAttribute("data-poll-url") || !element.id) { return; }
    var seconds = parseFloat(element.getAttribute("data-poll-seconds") || "2");
    var id = element.id;
    var url = element.getAttribute("data-poll-url");
    setTimeout(function () {
      if (document.getElementById(id) !== element) { return; }  // replaced meanwhile: the new one polls
      fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "cohortflow-live" } })
        .then(function (response) {
          if (response.status === 401) { window.location.reload(); return null; }
          return response.ok ? response.text() : null;
        })
        .then(function (text) {
          if (text !== null && text !== undefined) { swap(id, text); } else { startPolling(element); }
        })
        .catch(function () { startPolling(element); });
    }, seconds * 1000);
  }

  // Parts that arrive unfinished ask for themselves: on load, and inside every swapped-in fragment (a panel
  // answered with its quick figure first asks for its slower one).
  function autoload(root) {
    var found = Array.prototype.slice.call(root.querySelectorAll("[data-live-autoload]"));
    if (root.hasAttribute && root.hasAttribute("data-live-autoload") && root !== document) { found.unshift(root); }
    found.forEach(function (element) {
      var form = liveForm(element);
      if (form && element.id) { post(form, element.id, null); }
    });
  }

  function init() {
    autoload(document);
    document.querySelectorAll("[data-poll-url]").forEach(startPolling);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
