// Broadcast page: captures camera+mic or the screen and publishes it over
// WHIP. `?stream=NAME&autostart=1` goes live at once with camera+mic;
// `&simulcast=0` sends one layer instead of three; `&codec=vp8` sends VP8.
//
// Credentials: a stream key typed in goes as a Bearer token (as OBS sends
// it). With no key typed, a logged-in user picks one of their streams
// (`?stream=NAME` preselects it) and publishes with the session cookie and
// its CSRF token.
//
// Chat: the WHIP session opens the `chat` data channel; the publisher is the
// stream's broadcaster and gets delete, time out and ban on every message.

import {
  HttpError, api, createChat, endSession, formatBitrate, initNav, negotiate, outboundStats,
  preferCodecs, renderStats, sessionHeaders, validStreamName,
} from '/static/lumen.js';

const $ = (id) => document.getElementById(id);
const preview = $('preview');
const placeholder = $('placeholder');
const statusPill = $('status');
const errorBox = $('error');
const streamInput = $('stream');
const tokenInput = $('token');
const mineRow = $('mine-row');
const mineSelect = $('mine');
const nameRow = $('name-row');
const accountHint = $('account-hint');
const simulcastInput = $('simulcast');
const goLiveButton = $('golive');
const stopButton = $('stop');
const share = $('share');
const statsList = $('stats');

// Machine-readable state for tests and scripts.
const lumen = (window.lumen = {
  state: 'idle', error: null, stats: {}, location: null, account: null,
});

// The current attempt; a newer attempt or Stop makes an older one stale.
let session = null;
const chat = createChat(lumen, { canSend: true, moderator: true });

const params = new URLSearchParams(location.search);
streamInput.value = params.get('stream') || `stream-${Math.floor(1000 + Math.random() * 9000)}`;
renderStats(statsList, rows({}));
// Resolves once the page knows who is logged in and their streams.
const accountReady = loadAccount();

goLiveButton.addEventListener('click', () => goLive(selectedSource()));
stopButton.addEventListener('click', () => stop());
mineSelect.addEventListener('change', syncInputs);
tokenInput.addEventListener('input', syncInputs);
window.addEventListener('pagehide', () => {
  // keepalive lets the DELETE outlive the page.
  if (session) endSession(session.location, session.token, session.headers);
});

if (params.get('simulcast') === '0') simulcastInput.checked = false;
// H.264 first (every lumen viewer decodes it), VP8 as the fallback;
// `&codec=vp8` offers VP8 only.
const VP8_ONLY = params.get('codec') === 'vp8';
const VIDEO_CODECS = VP8_ONLY ? ['video/vp8'] : ['video/h264', 'video/vp8'];
if (params.get('autostart') === '1') accountReady.then(() => goLive('camera'));

async function loadAccount() {
  const user = await initNav();
  let streams = [];
  if (user) {
    try {
      streams = await api('GET', '/api/v1/streams');
    } catch (_) {
      // Without the list the name field still works.
    }
  }
  const names = (Array.isArray(streams) ? streams : []).map((s) => s.name);
  lumen.account = user ? { user: user.name, streams: names } : null;
  if (user && names.length > 0) {
    mineSelect.replaceChildren(
      ...names.map((n) => new Option(n, n)),
      new Option('Another stream…', ''),
    );
    const wanted = params.get('stream');
    mineSelect.value = !wanted ? names[0] : names.includes(wanted) ? wanted : '';
  }
  accountHint.textContent = user
    ? `Logged in as ${user.name}: with no key typed, you publish as yourself.`
    : 'Log in to go live on your own streams, or type a stream key.';
  syncInputs();
}

// A typed key wins (OBS-style, for whichever stream it belongs to);
// otherwise the logged-in user's chosen stream.
function syncInputs() {
  const typed = tokenInput.value.trim() !== '';
  const hasMine = mineSelect.options.length > 0;
  mineRow.hidden = !hasMine || typed;
  const mine = hasMine && !typed ? mineSelect.value : '';
  nameRow.hidden = mine !== '';
  if (mine) streamInput.value = mine;
}

