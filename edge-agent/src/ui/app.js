// Sitepilot installer page: applies the sections pushed on /ui/events and sends the
// command buttons' requests to the JSON API. No dependencies, no inline handlers.
'use strict';
(() => {
  const live = document.getElementById('live');
  const tagInput = document.getElementById('id-tag');
  // Command results by "charger/connector", kept across re-renders of the sections.
  const results = new Map();
  const OK_STATUSES = ['Accepted', 'Unlocked', 'Scheduled'];

  function localize(root) {
    for (const t of root.querySelectorAll('time[datetime]')) {
      const d = new Date(t.dateTime);
      if (!Number.isNaN(d.getTime())) {
        t.textContent = d.toLocaleTimeString();
        t.title = d.toLocaleString();
      }
    }
  }

  function restoreResults(root) {
    for (const out of root.querySelectorAll('output[data-result]')) {
      const r = results.get(out.dataset.result);
      if (r) {
        out.textContent = r.text;
        out.className = r.state;
      }
    }
  }

  function show(key, state, text) {
    results.set(key, { state, text });
    for (const out of document.querySelectorAll('output[data-result]')) {
      if (out.dataset.result === key) {
        out.textContent = text;
        out.className = state;
      }
    }
  }

  function apply(sections) {
    for (const [name, html] of Object.entries(sections)) {
      const el = document.querySelector('[data-section="' + name + '"]');
      if (!el) continue;
      el.innerHTML = html;
      localize(el);
      restoreResults(el);
    }
  }

  function setLive(on, text) {
    live.textContent = text;
    live.className = on ? 'live on' : 'live off';
  }

  function connect() {
    if (!window.EventSource) {
      setLive(false, 'static view (no live updates in this browser)');
      return;
    }
    const source = new EventSource('/ui/events');
    source.addEventListener('open', () => setLive(true, 'live'));
    source.addEventListener('snapshot', (e) => {
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch (_) {
        return;
      }
      apply(msg.sections || {});
      setLive(true, 'live');
    });
    // EventSource reconnects by itself; say so meanwhile.
    source.addEventListener('error', () => setLive(false, 'reconnecting…'));
  }

  function body(d) {
    const connector = Number(d.connector || 0);
    switch (d.cmd) {
      case 'remote-start': {
        const idTag = tagInput.value.trim();
        if (!idTag) return { error: 'Enter an id tag above first.' };
        return { idTag, connectorId: connector };
      }
      case 'remote-stop':
        return { transactionId: Number(d.tx) };
      case 'unlock':
        return { connectorId: connector };
      case 'availability':
        return { connectorId: connector, type: d.type };
      case 'reset':
        return { type: d.type };
      case 'trigger-message':
        return connector > 0
          ? { requestedMessage: 'StatusNotification', connectorId: connector }
          : { requestedMessage: 'StatusNotification' };
      default:
        return { error: 'Unknown command ' + d.cmd };
    }
  }

  async function run(button) {
    const d = button.dataset;
    const key = d.charger + '/' + (d.connector || '0');
    const payload = body(d);
    if (payload.error) {
      show(key, 'bad', payload.error);
      if (d.cmd === 'remote-start') tagInput.focus();
      return;
    }
    if (d.cmd === 'reset' && d.type === 'Hard' && !window.confirm('Hard reset ' + d.charger + '? Sessions end.')) {
      return;
    }
    show(key, 'busy', d.label + '…');
    button.disabled = true;
    try {
      const url = '/api/v1/chargers/' + encodeURIComponent(d.charger) + '/commands/' + d.cmd;
      const resp = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(payload),
      });
      const answer = await resp.json().catch(() => ({}));
      if (resp.ok) {
        const status = answer.status || 'done';
        show(key, OK_STATUSES.includes(status) ? 'ok' : 'bad', d.label + ': ' + status);
      } else {
        show(key, 'bad', d.label + ' failed: ' + (answer.detail || answer.title || 'HTTP ' + resp.status));
      }
    } catch (err) {
      show(key, 'bad', d.label + ' failed: ' + err.message);
    } finally {
      button.disabled = false;
    }
  }

  document.addEventListener('click', (e) => {
    const button = e.target.closest('button[data-cmd]');
    if (button) run(button);
  });

  localize(document);
  connect();
})();
