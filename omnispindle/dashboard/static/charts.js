// The overview's charts: per-minute outcomes of the last hour, fetched from the
// series endpoint and redrawn every few seconds. The data holds the columns
// minute (Unix seconds), succeeded, failed and retried.
(function () {
  "use strict";
  const box = document.querySelector(".charts");
  if (!box || typeof uPlot === "undefined") return;
  const colors = { succeeded: "#17803d", failed: "#c0262d", retried: "#b26b00" };
  const charts = new Map();

  function draw(data) {
    box.querySelectorAll(".chart").forEach(function (place) {
      const column = place.dataset.column;
      const series = [data.minute, data[column]];
      const chart = charts.get(column);
      if (chart) {
        chart.setData(series);
        return;
      }
      charts.set(column, new uPlot({
        width: 400,
        height: 180,
        legend: { show: false },
        series: [{}, { label: column, stroke: colors[column], fill: colors[column] + "22", width: 2 }],
        axes: [{}, { size: 50 }],
      }, series, place));
    });
    box.dataset.drawn = String(Date.now());
  }

  function refresh() {
    fetch(box.dataset.series, { credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) { if (data) draw(data); })
      .catch(function () { /* the next refresh tries again */ });
  }

  refresh();
  setInterval(refresh, Number(box.dataset.refresh || 4) * 1000);
})();
