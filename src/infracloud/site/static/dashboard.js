// infracloud dashboard: every few seconds, fetch this page's live part (?fragment=1) and swap
// it in. Without JavaScript the page reloads itself (<noscript> meta refresh).
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !window.fetch) { return; }
  var every = parseInt(live.getAttribute("data-refresh"), 10) || 3000;
  var stale = document.getElementById("stale");
  var staleSince = document.getElementById("stale-since");
  var base = document.body.getAttribute("data-title") || document.title;
  var busy = false;

  function fragmentUrl() {
    var url = new URL(window.location.href);
    url.searchParams.set("fragment", "1");
    url.hash = "";
    return url.toString();
  }

  function editing() {  // do not swap a form away under the user's fingers
    var el = document.activeElement;
    return el && el !== document.body && live.contains(el) &&
      /^(INPUT|SELECT|TEXTAREA)$/.test(el.tagName);
  }

  function retitle() {
    var root = live.querySelector(".live-root");
    var n = root ? parseInt(root.getAttribute("data-alerts"), 10) || 0 : 0;
    document.title = (n ? "\u26a0 " + n + " alert" + (n === 1 ? "" : "s") + " \u00b7 " : "") + base;
  }

  function setStale(on) {
    document.body.classList.toggle("is-stale", on);
    if (on && stale.hidden) {
      var root = live.querySelector(".live-root");
      staleSince.textContent = root ? root.getAttribute("data-now") : "?";
    }
    stale.hidden = !on;
  }

  function refresh() {
    if (busy || document.hidden || editing()) { return; }
    busy = true;
    fetch(fragmentUrl(), { cache: "no-store", credentials: "same-origin",
                           headers: { "Accept": "text/html" } })
      .then(function (r) {
        if (r.status === 401 || r.status === 403) {  // signed out or expired: sign in again
          window.location.assign("/dashboard/login?next=" +
            encodeURIComponent(window.location.pathname + window.location.search));
        }
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.text();
      })
      .then(function (html) {
        if (!editing()) { live.innerHTML = html; }
        setStale(false);
        retitle();
      })
      .catch(function () { setStale(true); })
      .then(function () { busy = false; });
  }

  retitle();
  window.setInterval(refresh, every);
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) { refresh(); }
  });
}());
