// Admin page, at /admin: every user with their role (changeable), disable
// and enable (which ends their sessions), delete; a form to create a user,
// and one to create an invite (its code and sign up link).

import {
  api, copyButton, currentUser, describeApiError, formatTime, initNav,
} from '/static/lumen.js';

const ROLES = ['admin', 'moderator', 'broadcaster', 'viewer'];

const $ = (id) => document.getElementById(id);
const errorBox = $('error');
const usersBody = $('users');
const usersError = $('users-error');

// Machine-readable state for tests and scripts.
const lumen = (window.lumen = { state: 'loading', user: null, users: [], error: null });

let me = null;

for (const select of [$('new-role'), $('invite-role')]) {
  select.append(...ROLES.map((r) => option(r)));
  select.value = 'broadcaster';
}
$('invite-url-row').append(copyButton(() => $('invite-url').value));
$('invite-code').parentElement.append(copyButton(() => $('invite-code').value));

start();

async function start() {
  initNav();
  try {
    me = await currentUser();
  } catch (e) {
    fail(`Cannot reach the account service: ${describeApiError(e)}`);
    return;
  }
  if (!me) {
    location.replace(`/login?next=${encodeURIComponent('/admin')}`);
    return;
  }
  lumen.user = me;
  $('who').textContent = `${me.name} · ${me.role}`;
  if (me.role !== 'admin') {
    fail('This page is for admins. Your streams are on the dashboard.');
    return;
  }
  $('content').hidden = false;
  await loadUsers();
}

async function loadUsers() {
  try {
    const users = await api('GET', '/api/v1/users');
    lumen.users = users;
    lumen.state = 'ready';
    usersBody.replaceChildren(...users.map(userRow));
  } catch (e) {
    showUsersError(e);
  }
}

function userRow(u) {
  const self = me && u.id === me.id;
  const role = document.createElement('select');
  role.className = 'role';
  role.append(...ROLES.map((r) => option(r)));
  role.value = u.role;
  role.addEventListener('change', () => change(u, { role: role.value }, role));

  const toggle = button(u.disabled ? 'Enable' : 'Disable', 'small toggle');
  toggle.disabled = self;
  if (self) toggle.title = 'You cannot disable yourself';
  toggle.addEventListener('click', () => change(u, { disabled: !u.disabled }, toggle));

  const del = button('Delete', 'small danger delete');
  del.disabled = self;
  if (self) del.title = 'You cannot delete yourself';
  del.addEventListener('click', async () => {
    if (!window.confirm(`Delete the user “${u.name}”? Their streams and keys go with them.`)) return;
    usersError.hidden = true;
    del.disabled = true;
    try {
      await api('DELETE', `/api/v1/users/${encodeURIComponent(u.id)}`);
      await loadUsers();
    } catch (e) {
      del.disabled = false;
      showUsersError(e);
    }
  });

  const tr = document.createElement('tr');
  tr.dataset.user = u.name;
  if (u.disabled) tr.className = 'is-disabled';
  tr.append(
    cell(self ? `${u.name} (you)` : u.name),
    cell(role),
    cell(formatTime(u.created_at)),
    cell(u.disabled ? 'disabled' : 'active', 'status'),
    cell([toggle, del], 'actions'),
  );
  return tr;
}

async function change(u, patch, control) {
  usersError.hidden = true;
  control.disabled = true;
  try {
    await api('PATCH', `/api/v1/users/${encodeURIComponent(u.id)}`, patch);
  } catch (e) {
    showUsersError(e);
  }
  // Whatever happened, show what the server holds.
  await loadUsers();
}

$('create').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const err = $('create-error');
  const submit = $('create-submit');
  err.hidden = true;
  submit.disabled = true;
  try {
    await api('POST', '/api/v1/users', {
      name: $('new-name').value.trim(),
      password: $('new-password').value,
      role: $('new-role').value,
    });
    $('new-name').value = '';
    $('new-password').value = '';
    await loadUsers();
  } catch (e) {
    err.textContent = describeApiError(e);
    err.hidden = false;
  } finally {
    submit.disabled = false;
  }
});

$('invite').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const err = $('invite-error');
  const submit = $('invite-submit');
  err.hidden = true;
  submit.disabled = true;
  try {
    const inv = await api('POST', '/api/v1/invites', {
      role: $('invite-role').value,
      ttl_secs: Number($('invite-ttl').value),
    });
    $('invite-code').value = inv.code;
    const url = inv.signup_url || `/signup?invite=${encodeURIComponent(inv.code)}`;
    $('invite-url').value = new URL(url, location.href).href;
    $('invite-result').hidden = false;
  } catch (e) {
    err.textContent = describeApiError(e);
    err.hidden = false;
  } finally {
    submit.disabled = false;
  }
});

function showUsersError(e) {
  usersError.textContent = describeApiError(e);
  usersError.hidden = false;
}

function fail(message) {
  lumen.state = 'error';
  lumen.error = message;
  errorBox.textContent = message;
  errorBox.hidden = false;
}

function option(value) {
  const o = document.createElement('option');
  o.value = value;
  o.textContent = value;
  return o;
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
