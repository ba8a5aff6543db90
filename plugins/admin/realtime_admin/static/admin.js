// The admin page: live data over Server-Sent Events, actions through /admin/api/*.
// Plain JavaScript, nothing from the internet; every value is written as text, never
// as markup (channel names and reasons come from clients).
"use strict";

(function () {
  const token = document.querySelector('meta[name="admin-token"]').content;
  const HISTORY = 300;
  // [time, connections, deliveries/s, lag seconds] per second, oldest first.
  let samples = [];
  let localNode = "";

  function $(selector) { return document.querySelector(selector); }

  function cell(row, value, numeric) {
    const td = document.createElement("td");
    td.textContent = value === undefined || value === null ? "" : String(value);
    if (numeric) td.className = "num";
    row.appendChild(td);
  }

  function fillTable(selector, rows) {
    const body = $(selector + " tbody");
    const fresh = document.createElement("tbody");
    for (const values of rows) {
      const row = document.createElement("tr");
      for (const [value, numeric] of values) cell(row, value, numeric);
      fresh.appendChild(row);
    }
    body.replaceWith(fresh);
  }

  function uptime(seconds) {
    seconds = Math.max(0, Math.floor(seconds || 0));
    const d = Math.floor(seconds / 86400), h = Math.floor(seconds / 3600) % 24;
    const m = Math.floor(seconds / 60) % 60, s = seconds % 60;
    return (d ? d + "d " : "") + (d || h ? h + "h " : "") + m + "m " + s + "s";
  }

  function summary(counts) {
    const parts = Object.entries(counts || {}).map(([key, n]) => key + ": " + n);
    return parts.length ? parts.join(", ") : "none";
  }

  function drawChart(canvas, index, scale) {
    // Drawn at the size it is shown, so the text is not stretched.
    const ratio = window.devicePixelRatio || 1;
    const shownWidth = Math.max(100, Math.round(canvas.clientWidth * ratio));
    const shownHeight = Math.max(60, Math.round(canvas.clientHeight * ratio));
    if (canvas.width !== shownWidth) canvas.width = shownWidth;
    if (canvas.height !== shownHeight) canvas.height = shownHeight;
    const ctx = canvas.getContext("2d");
    const width = canvas.width, height = canvas.height;
    ctx.clearRect(0, 0, width, height);
    const values = samples.map((s) => s[index] * scale);
    const top = Math.max(1, ...values) * 1.1;
    ctx.strokeStyle = "#e3e6ea";
    ctx.fillStyle = "#667";
    ctx.font = "10px sans-serif";
    for (const fraction of [0.5, 1]) {
      const y = height - (height - 4) * fraction;
      ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(width, y); ctx.stroke();
      ctx.fillText((top * fraction).toPrecision(3), 2, y + 10);
    }
    if (values.length < 2) return;
    ctx.strokeStyle = "#2266cc";
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    const step = width / (HISTORY - 1);
    const offset = HISTORY - values.length;
    values.forEach((value, i) => {
      const x = (offset + i) * step;
      const y = height - (height - 4) * (value / top);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }

  function drawCharts() {
    drawChart($("#chart-connections"), 1, 1);
    drawChart($("#chart-deliveries"), 2, 1);
    drawChart($("#chart-lag"), 3, 1000);
    const last = samples[samples.length - 1];
    if (last) {
      $("#now-connections").textContent = String(last[1]);
      $("#now-deliveries").textContent = String(last[2]);
      $("#now-lag").textContent = (last[3] * 1000).toFixed(1);
    }
  }

  function render(data) {
    localNode = data.node || "";
    $("#node").textContent = localNode;
    if (data.history) samples = data.history.slice(-HISTORY);
    else if (data.sample) {
      samples.push(data.sample);
      if (samples.length > HISTORY) samples.shift();
    }
    drawCharts();
    const error = $("#nodes-error");
    error.hidden = !data.nodes_error;
    error.textContent = data.nodes_error || "";
    fillTable("#nodes", (data.nodes || []).map((n) => [
      [n.name + (n.name === localNode ? " (this page)" : "")],
      [n.num_clients, true], [n.num_channels, true], [n.num_subs, true],
      [n.deliveries_per_second === undefined ? "–" : n.deliveries_per_second, true],
      [uptime(n.uptime), true],
    ]));
    fillTable("#disconnects", (data.disconnects || []).map((d) => [
      [d.time ? new Date(d.time * 1000).toLocaleTimeString() : ""],
      [d.code, true], [d.reason], [d.protocol],
    ]));
    $("#protocols").textContent = summary(data.protocols);
    $("#disconnect-codes").textContent = summary(data.disconnect_codes);
    const api = data.api || {};
    const status = $("#api-status");
    status.hidden = !!api.available;
    status.textContent = api.available ? "" : "Actions are unavailable: " + (api.reason || "");
    for (const form of document.querySelectorAll(".actions form")) {
      form.classList.toggle("disabled", !api.available);
      for (const control of form.elements) control.disabled = !api.available;
    }
  }

  let search = "";
  let searchTimer = null;
  async function loadChannels() {
    try {
      const response = await fetch("/admin/channels?q=" + encodeURIComponent(search),
        { credentials: "same-origin" });
      if (!response.ok) {
        $("#channels-note").textContent = await response.text();
        return;
      }
      const data = await response.json();
      fillTable("#channels", data.channels.map(([name, count]) => [[name], [count, true]]));
      let note = "showing " + data.channels.length + " of " + data.total +
        (data.where === "local" ? " (this process)" : " (cluster)");
      if (data.error) note += ": " + data.error;
      $("#channels-note").textContent = note;
    } catch (err) {
      $("#channels-note").textContent = "cannot list channels: " + err;
    }
  }

  $("#channel-search").addEventListener("input", (event) => {
    search = event.target.value.slice(0, 128);
    clearTimeout(searchTimer);
    searchTimer = setTimeout(loadChannels, 250);
  });

  async function post(path, body) {
    return fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-Admin-Token": token },
      body: JSON.stringify(body),
    });
  }

  function requestFor(method, form) {
    const get = (name) => form.elements[name].value;
    if (method === "publish") {
      let data;
      try { data = JSON.parse(get("data")); } catch (err) { data = get("data"); }
      return { channel: get("channel"), data: data };
    }
    if (method === "history") {
      return { channel: get("channel"), limit: Number(get("limit")) || 10, reverse: true };
    }
    if (method === "disconnect") return { user: get("user") };
    return { channel: get("channel") };
  }

  for (const form of document.querySelectorAll(".actions form")) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const method = form.dataset.method;
      const out = $("#action-result");
      out.dataset.state = "pending";
      out.textContent = method + "…";
      try {
        const response = await post("/admin/api/" + method, requestFor(method, form));
        const body = await response.text();
        let shown = body;
        try { shown = JSON.stringify(JSON.parse(body), null, 2); } catch (err) { /* text */ }
        const failed = !response.ok || shown.includes('"error"');
        out.dataset.state = failed ? "error" : "ok";
        out.textContent = method + " → " + response.status + "\n" + shown;
      } catch (err) {
        out.dataset.state = "error";
        out.textContent = method + " failed: " + err;
      }
    });
  }

  $("#logout").addEventListener("click", async () => {
    await post("/admin/logout", {});
    window.location.reload();
  });

  function connect() {
    const status = $("#status");
    const events = new EventSource("/admin/events");
    let received = 0;
    events.onopen = () => { status.dataset.state = "open"; status.textContent = "live"; };
    events.onmessage = (event) => {
      render(JSON.parse(event.data));
      if (received++ % 3 === 0) loadChannels();
    };
    events.onerror = () => {
      status.dataset.state = "closed";
      status.textContent = "reconnecting";
      // A signed-out or expired session ends the stream for good: back to the login.
      if (events.readyState === EventSource.CLOSED) {
        setTimeout(() => window.location.reload(), 3000);
      }
    };
  }

  loadChannels();
  connect();
})();
