// Dashboard, at /dashboard: the logged-in user's streams (GET
// /api/v1/streams), each with its WHIP URL, visibility, stream keys (new,
// rotate, revoke; a new secret is shown once), share links that let anyone
// holding them watch a private stream, and links to go live and to watch;
// and a form to create a stream. A logged-out visitor goes to /login.

import {
  api, copyButton, currentUser, describeApiError, formatTime, initNav, validStreamName,
} from '/static/lumen.js';

// Live state and viewer counts change on their own; the rest only by this page.
const REFRESH_MS = 5000;
const VISIBILITIES = [
  ['public', 'Public'],
  ['unlisted', 'Unlisted'],
  ['private', 'Private'],
];
const SHARE_TTLS = [
  [3600, 'for 1 hour'],
  [86400, 'for 1 day'],
  [7 * 86400, 'for 7 days'],
  [30 * 86400, 'for 30 days'],
];

const $ = (id) => document.getElementById(id);
const list = $('streams');
const summary = $('summary');
const errorBox = $('error');
const createForm = $('create');
const createError = $('create-error');

// Machine-readable state for tests and scripts.
const lumen = (window.lumen = { state: 'loading', user: null, streams: [], error: null });

// name → {root, update(stream)}: panels live across refreshes, so an open
// secret or share link survives them.
const panels = new Map();

start();

async function start() {
  initNav();
  let user;
  try {
    user = await currentUser();
  } catch (e) {
    fail(`Cannot reach the account service: ${describeApiError(e)}`);
    return;
  }
  if (!user) {
    toLogin();
    return;
  }
  lumen.user = user;
  $('who').textContent = `${user.name} · ${user.role}`;
  const mayOwn = user.role === 'broadcaster' || user.role === 'admin';
  createForm.hidden = !mayOwn;
  if (!mayOwn) {
    const note = $('no-create');
    note.textContent = `As a ${user.role} you cannot own streams; an admin can change your role.`;
    note.hidden = false;
  }
  await refresh();
  setInterval(refresh, REFRESH_MS);
}

async function refresh() {
  try {
    const streams = await api('GET', '/api/v1/streams');
    errorBox.hidden = true;
    render(Array.isArray(streams) ? streams : []);
    lumen.state = 'ready';
    lumen.error = null;
  } catch (e) {
    if (e.status === 401) {
      toLogin();
      return;
    }
    fail(`Cannot load your streams: ${describeApiError(e)}`);
  }
}

function render(streams) {
  lumen.streams = streams.map((s) => s.name);
  const seen = new Set();
  let prev = null;
  for (const s of streams) {
    seen.add(s.name);
    let p = panels.get(s.name);
    if (!p) {
      p = streamPanel(s);
      panels.set(s.name, p);
    }
    p.update(s);
    // The server's order, moving only what moved.
    const want = prev ? prev.root.nextSibling : list.firstChild;
    if (want !== p.root) list.insertBefore(p.root, want);
    prev = p;
  }
  for (const [name, p] of panels) {
    if (!seen.has(name)) {
      p.root.remove();
      panels.delete(name);
    }
  }
  const n = streams.length;
  summary.textContent = n === 0
    ? 'You have no streams yet. Create one to get its WHIP URL and keys.'
    : `${n} stream${n === 1 ? '' : 's'}`;
}

createForm.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const name = $('new-name').value.trim();
  createError.hidden = true;
  if (!validStreamName(name)) {
    createError.textContent = 'A stream name is 1 to 64 letters, digits, "-", "_" or ".".';
    createError.hidden = false;
    return;
  }
  const body = { name, visibility: $('new-visibility').value };
  const title = $('new-title').value.trim();
  if (title) body.title = title;
  const submit = $('create-submit');
  submit.disabled = true;
  try {
    await api('POST', '/api/v1/streams', body);
    createForm.reset();
    await refresh();
    panels.get(name)?.root.scrollIntoView({ block: 'nearest' });
  } catch (e) {
    createError.textContent = describeApiError(e);
    createError.hidden = false;
  } finally {
    submit.disabled = false;
  }
});

