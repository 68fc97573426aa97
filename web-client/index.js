// Home page: the live streams from GET /api/streams, refreshed every 2.5 s.

import { initNav } from '/static/lumen.js';

const REFRESH_MS = 2500;
const THUMB_MS = 10000;
// The card's own background, under the thumbnail.
const PLAIN = 'radial-gradient(circle at 30% 30%, rgba(124, 92, 255, 0.45), transparent 60%)';

const list = document.getElementById('streams');
const empty = document.getElementById('empty');
const summary = document.getElementById('summary');
const errorBox = document.getElementById('error');

// Machine-readable state for tests and scripts.
const lumen = (window.lumen = { state: 'loading', streams: [], error: null });

async function refresh() {
  try {
    const res = await fetch('/api/streams', { cache: 'no-store' });
    if (!res.ok) throw new Error(`the server answered HTTP ${res.status}`);
    const streams = await res.json();
    if (!Array.isArray(streams)) throw new Error('the server sent an unexpected answer');
    lumen.streams = streams.filter((s) => s && typeof s.name === 'string' && s.live !== false);
    lumen.state = 'ok';
    lumen.error = null;
    errorBox.hidden = true;
    render(lumen.streams);
  } catch (e) {
    lumen.state = 'error';
    lumen.error = String(e.message || e);
    errorBox.textContent = `Cannot load the stream list: ${lumen.error}`;
    errorBox.hidden = false;
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

function render(streams) {
  const n = streams.length;
  summary.textContent = n === 0 ? 'No live streams.' : `${n} live stream${n === 1 ? '' : 's'}`;
  empty.hidden = n !== 0;
  list.replaceChildren(...streams.map(card));
}

function card(s) {
  const a = document.createElement('a');
  a.className = 'stream-card';
  a.href = `/watch/${encodeURIComponent(s.name)}`;
  a.dataset.stream = s.name;

  const thumb = document.createElement('div');
  thumb.className = 'thumb';
  // The live thumbnail (a recent keyframe, refreshed about every 10 s by
  // the server; the URL changes with it, so the browser caches it between).
  // A stream without one keeps the plain card.
  const frame = Math.floor(Date.now() / THUMB_MS);
  thumb.style.backgroundImage =
    `url("/api/streams/${encodeURIComponent(s.name)}/thumbnail.jpg?at=${frame}"), ${PLAIN}`;
  const pill = document.createElement('span');
  pill.className = 'pill is-live';
  pill.textContent = 'Live';
  thumb.append(pill);

  const name = document.createElement('div');
  name.className = 'name';
  name.textContent = s.name;

  const meta = document.createElement('div');
  meta.className = 'meta';
  const viewers = Number(s.viewers) || 0;
  const parts = [`${viewers} viewer${viewers === 1 ? '' : 's'}`];
  if (Number.isFinite(s.live_since_ms)) parts.push(`live for ${since(s.live_since_ms)}`);
  meta.textContent = parts.join(' · ');

  a.append(thumb, name, meta);
  return a;
}

function since(ms) {
  const secs = Math.max(0, Math.floor((Date.now() - ms) / 1000));
  if (secs < 60) return `${secs}s`;
  const mins = Math.floor(secs / 60);
  if (mins < 60) return `${mins}m`;
  return `${Math.floor(mins / 60)}h ${mins % 60}m`;
}

initNav();
refresh();
