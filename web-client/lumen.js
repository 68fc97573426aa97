// Shared by the lumen pages: WHIP/WHEP negotiation (RFC 9725 and WHEP, one
// POST with a complete offer, no trickle, since the server is ICE-lite),
// small helpers that turn RTCStatsReports into the numbers the pages show,
// and (at the end) the account API client and the header's nav.

/**
 * An HTTP error answer: from a WHIP/WHEP endpoint (anything but 201) or
 * from the account API. `detail` is the problem's `detail` (RFC 9457) or
 * the body's text; `retryAfter` the Retry-After header, in seconds, if any.
 */
export class HttpError extends Error {
  constructor(status, message, retryAfter, problem = null) {
    super(message || `HTTP ${status}`);
    this.name = 'HttpError';
    this.status = status;
    this.detail = message || `HTTP ${status}`;
    this.retryAfter = retryAfter;
    this.problem = problem;
  }
}

/** Resolves when ICE gathering completes, or after `capMs` at the latest. */
export function iceGatheringDone(pc, capMs = 1000) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', check);
      resolve();
    };
    const check = () => {
      if (pc.iceGatheringState === 'complete') done();
    };
    const timer = setTimeout(done, capMs);
    pc.addEventListener('icegatheringstatechange', check);
  });
}

/**
 * Offers `pc` to a WHIP or WHEP endpoint and applies the answer.
 * Returns {answer, location} where location is the absolute session URL.
 * `token` goes as a Bearer credential; `extraHeaders` (such as the
 * `X-CSRF-Token` of a logged-in page, whose cookie goes along) are added.
 * Throws HttpError for any status but 201.
 */
export async function negotiate(pc, url, token, extraHeaders = {}) {
  await pc.setLocalDescription(await pc.createOffer());
  await iceGatheringDone(pc, 1000);
  const headers = { ...extraHeaders, 'Content-Type': 'application/sdp' };
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(url, { method: 'POST', headers, body: pc.localDescription.sdp });
  if (res.status !== 201) throw await errorOf(res);
  const answer = await res.text();
  const loc = res.headers.get('Location');
  // After a 307 (a cluster sends a viewer to another node) the session
  // lives where the request ended up.
  const base = new URL(res.url || url, window.location.href);
  const location = loc ? new URL(loc, base).href : null;
  const links = parseLinks(res.headers.get('Link') || '', base);
  await pc.setRemoteDescription({ type: 'answer', sdp: answer });
  return { answer, location, links };
}

/** WHEP extension relations (draft-ietf-wish-whep). */
export const REL_SSE = 'urn:ietf:params:whep:ext:core:server-sent-events';
export const REL_LAYER = 'urn:ietf:params:whep:ext:core:layer';

/** `Link: <url>; rel="…"; k="v", …` → [{url, rel, params}], URLs made absolute. */
export function parseLinks(header, base) {
  const out = [];
  for (const m of header.matchAll(/<([^>]*)>([^,]*)/g)) {
    const params = {};
    for (const p of m[2].matchAll(/;\s*([\w-]+)\s*=\s*"?([^";]*)"?/g)) params[p[1]] = p[2];
    out.push({ url: new URL(m[1], base).href, rel: params.rel || '', params });
  }
  return out;
}

/**
 * Ends a WHIP/WHEP session, with the credential that created it (a Bearer
 * `token`, or `extraHeaders` such as a logged-in page's `X-CSRF-Token`).
 * Safe to call from pagehide (keepalive).
 */
export function endSession(location, token, extraHeaders = {}) {
  if (!location) return Promise.resolve();
  const headers = { ...extraHeaders };
  if (token) headers.Authorization = `Bearer ${token}`;
  return fetch(location, { method: 'DELETE', headers, keepalive: true }).catch(() => {});
}

/**
 * Reorders a transceiver's codecs so the given MIME types come first, in that
 * order, keeping the rest (RTX, RED, FEC) after them. Browsers without
 * setCodecPreferences, or that refuse the list, keep their default order.
 */
