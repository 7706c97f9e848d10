// The live dashboard: a table of every ticker and two charts (price line, volume bars) of the
// selected one, fed by the /ws WebSocket (see crates/pricing-web/src/protocol.rs). It reconnects
// by itself with backoff, and skips points it already has (the server may resend them).
(() => {
  "use strict";
  const MAX_POINTS = 300;
  const series = new Map(); // ticker -> { t: [], price: [], volume: [], matches: -1 }
  const rows = new Map();   // ticker -> <tr>
  let selected = null;
  let priceChart = null;
  let volumeChart = null;
  let retries = 0;

  const $ = (sel) => document.querySelector(sel);
  const fmt = (v, digits) => (v == null || Number.isNaN(v) ? "–" : v.toFixed(digits));

  function setStatus(text, cls) {
    const el = $("#status");
    el.textContent = text;
    el.className = "status " + cls;
  }

  function seriesOf(ticker) {
    let s = series.get(ticker);
    if (!s) {
      s = { t: [], price: [], volume: [], matches: -1 };
      series.set(ticker, s);
    }
    return s;
  }

  // Adds a point unless it is not newer than the last one; true when added.
  function addPoint(ticker, p) {
    const s = seriesOf(ticker);
    if (p.matches <= s.matches) return false;
    s.matches = p.matches;
    s.t.push(p.at / 1e6);
    s.price.push(p.price);
    s.volume.push(p.volume);
    if (s.t.length > MAX_POINTS) {
      s.t.shift();
      s.price.shift();
      s.volume.shift();
    }
    return true;
  }

  function rowOf(ticker) {
    let tr = rows.get(ticker);
    if (tr) return tr;
    tr = document.createElement("tr");
    tr.tabIndex = 0;
    tr.dataset.ticker = ticker;
    tr.innerHTML = '<td class="sym"></td><td class="num price">–</td>' +
      '<td class="num change">–</td><td class="num volume">–</td>';
    tr.querySelector(".sym").textContent = ticker;
    tr.addEventListener("click", () => select(ticker));
    tr.addEventListener("keydown", (e) => { if (e.key === "Enter") select(ticker); });
    $("#tickers tbody").appendChild(tr);
    rows.set(ticker, tr);
    return tr;
  }

  function renderRow(ticker, flash) {
    const s = seriesOf(ticker);
    const tr = rowOf(ticker);
    const n = s.price.length;
    if (n === 0) return;
    const last = s.price[n - 1];
    const change = last - s.price[0];
    const pct = s.price[0] ? (change / s.price[0]) * 100 : 0;
    const priceCell = tr.querySelector(".price");
    const changeCell = tr.querySelector(".change");
    priceCell.textContent = fmt(last, 2);
    changeCell.textContent = (change >= 0 ? "+" : "") + fmt(change, 2) + " (" + fmt(pct, 2) + "%)";
    changeCell.className = "num change " + (change > 0 ? "up" : change < 0 ? "down" : "");
    tr.querySelector(".volume").textContent = fmt(s.volume[n - 1], 1);
    if (flash && n > 1) {
      const cls = last >= s.price[n - 2] ? "flash-up" : "flash-down";
      priceCell.classList.remove("flash-up", "flash-down");
      void priceCell.offsetWidth; // restart the animation
      priceCell.classList.add(cls);
    }
  }

  function chartWidth() {
    return Math.max(300, $(".charts").clientWidth - 28);
  }

  function makeCharts() {
    const axis = { stroke: "#8b98a8", grid: { stroke: "#253040" }, ticks: { stroke: "#253040" } };
    priceChart = new uPlot({
      title: "Price",
      width: chartWidth(),
      height: 260,
      scales: { x: { time: true } },
      axes: [axis, Object.assign({}, axis, { values: (u, vs) => vs.map((v) => v.toFixed(2)) })],
      series: [{}, { label: "price", stroke: "#58a6ff", width: 2, value: (u, v) => fmt(v, 4) }],
    }, [[], []], $("#price-chart"));
    volumeChart = new uPlot({
      title: "Volume",
      width: chartWidth(),
      height: 180,
      scales: { x: { time: true } },
      axes: [axis, axis],
      series: [{}, {
        label: "volume", stroke: "#3fb950", fill: "rgba(63,185,80,0.45)",
        paths: uPlot.paths.bars({ size: [0.7, 40] }), value: (u, v) => fmt(v, 1),
      }],
    }, [[], []], $("#volume-chart"));
    window.addEventListener("resize", () => {
      priceChart.setSize({ width: chartWidth(), height: 260 });
      volumeChart.setSize({ width: chartWidth(), height: 180 });
    });
  }

  function renderCharts() {
    if (!selected) return;
    const s = seriesOf(selected);
    if (!priceChart) makeCharts();
    priceChart.setData([s.t.slice(), s.price.slice()]);
    volumeChart.setData([s.t.slice(), s.volume.slice()]);
    $("#price-chart").dataset.points = String(s.t.length);
    $("#volume-chart").dataset.points = String(s.t.length);
  }

  function select(ticker) {
    selected = ticker;
    for (const [t, tr] of rows) tr.classList.toggle("selected", t === ticker);
    $("#selected").textContent = ticker;
    renderCharts();
  }

  function onMessage(event) {
    let msg;
    try {
      msg = JSON.parse(event.data);
    } catch (e) {
      console.warn("ignoring a malformed message", e);
      return;
    }
    if (msg.type === "snapshot") {
      for (const [ticker, points] of Object.entries(msg.tickers)) {
        for (const p of points) addPoint(ticker, p);
        renderRow(ticker, false);
      }
      if (!selected) {
        const first = [...series.entries()].find(([, s]) => s.t.length > 0);
        if (first) select(first[0]);
      }
      renderCharts();
    } else if (msg.type === "price") {
      if (!addPoint(msg.ticker, msg)) return;
      renderRow(msg.ticker, true);
      if (!selected) select(msg.ticker);
      else if (msg.ticker === selected) renderCharts();
    }
  }

  function connect() {
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
    const ws = new WebSocket(url);
    ws.onopen = () => { retries = 0; setStatus("live", "live"); };
    ws.onmessage = onMessage;
    ws.onerror = () => ws.close();
    ws.onclose = () => {
      const delay = Math.min(10000, 500 * 2 ** retries++);
      setStatus("reconnecting in " + Math.round(delay / 1000) + " s…", "reconnecting");
      setTimeout(connect, delay);
    };
  }

  // List every ticker at once, even before it trades.
  fetch("/api/tickers")
    .then((r) => r.json())
    .then((list) => list.forEach((row) => rowOf(row.ticker)))
    .catch((e) => console.warn("could not list tickers", e))
    .finally(connect);
})();
