// Watch page, served at /watch/{stream}: plays the stream over WHEP, waits
// and retries every 2 s while it is offline, and shows playback stats.
//
// Credentials: `?token=…` (a share link's subscribe token) goes as a Bearer
// token on the WHEP POST and on every request to the session it makes; a
// logged-in viewer (the owner of a private stream) goes with the session
// cookie and its CSRF token instead. A refused private stream says so and
// does not retry.
//
// Chat: each WHEP session opens the `chat` data channel. A logged-in viewer
// may send (moderators and admins also get delete, time out and ban); a
// viewer with `?token=` may try (the server decides, and its `error` frame
// is shown); anyone else reads, with a link to log in.

import {
  HttpError, REL_LAYER, REL_SSE, createChat, currentUser, endSession, formatBitrate, inboundStats,
  initNav, negotiate, recordingLink, renderStats, sessionHeaders,
} from '/static/lumen.js';

const RETRY_MS = 2000;
// No media at all for this long means the broadcast is gone (or broken):
// drop the session and start over.
const STALL_MS = 4000;
const CONNECT_TIMEOUT_MS = 15000;

const $ = (id) => document.getElementById(id);
const video = $('video');
const statusPill = $('status');
const overlay = $('overlay');
const overlayText = $('overlay-text');
const unmuteButton = $('unmute');
const errorBox = $('error');
const statsList = $('stats');
const viewersLabel = $('viewers');
const qualityMenu = $('quality');
const layerLine = $('layer');
const LAYER_NAMES = { h: '720p', m: '360p', l: '180p' };
const REASONS = {
  starting: 'starting',
  'single-layer': 'the broadcaster sends one layer',
  bandwidth: 'chosen for your bandwidth',
  requested: 'as you asked',
  'layer-stopped': 'the better layer stopped',
  size: 'enough for the size of your player',
};

const parts = location.pathname.split('/').filter(Boolean);
const name = parts.length >= 2 ? decodeURIComponent(parts[1]) : '';
const token = new URLSearchParams(location.search).get('token') || '';
const PRIVATE_MESSAGE = 'This stream is private: ask its owner for a link.';
// The WHEP endpoint a draining node sent this viewer to (its `reconnect`
// event); the page's own node until then.
let movedTo = null;

// Machine-readable state for tests and scripts.
const lumen = (window.lumen = {
  state: 'connecting', stream: name, error: null, stats: {}, location: null, layer: null, viewers: null,
});

let session = null;
let retryTimer = null;
const chat = createChat(lumen, {
  canSend: false,
  loginHref: `/login?next=${encodeURIComponent(location.pathname + location.search)}`,
});

$('title').textContent = name || 'Watch';
document.title = `${name || 'watch'} — lumen`;
renderStats(statsList, rows({}));

unmuteButton.addEventListener('click', async () => {
  video.muted = false;
  try {
    await video.play();
    unmuteButton.hidden = true;
  } catch (_) {
    // Still no permission for sound: keep the picture going.
    video.muted = true;
    unmuteButton.hidden = false;
    video.play().catch(() => {});
  }
});
video.addEventListener('volumechange', () => {
  if (!video.muted) unmuteButton.hidden = true;
});
qualityMenu.addEventListener('change', () => {
  if (session) selectLayer(session, qualityMenu.value);
});
// The player's size goes with every layer request: the server sends no
// bigger layer than the picture is shown at. A resize tells it again.
let resizeTimer = null;
new ResizeObserver(() => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => {
    if (session) selectLayer(session, qualityMenu.value);
  }, 500);
}).observe(video);
window.addEventListener('pagehide', () => {
  if (session) endSession(session.location, token, session.headers);
});

initNav();
if (name) {
  // Who is logged in decides the credentials, so ask before the first offer.
  currentUser().catch(() => null).then((user) => {
    chat.configure({
      canSend: !!user || !!token,
      me: user ? user.id : null,
      moderator: !!user && (user.role === 'admin' || user.role === 'moderator'),
    });
    connect();
  });
  loadPast();
} else {
  setState('error', 'No stream name in the address: open /watch/NAME.');
}

function setState(state, error = null) {
  lumen.state = state;
  lumen.error = error;
  const labels = {
    offline: 'Offline', connecting: 'Connecting…', live: 'Live', error: 'Error', private: 'Private',
  };
  statusPill.textContent = labels[state] || state;
  statusPill.className = `pill is-${state === 'private' ? 'error' : state}`;
  errorBox.textContent = error || '';
  errorBox.hidden = !error;
  overlay.hidden = state === 'live';
  overlayText.textContent = {
    offline: `“${name}” is offline. Waiting for the broadcast to start…`,
    connecting: 'Connecting…',
    error: 'Playback failed. Retrying…',
    private: PRIVATE_MESSAGE,
  }[state] || '';
}

// Headers for a request to the session: the share link's token as Bearer,
// or a logged-in page's CSRF token (its cookie goes along anyway).
function authHeaders(s) {
  return token ? { Authorization: `Bearer ${token}` } : s.headers;
}