export function preferCodecs(transceiver, kind, mimeTypes, only = false) {
  if (typeof transceiver.setCodecPreferences !== 'function') return;
  const rank = (c) => {
    const i = mimeTypes.indexOf(c.mimeType.toLowerCase());
    if (i < 0) return mimeTypes.length;
    // Among H.264 variants the widely decodable one goes first:
    // constrained baseline with packetization-mode=1.
    const fmtp = c.sdpFmtpLine || '';
    const bonus = (fmtp.includes('packetization-mode=1') ? 0 : 0.2) +
      (fmtp.includes('profile-level-id=42e01f') ? 0 : 0.1);
    return i + bonus;
  };
  // Chromium validates against the sender's capabilities for sendonly and
  // the receiver's for recvonly; older builds only take receiver codecs.
  const sources = transceiver.direction === 'recvonly'
    ? [RTCRtpReceiver]
    : [RTCRtpSender, RTCRtpReceiver];
  for (const source of sources) {
    const caps = source.getCapabilities?.(kind);
    if (!caps) continue;
    // `only`: no other media codec at all (repair formats stay).
    const repair = (c) => /\/(rtx|red|ulpfec|flexfec-03)$/i.test(c.mimeType);
    const codecs = [...caps.codecs]
      .filter((c) => !only || repair(c) || mimeTypes.includes(c.mimeType.toLowerCase()))
      .sort((a, b) => rank(a) - rank(b));
    try {
      transceiver.setCodecPreferences(codecs);
      return;
    } catch (_) {
      // Try the next source of capabilities.
    }
  }
}

/** Outgoing numbers of a publishing peer connection. */
export async function outboundStats(pc, prev) {
  const report = await pc.getStats();
  const s = {
    at: performance.now(), bytesSent: 0, packetsSent: 0, framesSent: 0, framesEncoded: 0,
    width: 0, height: 0, fps: 0, rttMs: null, videoCodec: null, audioCodec: null,
  };
  report.forEach((r) => {
    if (r.type === 'outbound-rtp') {
      s.bytesSent += r.bytesSent || 0;
      s.packetsSent += r.packetsSent || 0;
      if (r.kind === 'video') {
        s.framesSent += r.framesSent || 0;
        s.framesEncoded += r.framesEncoded || 0;
        s.width = Math.max(s.width, r.frameWidth || 0);
        s.height = Math.max(s.height, r.frameHeight || 0);
        s.fps = Math.max(s.fps, r.framesPerSecond || 0);
        s.qualityLimitation = r.qualityLimitationReason;
      }
      const codec = r.codecId && report.get(r.codecId);
      if (codec) s[`${r.kind}Codec`] = codec.mimeType.split('/')[1];
    } else if (r.type === 'remote-inbound-rtp' && r.roundTripTime !== undefined && s.rttMs === null) {
      s.rttMs = r.roundTripTime * 1000;
    }
  });
  const pair = selectedPair(report);
  if (pair && pair.currentRoundTripTime !== undefined) s.rttMs = pair.currentRoundTripTime * 1000;
  s.srtpCipher = srtpCipher(report);
  s.bitrate = rate(s.bytesSent, s.at, prev && prev.bytesSent, prev && prev.at);
  return s;
}

/** Incoming numbers of a playing peer connection. */
export async function inboundStats(pc, prev) {
  const report = await pc.getStats();
  const s = {
    at: performance.now(), bytesReceived: 0, packetsReceived: 0, packetsLost: 0,
    framesDecoded: 0, framesDropped: 0, width: 0, height: 0, fps: 0, jitterMs: null,
    rttMs: null, videoCodec: null, audioCodec: null,
  };
  report.forEach((r) => {
    if (r.type !== 'inbound-rtp') return;
    s.bytesReceived += r.bytesReceived || 0;
    s.packetsReceived += r.packetsReceived || 0;
    s.packetsLost += Math.max(0, r.packetsLost || 0);
    if (r.kind === 'video') {
      s.framesDecoded += r.framesDecoded || 0;
      s.framesDropped += r.framesDropped || 0;
      s.width = r.frameWidth || s.width;
      s.height = r.frameHeight || s.height;
      s.fps = r.framesPerSecond || s.fps;
      if (r.jitter !== undefined) s.jitterMs = r.jitter * 1000;
    }
    const codec = r.codecId && report.get(r.codecId);
    if (codec) s[`${r.kind}Codec`] = codec.mimeType.split('/')[1];
  });
  const pair = selectedPair(report);
  if (pair && pair.currentRoundTripTime !== undefined) s.rttMs = pair.currentRoundTripTime * 1000;
  s.srtpCipher = srtpCipher(report);
  s.bitrate = rate(s.bytesReceived, s.at, prev && prev.bytesReceived, prev && prev.at);
  // Loss over the last interval, as a share of the packets expected in it.
  if (prev) {
    const lost = s.packetsLost - prev.packetsLost;
    const got = s.packetsReceived - prev.packetsReceived;
    s.lossPercent = lost + got > 0 ? (100 * Math.max(0, lost)) / (lost + got) : 0;
  } else {
    const total = s.packetsLost + s.packetsReceived;
    s.lossPercent = total > 0 ? (100 * s.packetsLost) / total : 0;
  }
  return s;
}

