// bulkchange dashboard: keep a page's live parts current and load log entries on demand. No dependencies.
//
// The server renders everything. The element #live[data-live] names a JSON endpoint answering
// {live, status, regions: {id: {sig, html}}, rows: [{key, sig, html}]}: a region or a row is redrawn only
// when its digest (data-sig) changed, so the rest of the page, the element that has the focus, what is
// being typed, open log panels and the scroll position stay as they are. A 401 names the login page:
// the whole page goes there (and comes back), instead of drawing the login form inside this page.
(function () {
  "use strict";
  var POLL_MS = 1000;
  var RETRY_MS = 4000;

  function toLogin(body) {
    var login = (body && typeof body.login === "string" && body.login.charAt(0) === "/") ? body.login : "/ui/login";
    window.location.assign(login + "?next=" + encodeURIComponent(window.location.pathname + window.location.search));
  }

  function getJson(url) {
    return fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" }).then(function (r) {
      if (r.status === 401) {
        return r.json().catch(function () { return null; }).then(function (b) { toLogin(b); return Promise.reject(401); });
      }
      return r.ok ? r.json() : Promise.reject(r.status);
    });
  }

  // ---------------------------------------------------------------------------------------- focus

  function focusables(root) {
    return Array.prototype.slice.call(
      root.querySelectorAll("a[href], button, input, select, textarea, summary, [tabindex]")
    );
  }

  // Where the focus is inside `root`, to find the same control after `root` (or its content) is redrawn.
  function focusOf(root) {
    var el = document.activeElement;
    if (!el || el === document.body || !root.contains(el) || el === root) { return null; }
    var state = { id: el.id, index: focusables(root).indexOf(el), value: null, start: null, end: null };
    if (el.tagName === "INPUT" || el.tagName === "TEXTAREA" || el.tagName === "SELECT") {
      state.value = el.value;
      if (typeof el.selectionStart === "number") {
        try { state.start = el.selectionStart; state.end = el.selectionEnd; } catch (e) { /* not a text input */ }
      }
    }
    return state;
  }

  function refocus(root, state) {
    if (!state) { return; }
    var target = state.id ? root.querySelector("#" + CSS.escape(state.id)) : null;
    if (!target && state.index >= 0) { target = focusables(root)[state.index] || null; }
    if (!target) { return; }
    if (state.value !== null && target.value !== state.value) { target.value = state.value; }
    target.focus({ preventScroll: true });
    if (state.start !== null) {
      try { target.setSelectionRange(state.start, state.end); } catch (e) { /* not a text input */ }
    }
  }

  // ------------------------------------------------------------------------------------------ logs

  function loadLogs(details) {
    var box = details.querySelector(".logs");
    if (!box) { return; }
    fetch(details.getAttribute("data-logs"), { headers: { Accept: "text/html" }, credentials: "same-origin" })
      .then(function (r) {
        if (r.status === 401) { return r.json().catch(function () { return null; }).then(toLogin); }
        return r.ok ? r.text().then(function (html) { box.innerHTML = html; }) : null;
      })
      .catch(function () { /* keep the link to the JSON */ });
  }

  // `toggle` does not bubble: listen in the capture phase, for rows drawn later too.
  document.addEventListener("toggle", function (event) {
    var d = event.target;
    if (d && d.tagName === "DETAILS" && d.hasAttribute("data-logs") && d.open && !d.hasAttribute("data-loaded")) {
      d.setAttribute("data-loaded", "true");
      loadLogs(d);
    }
  }, true);

  // -------------------------------------------------------------------------------------- patching

  function fromHtml(html) {
    var t = document.createElement("template");
    t.innerHTML = html.trim();
    return t.content.firstElementChild;
  }

  function patchRegion(id, part) {
    var el = document.getElementById(id);
    if (!el || el.getAttribute("data-sig") === part.sig) { return; }
    var focus = focusOf(el);
    el.innerHTML = part.html;
    el.setAttribute("data-sig", part.sig);
    refocus(el, focus);
  }

  // A row redrawn keeps its open log panel (and what it showed until the new entries arrive).
  function replaceRow(old, fresh) {
    var focus = focusOf(old);
    Array.prototype.forEach.call(old.querySelectorAll("details[open][id]"), function (d) {
      var twin = fresh.querySelector("#" + CSS.escape(d.id));
      if (!twin) { return; }
      var box = d.querySelector(".logs");
      var twinBox = twin.querySelector(".logs");
      if (box && twinBox) { twinBox.innerHTML = box.innerHTML; }
      twin.setAttribute("data-loaded", "true");
      twin.open = true;
      loadLogs(twin);
    });
    old.replaceWith(fresh);
    refocus(fresh, focus);
  }

  function patchRows(tbody, rows) {
    var existing = {};
    Array.prototype.forEach.call(tbody.children, function (tr) { existing[tr.getAttribute("data-key")] = tr; });
    var previous = null;
    rows.forEach(function (row) {
      var tr = existing[row.key];
      delete existing[row.key];
      if (!tr || tr.getAttribute("data-sig") !== row.sig) {
        var fresh = fromHtml(row.html);
        if (tr) { replaceRow(tr, fresh); }
        tr = fresh;
      }
      var wanted = previous ? previous.nextElementSibling : tbody.firstElementChild;
      if (wanted !== tr) { tbody.insertBefore(tr, wanted); }
      previous = tr;
    });
    Object.keys(existing).forEach(function (key) {
      var gone = existing[key];
      var lostFocus = gone.contains(document.activeElement);
      gone.remove();
      if (lostFocus) {
        var table = tbody.closest("table");
        table.setAttribute("tabindex", "-1");
        table.focus({ preventScroll: true });
      }
    });
    var empty = document.getElementById("live-empty");
    var table = tbody.closest("table");
    if (table) { table.hidden = rows.length === 0; }
    if (empty) { empty.hidden = rows.length > 0; }
  }

  function apply(live, data) {
    Object.keys(data.regions || {}).forEach(function (id) { patchRegion(id, data.regions[id]); });
    var tbody = document.getElementById("live-rows");
    if (tbody && data.rows) { patchRows(tbody, data.rows); }
    var summary = live.querySelector("section.summary");
    if (summary && data.status) {
      summary.setAttribute("data-bulk-status", data.status);
      summary.setAttribute("data-done", data.live ? "false" : "true");
    }
  }

  function poll(live) {
    var idle = parseInt(live.getAttribute("data-idle-poll") || "0", 10);
    function next(ms) { window.setTimeout(tick, ms); }
    function tick() {
      if (document.hidden) { next(POLL_MS); return; }
      getJson(live.getAttribute("data-live"))
        .then(function (data) {
          apply(live, data);
          if (data.live) { next(POLL_MS); } else if (idle > 0) { next(idle); }
        })
        .catch(function (why) { if (why !== 401) { next(RETRY_MS); } });
    }
    next(POLL_MS);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var live = document.querySelector("#live[data-live]");
    if (live && (live.getAttribute("data-done") !== "true" || live.hasAttribute("data-idle-poll"))) { poll(live); }
  });
})();