async function connect() {
  clearTimeout(retryTimer);
  const s = {
    pc: new RTCPeerConnection({ bundlePolicy: 'max-bundle' }),
    media: new MediaStream(),
    location: null,
    timer: null,
    prev: null,
    started: performance.now(),
    lastProgress: performance.now(),
    ticks: 0,
    headers: token ? {} : sessionHeaders(),
  };
  session = s;
  if (lumen.state !== 'offline') setState('connecting');
  const pc = s.pc;
  pc.addTransceiver('video', { direction: 'recvonly' });
  pc.addTransceiver('audio', { direction: 'recvonly' });
  s.chat = chat.attach(pc);
  pc.addEventListener('track', (e) => {
    if (session !== s) return;
    s.media.addTrack(e.track);
    if (video.srcObject !== s.media) {
      video.srcObject = s.media;
      startPlayback();
    }
  });
  pc.addEventListener('connectionstatechange', () => {
    if (session !== s) return;
    if (pc.connectionState === 'connected') {
      s.lastProgress = performance.now();
      setState('live');
    } else if (pc.connectionState === 'failed' || pc.connectionState === 'closed') {
      restart(s, 'offline');
    }
  });
  try {
    const { location: loc, links } = await negotiate(
      pc, movedTo || `/whep/${encodeURIComponent(name)}`, token, s.headers,
    );
    if (session !== s) {
      endSession(loc, token, s.headers);
      return;
    }
    s.location = loc;
    lumen.location = loc;
    s.layerUrl = links.find((l) => l.rel === REL_LAYER)?.url || null;
    const sse = links.find((l) => l.rel === REL_SSE);
    if (sse) followEvents(s, sse.url);
    qualityMenu.disabled = !s.layerUrl;
    if (s.layerUrl) selectLayer(s, qualityMenu.value);
    if (pc.connectionState === 'connected') setState('live');
    s.timer = setInterval(() => tick(s), 1000);
  } catch (e) {
    if (session !== s) return;
    if (e instanceof HttpError && e.status === 409) {
      restart(s, 'offline');
    } else if (e instanceof HttpError && (e.status === 401 || e.status === 403)) {
      // Retrying would be refused again: a reload (after logging in, or
      // with a share link) is what changes the answer.
      const why = token ? `${PRIVATE_MESSAGE} (${e.message})` : PRIVATE_MESSAGE;
      restart(s, 'private', why, null);
    } else {
      restart(s, 'error', describe(e), 2 * RETRY_MS);
    }
  }
}

// The video element's size in device pixels, when it has one.
function playerSize() {
  const r = window.devicePixelRatio || 1;
  const w = Math.round(video.clientWidth * r);
  const h = Math.round(video.clientHeight * r);
  return w > 0 && h > 0 ? { maxWidth: Math.min(w, 16384), maxHeight: Math.min(h, 16384) } : {};
}

// Pins a layer (rid) or, with '', returns to automatic choice.
async function selectLayer(s, rid) {
  if (!s.layerUrl) return;
  try {
    const res = await fetch(s.layerUrl, {
      method: 'POST',
      headers: { ...authHeaders(s), 'Content-Type': 'application/json' },
      body: JSON.stringify({ ...(rid ? { encodingId: rid } : {}), ...playerSize() }),
    });
    // With server-sent events, the `layer` event tells (in order); this
    // answer could arrive after a newer event and show a stale state.
    if (res.ok && !s.events) showLayer(await res.json().catch(() => null));
  } catch (_) {
    // The next layer event tells the truth anyway.
  }
}

