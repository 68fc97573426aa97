// Sign up page (POST /api/v1/signup), with the invite code from `?invite=`
// prefilled; the new user lands on the dashboard, logged in.

import { api, describeApiError, initNav } from '/static/lumen.js';

const $ = (id) => document.getElementById(id);
const form = $('form');
const errorBox = $('error');
const submit = $('submit');

// Machine-readable state for tests and scripts.
const lumen = (window.lumen = { state: 'ready', error: null });

initNav();
$('invite').value = new URLSearchParams(location.search).get('invite') || '';
$('name').focus();

form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const password = $('password').value;
  if (password !== $('password2').value) {
    fail('The two passwords differ.');
    return;
  }
  const body = { name: $('name').value.trim(), password };
  const invite = $('invite').value.trim();
  if (invite) body.invite = invite;
  submit.disabled = true;
  errorBox.hidden = true;
  try {
    await api('POST', '/api/v1/signup', body);
    lumen.state = 'done';
    location.assign('/dashboard');
  } catch (e) {
    submit.disabled = false;
    fail(describeApiError(e));
  }
});

function fail(message) {
  lumen.state = 'error';
  lumen.error = message;
  errorBox.textContent = message;
  errorBox.hidden = false;
}
