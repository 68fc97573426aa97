// First run, at /setup?code=…: the first admin chooses a name and password
// with the one-time code lumen printed at start (POST /api/v1/setup), and
// lands on the dashboard, logged in.

import { api, describeApiError, initNav } from '/static/lumen.js';

const $ = (id) => document.getElementById(id);
const form = $('form');
const intro = $('intro');
const errorBox = $('error');
const submit = $('submit');
const code = new URLSearchParams(location.search).get('code') || '';

// Machine-readable state for tests and scripts.
const lumen = (window.lumen = { state: 'loading', error: null });

initNav();
start();

async function start() {
  try {
    const { needed } = await api('GET', '/api/v1/setup');
    if (!needed) {
      lumen.state = 'done';
      intro.textContent = 'There is nothing to set up.';
      $('done').hidden = false;
      return;
    }
  } catch (e) {
    fail(`Cannot ask the server: ${describeApiError(e)}`);
    return;
  }
  if (!code) {
    lumen.state = 'no-code';
    intro.textContent = 'Open the setup address lumen printed when it started: it ends with ?code=….';
    return;
  }
  lumen.state = 'ready';
  intro.textContent = 'Choose the name and password of the first admin. The setup code works once.';
  form.hidden = false;
  $('name').focus();
}

form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const name = $('name').value.trim();
  const password = $('password').value;
  if (password !== $('password2').value) {
    fail('The two passwords differ.');
    return;
  }
  submit.disabled = true;
  errorBox.hidden = true;
  try {
    await api('POST', '/api/v1/setup', { code, name, password });
    lumen.state = 'created';
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
