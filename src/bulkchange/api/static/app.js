// bulkchange dashboard: refresh live fragments and load log entries on demand. No dependencies.
(function () {
  "use strict";
  var POLL_MS = 1000;

  function isLive(el) {
    if (el.id === "bulk-rows") {
      return el.querySelector('tr[data-live="true"]') !== null;
    }
    var summary = el.querySelector("[data-done]");
    return !summary || summary.getAttribute("data-done") !== "true";
  }

  function loadLogs(details) {
    var box = details.querySelector(".logs");
    if (!box || details.getAttribute("data-loaded") === "true") { return; }
    fetch(details.getAttribute("data-logs"), { headers: { Accept: "text/html" } })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) { box.innerHTML = html; details.setAttribute("data-loaded", "true"); })
      .catch(function () { /* keep the link to the JSON */ });
  }

  function wireLogs(root) {
    root.querySelectorAll("details[data-logs]").forEach(function (d) {
      d.addEventListener("toggle", function () { if (d.open) { loadLogs(d); } });
    });
  }

  function poll(el) {
    if (!isLive(el)) { return; }
    window.setTimeout(function () {
      fetch(el.getAttribute("data-poll"), { headers: { Accept: "text/html" } })
        .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
        .then(function (html) {
          var open = Array.prototype.map.call(el.querySelectorAll("details[open][id]"), function (d) { return d.id; });
          el.innerHTML = html;
          open.forEach(function (id) {
            var d = document.getElementById(id);
            if (d) { d.open = true; loadLogs(d); }
          });
          wireLogs(el);
          poll(el);
        })
        .catch(function () { window.setTimeout(function () { poll(el); }, POLL_MS * 4); });
    }, POLL_MS);
  }

  document.addEventListener("DOMContentLoaded", function () {
    wireLogs(document);
    document.querySelectorAll("[data-poll]").forEach(poll);
  });
})();
