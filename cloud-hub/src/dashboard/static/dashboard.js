// Sitepilot fleet dashboard: replaces the page's live part with what the server pushes
// over server-sent events, keeps the open-alert count in the navigation current, sends
// the command buttons' forms without leaving the page, and draws the charts. The server
// renders (and escapes) every fragment.
(function () {
  'use strict';
  const live = document.getElementById('live');
  const state = document.getElementById('live-state');
  const badge = document.getElementById('alert-count');

  function setState(text) {
    if (state) state.textContent = text;
  }

  function setCount(n) {
    if (!badge || typeof n !== 'number') return;
    badge.textContent = String(n);
    badge.className = n > 0 ? 'badge bad' : 'badge ok';
  }

  // ---- live updates -------------------------------------------------------------------
  const stream = live && live.dataset.stream ? live.dataset.stream : badge ? '/events?view=count' : null;
  let source = null;
  function connect() {
    source = new EventSource(stream);
    source.addEventListener('open', () => setState('live'));
    source.addEventListener('live', (e) => {
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch (_) {
        return;
      }
      setCount(msg.alerts);
      if (live && typeof msg.html === 'string') {
        live.innerHTML = msg.html;
        setState('live · updated ' + new Date().toLocaleTimeString());
      }
    });
    // EventSource reconnects by itself; say so meanwhile.
    source.addEventListener('error', () => setState('reconnecting…'));
  }
  if (stream) {
    if (!window.EventSource) {
      setState('static view (no live updates in this browser)');
    } else {
      connect();
      // A page left for another is closed, or kept in the back/forward cache with its
      // stream open: a browser allows six connections to a host, and pages kept with
      // their streams would use them up. Close on leaving, open again on coming back.
      window.addEventListener('pagehide', () => {
        if (source) source.close();
        source = null;
      });
      window.addEventListener('pageshow', (e) => {
        if (e.persisted && !source) connect();
      });
    }
  }

  // ---- command buttons ----------------------------------------------------------------
  const result = document.getElementById('cmd-result');
  document.addEventListener('submit', (e) => {
    const form = e.target;
    if (!(form instanceof HTMLFormElement) || !form.classList.contains('cmd') || !window.fetch) return;
    e.preventDefault();
    const button = form.querySelector('button');
    if (button) button.disabled = true;
    if (result) result.textContent = 'Sending…';
    fetch(form.action, {
      method: 'POST',
      headers: { Accept: 'application/json' },
      body: new URLSearchParams(new FormData(form)),
      credentials: 'same-origin',
    })
      .then((r) => r.json().then((body) => ({ ok: r.ok, status: r.status, body })))
      .then(({ ok, status, body }) => {
        if (!result) return;
        result.textContent = ok ? body.message : 'Refused (' + status + '): ' + (body.error || 'no reason given');
        result.className = ok ? 'cmd-result ok' : 'cmd-result bad';
      })
      .catch(() => {
        if (result) result.textContent = 'The hub did not answer; try again.';
      })
      .finally(() => {
        // The live part may have been replaced meanwhile; the button then is gone anyway.
        if (button) button.disabled = false;
      });
  });

  // ---- charts -------------------------------------------------------------------------
  const charts = document.getElementById('charts');
  if (charts && charts.dataset.src && window.uPlot && window.fetch) {
    const draw = (data) => {
      const xs = data.points.map((p) => Date.parse(p.start) / 1000);
      const bars = window.uPlot.paths.bars({ size: [0.8, 64] });
      const made = [];
      const make = (id, label, values, color, max) => {
        const el = document.getElementById(id);
        if (!el) return;
        el.textContent = '';
        const opts = {
          width: Math.max(200, el.clientWidth),
          height: 220,
          tzDate: (ts) => window.uPlot.tzDate(new Date(ts * 1000), 'Etc/UTC'),
          legend: { show: true },
          scales: { x: { time: true }, y: max ? { range: [0, max] } : { range: (u, lo, hi) => [0, Math.max(1, hi)] } },
          series: [{}, { label, stroke: color, fill: color + '66', paths: bars, points: { show: false } }],
          axes: [{}, { size: 48 }],
        };
        made.push({ el, plot: new window.uPlot(opts, [xs, values], el) });
      };
      make('chart-energy', 'kWh', data.points.map((p) => p.energy_kwh), '#1565c0', null);
      make('chart-utilisation', '%', data.points.map((p) => p.utilisation_pct), '#1a7f37', 100);
      let pending = null;
      window.addEventListener('resize', () => {
        clearTimeout(pending);
        pending = setTimeout(() => made.forEach(({ el, plot }) => plot.setSize({ width: Math.max(200, el.clientWidth), height: 220 })), 150);
      });
    };
    fetch(charts.dataset.src, { credentials: 'same-origin', headers: { Accept: 'application/json' } })
      .then((r) => (r.ok ? r.json() : Promise.reject(new Error('HTTP ' + r.status))))
      .then(draw)
      .catch(() => {
        charts.dataset.failed = 'true';
      });
  }
})();
