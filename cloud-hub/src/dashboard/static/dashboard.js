// Sitepilot fleet dashboard: replaces the page's live part with what the server pushes
// over server-sent events. The server renders (and escapes) every fragment.
(function () {
  'use strict';
  const live = document.getElementById('live');
  const state = document.getElementById('live-state');
  if (!live || !live.dataset.stream) return;

  function setState(text) {
    if (state) state.textContent = text;
  }

  if (!window.EventSource) {
    setState('static view (no live updates in this browser)');
    return;
  }
  const source = new EventSource(live.dataset.stream);
  source.addEventListener('open', () => setState('live'));
  source.addEventListener('live', (e) => {
    let msg;
    try {
      msg = JSON.parse(e.data);
    } catch (_) {
      return;
    }
    if (typeof msg.html === 'string') live.innerHTML = msg.html;
    setState('live · updated ' + new Date().toLocaleTimeString());
  });
  // EventSource reconnects by itself; say so meanwhile.
  source.addEventListener('error', () => setState('reconnecting…'));
})();
