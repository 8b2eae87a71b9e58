// prism dashboard: re-renders the page's <main> from the server every two seconds,
// while the tab is visible and no form field has the focus. No other script runs.
(function () {
  "use strict";
  var live = document.getElementById("live");
  function refresh() {
    var active = document.activeElement;
    if (document.hidden || (active && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName))) {
      return;
    }
    fetch(location.href, { headers: { "X-Requested-With": "refresh" } })
      .then(function (r) {
        if (!r.ok) { throw new Error(r.status); }
        return r.text();
      })
      .then(function (text) {
        var doc = new DOMParser().parseFromString(text, "text/html");
        var fresh = doc.getElementById("main");
        var main = document.getElementById("main");
        if (fresh && main) { main.innerHTML = fresh.innerHTML; }
        if (live) { live.textContent = "live"; live.className = ""; }
      })
      .catch(function () {
        if (live) { live.textContent = "head unreachable"; live.className = "bad"; }
      });
  }
  setInterval(refresh, 2000);
})();