/** "1.2 Mbit/s", "640 kbit/s". */
export function formatBitrate(bps) {
  if (!bps) return '0 kbit/s';
  if (bps >= 1e6) return `${(bps / 1e6).toFixed(2)} Mbit/s`;
  return `${Math.round(bps / 1e3)} kbit/s`;
}

/** Renders [label, value] pairs into a <dl>. */
export function renderStats(dl, rows) {
  dl.replaceChildren(...rows.flatMap(([label, value]) => {
    const dt = document.createElement('dt');
    dt.textContent = label;
    const dd = document.createElement('dd');
    dd.textContent = value;
    return [dt, dd];
  }));
}

/** A stream name the server accepts: 1-64 of letters, digits, '-', '_', '.'. */
export function validStreamName(name) {
  return /^[A-Za-z0-9._-]{1,64}$/.test(name);
}

/** The SRTP protection profile the transport negotiated ("SRTP_AEAD_AES_256_GCM"). */
function srtpCipher(report) {
  let cipher = null;
  report.forEach((r) => {
    if (r.type === 'transport' && r.srtpCipher) cipher = r.srtpCipher;
  });
  return cipher;
}

function selectedPair(report) {
  let pair = null;
  report.forEach((r) => {
    if (r.type === 'transport' && r.selectedCandidatePairId) {
      pair = report.get(r.selectedCandidatePairId) || pair;
    }
  });
  if (pair) return pair;
  report.forEach((r) => {
    if (!pair && r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded') pair = r;
  });
  return pair;
}

function rate(bytes, at, prevBytes, prevAt) {
  if (prevBytes === undefined || prevAt === undefined || at <= prevAt) return 0;
  return (Math.max(0, bytes - prevBytes) * 8 * 1000) / (at - prevAt);
}

// ---- Accounts: the /api/v1 client, the header's nav, small page helpers ----

const CSRF_KEY = 'lumen.csrf';
const SAFE_METHODS = ['GET', 'HEAD', 'OPTIONS'];

// The CSRF token of the web session: in memory, and in sessionStorage so the
// tab's next page has it before its own /me answers. The cookie is HttpOnly;
// this token is what proves a request comes from a lumen page.
let csrf = storedCsrf();
// One GET /api/v1/me per page load, shared by the nav and the page.
let mePromise = null;

/** The session's CSRF token as last seen, or null. */
export function csrfToken() {
  return csrf;
}

/**
 * Headers for an unsafe request made with the session cookie (a WHIP/WHEP
 * POST, a session DELETE): `X-CSRF-Token` when logged in, else none.
 */
export function sessionHeaders() {
  return csrf ? { 'X-CSRF-Token': csrf } : {};
}

/**
 * Calls the account API: `body` (if any) is sent as JSON, the session
 * cookie goes along, and unsafe methods carry `X-CSRF-Token`. Resolves to
 * the parsed answer (null for 204); throws HttpError with the problem's
 * `detail`, `status` and `retryAfter`. A token in the answer (log in, sign
 * up, setup, me) becomes the one sent from now on.
 */
export async function api(method, path, body) {
  method = method.toUpperCase();
  const unsafe = !SAFE_METHODS.includes(method);
  const send = (token) => {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (unsafe && token) headers['X-CSRF-Token'] = token;
    return fetch(path, {
      method,
      headers,
      credentials: 'same-origin',
      cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  };
  const sent = csrf;
  let res = await send(sent);
  // Another tab logged in again (a new cookie, a new token): ask for the
  // current token once and retry. A 403 changed nothing on the server.
  if (res.status === 403 && unsafe) {
    const user = await currentUser(true).catch(() => null);
    if (user && csrf && csrf !== sent) res = await send(csrf);
  }
  if (!res.ok) throw await errorOf(res);
  const data = res.status === 204 ? null : await res.json().catch(() => null);
  if (data && typeof data.csrf === 'string' && data.user) {
    setCsrf(data.csrf);
    mePromise = Promise.resolve(data.user);
  }
  return data;
}

/**
 * The logged-in user (`{id, name, role, …}`), or null when logged out.
 * Asked once per page; `fresh` asks again. Throws HttpError when the
 * server fails.
 */
export function currentUser(fresh = false) {
  if (!mePromise || fresh) {
    mePromise = fetchMe();
    // A failed answer is not remembered: the next call asks again.
    mePromise.catch(() => {
      mePromise = null;
    });
  }
  return mePromise;
}

/** Logs out (the server ends the session and clears the cookie). */
export async function logout() {
  try {
    await api('POST', '/api/v1/logout');
  } finally {
    setCsrf(null);
    mePromise = Promise.resolve(null);
  }
}

/**
 * Fills the header's nav: "Log in" or "Log out" (and "Admin" for admins)
 * by GET /api/v1/me. Resolves to the user or null, never rejects.
 */
export async function initNav() {
  const loginLink = document.getElementById('nav-login');
  const logoutButton = document.getElementById('nav-logout');
  const adminLink = document.getElementById('nav-admin');
  if (loginLink && !['/login', '/signup', '/setup'].includes(location.pathname)) {
    loginLink.href = `/login?next=${encodeURIComponent(location.pathname + location.search)}`;
  }
  logoutButton?.addEventListener('click', async () => {
    logoutButton.disabled = true;
    await logout().catch(() => {});
    // Each page decides what a logged-out visitor sees (the dashboard
    // sends them to /login).
    location.reload();
  });
  let user = null;
  try {
    user = await currentUser();
  } catch (_) {
    // The server did not say: keep the "Log in" link.
  }
  if (loginLink) loginLink.hidden = !!user;
  if (logoutButton) {
    logoutButton.hidden = !user;
    logoutButton.title = user ? `Logged in as ${user.name}` : '';
  }
  if (adminLink) adminLink.hidden = !(user && user.role === 'admin');
  return user;
}

/** Copies text to the clipboard (falls back to a selection and execCommand). */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return;
  } catch (_) {
    // No clipboard API outside secure contexts (plain HTTP on a LAN address).
  }
  const area = document.createElement('textarea');
  area.value = text;
  area.setAttribute('readonly', '');
  area.style.position = 'fixed';
  area.style.opacity = '0';
  document.body.append(area);
  area.select();
  try {
    document.execCommand('copy');
  } finally {
    area.remove();
  }
}

/** A "Copy" button that copies `getText()` and says so for a moment. */
export function copyButton(getText, label = 'Copy') {
  const b = document.createElement('button');
  b.type = 'button';
  b.className = 'small copy';
  b.textContent = label;
  b.addEventListener('click', async () => {
    await copyText(getText());
    b.textContent = 'Copied';
    setTimeout(() => {
      b.textContent = label;
    }, 1500);
  });
  return b;
}

/** Milliseconds since the epoch as a local date and time, or "—". */
export function formatTime(ms) {
  return Number.isFinite(ms) && ms > 0 ? new Date(ms).toLocaleString() : '—';
}

/** The page to go to after logging in: a same-origin `?next=` path, else `fallback`. */
/** A length in ms as `m:ss` or `h:mm:ss`. */
export function formatDuration(ms) {
  const s = Math.round((ms || 0) / 1000);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

/** A list item linking to a recording's page, with its date and length. */
export function recordingLink(r) {
  const li = document.createElement('li');
  const a = document.createElement('a');
  a.href = `/vod/${encodeURIComponent(r.id)}`;
  a.textContent = `${formatTime(r.started_at)} · ${formatDuration(r.duration_ms)}`;
  li.append(a);
  return li;
}

export function nextPath(fallback = '/dashboard') {
  const next = new URLSearchParams(location.search).get('next') || '';
  // Only a path on this origin: "//host" or "/\\host" would leave it.
  return /^\/(?![/\\])/.test(next) ? next : fallback;
}

/** The message for a failed API call: its detail, with the wait on 429. */
export function describeApiError(e) {
  if (e instanceof HttpError) {
    const wait = retrySeconds(e.retryAfter);
    if (e.status === 429) {
      return `${e.detail}${wait && !/retry in/i.test(e.detail) ? ` (retry in ${wait} s)` : ''}`;
    }
    return e.detail;
  }
  if (e && e.name === 'TypeError') return 'Cannot reach the server.';
  return String((e && e.message) || e);
}

/** Retry-After (seconds or an HTTP date) as whole seconds, or null. */
export function retrySeconds(value) {
  if (value == null || value === '') return null;
  const n = Number(value);
  if (Number.isFinite(n)) return Math.max(0, Math.ceil(n));
  const at = Date.parse(value);
  return Number.isFinite(at) ? Math.max(0, Math.ceil((at - Date.now()) / 1000)) : null;
}

/** An error answer as HttpError, with the problem's detail when it has one. */
async function errorOf(res) {
  const text = (await res.text().catch(() => '')).trim();
  let problem = null;
  if (text.startsWith('{')) {
    try {
      problem = JSON.parse(text);
    } catch (_) {
      // Not JSON after all: the text is the message.
    }
  }
  const detail = (problem && (problem.detail || problem.title)) || text || res.statusText;
  return new HttpError(res.status, detail, res.headers.get('Retry-After'), problem);
}

async function fetchMe() {
  const res = await fetch('/api/v1/me', {
    credentials: 'same-origin',
    cache: 'no-store',
    headers: { Accept: 'application/json' },
  });
  // 401: logged out. 404: a server without the account API.
  if (res.status === 401 || res.status === 404) {
    setCsrf(null);
    return null;
  }
  if (!res.ok) throw await errorOf(res);
  const data = await res.json();
  setCsrf(typeof data.csrf === 'string' ? data.csrf : null);
  return data.user || null;
}

function setCsrf(token) {
  csrf = token || null;
  try {
    if (csrf) sessionStorage.setItem(CSRF_KEY, csrf);
    else sessionStorage.removeItem(CSRF_KEY);
  } catch (_) {
    // Storage disabled: memory is enough for this page.
  }
}

function storedCsrf() {
  try {
    return sessionStorage.getItem(CSRF_KEY);
  } catch (_) {
    return null;
  }
}

// ---- Chat: the `chat` data channel of a WHIP/WHEP session (docs/chat.md) ----

/** The data channel label chat travels on. */
export const CHAT_LABEL = 'chat';
const CHAT_ROLES = { broadcaster: 'Broadcaster', moderator: 'Mod', admin: 'Admin' };
const TIMEOUT_SECONDS = 600;

/**
 * The chat panel of a page (the elements with ids `chat-…`, see watch.html).
 * `state` is the page's `window.lumen`: every frame received is pushed onto
 * `state.chat`. Options:
 * - `canSend`: the send box is enabled (the server still decides: a refused
 *   `send` comes back as an `error` frame, which the panel shows);
 * - `loginHref`: when not `canSend`, where the "log in to chat" link goes;
 * - `moderator`: delete, time out and ban on each message (on hover);
 * - `me`: this page's user id, if known (its own messages get delete, not
 *   report or sanctions).
 *
 * `attach(pc)` must run before the offer is made: it creates the channel.
 * Text only ever goes in through textContent.
 */
export function createChat(state, options = {}) {
  const $ = (id) => document.getElementById(id);
  const log = $('chat-log');
  const form = $('chat-form');
  const input = $('chat-input');
  const sendButton = $('chat-send');
  const errorBox = $('chat-error');
  const noticeBox = $('chat-notice');
  const modeLine = $('chat-mode');
  const loginLine = $('chat-login');
  const loginLink = $('chat-login-link');
  const moreButton = $('chat-more');
  state.chat = [];
  state.chatOpen = false;
  // Messages that came compressed (for the curious, and the tests).
  state.chatCompressed = 0;

  let opts = { canSend: false, moderator: false, me: null, loginHref: '/login', ...options };
  let channel = null;
  let waitUntil = 0;
  let countdown = null;
  // Follow new messages unless the user scrolled up to read older ones.
  let stick = true;

  log.addEventListener('scroll', () => {
    stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
    if (stick) moreButton.hidden = true;
  });
  moreButton.addEventListener('click', () => {
    stick = true;
    scrollDown();
  });
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    if (send({ type: 'send', text })) input.value = '';
  });

  function scrollDown() {
    log.scrollTop = log.scrollHeight;
    moreButton.hidden = true;
  }

  function afterAppend() {
    if (stick) scrollDown();
    else moreButton.hidden = false;
  }

  function send(frame) {
    if (!channel || channel.readyState !== 'open') {
      showError('Chat is not connected.');
      return false;
    }
    channel.send(JSON.stringify(frame));
    return true;
  }

  function syncControls() {
    const open = !!channel && channel.readyState === 'open';
    const waiting = Date.now() < waitUntil;
    input.disabled = !opts.canSend;
    sendButton.disabled = !opts.canSend || !open || waiting;
    input.placeholder = opts.canSend ? (open ? 'Say something…' : 'Connecting to chat…') : 'Log in to chat';
    loginLine.hidden = opts.canSend;
    loginLink.href = opts.loginHref;
  }

  function showError(message, retryAfter) {
    clearInterval(countdown);
    countdown = null;
    errorBox.hidden = false;
    if (!(retryAfter > 0)) {
      waitUntil = 0;
      errorBox.textContent = message;
      syncControls();
      return;
    }
    waitUntil = Date.now() + retryAfter * 1000;
    const render = () => {
      const left = Math.ceil((waitUntil - Date.now()) / 1000);
      if (left <= 0) {
        clearInterval(countdown);
        countdown = null;
        waitUntil = 0;
        errorBox.hidden = true;
        errorBox.textContent = '';
      } else {
        errorBox.textContent = `${message} — wait ${left} s`;
      }
      syncControls();
    };
    render();
    countdown = setInterval(render, 250);
  }

  function button(label, title, onClick) {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'small';
    b.textContent = label;
    b.title = title;
    b.addEventListener('click', onClick);
    return b;
  }

  function renderMessage(m) {
    const li = document.createElement('li');
    li.className = `chat-msg role-${m.role}`;
    li.dataset.id = String(m.id);
    li.dataset.user = m.user;
    const who = document.createElement('span');
    who.className = 'chat-name';
    who.textContent = m.display_name;
    li.append(who);
    if (CHAT_ROLES[m.role]) {
      const badge = document.createElement('span');
      badge.className = 'chat-role';
      badge.textContent = CHAT_ROLES[m.role];
      li.append(' ', badge);
    }
    const text = document.createElement('span');
    text.className = 'chat-text';
    text.textContent = m.text;
    li.append(' ', text);
    if (m.ts) li.title = new Date(m.ts).toLocaleTimeString();

    const actions = document.createElement('span');
    actions.className = 'chat-actions';
    const own = opts.me && m.user === opts.me;
    if (opts.moderator || own) {
      actions.append(button('Delete', 'Delete this message', () => send({ type: 'delete', id: m.id })));
    }
    if (opts.moderator && !own) {
      actions.append(
        button('Time out', `Time out ${m.display_name} for ${TIMEOUT_SECONDS / 60} min`,
          () => send({ type: 'timeout', user: m.user, seconds: TIMEOUT_SECONDS })),
        button('Ban', `Ban ${m.display_name} from this chat`, () => send({ type: 'ban', user: m.user })),
      );
    }
    if (!own && opts.canSend) {
      actions.append(button('Report', 'Report this message to the moderators',
        () => send({ type: 'report', id: m.id })));
    }
    if (actions.childNodes.length) li.append(actions);
    return li;
  }

  function onFrame(f) {
    if (!f || typeof f !== 'object') return;
    if (f.type === 'batch') {
      // Several frames in one message (docs/chat.md): each as if alone.
      for (const one of Array.isArray(f.frames) ? f.frames : []) {
        if (one && one.type !== 'batch') onFrame(one);
      }
      return;
    }
    state.chat.push(f);
    switch (f.type) {
      case 'history':
        log.replaceChildren(...(Array.isArray(f.messages) ? f.messages : []).map(renderMessage));
        stick = true;
        scrollDown();
        break;
      case 'message':
        log.append(renderMessage(f));
        afterAppend();
        break;
      case 'deleted':
        for (const li of log.querySelectorAll('li.chat-msg')) {
          if (li.dataset.id === String(f.id)) li.remove();
        }
        break;
      case 'cleared':
        log.replaceChildren();
        break;
      case 'state': {
        const modes = [];
        if (f.slow_mode > 0) modes.push(`slow mode: ${f.slow_mode} s`);
        if (f.registered_only) modes.push('registered users only');
        modeLine.textContent = modes.join(' · ');
        modeLine.hidden = modes.length === 0;
        break;
      }
      case 'notice':
        noticeBox.textContent = String(f.text ?? '');
        noticeBox.hidden = false;
        break;
      case 'error':
        showError(String(f.message || f.code || 'refused'), Number(f.retry_after) || 0);
        break;
      default:
    }
  }

  /** Whether this browser inflates raw DEFLATE. */
  function canInflate() {
    try {
      new DecompressionStream('deflate-raw');
      return true;
    } catch (_) {
      return false;
    }
  }

  /** A compressed message (raw DEFLATE of the frame's JSON) as text. */
  function inflate(buffer) {
    state.chatCompressed += 1;
    const stream = new Blob([buffer]).stream().pipeThrough(new DecompressionStream('deflate-raw'));
    return new Response(stream).text();
  }

  syncControls();
  return {
    /** Creates the channel on `pc`; call before the offer. */
    attach(pc) {
      this.detach();
      // Large server messages come compressed (raw DEFLATE in a binary
      // message) when the browser can inflate them: docs/chat.md. (Some
      // browsers have DecompressionStream without the deflate-raw format.)
      const deflate = canInflate();
      const dc = pc.createDataChannel(CHAT_LABEL, deflate ? { protocol: 'deflate-raw' } : {});
      dc.binaryType = 'arraybuffer';
      channel = dc;
      // Inflating is asynchronous: messages are handled one after another,
      // in the order they came.
      let inOrder = Promise.resolve();
      dc.addEventListener('open', () => {
        if (channel !== dc) return;
        state.chatOpen = true;
        syncControls();
      });
      dc.addEventListener('close', () => {
        if (channel !== dc) return;
        state.chatOpen = false;
        syncControls();
      });
      dc.addEventListener('message', (e) => {
        if (channel !== dc) return;
        const data = e.data;
        inOrder = inOrder
          .then(() => (typeof data === 'string' ? data : inflate(data)))
          .then((text) => {
            if (channel === dc) onFrame(JSON.parse(text));
          })
          .catch(() => {
            // Not a frame of ours: ignored.
          });
      });
      syncControls();
      return dc;
    },
    /**
     * Closes `dc` (by default the current channel); the panel forgets it if
     * it is the current one (the page's session ended).
     */
    detach(dc = channel) {
      if (dc && dc !== channel) {
        try {
          dc.close();
        } catch (_) {
          // Already closed.
        }
        return;
      }
      if (channel) {
        channel = null;
        try {
          dc.close();
        } catch (_) {
          // Already closed with its connection.
        }
      }
      state.chatOpen = false;
      syncControls();
    },
    /** Changes who this page is (after GET /api/v1/me answered). */
    configure(next) {
      opts = { ...opts, ...next };
      syncControls();
    },
    send,
  };
}