// Server-sent events: viewer count, the layers sent, and our own layer.
async function followEvents(s, url) {
  try {
    const res = await fetch(url, {
      method: 'POST',
      headers: { ...authHeaders(s), 'Content-Type': 'application/json' },
      body: JSON.stringify(['active', 'inactive', 'layers', 'viewercount', 'layer', 'reconnect']),
    });
    const loc = res.headers.get('Location');
    if (res.status !== 201 || !loc || session !== s) return;
    const es = (s.events = new EventSource(new URL(loc, url).href));
    es.addEventListener('viewercount', (e) => {
      const n = JSON.parse(e.data).viewercount;
      lumen.viewers = n;
      viewersLabel.textContent = `${n} watching`;
    });
    es.addEventListener('layer', (e) => showLayer(JSON.parse(e.data)));
    es.addEventListener('layers', (e) => {
      const media = Object.values(JSON.parse(e.data))[0] || {};
      const live = new Set((media.active || []).map((l) => l.id));
      for (const o of qualityMenu.options) {
        if (o.value) o.disabled = live.size > 0 && !live.has(o.value);
      }
    });
    es.addEventListener('inactive', () => {
      if (session === s) restart(s, 'offline');
    });
    // The node drains (or stops): play on from the node it names, at once.
    es.addEventListener('reconnect', (e) => {
      const to = JSON.parse(e.data || '{}').url;
      if (typeof to === 'string' && /^https?:\/\//.test(to)) movedTo = to;
      if (session === s) restart(s, 'connecting', null, to ? 0 : RETRY_MS);
    });
  } catch (_) {
    // Events are a nicety; playback goes on without them.
  }
}

function showLayer(l) {
  if (!l) return;
  lumen.layer = l;
  const cur = l.current ? LAYER_NAMES[l.current] || l.current : '—';
  const why = REASONS[l.reason] || l.reason;
  const est = l.estimateBps ? `, estimate ${formatBitrate(l.estimateBps)}` : '';
  layerLine.textContent = `Receiving ${cur}: ${why}${est}`;
}

// Drops session `s` and tries again after `delay` ms (null: not at all).
function restart(s, state, error = null, delay = RETRY_MS) {
  if (session !== s) return;
  session = null;
  clearInterval(s.timer);
  if (s.events) s.events.close();
  chat.detach(s.chat);
  qualityMenu.disabled = true;
  layerLine.textContent = '';
  endSession(s.location, token, s.headers);
  s.pc.close();
  for (const t of s.media.getTracks()) t.stop();
  if (video.srcObject === s.media) video.srcObject = null;
  lumen.location = null;
  lumen.stats = {};
  unmuteButton.hidden = true;
  renderStats(statsList, rows({}));
  setState(state, error);
  if (delay !== null) retryTimer = setTimeout(connect, delay);
}

async function tick(s) {
  if (session !== s) return;
  s.ticks += 1;
  const now = performance.now();
  try {
    const st = await inboundStats(s.pc, s.prev);
    if (session !== s) return;
    if (!s.prev || st.bytesReceived > s.prev.bytesReceived) s.lastProgress = now;
    const q = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : null;
    st.totalVideoFrames = q ? q.totalVideoFrames : null;
    st.currentTime = video.currentTime;
    s.prev = st;
    lumen.stats = st;
    renderStats(statsList, rows(st));
  } catch (_) {
    return;
  }
  if (lumen.state !== 'live' && now - s.started > CONNECT_TIMEOUT_MS) {
    restart(s, 'error', 'Could not connect to the media server.');
    return;
  }
  if (lumen.state === 'live' && now - s.lastProgress > STALL_MS) {
    restart(s, 'offline');
    return;
  }
  if (s.ticks % 2 === 0) checkListing(s);
}

// The API knows at once when the broadcaster leaves, before media stalls.
async function checkListing(s) {
  try {
    const res = await fetch(`/api/streams/${encodeURIComponent(name)}`, { cache: 'no-store' });
    if (!res.ok) return;
    const info = await res.json();
    if (session !== s) return;
    if (Number.isFinite(info.viewers)) {
      viewersLabel.textContent = `${info.viewers} watching`;
    }
    if (info.live === false) restart(s, 'offline');
  } catch (_) {
    // The listing is a hint; media stall detection still works without it.
  }
}

/** The stream's finished recordings, newest first, under the chat. */
async function loadPast() {
  try {
    const headers = token ? { Authorization: `Bearer ${token}`, Accept: 'application/json' } : { Accept: 'application/json' };
    const res = await fetch(`/api/v1/recordings?stream=${encodeURIComponent(name)}&limit=10`, {
      headers, credentials: 'same-origin', cache: 'no-store',
    });
    if (!res.ok) return;
    const ready = (await res.json()).filter((r) => r.state === 'ready');
    $('past').replaceChildren(...ready.map(recordingLink));
    $('past-panel').hidden = ready.length === 0;
    lumen.past = ready.map((r) => r.id);
  } catch (_) {
    // Past broadcasts are extra.
  }
}

async function startPlayback() {
  try {
    await video.play();
  } catch (e) {
    if (e.name !== 'NotAllowedError') return;
    // Autoplay with sound is blocked: play muted and offer to unmute.
    video.muted = true;
    unmuteButton.hidden = false;
    video.play().catch(() => {});
  }
}

function rows(st) {
  const dash = '—';
  return [
    ['Resolution', st.width ? `${st.width}×${st.height}` : dash],
    ['Frame rate', st.fps ? `${Math.round(st.fps)} fps` : dash],
    ['Bitrate', st.at ? formatBitrate(st.bitrate) : dash],
    ['Packet loss', st.at ? `${st.lossPercent.toFixed(1)} % (${st.packetsLost} lost)` : dash],
    ['RTT', st.rttMs != null ? `${Math.round(st.rttMs)} ms` : dash],
    ['Jitter', st.jitterMs != null ? `${Math.round(st.jitterMs)} ms` : dash],
    ['Frames decoded', st.at ? st.framesDecoded.toLocaleString() : dash],
    ['Codecs', st.videoCodec || st.audioCodec ? [st.videoCodec, st.audioCodec].filter(Boolean).join(' + ') : dash],
  ];
}

function describe(e) {
  if (e instanceof HttpError) return `The server refused playback (HTTP ${e.status}): ${e.message}`;
  if (e && e.name === 'TypeError') return 'Cannot reach the server.';
  return `Playback failed: ${e && e.message ? e.message : e}`;
}
