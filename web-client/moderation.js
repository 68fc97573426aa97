// Moderation page, at /moderation: the queue of reported chat messages over
// every stream the user moderates, with the actions a moderator takes on
// one (delete the message, time its author out, ban them, or dismiss the
// report). Actions go through the API (POST /api/v1/streams/{name}/chat/
// moderate) and apply to the live room at once; the report is then
// resolved (POST …/chat/reports/{id}/resolve).

import { api, currentUser, describeApiError, formatTime, initNav } from '/static/lumen.js';

const $ = (id) => document.getElementById(id);
const body = $('reports');
const reportsError = $('reports-error');

// Machine-readable state for tests and scripts.
const lumen = (window.lumen = { state: 'loading', user: null, reports: [], error: null });

const TIMEOUT_SECS = 600;

$('show-resolved').addEventListener('change', load);
start();

async function start() {
  initNav();
  let me;
  try {
    me = await currentUser();
  } catch (e) {
    fail(`Cannot reach the account service: ${describeApiError(e)}`);
    return;
  }
  if (!me) {
    location.replace(`/login?next=${encodeURIComponent('/moderation')}`);
    return;
  }
  lumen.user = me;
  $('who').textContent = `${me.name} · ${me.role}`;
  $('content').hidden = false;
  await load();
}

async function load() {
  reportsError.hidden = true;
  const open = !$('show-resolved').checked;
  try {
    const reports = await api('GET', `/api/v1/chat/reports?limit=200${open ? '&open=true' : ''}`);
    lumen.reports = reports;
    lumen.state = 'ready';
    body.replaceChildren(...reports.map(row));
    $('empty').hidden = reports.length > 0;
  } catch (e) {
    showError(e);
  }
}

function row(r) {
  const m = r.message || {};
  const stream = encodeURIComponent(r.stream);
  const act = (label, className, command) => {
    const b = button(label, `small ${className}`);
    b.addEventListener('click', async () => {
      reportsError.hidden = true;
      for (const other of tr.querySelectorAll('button')) other.disabled = true;
      try {
        if (command) await api('POST', `/api/v1/streams/${stream}/chat/moderate`, command);
        await api('POST', `/api/v1/streams/${stream}/chat/reports/${encodeURIComponent(r.id)}/resolve`);
      } catch (e) {
        showError(e);
      }
      await load();
    });
    return b;
  };
  const actions = [];
  if (!r.resolved_by) {
    if (!r.deleted) actions.push(act('Delete message', 'delete', { type: 'delete', id: m.id }));
    actions.push(
      act('Time out 10 min', 'timeout', {
        type: 'timeout', user: m.user, seconds: TIMEOUT_SECS, reason: r.reason || 'reported message',
      }),
      act('Ban', 'danger ban', { type: 'ban', user: m.user, reason: r.reason || 'reported message' }),
      act('Dismiss', 'dismiss', null),
    );
  }
  const text = document.createElement('span');
  text.textContent = m.text ?? '';
  if (r.deleted) text.className = 'muted';
  const reason = r.reason ? ` (${r.reason})` : '';
  const status = r.resolved_by ? ` · resolved by ${r.resolved_by}` : '';

  const tr = document.createElement('tr');
  tr.dataset.report = r.id;
  if (r.resolved_by) tr.className = 'is-disabled';
  tr.append(
    cell(link(r.stream)),
    cell(r.deleted ? [text, ' (deleted)'] : text),
    cell(m.display_name ?? m.user ?? ''),
    cell(`${r.reporter}${reason}`),
    cell(`${formatTime(r.ts)}${status}`),
    cell(actions, 'actions'),
  );
  return tr;
}

function link(stream) {
  const a = document.createElement('a');
  a.href = `/watch/${encodeURIComponent(stream)}`;
  a.textContent = stream;
  return a;
}

function showError(e) {
  reportsError.textContent = describeApiError(e);
  reportsError.hidden = false;
}

function fail(message) {
  lumen.state = 'error';
  lumen.error = message;
  $('error').textContent = message;
  $('error').hidden = false;
}

function button(text, className) {
  const b = document.createElement('button');
  b.type = 'button';
  b.className = className;
  b.textContent = text;
  return b;
}

function cell(content, className = '') {
  const td = document.createElement('td');
  if (className) td.className = className;
  td.append(...(Array.isArray(content) ? content : [content]));
  return td;
}
