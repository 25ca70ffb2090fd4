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
    EVENTS.concat(["snapshot", "dropped", "end"]).forEach(function (name) {
      source.addEventListener(name, function (message) {
        var handler = handlers[name] || handlers.event;
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

  function jobsPage() {
    var waiting = {};  // job id -> events that arrived while its row was being fetched
    var state = function () { return $("#live-state"); };

    function filters() {
      var table = $("#jobs-table");
      var params = new URLSearchParams();
      ["status", "task", "queue"].forEach(function (name) {
        var value = table && table.getAttribute("data-filter-" + name);
        if (value) { params.set(name, value); }
      });
      return params.toString();
    }

    function ensureRow(id, ev) {
      var table = $("#jobs-table");
      if (!table || table.dataset.firstPage !== "true" || document.getElementById("job-" + id)) { return; }
      if (waiting[id]) { if (ev) { waiting[id].push(ev); } return; }
      waiting[id] = ev ? [ev] : [];
      fetch("/ui/jobs/" + encodeURIComponent(id) + "/row?" + filters(), { credentials: "same-origin" })
        .then(function (response) { return response.status === 200 ? response.text() : ""; })
        .then(function (html) {
          var events = waiting[id] || [];
          delete waiting[id];
          var body = $("#jobs-body");
          if (!html || !body || document.getElementById("job-" + id)) { return; }
          var holder = document.createElement("tbody");
          holder.innerHTML = html.trim();
          var row = holder.firstElementChild;
          if (!row) { return; }
          var placeholder = $("tr.placeholder", body);
          if (placeholder) { placeholder.remove(); }
          body.insertBefore(row, body.firstElementChild);
          events.forEach(function (e) { apply(row, e); });
        })
        .catch(function () { delete waiting[id]; });
    }

    var seenSnapshot = false;
    var source = stream("/api/v1/events?limit=0", {
      event: function (ev, name) {
        var row = document.getElementById("job-" + ev.jobId);
        if (row) { apply(row, ev); }
        else if (name === "submitted" || name === "replayed") { ensureRow(ev.jobId, ev); }
        else if (waiting[ev.jobId]) { waiting[ev.jobId].push(ev); }
      },
      snapshot: function () {
        if (seenSnapshot) { refresh("#jobs-table"); }  // a reconnect that could not resume
        seenSnapshot = true;
      },
      dropped: function () { refresh("#jobs-table"); },
      end: function () {
        source.close();
        var s = state();
        if (s) { s.textContent = "Live updates stopped: the server is shutting down."; }
      }
    }, state);

    document.addEventListener("htmx:afterRequest", function (e) {
      var ids = e.detail.xhr && e.detail.xhr.getResponseHeader("X-Submitted-Jobs");
      if (ids) { ids.split(",").reverse().forEach(function (id) { ensureRow(id, null); }); }
    });
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
    stream("/api/v1/events?limit=0", {
      dead_lettered: later, replayed: later, snapshot: function () {}, dropped: later
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