function selectedSource() {
  return document.querySelector('input[name="source"]:checked')?.value || 'camera';
}

function setState(state, error = null) {
  lumen.state = state;
  lumen.error = error;
  const labels = { idle: 'Idle', connecting: 'Connecting…', live: 'Live', error: 'Error' };
  statusPill.textContent = labels[state] || state;
  statusPill.className = `pill is-${state}`;
  errorBox.textContent = error || '';
  errorBox.hidden = !error;
  const busy = state === 'connecting' || state === 'live';
  goLiveButton.disabled = busy;
  stopButton.disabled = !busy;
  streamInput.disabled = busy;
  mineSelect.disabled = busy;
  tokenInput.disabled = busy;
  simulcastInput.disabled = busy;
  for (const r of document.querySelectorAll('input[name="source"]')) r.disabled = busy;
}

async function goLive(source) {
  await accountReady;
  const name = streamInput.value.trim();
  if (!validStreamName(name)) {
    setState('error', 'A stream name is 1 to 64 letters, digits, "-", "_" or ".".');
    return;
  }
  const token = tokenInput.value.trim();
  // The session cookie goes with every same-origin request: with no key,
  // its CSRF token must go too (and then ends the session as well).
  const headers = token ? {} : sessionHeaders();
  const s = {
    name, token, headers, pc: null, chat: null, media: null, location: null, timer: null, prev: null,
  };
  session = s;
  setState('connecting');
  try {
    s.media = await capture(source);
    if (session !== s) return release(s);
    preview.srcObject = s.media;
    placeholder.hidden = true;
    preview.play().catch(() => {});

    const pc = (s.pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' }));
    for (const track of s.media.getTracks()) {
      const init = { direction: 'sendonly', streams: [s.media] };
      if (track.kind === 'video' && simulcastInput.checked) {
        // Three layers, best first; viewers get the one their network carries.
        init.sendEncodings = [
          { rid: 'h', maxBitrate: 2_500_000 },
          { rid: 'm', scaleResolutionDownBy: 2, maxBitrate: 800_000 },
          { rid: 'l', scaleResolutionDownBy: 4, maxBitrate: 200_000 },
        ];
      }
      const t = pc.addTransceiver(track, init);
      if (track.kind === 'video') {
        preferCodecs(t, 'video', VIDEO_CODECS, VP8_ONLY);
      } else {
        preferCodecs(t, 'audio', ['audio/opus']);
      }
      // A screen share that the user ends from the browser UI ends the broadcast.
      track.addEventListener('ended', () => {
        if (session === s) stop();
      });
    }
    s.chat = chat.attach(pc);
    pc.addEventListener('connectionstatechange', () => {
      if (session !== s) return;
      if (pc.connectionState === 'connected') {
        setState('live');
      } else if (pc.connectionState === 'failed') {
        setState('error', 'The media connection to the server failed.');
      }
    });

    const url = `/whip/${encodeURIComponent(name)}`;
    const { location: loc } = await negotiate(pc, url, token, headers);
    s.location = loc;
    if (session !== s) {
      endSession(loc, token, headers);
      return release(s);
    }
    lumen.location = loc;
    showShareLink(name);
    if (pc.connectionState === 'connected') setState('live');
    s.timer = setInterval(() => updateStats(s), 1000);
  } catch (e) {
    if (session !== s) return;
    session = null;
    release(s);
    setState('error', describe(e, name));
  }
}

async function stop() {
  const s = session;
  session = null;
  lumen.location = null;
  share.hidden = true;
  setState('idle');
  if (!s) return;
  // DELETE before closing, so the server ends the session on request rather
  // than noticing a dead peer.
  const ended = endSession(s.location, s.token, s.headers);
  release(s);
  await ended;
}

function release(s) {
  clearInterval(s.timer);
  if (s.chat) chat.detach(s.chat);
  if (s.pc) s.pc.close();
  if (s.media) for (const t of s.media.getTracks()) t.stop();
  if (preview.srcObject === s.media) {
    preview.srcObject = null;
    placeholder.hidden = false;
  }
}

async function capture(source) {
  if (source === 'screen') {
    const media = await navigator.mediaDevices.getDisplayMedia({
      video: { frameRate: { ideal: 30 } },
      audio: true,
    });
    // No shared audio (a window, or the user said no): add the microphone if we may.
    if (media.getAudioTracks().length === 0) {
      try {
        const mic = await navigator.mediaDevices.getUserMedia({ audio: true });
        for (const t of mic.getAudioTracks()) media.addTrack(t);
      } catch (_) {
        // Video only is still a broadcast.
      }
    }
    return media;
  }
  return navigator.mediaDevices.getUserMedia({
    video: { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } },
    audio: { echoCancellation: true, noiseSuppression: true },
  });
}

