// Log in page (POST /api/v1/login): on success, on to `?next=` or the
// dashboard; on failure the server's reason, and after too many failures
// the wait it asks for (Retry-After), counted down on the button.

import {
  HttpError, api, describeApiError, initNav, nextPath, retrySeconds,
} from '/static/lumen.js';

const $ = (id) => document.getElementById(id);
const form = $('form');
const errorBox = $('error');
const submit = $('submit');

// Machine-readable state for tests and scripts.
const lumen = (window.lumen = { state: 'ready', error: null, retryAfter: null });

let countdown = null;

initNav().then((user) => {
  if (!user) return;
  const already = $('already');
  already.replaceChildren(`You are logged in as ${user.name}. `);
  const a = document.createElement('a');
  a.href = nextPath();
  a.textContent = 'Continue';
  already.append(a);
  already.hidden = false;
});
$('name').focus();

form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  if (countdown) return;
  submit.disabled = true;
  errorBox.hidden = true;
  lumen.state = 'sending';
  try {
    await api('POST', '/api/v1/login', {
      name: $('name').value.trim(),
      password: $('password').value,
    });
    lumen.state = 'done';
    location.assign(nextPath());
  } catch (e) {
    lumen.state = 'error';
    lumen.error = describeApiError(e);
    errorBox.textContent = lumen.error;
    errorBox.hidden = false;
    const wait = e instanceof HttpError && e.status === 429 ? retrySeconds(e.retryAfter) : null;
    lumen.retryAfter = wait;
    if (wait) {
      waitThenEnable(wait);
    } else {
      submit.disabled = false;
      $('password').select();
    }
  }
});

// Refused attempts cost more waiting: the button says how long is left.
function waitThenEnable(seconds) {
  let left = seconds;
  const tick = () => {
    if (left <= 0) {
      clearInterval(countdown);
      countdown = null;
      submit.disabled = false;
      submit.textContent = 'Log in';
      return;
    }
    submit.textContent = `Wait ${left} s`;
    left -= 1;
  };
  tick();
  countdown = setInterval(tick, 1000);
}
