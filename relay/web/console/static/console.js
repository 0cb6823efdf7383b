/* UserRelay console: copy buttons and the dashboard's charts. No inline script anywhere:
   the Content-Security-Policy allows only the relay's own files. */
(function () {
  "use strict";

  function copy(button) {
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source) { return; }
    var text = source.value !== undefined ? source.value : source.textContent;
    var done = function () { button.textContent = "Copied"; };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { select(source); });
    } else {
      select(source);
      try { document.execCommand("copy"); done(); } catch (e) { /* selected for Ctrl-C */ }
    }
  }

  function select(element) {
    if (element.select) { element.select(); return; }
    var range = document.createRange();
    range.selectNodeContents(element);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("[data-copy]") : null;
    if (button) { copy(button); }
  });

  /* Charts: the last hour of the relay's figures, fetched again every 5 s. */
  var charts = document.getElementById("charts");
  if (!charts || typeof uPlot === "undefined") { return; }
  var plots = {};
  var specs = {
    "chart-flow": [["events in", "#2271b1", "events_in"], ["deliveries out", "#00a32a", "deliveries_out"]],
    "chart-queue": [["queued", "#dba617", "queued"], ["in flight", "#8c8f94", "in_flight"], ["dead", "#d63638", "dead"]],
    "chart-lag": [["lag (s)", "#d63638", "lag"]]
  };

  function width(element) { return Math.max(260, element.clientWidth || 300); }

  function draw(data) {
    Object.keys(specs).forEach(function (id) {
      var element = document.getElementById(id);
      var columns = [data.at].concat(specs[id].map(function (s) { return data[s[2]]; }));
      var last = specs[id].map(function (s) {
        var values = data[s[2]];
        return s[2] + "=" + (values.length ? values[values.length - 1] : "");
      });
      element.setAttribute("data-latest", last.join(" "));
      element.setAttribute("data-points", String(data.at.length));
      if (!plots[id]) {
        plots[id] = new uPlot({
          width: width(element), height: 180,
          series: [{}].concat(specs[id].map(function (s) {
            return { label: s[0], stroke: s[1], width: 2 };
          })),
          axes: [{}, { size: 50 }]
        }, columns, element);
      } else {
        plots[id].setData(columns);
      }
    });
    charts.setAttribute("data-updated", String(Date.now()));
  }

  function refresh() {
    fetch(charts.getAttribute("data-source"), { credentials: "same-origin" })
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
      .then(draw)
      .catch(function () { charts.setAttribute("data-error", String(Date.now())); });
  }

  window.addEventListener("resize", function () {
    Object.keys(plots).forEach(function (id) {
      plots[id].setSize({ width: width(document.getElementById(id)), height: 180 });
    });
  });
  refresh();
  setInterval(refresh, 5000);
})();
