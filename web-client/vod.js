// A recording, at /vod/{id}: the MP4 (progressive, so it plays and seeks at
// once; HTTP Range underneath) with its thumbnail as poster, the stream's
// title, date and length, the broadcast's chat replayed in step with the
// playback position, and the stream's other recordings.

import {
  api, describeApiError, formatDuration, formatTime, initNav, recordingLink,
} from '/static/lumen.js';

const $ = (id) => document.getElementById(id);
const video = $('video');
const log = $('replay-log');

// Machine-readable state for tests and scripts.
const lumen = (window.lumen = {
  state: 'loading', recording: null, shown: 0, chat: [], error: null,
});

const id = decodeURIComponent(location.pathname.split('/').filter(Boolean)[1] || '');
// Chat messages of the broadcast in order, with their place in the video.
let messages = [];
let shown = 0;

start();

async function start() {
  initNav();
  let rec;
  try {
    rec = await api('GET', `/api/v1/recordings/${encodeURIComponent(id)}`);
  } catch (e) {
    fail(e.status === 404 ? 'No such recording.' : describeApiError(e));
    return;
  }
  lumen.recording = rec;
  document.title = `lumen — ${rec.stream}`;
  $('title').textContent = rec.title || rec.stream;
  $('meta').textContent = `${formatTime(rec.started_at)} · ${formatDuration(rec.duration_ms)}`;
  if (rec.state !== 'ready') {
    fail(rec.state === 'failed'
      ? `This recording could not be finished: ${rec.error || 'unknown error'}`
      : 'This recording is still being made; try again in a moment.');
    return;
  }
  if (rec.thumbnail_url) video.poster = rec.thumbnail_url;
  video.src = rec.mp4_url;
  video.addEventListener('timeupdate', follow);
  video.addEventListener('seeked', () => {
    // Back in time: the log shows only what was said until then.
    if (messages.length && position(messages[Math.max(shown - 1, 0)]) > video.currentTime * 1000) {
      log.replaceChildren();
      shown = 0;
    }
    follow();
  });
  lumen.state = 'ready';
  await Promise.all([loadChat(rec), loadPast(rec)]);
}

/** Milliseconds into the video at which a message was sent. */
function position(m) {
  return m.message.ts - lumen.recording.started_at;
}

async function loadChat(rec) {
  if (!rec.broadcast) {
    $('replay-empty').hidden = false;
    return;
  }
  let from = 0;
  try {
    for (;;) {
      const page = await api('GET', `/api/v1/recordings/${encodeURIComponent(id)}/chat?from_ms=${from}&limit=1000`);
      messages = messages.concat(page);
      if (page.length < 1000) break;
      from = page[page.length - 1].media_ms + 1;
    }
  } catch (_) {
    // The video plays without its chat.
  }
  lumen.chat = messages;
  $('replay-empty').hidden = messages.length > 0;
  follow();
}

function follow() {
  const now = video.currentTime * 1000;
  while (shown < messages.length && position(messages[shown]) <= now) {
    log.append(line(messages[shown].message));
    shown += 1;
  }
  lumen.shown = shown;
  log.scrollTop = log.scrollHeight;
}

function line(m) {
  const li = document.createElement('li');
  li.dataset.id = m.id;
  const name = document.createElement('span');
  name.className = 'chat-name';
  name.textContent = m.display_name;
  const text = document.createElement('span');
  text.className = 'chat-text';
  text.textContent = ` ${m.text}`;
  li.append(name, text);
  return li;
}

async function loadPast(rec) {
  try {
    const list = await api('GET', `/api/v1/recordings?stream=${encodeURIComponent(rec.stream)}&limit=10`);
    const others = list.filter((r) => r.id !== rec.id && r.state === 'ready');
    $('past').replaceChildren(...others.map(recordingLink));
    $('past-title').hidden = others.length === 0;
  } catch (_) {
    // Nothing more to show.
  }
}

function fail(message) {
  lumen.state = 'error';
  lumen.error = message;
  $('error').textContent = message;
  $('error').hidden = false;
}
