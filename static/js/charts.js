// Renders the Plotly figures built on the server. Each chart element names the id of a
// <script type="application/json"> holding {"figure": {data, layout}, "config": {...}}.
(function () {
  "use strict";

  function render() {
    if (typeof window.Plotly === "undefined") return;
    document.querySelectorAll("[data-plotly-figure]").forEach(function (el) {
      var source = document.getElementById(el.getAttribute("data-plotly-figure"));
      if (!source) return;
      var payload = JSON.parse(source.textContent);
      window.Plotly.newPlot(el, payload.figure.data, payload.figure.layout, payload.config);
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", render);
  } else {
    render();
  }
})();
