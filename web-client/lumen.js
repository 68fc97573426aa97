// Shared by the lumen pages: WHIP/WHEP negotiation (RFC 9725 and WHEP, one
// POST with a complete offer, no trickle, since the server is ICE-lite) and
// small helpers that turn RTCStatsReports into the numbers the pages show.

/** An HTTP answer other than 201 from a WHIP/WHEP endpoint. */
export class HttpError extends Error {
  constructor(status, message, retryAfter) {
    super(message || `HTTP ${status}`);
    this.name = 'HttpError';
    this.status = status;
    this.retryAfter = retryAfter;
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
 * Throws HttpError for any status but 201.
 */
export async function negotiate(pc, url, token) {
  await pc.setLocalDescription(await pc.createOffer());
  await iceGatheringDone(pc, 1000);
  const headers = { 'Content-Type': 'application/sdp' };
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(url, { method: 'POST', headers, body: pc.localDescription.sdp });
  if (res.status !== 201) {
    const text = (await res.text().catch(() => '')).trim();
    throw new HttpError(res.status, text || res.statusText, res.headers.get('Retry-After'));
  }
  const answer = await res.text();
  const loc = res.headers.get('Location');
  const base = new URL(url, window.location.href);
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

/** Ends a WHIP/WHEP session. Safe to call from pagehide (keepalive). */
export function endSession(location, token) {
  if (!location) return Promise.resolve();
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
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
