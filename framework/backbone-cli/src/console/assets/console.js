// backbone console: live lag on the groups page, over server-sent events. Without JavaScript the
// page shows the values it was rendered with.
"use strict";
(function () {
  if (!document.querySelector("[data-live]") || !window.EventSource) return;
  var status = document.getElementById("live-status");
  var source = new EventSource("/groups/live");
  source.addEventListener("lag", function (event) {
    var data = JSON.parse(event.data);
    document.querySelectorAll("[data-live]").forEach(function (el) {
      var value = data.cells[el.getAttribute("data-live")];
      if (value !== undefined && el.textContent !== value) {
        el.textContent = value;
        el.classList.toggle("busy", value !== "0" && value !== "0 s" && /lag|age/.test(el.getAttribute("data-live")));
      }
    });
    document.querySelectorAll("[data-spark]").forEach(function (el) {
      var points = data.sparks[el.getAttribute("data-spark")];
      if (points !== undefined) el.setAttribute("points", points);
    });
    document.body.setAttribute("data-updates", String(Number(document.body.getAttribute("data-updates") || "0") + 1));
    if (status) status.textContent = "live · read " + data.at;
  });
  source.onerror = function () {
    if (status) status.textContent = "reconnecting…";
  };
})();
