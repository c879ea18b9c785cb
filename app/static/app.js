// Small behaviours on top of htmx; every page works without them.
(function () {
  "use strict";
  var paused = false;
  var held = [];
  var atBottom = true;

  function log() { return document.getElementById("log"); }

  // Follow the end of a live log unless the reader scrolled up; hold new lines while paused.
  document.addEventListener("htmx:sseBeforeMessage", function (e) {
    var el = log();
    if (!el || e.target !== el) return;
    if (paused) {
      held.push(e.detail.data);
      e.preventDefault();
      return;
    }
    atBottom = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
  });
  document.addEventListener("htmx:sseMessage", function (e) {
    var el = log();
    if (!el || e.target !== el) return;
    var empty = document.getElementById("nothing-yet");
    if (empty) empty.remove();
    if (atBottom) el.scrollTop = el.scrollHeight;
  });
  document.addEventListener("click", function (e) {
    var button = e.target.closest && e.target.closest("#pause");
    if (!button) return;
    paused = !paused;
    button.textContent = paused ? "Resume" : "Pause";
    button.setAttribute("aria-pressed", String(paused));
    var el = log();
    if (!paused && el) {
      el.insertAdjacentHTML("beforeend", held.join(""));
      held = [];
      el.scrollTop = el.scrollHeight;
    }
  });

  // #L120: highlight the line, or open the part of the log that holds it.
  function gotoLine() {
    var m = location.hash.match(/^#L(\d+)$/);
    if (!m || !log()) return;
    var line = document.getElementById("L" + m[1]);
    document.querySelectorAll(".ln.hl").forEach(function (x) { x.classList.remove("hl"); });
    if (line) {
      line.classList.add("hl");
      line.scrollIntoView({ block: "center" });
    } else if (!new URLSearchParams(location.search).has("line")) {
      var url = new URL(location.href);
      url.searchParams.set("line", m[1]);
      location.replace(url.toString());
    }
  }
  window.addEventListener("hashchange", gotoLine);
  document.addEventListener("DOMContentLoaded", function () {
    var el = log();
    if (el && el.dataset.following && !location.hash) el.scrollTop = el.scrollHeight;
    gotoLine();
  });
  document.addEventListener("htmx:load", function (e) { if (e.target === document.body) gotoLine(); });

  // "times": each log line's time (when it was written), shown on demand and remembered.
  function applyTimes() {
    var box = document.getElementById("show-times"), el = log();
    if (!box || !el) return;
    box.checked = localStorage.getItem("gantry.showTimes") === "1";
    el.classList.toggle("show-times", box.checked);
  }
  document.addEventListener("change", function (e) {
    if (e.target.id !== "show-times") return;
    localStorage.setItem("gantry.showTimes", e.target.checked ? "1" : "0");
    applyTimes();
  });
  document.addEventListener("DOMContentLoaded", applyTimes);
  document.addEventListener("htmx:load", function (e) { if (e.target === document.body) applyTimes(); });

  // Copy buttons (the new API token).
  document.addEventListener("click", function (e) {
    var button = e.target.closest && e.target.closest("[data-copy]");
    if (!button) return;
    var source = document.getElementById(button.dataset.copy);
    if (source && navigator.clipboard) {
      navigator.clipboard.writeText(source.textContent.trim()).then(function () {
        button.textContent = "Copied";
      });
    }
  });
})();

// The submit page: line numbers beside the spec, errors marked at their lines, file upload.
(function () {
  "use strict";
  function sync() {
    var text = document.getElementById("spec");
    var gutter = document.getElementById("gutter");
    if (!text || !gutter) return;
    var marked = (text.dataset.errorLines || "").split(",").filter(Boolean);
    var lines = text.value.split("\n").length;
    var html = [];
    for (var i = 1; i <= lines; i++) {
      html.push(marked.indexOf(String(i)) >= 0 ? '<span class="err">' + i + "</span>" : "<span>" + i + "</span>");
    }
    gutter.innerHTML = html.join("");
    gutter.scrollTop = text.scrollTop;
  }
  document.addEventListener("input", function (e) { if (e.target.id === "spec") sync(); });
  document.addEventListener("scroll", function (e) {
    if (e.target.id === "spec") document.getElementById("gutter").scrollTop = e.target.scrollTop;
  }, true);
  document.addEventListener("change", function (e) {
    if (e.target.id !== "spec-file" || !e.target.files.length) return;
    var reader = new FileReader();
    reader.onload = function () {
      var text = document.getElementById("spec");
      text.value = reader.result;
      e.target.value = "";
      sync();
    };
    reader.readAsText(e.target.files[0]);
  });
  document.addEventListener("click", function (e) {
    var link = e.target.closest && e.target.closest(".goto-line");
    if (!link) return;
    var text = document.getElementById("spec");
    var n = parseInt(link.dataset.line, 10);
    var lines = text.value.split("\n");
    var start = lines.slice(0, n - 1).join("\n").length + (n > 1 ? 1 : 0);
    text.focus();
    text.setSelectionRange(start, start + (lines[n - 1] || "").length);
    text.scrollTop = Math.max(0, (n - 5) * parseFloat(getComputedStyle(text).lineHeight || "18"));
    e.preventDefault();
  });
  document.addEventListener("DOMContentLoaded", sync);
  document.addEventListener("htmx:afterSettle", sync);
})();

// The workflow page's timeline keeps its latest events only (the list's data-keep): live
// updates prepend new ones, and a 10,000-task workflow has tens of thousands. The "earlier
// events" link then starts past the oldest event still shown.
(function () {
  function trimTimeline() {
    var list = document.getElementById("timeline");
    var keep = list && parseInt(list.dataset.keep || "", 10);
    if (!keep || list.children.length <= keep) return;
    while (list.children.length > keep) list.removeChild(list.lastElementChild);
    var link = document.getElementById("events-earlier");
    var oldest = list.lastElementChild && list.lastElementChild.dataset.event;
    if (link && oldest) {
      link.href = link.dataset.base + "?before=" + encodeURIComponent(oldest);
      document.getElementById("events-earlier-wrap").hidden = false;
    }
  }
  document.addEventListener("htmx:oobAfterSwap", trimTimeline);
  document.addEventListener("htmx:sseMessage", trimTimeline);

  // A live view refused (signed out elsewhere, disabled, access changed): the stream is
  // answered 401 and retried in silence; say so once, with a way back (a review found that
  // pages went on showing an old state without a word).
  document.addEventListener("htmx:sseError", function () {
    if (document.getElementById("signed-out")) return;
    fetch("/api/v1/me", { credentials: "same-origin" }).then(function (r) {
      if (r.status !== 401 || document.getElementById("signed-out")) return;
      var p = document.createElement("p");
      p.id = "signed-out";
      p.className = "flash bad";
      p.setAttribute("role", "alert");
      var a = document.createElement("a");
      a.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
      a.textContent = "Sign in again";
      p.append("You are signed out (elsewhere, or your account changed): this page no longer updates. ", a);
      (document.querySelector("main") || document.body).prepend(p);
    }).catch(function () {});
  });
})();

// Times that keep going between updates: "5m 02s ago" (data-ago) and the duration of what
// has not ended (data-since), redrawn every second as the server would write them.
(function () {
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function span(s) {
    s = Math.max(0, Math.floor(s));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + pad(s % 60) + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h " + pad(Math.floor((s % 3600) / 60)) + "m";
    return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
  }
  function tick() {
    var now = Date.now();
    document.querySelectorAll("time[data-ago]").forEach(function (el) {
      var s = (now - Date.parse(el.getAttribute("datetime"))) / 1000;
      if (!isNaN(s)) el.textContent = s >= 1 ? span(s) + " ago" : "just now";
    });
    document.querySelectorAll("time[data-since]").forEach(function (el) {
      var s = (now - Date.parse(el.getAttribute("datetime"))) / 1000;
      if (!isNaN(s)) el.textContent = span(s);
    });
  }
  setInterval(tick, 1000);
})();
