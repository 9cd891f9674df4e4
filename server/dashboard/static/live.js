// onetap dashboard: refresh the terminals board and today's figures every 5 s.
// Written for this project (Apache-2.0); no libraries.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live) { return; }
  var src = live.getAttribute("data-src");
  function refresh() {
    fetch(src + window.location.search, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.redirected || !response.ok) {
          if (response.redirected) { window.location.href = "/login"; }
          return null;
        }
        return response.text();
      })
      .then(function (html) { if (html !== null) { live.innerHTML = html; } })
      .catch(function () { /* offline for a moment: keep the last figures */ });
  }
  window.setInterval(refresh, 5000);
})();
