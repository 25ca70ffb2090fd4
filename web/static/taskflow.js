// TaskFlow pages: live updates over the API's Server-Sent Events, and error notices for htmx.
// No framework, no inline code (the pages' Content-Security-Policy allows none).
(function () {
  "use strict";

  var LABELS = {
    pending: "Pending", scheduled: "Scheduled", in_progress: "Running",
    completed: "Completed", failed: "Failed", cancelled: "Cancelled"
  };
  var EVENTS = ["submitted", "started", "progress", "succeeded", "failed", "cancelled",
    "scheduled", "dead_lettered", "replayed"];
  var CONTROL = ["snapshot", "dropped", "activity", "end"];

  function $(selector, root) { return (root || document).querySelector(selector); }

  function flash(text, kind) {
    var box = $("#flash");
    if (!box) { return; }
    box.textContent = text;
    box.className = "flash" + (kind ? " " + kind : "");
  }

  function envelopeMessage(xhr) {
    try {
      var body = JSON.parse(xhr.responseText);
      if (body && body.error && body.error.message) {
        return body.error.message + " (" + body.error.code + ")";
      }
    } catch (ignored) { /* not JSON */ }
    return "The server answered " + xhr.status + ".";
  }

  document.addEventListener("htmx:responseError", function (e) {
    flash(envelopeMessage(e.detail.xhr), "error");
  });
  document.addEventListener("htmx:sendError", function () {
    flash("The server cannot be reached.", "error");
  });
  document.addEventListener("htmx:beforeRequest", function () {
    var box = $("#flash");
    if (box && box.classList.contains("error")) { flash("", ""); }
  });

  // ---------------------------------------------------------------- a job's live fields

  function setStatus(box, status) {
    if (!status) { return; }
    box.dataset.status = status;
    var badge = $('[data-field="status"]', box);
    if (badge) {
      badge.textContent = LABELS[status] || status;
      badge.className = "badge status-" + status;
    }
  }

  function setProgress(box, percent, message) {
    var bar = $('progress[data-field="progress"]', box);
    if (bar && typeof percent === "number") {
      bar.value = percent;
      bar.textContent = Math.round(percent) + "%";
    }
    var text = $('[data-field="progress-message"]', box);
    if (text && message !== undefined) { text.textContent = message || ""; }
  }

  function setAttempt(box, attempt) {
    var cell = $('[data-field="attempts"]', box);
    if (!cell || typeof attempt !== "number") { return; }
    var parts = cell.textContent.split("/");
    cell.textContent = attempt + " / " + (parts.length > 1 ? parts[1].trim() : "?");
  }

  function apply(box, ev) {
    setStatus(box, ev.status);
    if (ev.event === "progress") { setProgress(box, ev.progress, ev.message); }
    if (ev.event === "started") { setProgress(box, 0, ""); }
    if (ev.event === "succeeded") { setProgress(box, 100, ""); }
    if (typeof ev.attempt === "number" && ev.event !== "scheduled") { setAttempt(box, ev.attempt); }
  }

  function applyJob(box, job) {
    setStatus(box, job.status);
    setProgress(box, job.progress, job.progressMessage);
    setAttempt(box, job.attempts);
  }

  // handlers: by event name, or "event" for every lifecycle event; where(): the element that
  // shows the stream's state ("Live", "Reconnecting…"), or nothing.
  function stream(url, handlers, where) {
    var source = new EventSource(url);
    source.lastId = null;  // the last event id seen, to resume a new stream after it
    EVENTS.concat(CONTROL).forEach(function (name) {
      source.addEventListener(name, function (message) {
        if (message.lastEventId) { source.lastId = message.lastEventId; }
        var handler = handlers[name] || (CONTROL.indexOf(name) < 0 ? handlers.event : null);
        if (handler) { handler(JSON.parse(message.data), name); }
      });
    });
    function show(text) {
      var el = where ? where() : null;
      if (el) { el.textContent = text; }
    }
    source.onopen = function () { show("Live"); };
    source.onerror = function () {
      if (source.readyState !== EventSource.CLOSED) { show("Reconnecting…"); }
    };
    return source;
  }

  function debounce(fn, ms) {
    var timer = null;
    return function () {
      if (timer) { clearTimeout(timer); }
      timer = setTimeout(function () { timer = null; fn(); }, ms);
    };
  }

  function refresh(selector) {
    var target = $(selector);
    if (target && window.htmx) { window.htmx.trigger(target, "refresh"); }
  }

  // ---------------------------------------------------------------- the jobs page

  function throttle(fn, ms) {
    var last = 0, timer = null;
    return function () {
      if (timer) { return; }
      var wait = Math.max(0, last + ms - Date.now());
      timer = setTimeout(function () { timer = null; last = Date.now(); fn(); }, wait);
    };
  }

  // The page follows its visible rows only (jobs=...), plus "activity": counts of what
  // happened to every job. New jobs show up by refreshing the table, at most once a
  // second; then the stream is reopened on the new rows, resuming after the last event.
  function jobsPage() {
    var source = null;
    var watching = "";
    var state = function () { return $("#live-state"); };
    var table = function () { return $("#jobs-table"); };
    var reload = throttle(function () { refresh("#jobs-table"); }, 1000);

    function visible() {
      return Array.prototype.map.call(
        document.querySelectorAll("#jobs-body tr[data-job-id]"),
        function (row) { return row.dataset.jobId; }
      ).join(",");
    }

    function connect() {
      var ids = visible();
      if (source && ids === watching) { return; }
      var after = source ? source.lastId : null;
      if (source) { source.close(); }
      watching = ids;
      var t = table();
      // New rows come from submissions and replays; with a status filter, rows also leave.
      var kinds = t && t.dataset.filterStatus ? "true" : "submitted,replayed";
      var url = "/api/v1/events?limit=0&activity=" + kinds + "&jobs=" + ids;
      if (after) { url += "&lastEventId=" + encodeURIComponent(after); }
      source = stream(url, {
        event: function (ev) {
          var row = document.getElementById("job-" + ev.jobId);
          if (row) { apply(row, ev); }
        },
        snapshot: function (ev) {
          (ev.jobs || []).forEach(function (job) {
            var row = document.getElementById("job-" + job.id);
            if (row) { applyJob(row, job); }
          });
        },
        activity: function (ev) {
          var t = table();
          if (!t || t.dataset.firstPage !== "true") { return; }
          var filtered = t.dataset.filterStatus;
          if (ev.submitted || ev.replayed || (filtered && (ev.succeeded || ev.failed ||
              ev.deadLettered || ev.cancelled))) {
            reload();
          }
        },
        dropped: function () { reload(); },
        end: function () {
          source.close();
          var s = state();
          if (s) { s.textContent = "Live updates stopped: the server is shutting down."; }
        }
      }, state);
    }

    // After any swap (a refresh, a filter, a page): follow the rows now shown, if they changed.
    document.addEventListener("htmx:afterSettle", function () { connect(); });
    document.addEventListener("htmx:afterRequest", function (e) {
      var ids = e.detail.xhr && e.detail.xhr.getResponseHeader("X-Submitted-Jobs");
      if (ids) { refresh("#jobs-table"); }  // the new job's row, at once
    });
    connect();
  }

  // ---------------------------------------------------------------- one job

  function jobPage() {
    var live = $("#job-live");
    if (!live) { return; }
    var id = live.dataset.jobId;
    var detail = debounce(function () { refresh("#job-detail"); }, 250);
    var source = stream("/api/v1/jobs/" + encodeURIComponent(id) + "/events", {
      event: function (ev, name) {
        apply(live, ev);
        if (name !== "progress") { detail(); }
      },
      snapshot: function (ev) { applyJob(live, ev.job); },
      dropped: function () { detail(); },
      end: function (ev) {
        source.close();
        if (ev.status) { setStatus(live, ev.status); }
        if (ev.status === "completed") { setProgress(live, 100, ""); }
        detail();
      }
    });
    followLog(id);
  }

  function followLog(id) {
    var pre = $("#job-log");
    var state = $("#log-state");
    if (!pre) { return; }
    var lines = 0;
    var opened = false;
    var source = new EventSource("/api/v1/logs/" + encodeURIComponent(id) + "?follow=true");
    source.onopen = function () {
      if (opened) { pre.textContent = ""; lines = 0; }  // a reconnect sends the whole log again
      opened = true;
      if (state) { state.textContent = "Following the log…"; }
    };
    source.addEventListener("log", function (message) {
      var atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.appendChild(document.createTextNode(message.data + "\n"));
      lines += 1;
      if (lines > 5000) { pre.textContent = pre.textContent.split("\n").slice(-4000).join("\n"); lines = 4000; }
      if (atBottom) { pre.scrollTop = pre.scrollHeight; }
    });
    source.addEventListener("end", function () {
      source.close();
      if (state) { state.textContent = lines ? "The log is complete." : "This job logged nothing."; }
    });
    source.onerror = function () {
      if (state && source.readyState !== EventSource.CLOSED) { state.textContent = "Reconnecting to the log…"; }
    };
  }

  // ---------------------------------------------------------------- dead letters

  function dlqPage() {
    var later = debounce(function () {
      var table = $("#dlq-table");
      if (table && !$("details[open]", table) && !table.contains(document.activeElement)) {
        refresh("#dlq-table");
      }
    }, 400);
    stream("/api/v1/events?limit=0&activity=dead_lettered,replayed", {
      activity: function (ev) { if (ev.deadLettered || ev.replayed) { later(); } },
      dropped: later
    });
  }

  function start() {
    var page = document.body.dataset.page;
    if (page === "jobs") { jobsPage(); }
    else if (page === "job") { jobPage(); }
    else if (page === "dlq") { dlqPage(); }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
}());
