// Cluster page, at /cluster: the nodes of the cluster this node belongs to
// and each stream's relay tree, drawn as nested lists from the origin down
// (GET /api/v1/cluster, admins only), refreshed every 2 s.

import { api, currentUser, describeApiError, initNav } from '/static/lumen.js';

const $ = (id) => document.getElementById(id);
const REFRESH_MS = 2000;

// Machine-readable state for tests and scripts.
const lumen = (window.lumen = { state: 'loading', cluster: null, error: null });

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
    location.replace(`/login?next=${encodeURIComponent('/cluster')}`);
    return;
  }
  $('who').textContent = `${me.name} · ${me.role}`;
  if (me.role !== 'admin') {
    fail('The cluster view is for admins.');
    return;
  }
  $('content').hidden = false;
  await load();
  setInterval(load, REFRESH_MS);
}

async function load() {
  try {
    const view = await api('GET', '/api/v1/cluster');
    lumen.cluster = view;
    lumen.state = 'ready';
    $('error').hidden = true;
    render(view);
  } catch (e) {
    fail(`Cannot read the cluster: ${describeApiError(e)}`);
  }
}

function fail(message) {
  lumen.state = 'error';
  lumen.error = message;
  const box = $('error');
  box.textContent = message;
  box.hidden = false;
}

function cell(text) {
  const td = document.createElement('td');
  td.textContent = text;
  return td;
}

function render(view) {
  const nodes = $('nodes');
  nodes.replaceChildren(
    ...view.nodes.map((n) => {
      const tr = document.createElement('tr');
      const id = n.id === view.this_node ? `${n.id} (this node)` : n.id;
      tr.append(
        cell(id),
        cell(n.region),
        cell(n.public_url),
        cell(String(n.sessions)),
        cell(`${n.fanout_used} / ${n.fanout_limit}`),
      );
      return tr;
    }),
  );
  const trees = $('trees');
  trees.replaceChildren(...view.streams.map(tree));
  $('empty').hidden = view.streams.length > 0;
}

// One stream: its carriers as a tree under the origin.
function tree(stream) {
  const section = document.createElement('section');
  section.className = 'tree';
  const title = document.createElement('h3');
  title.textContent = stream.name;
  section.append(title);
  const children = new Map();
  for (const c of stream.carriers) {
    const key = c.parent || '';
    if (!children.has(key)) children.set(key, []);
    children.get(key).push(c);
  }
  const list = (parent) => {
    const ul = document.createElement('ul');
    for (const c of children.get(parent) || []) {
      const li = document.createElement('li');
      li.textContent = `${c.node} · depth ${c.depth}${c.parent ? '' : ' · origin'}`;
      if (children.has(c.node)) li.append(list(c.node));
      ul.append(li);
    }
    return ul;
  };
  section.append(list(''));
  return section;
}
