// Docket console: progressive enhancement only; every page works without this file.
(function () {
  "use strict";

  // Local times for <time datetime> elements.
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var at = new Date(el.getAttribute("datetime"));
      if (!isNaN(at)) {
        el.title = el.textContent;
        el.textContent = at.toLocaleString();
      }
    });
  }

  // Drafts: what is typed, ticked and chosen in a form survives an expired session and a refused
  // submission. Values are kept in sessionStorage until the form is submitted and the next page
  // is neither the sign-in page nor one that shows an error. Passwords are never kept.
  var DRAFT_PREFIX = "docket-draft:";
  function formKey(form) {
    return DRAFT_PREFIX + location.pathname + "|" + (form.getAttribute("action") || "") + "|";
  }
  function draftKey(form, field) {
    // A box of a group (several boxes share a name) is kept per value.
    var choice = field.type === "checkbox" ? "=" + field.value : "";
    return formKey(form) + field.name + choice;
  }
  function draftable(field) {
    return field.name && field.name.charAt(0) !== "_" && field.type !== "password" &&
      field.type !== "hidden" && field.type !== "submit" && field.type !== "button" &&
      field.type !== "file" && !field.hasAttribute("data-no-draft");
  }
  function saveDraft(form, field) {
    var value = field.type === "checkbox" ? (field.checked ? "1" : "0")
      : field.type === "radio" ? (field.checked ? field.value : null)
      : field.value;
    if (value !== null) sessionStorage.setItem(draftKey(form, field), value);
  }
  function restoreDraft(form, field) {
    var saved = sessionStorage.getItem(draftKey(form, field));
    if (saved === null) return;
    if (field.type === "checkbox") field.checked = saved === "1";
    else if (field.type === "radio") field.checked = saved === field.value;
    else field.value = saved;
  }
  function drafts() {
    var onSignIn = document.body.getAttribute("data-page") === "login";
    var refused = document.querySelector(".flash.error") !== null;
    var submitted = sessionStorage.getItem(DRAFT_PREFIX + "submitted");
    if (submitted && !onSignIn && !refused) {
      Object.keys(sessionStorage).forEach(function (key) {
        if (key.indexOf(submitted) === 0) sessionStorage.removeItem(key);
      });
    }
    if (!onSignIn) sessionStorage.removeItem(DRAFT_PREFIX + "submitted");
    document.querySelectorAll("form[method=post]").forEach(function (form) {
      Array.prototype.forEach.call(form.elements, function (field) {
        if (!draftable(field)) return;
        restoreDraft(form, field);
        field.addEventListener("input", function () { saveDraft(form, field); });
        field.addEventListener("change", function () { saveDraft(form, field); });
      });
      form.addEventListener("submit", function () {
        // What the browser sends is what is kept, also fields never touched (a default choice).
        Array.prototype.forEach.call(form.elements, function (field) {
          if (draftable(field)) saveDraft(form, field);
        });
        sessionStorage.setItem(DRAFT_PREFIX + "submitted", formKey(form));
      });
    });
  }

  // Keyboard shortcuts: elements with data-shortcut="a" are clicked (or focused, for fields)
  // when the key is pressed outside a text field.
  function shortcuts() {
    document.addEventListener("keydown", function (event) {
      if (event.ctrlKey || event.metaKey || event.altKey) return;
      var target = event.target;
      if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.tagName === "SELECT" || target.isContentEditable)) {
        if (event.key === "Escape") target.blur();
        return;
      }
      var el = document.querySelector('[data-shortcut="' + CSS.escape(event.key) + '"]');
      if (!el) return;
      event.preventDefault();
      if (el.tagName === "TEXTAREA" || el.tagName === "INPUT" || el.tagName === "SELECT") el.focus();
      else el.click();
    });
  }

  // Confirmation for destructive buttons (data-confirm="message").
  function confirmations() {
    document.addEventListener("submit", function (event) {
      var button = event.submitter;
      var message = (button && button.getAttribute("data-confirm")) || event.target.getAttribute("data-confirm");
      if (message && !window.confirm(message)) event.preventDefault();
    });
  }

  // Times typed into the datetime-local fields of POST forms are in the browser's time zone: the
  // label names it (elements with data-time-zone), and the value is sent as UTC in RFC 3339, which
  // the server reads with its offset. Without this script the fields are labelled and read as UTC.
  // Registered after confirmations(), so a cancelled submit leaves the fields as they were.
  function localTimeInputs() {
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (zone) {
      document.querySelectorAll("[data-time-zone]").forEach(function (el) { el.textContent = zone; });
    }
    document.addEventListener("submit", function (event) {
      var form = event.target;
      if (event.defaultPrevented || (form.getAttribute("method") || "").toLowerCase() !== "post") return;
      form.querySelectorAll("input[type=datetime-local][name]").forEach(function (field) {
        var at = new Date(field.value);
        if (!field.value || isNaN(at)) return;
        var utc = document.createElement("input");
        utc.type = "hidden";
        utc.name = field.name;
        utc.value = at.toISOString();
        utc.setAttribute("data-utc", "");
        field.setAttribute("data-local-name", field.name);
        field.removeAttribute("name");
        form.appendChild(utc);
      });
    });
    // A page restored from the back-forward cache gets its fields back as they were.
    window.addEventListener("pageshow", function () {
      document.querySelectorAll("input[data-utc]").forEach(function (utc) { utc.remove(); });
      document.querySelectorAll("input[data-local-name]").forEach(function (field) {
        field.name = field.getAttribute("data-local-name");
        field.removeAttribute("data-local-name");
      });
    });
  }

  // Zoomable images: click toggles 2x.
  function zoom() {
    document.querySelectorAll("img[data-zoom]").forEach(function (img) {
      img.addEventListener("click", function () { img.classList.toggle("zoomed"); });
      img.addEventListener("keydown", function (event) {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); img.classList.toggle("zoomed"); }
      });
    });
  }

  // Live regions: <div data-live="/console/..."> is re-fetched when the server-sent event stream
  // at data-live-events (default /console/events) reports something, at most once a second.
  function live() {
    var regions = document.querySelectorAll("[data-live]");
    if (!regions.length || !window.EventSource) return;
    var indicator = document.querySelector(".live");
    var pending = false;
    function refresh() {
      if (pending) return;
      pending = true;
      setTimeout(function () {
        pending = false;
        regions.forEach(function (region) {
          fetch(region.getAttribute("data-live"), { credentials: "same-origin", headers: { "Accept": "text/html", "X-Docket-Live": "1" } })
            // A redirect means the session ended (sign-in page): keep what is shown.
            .then(function (r) { return r.ok && !r.redirected ? r.text() : null; })
            .then(function (html) {
              if (html === null) return;
              var doc = new DOMParser().parseFromString(html, "text/html");
              var fresh = doc.querySelector("[data-live-fragment]");
              if (!fresh) return;
              region.innerHTML = fresh.innerHTML;
              localTimes(region);
            });
        });
      }, 1000);
    }
    var source = new EventSource(regions[0].getAttribute("data-live-events") || "/console/events");
    // Once (re)connected, refresh too: what changed before the stream opened sent no event here.
    source.onopen = function () { if (indicator) indicator.classList.add("on"); refresh(); };
    source.onerror = function () { if (indicator) indicator.classList.remove("on"); };
    source.onmessage = refresh;
    source.addEventListener("change", refresh);
    // data-live-interval="10": also refresh every 10 s, for what publishes no events (heartbeats).
    var every = parseInt(regions[0].getAttribute("data-live-interval"), 10);
    if (every > 0) setInterval(refresh, every * 1000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    drafts();
    shortcuts();
    confirmations();
    localTimeInputs();
    zoom();
    live();
    var autofocus = document.querySelector("[data-autofocus]");
    if (autofocus) autofocus.focus();
  });
})();