/** One stream's panel. */
function streamPanel(initial) {
  const name = initial.name;
  const base = `/api/v1/streams/${encodeURIComponent(name)}`;
  let current = initial;

  const root = el('section', { className: 'panel stream', dataset: { stream: name } });
  const errorLine = el('div', { className: 'error', hidden: true });
  errorLine.setAttribute('role', 'alert');
  const showError = (e) => {
    errorLine.textContent = typeof e === 'string' ? e : describeApiError(e);
    errorLine.hidden = false;
  };
  const clearError = () => {
    errorLine.hidden = true;
  };

  // Head: name, live state, visibility.
  const pill = el('span', { className: 'pill is-offline' }, 'Offline');
  const viewers = el('span', { className: 'meta' });
  const visibility = el(
    'select',
    { className: 'visibility', title: 'Who may watch' },
    ...VISIBILITIES.map(([v, label]) => el('option', { value: v }, label)),
  );
  visibility.addEventListener('change', async () => {
    clearError();
    visibility.disabled = true;
    try {
      update(await api('PATCH', base, { visibility: visibility.value }));
    } catch (e) {
      visibility.value = current.visibility;
      showError(e);
    } finally {
      visibility.disabled = false;
    }
  });
  const title = el('div', { className: 'meta title' });

  // Where to publish, and the pages.
  const whip = el('input', { type: 'text', readOnly: true, className: 'mono whip-url' });
  const links = el(
    'div',
    { className: 'links' },
    el('a', { href: `/broadcast?stream=${encodeURIComponent(name)}`, className: 'go-live' },
      'Go live from the browser'),
    el('a', { href: `/watch/${encodeURIComponent(name)}`, className: 'watch' }, 'Watch page'),
  );

  // Share links: a subscribe token in a watch URL.
  const ttl = el(
    'select',
    { className: 'share-ttl', title: 'How long the link works' },
    ...SHARE_TTLS.map(([secs, label]) => el('option', { value: String(secs) }, label)),
  );
  ttl.value = '86400';
  const shareButton = el('button', { type: 'button', className: 'small share' },
    'Share a private link');
  const shareUrl = el('input', { type: 'text', readOnly: true, className: 'mono share-url' });
  const shareNote = el('p');
  const shareBox = el(
    'div',
    { className: 'reveal share-box', hidden: true },
    shareNote,
    el('div', { className: 'field' }, shareUrl, copyButton(() => shareUrl.value)),
  );
  shareButton.addEventListener('click', async () => {
    clearError();
    shareButton.disabled = true;
    try {
      const t = await api('POST', `${base}/tokens`, { ttl_secs: Number(ttl.value) });
      shareUrl.value = new URL(t.watch_url, location.href).href;
      shareNote.textContent = `Anyone with this link can watch “${name}” until ${formatTime(epochMs(t.expires_at))}, even while it is private.`;
      shareBox.hidden = false;
    } catch (e) {
      showError(e);
    } finally {
      shareButton.disabled = false;
    }
  });

  // Keys: the list, a new one, the secret of the last one made.
  const keysBody = el('tbody');
  const keysTable = el(
    'table',
    { className: 'list keys' },
    el('thead', {}, el('tr', {},
      ...['Label', 'Key', 'Created', 'Last used', 'Status', ''].map((h) => el('th', {}, h)))),
    keysBody,
  );
  const keyLabel = el('input', {
    type: 'text', className: 'key-label', maxLength: 64, placeholder: 'Label (optional), e.g. OBS at home',
  });
  const newKeyButton = el('button', { type: 'submit', className: 'small accent new-key' }, 'New key');
  const keyForm = el('form', { className: 'field key-form' }, keyLabel, newKeyButton);
  keyForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearError();
    newKeyButton.disabled = true;
    try {
      const body = keyLabel.value.trim() ? { label: keyLabel.value.trim() } : {};
      reveal(await api('POST', `${base}/keys`, body), 'New');
      keyLabel.value = '';
      await loadKeys();
    } catch (e) {
      showError(e);
    } finally {
      newKeyButton.disabled = false;
    }
  });

  const secret = el('input', {
    type: 'password', readOnly: true, className: 'mono secret', autocomplete: 'off',
  });
  const showButton = el('button', { type: 'button', className: 'small show' }, 'Show');
  showButton.addEventListener('click', () => {
    const hidden = secret.type === 'password';
    secret.type = hidden ? 'text' : 'password';
    showButton.textContent = hidden ? 'Hide' : 'Show';
  });
  const doneButton = el('button', { type: 'button', className: 'small' }, 'Done');
  const secretNote = el('p');
  const secretBox = el(
    'div',
    { className: 'reveal key-secret', hidden: true },
    secretNote,
    el('div', { className: 'field' }, secret, showButton, copyButton(() => secret.value), doneButton),
  );
  doneButton.addEventListener('click', () => {
    secret.value = '';
    secretBox.hidden = true;
  });
  // The secret is in the answer of the request that made it, never again.
  function reveal(k, verb) {
    secret.value = k.key || '';
    secret.type = 'password';
    showButton.textContent = 'Show';
    secretNote.textContent = `${verb} key “${k.label || k.prefix}”: copy it now, it is not shown again. `
      + 'Give it to OBS (WHIP, Bearer token) or type it on the broadcast page, with the WHIP URL above.';
    secretBox.hidden = false;
  }

  async function loadKeys() {
    try {
      const keys = await api('GET', `${base}/keys`);
      keysBody.replaceChildren(...(keys.length ? keys.map(keyRow) : [emptyKeysRow()]));
    } catch (e) {
      showError(e);
    }
  }

  function keyRow(k) {
    const revoked = k.revoked_at != null;
    const actions = el('td', { className: 'actions' });
    if (!revoked) {
      const rotate = el('button', { type: 'button', className: 'small rotate' }, 'Rotate');
      rotate.title = 'Replace with a new key; this one stops working';
      rotate.addEventListener('click', async () => {
        clearError();
        rotate.disabled = true;
        try {
          const id = encodeURIComponent(k.id);
          reveal(await api('POST', `${base}/keys/${id}/rotate`, {}), 'Rotated');
          await loadKeys();
        } catch (e) {
          rotate.disabled = false;
          showError(e);
        }
      });
      const revoke = el('button', { type: 'button', className: 'small danger revoke' }, 'Revoke');
      revoke.addEventListener('click', async () => {
        const what = k.label ? `“${k.label}” (${k.prefix}…)` : `${k.prefix}…`;
        if (!window.confirm(`Revoke key ${what}? A broadcast using it ends within 2 seconds.`)) return;
        clearError();
        revoke.disabled = true;
        try {
          await api('DELETE', `${base}/keys/${encodeURIComponent(k.id)}`);
          await loadKeys();
        } catch (e) {
          revoke.disabled = false;
          showError(e);
        }
      });
      actions.append(rotate, revoke);
    }
    return el(
      'tr',
      { className: revoked ? 'is-revoked' : '', dataset: { key: k.id } },
      el('td', {}, k.label || '—'),
      el('td', { className: 'mono' }, `${k.prefix}…`),
      el('td', {}, formatTime(k.created_at)),
      el('td', {}, k.last_used_at ? formatTime(k.last_used_at) : 'never'),
      el('td', { className: 'status' }, revoked ? `revoked ${formatTime(k.revoked_at)}` : 'active'),
      actions,
    );
  }

  const deleteButton = el('button', { type: 'button', className: 'small danger delete' },
    'Delete stream');
  deleteButton.addEventListener('click', async () => {
    if (!window.confirm(`Delete the stream “${name}”? Its keys stop working.`)) return;
    clearError();
    deleteButton.disabled = true;
    try {
      await api('DELETE', base);
      await refresh();
    } catch (e) {
      deleteButton.disabled = false;
      showError(e);
    }
  });

  root.append(
    el('div', { className: 'panel-head' },
      el('span', { className: 'name' }, name), pill, viewers, el('span', { className: 'spacer' }),
      visibility),
    title,
    el('div', { className: 'field' }, el('span', { className: 'what' }, 'WHIP URL'), whip,
      copyButton(() => whip.value)),
    links,
    el('h3', {}, 'Share'),
    el('div', { className: 'field' }, shareButton, ttl),
    shareBox,
    el('h3', {}, 'Stream keys'),
    el('div', { className: 'table-wrap' }, keysTable),
    keyForm,
    secretBox,
    el('div', { className: 'links' }, deleteButton),
    errorLine,
  );

  function update(s) {
    current = s;
    root.dataset.visibility = s.visibility;
    pill.textContent = s.live ? 'Live' : 'Offline';
    pill.className = `pill ${s.live ? 'is-live' : 'is-offline'}`;
    const n = Number(s.viewers) || 0;
    viewers.textContent = s.live ? `${n} watching` : '';
    // Not while the user is choosing.
    if (document.activeElement !== visibility && !visibility.disabled) {
      visibility.value = s.visibility;
    }
    title.textContent = s.title || '';
    title.hidden = !s.title;
    whip.value = new URL(s.whip_url || `/whip/${encodeURIComponent(name)}`, location.href).href;
  }

  loadKeys();
  return { root, update };
}

function emptyKeysRow() {
  const td = el('td', { className: 'hint prose' },
    'No keys yet. A key lets OBS or a script publish to this stream.');
  td.colSpan = 6;
  return el('tr', {}, td);
}

// Token expiry may come in seconds (JWT `exp`) or milliseconds (every other time).
function epochMs(t) {
  return Number.isFinite(t) && t < 1e12 ? t * 1000 : t;
}

function toLogin() {
  location.replace(`/login?next=${encodeURIComponent('/dashboard')}`);
}

function fail(message) {
  lumen.state = 'error';
  lumen.error = message;
  errorBox.textContent = message;
  errorBox.hidden = false;
}

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'dataset') Object.assign(e.dataset, v);
    else e[k] = v;
  }
  e.append(...children);
  return e;
}