async function updateStats(s) {
  if (session !== s || !s.pc) return;
  try {
    const st = await outboundStats(s.pc, s.prev);
    s.prev = st;
    lumen.stats = st;
    renderStats(statsList, rows(st));
  } catch (_) {
    // The connection closed between two ticks.
  }
}

function rows(st) {
  const dash = '—';
  return [
    ['Bitrate', st.at ? formatBitrate(st.bitrate) : dash],
    ['Frame rate', st.fps ? `${Math.round(st.fps)} fps` : dash],
    ['Resolution', st.width ? `${st.width}×${st.height}` : dash],
    ['Packets sent', st.at ? st.packetsSent.toLocaleString() : dash],
    ['Frames sent', st.at ? st.framesSent.toLocaleString() : dash],
    ['RTT', st.rttMs != null ? `${Math.round(st.rttMs)} ms` : dash],
    ['Codecs', st.videoCodec || st.audioCodec ? [st.videoCodec, st.audioCodec].filter(Boolean).join(' + ') : dash],
    ['Limited by', st.qualityLimitation && st.qualityLimitation !== 'none' ? st.qualityLimitation : dash],
  ];
}

function showShareLink(name) {
  const url = new URL(`/watch/${encodeURIComponent(name)}`, location.href).href;
  share.replaceChildren('Viewers watch at ');
  const a = document.createElement('a');
  a.href = url;
  a.target = '_blank';
  a.textContent = url;
  share.append(a);
  share.hidden = false;
}

function describe(e, name) {
  if (e instanceof HttpError) {
    switch (e.status) {
      case 409:
        return `The stream name "${name}" is already live. Pick another name.`;
      case 401:
      case 403:
        if (e.status === 401 && !tokenInput.value.trim()) {
          return `Log in, or type the stream's key, to go live on "${name}": ${e.message}`;
        }
        if (!tokenInput.value.trim()) {
          return `You may not publish to "${name}" (HTTP ${e.status}): ${e.message}`;
        }
        return `The stream key was refused (HTTP ${e.status}): ${e.message}`;
      case 429:
      case 503:
        return `The server is busy (HTTP ${e.status}); try again${e.retryAfter ? ` in ${e.retryAfter} s` : ' shortly'}.`;
      default:
        return `The server refused the broadcast (HTTP ${e.status}): ${e.message}`;
    }
  }
  switch (e && e.name) {
    case 'NotAllowedError':
      return 'Permission to use the camera, microphone or screen was denied.';
    case 'NotFoundError':
      return 'No camera or microphone was found.';
    case 'NotReadableError':
      return 'The camera or microphone is in use by another application.';
    case 'TypeError':
      if (String(e.message).includes('fetch')) return 'Cannot reach the server.';
      break;
    default:
  }
  return `Could not go live: ${e && e.message ? e.message : e}`;
}
