// The tether dashboard: a client of the server's public HTTP API (docs/API.md), nothing
// more. The API key lives in this tab's sessionStorage and travels only in the
// Authorization header. Everything that comes from the server is put in the page as text
// (textContent), never as HTML.
'use strict';

const KEY_STORAGE = 'tether.api_key';
const DEVICE_REFRESH_MS = 2000;
const RETRY_MS = 2000;
const MAX_EVENT_BYTES = 4 << 20;
const MAX_MESSAGE_ROWS = 500;
const MAX_FILE_BYTES = 16 << 20;

const state = {
  key: '',
  view: '',
  devices: [],
  stops: [],          // what the current view started: timers and live feeds
  messageIds: new Set(),
};

// ---- small helpers -----------------------------------------------------------------------

function $(id) { return document.getElementById(id); }

function el(tag, text, className) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (className) e.className = className;
  return e;
}

function cell(field, text, className) {
  const td = el('td', text, className);
  td.dataset.field = field;
  return td;
}

// Each cell names its column (data-label), which a phone's layout shows beside the value.
function labelled(table, tr) {
  const heads = table.querySelectorAll('thead th');
  [...tr.cells].forEach((td, i) => {
    if (heads[i]) td.dataset.label = heads[i].textContent;
  });
  return tr;
}

function bytesCell(field, n) {
  const td = cell(field, formatBytes(n), 'num');
  td.dataset.bytes = String(n);
  return td;
}

function formatBytes(n) {
  n = Number(n) || 0;
  if (n < 1024) return n + ' B';
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = -1;
  do { v /= 1024; u++; } while (v >= 1024 && u < units.length - 1);
  return v.toFixed(1) + ' ' + units[u];
}

function formatTime(ms) {
  if (!ms) return '';
  const d = new Date(ms);
  const today = new Date();
  return d.toDateString() === today.toDateString() ? d.toLocaleTimeString() : d.toLocaleString();
}

function sleep(ms) { return new Promise((resolve) => setTimeout(resolve, ms)); }

function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

// Bytes as text when they are UTF-8, else a note with their base64 form.
function dataText(row) {
  if (typeof row.data === 'string') return row.data;
  if (typeof row.base64data === 'string') {
    try {
      const bin = atob(row.base64data);
      const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
      return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    } catch (e) {
      return '(binary, base64) ' + row.base64data;
    }
  }
  return '';
}

function toBase64(buffer) {
  const bytes = new Uint8Array(buffer);
  let bin = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(bin);
}

// ---- errors ------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function describe(err) {
  if (err instanceof ApiError) {
    return err.status ? err.message + ' (HTTP ' + err.status + ', ' + err.code + ')' : err.message;
  }
  return (err && err.message) ? err.message : String(err);
}

function showError(err) {
  const box = $('error');
  box.textContent = describe(err);
  box.hidden = false;
}

function clearError() {
  const box = $('error');
  box.textContent = '';
  box.hidden = true;
}

// A key that stopped working (removed at a reload) sends the user back to the login form.
function failed(err) {
  showError(err);
  if (err instanceof ApiError && err.status === 401 && state.key) logout(false);
}

// ---- the API -----------------------------------------------------------------------------

function authHeaders(extra) {
  return Object.assign({ Authorization: 'Bearer ' + state.key }, extra || {});
}

async function api(method, path, body) {
  const init = { method, headers: authHeaders(), cache: 'no-store' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'network', 'The server cannot be reached: ' + describe(e));
  }
  const text = await response.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (e) { json = null; }
  if (!response.ok) {
    const code = json && json.error ? json.error : 'http_' + response.status;
    const message = json && json.message ? json.message : (text || response.statusText);
    throw new ApiError(response.status, code, message);
  }
  return json;
}

// A Server-Sent-Events feed read with fetch (EventSource cannot send the Authorization
// header). Reconnects after network errors with Last-Event-ID; a 4xx answer ends it with
// the error shown. Returns the function that stops it.
function follow(path, onEvent, onStatus) {
  const control = new AbortController();
  let stopped = false;
  let lastId = '';
  (async () => {
    while (!stopped) {
      try {
        const headers = authHeaders({ Accept: 'text/event-stream' });
        if (lastId) headers['Last-Event-ID'] = lastId;
        const response = await fetch(path, { headers, signal: control.signal, cache: 'no-store' });
        if (!response.ok) {
          const text = await response.text();
          let json = null;
          try { json = JSON.parse(text); } catch (e) { json = null; }
          throw new ApiError(response.status, json && json.error ? json.error : 'http_' + response.status,
            json && json.message ? json.message : text);
        }
        onStatus('live');
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        let buffer = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, '\n');
          let end;
          while ((end = buffer.indexOf('\n\n')) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            let event = 'message';
            const data = [];
            for (const line of block.split('\n')) {
              if (line.startsWith(':')) continue;
              const colon = line.indexOf(':');
              const name = colon < 0 ? line : line.slice(0, colon);
              const val = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
              if (name === 'event') event = val;
              else if (name === 'data') data.push(val);
              else if (name === 'id') lastId = val;
            }
            if (data.length) {
              let parsed;
              try { parsed = JSON.parse(data.join('\n')); } catch (e) { continue; }
              onEvent(event, parsed);
            }
          }
          if (buffer.length > MAX_EVENT_BYTES) throw new Error('an event of the live feed is too large');
        }
        if (!stopped) onStatus('reconnecting');
      } catch (err) {
        if (stopped) return;
        if (err instanceof ApiError && err.status >= 400 && err.status < 500) {
          onStatus('stopped');
          failed(err);
          return;
        }
        onStatus('reconnecting (' + describe(err) + ')');
      }
      await sleep(RETRY_MS);
    }
  })();
  return () => { stopped = true; control.abort(); };
}

// ---- logging in and out ------------------------------------------------------------------

async function login(key) {
  clearError();
  state.key = key;
  try {
    await loadDevices();
  } catch (err) {
    state.key = '';
    sessionStorage.removeItem(KEY_STORAGE);
    if (err instanceof ApiError && err.status === 401) {
      showError(new ApiError(401, err.code, 'That API key was not accepted.'));
    } else {
      showError(err);
    }
    return;
  }
  sessionStorage.setItem(KEY_STORAGE, key);
  $('login').hidden = true;
  $('nav').hidden = false;
  $('login-key').value = '';
  show('devices');
}

function logout(clearMessage) {
  stopView();
  state.key = '';
  state.view = '';
  state.devices = [];
  sessionStorage.removeItem(KEY_STORAGE);
  for (const s of document.querySelectorAll('section.view')) s.hidden = true;
  for (const t of document.querySelectorAll('tbody')) clear(t);
  $('nav').hidden = true;
  $('login').hidden = false;
  if (clearMessage) clearError();
  $('login-key').focus();
}

// ---- views -------------------------------------------------------------------------------

function stopView() {
  for (const stop of state.stops) stop();
  state.stops = [];
}

function show(view) {
  stopView();
  clearError();
  state.view = view;
  for (const s of document.querySelectorAll('section.view')) s.hidden = s.id !== 'view-' + view;
  for (const b of document.querySelectorAll('nav button[data-view]')) {
    if (b.dataset.view === view) b.setAttribute('aria-current', 'page');
    else b.removeAttribute('aria-current');
  }
  const start = { devices: startDevices, sessions: startSessions, send: startSend,
                  webhooks: startWebhooks, messages: startMessages }[view];
  start();
}

// ---- devices -----------------------------------------------------------------------------

async function loadDevices() {
  const body = await api('GET', '/api/v1/devices');
  state.devices = Array.isArray(body && body.devices) ? body.devices : [];
  return state.devices;
}

function portsText(ports) {
  return (ports || []).map((p) => (p.min === p.max ? p.min : p.min + '-' + p.max) + '/' + p.proto)
    .join(', ');
}

function reachableCell(d) {
  if (d.reachable === true && d.last_dial && !d.last_dial.ok) {
    return cell('reachable', 'yes (port closed)', 'yes');  // the device refused the dial
  }
  if (d.reachable === true) return cell('reachable', 'yes', 'yes');
  if (d.reachable === false) return cell('reachable', 'no', 'no');
  return cell('reachable', 'not dialed yet', 'unknown');
}

function deviceDetail(d) {
  if (d.kind === 'agent') {
    if (d.reachable) return 'agent online since ' + formatTime(d.agent_since_ms);
    if (d.agent_last_seen_ms) return 'agent offline, last seen ' + formatTime(d.agent_last_seen_ms);
    return 'agent not connected since the server started';
  }
  if (d.last_dial) {
    return (d.last_dial.ok ? 'last dial: ' : 'last dial failed: ') + d.last_dial.message +
      ' (' + formatTime(d.last_dial.at_ms) + ')';
  }
  return 'not dialed since the server started';
}

function renderDevices() {
  const body = $('devices-table').querySelector('tbody');
  clear(body);
  for (const d of state.devices) {
    const tr = el('tr');
    tr.dataset.device = d.id;
    tr.append(cell('id', d.id), cell('kind', d.kind), reachableCell(d),
      cell('streams_open', d.streams_open, 'num'),
      bytesCell('bytes_to_device', d.bytes_to_device),
      bytesCell('bytes_from_device', d.bytes_from_device),
      cell('ports', portsText(d.ports)), cell('detail', deviceDetail(d)));
    body.append(labelled($('devices-table'), tr));
  }
  $('devices-status').textContent = state.devices.length
    ? state.devices.length + ' devices; updated ' + new Date().toLocaleTimeString()
    : 'This key may reach no device.';
}

function startDevices() {
  let stopped = false;
  let timer = null;
  const refresh = async () => {
    try {
      await loadDevices();
      if (stopped) return;
      renderDevices();
    } catch (err) {
      if (!stopped) failed(err);
    }
    if (!stopped) timer = setTimeout(refresh, DEVICE_REFRESH_MS);
  };
  refresh();
  state.stops.push(() => { stopped = true; clearTimeout(timer); });
}

function fillDeviceSelect(select) {
  const kept = select.value;
  clear(select);
  for (const d of state.devices) {
    const o = el('option', d.id + (d.kind === 'agent' ? ' (agent)' : ''));
    o.value = d.id;
    select.append(o);
  }
  if (kept && state.devices.some((d) => d.id === kept)) select.value = kept;
}

async function refreshDeviceSelects() {
  try {
    await loadDevices();
  } catch (err) {
    failed(err);
  }
  fillDeviceSelect($('send-device'));
  fillDeviceSelect($('webhook-device'));
}

// ---- sessions ----------------------------------------------------------------------------

function renderSessions(doc) {
  const body = $('sessions-table').querySelector('tbody');
  clear(body);
  const list = Array.isArray(doc.sessions) ? doc.sessions : [];
  for (const s of list) {
    const by = s.by_protocol || {};
    const tcp = by.tcp || {};
    const udp = by.udp || {};
    const tr = el('tr');
    tr.dataset.session = String(s.id);
    tr.dataset.credential = s.credential;
    tr.append(cell('credential', s.credential),
      cell('role', s.role === 'agent' ? 'agent of ' + s.device : 'client'),
      cell('peer', s.peer), cell('since', formatTime(s.since_ms)),
      cell('streams_open', (tcp.streams_open || 0) + ' / ' + (udp.streams_open || 0), 'num'),
      cell('streams_opened', s.streams_opened, 'num'),
      bytesCell('bytes_to_devices', s.bytes_to_devices),
      bytesCell('bytes_from_devices', s.bytes_from_devices));
    body.append(labelled($('sessions-table'), tr));
  }
  const more = doc.total > list.length ? ' (the first ' + list.length + ' of ' + doc.total + ')' : '';
  $('sessions-status').textContent = list.length
    ? list.length + ' sessions' + more + '; live, updated ' + new Date().toLocaleTimeString()
    : 'No session is connected; live.';
}

function startSessions() {
  $('sessions-status').textContent = 'Connecting…';
  state.stops.push(follow('/api/v1/sessions/stream', (event, doc) => {
    if (event === 'sessions') renderSessions(doc);
  }, (status) => {
    if (status !== 'live') $('sessions-status').textContent = 'Live feed ' + status + '.';
  }));
}

// ---- sending a message -------------------------------------------------------------------

function startSend() {
  refreshDeviceSelects();
}

function renderSendResult(answer) {
  const out = $('send-result');
  clear(out);
  const box = el('div', null, 'result');
  const ok = answer.status === 'delivered';
  if (!ok) box.classList.add('failed');
  const line = el('p');
  line.append('Status: ');
  const status = el('strong', answer.status);
  status.dataset.field = 'status';
  line.append(status);
  if (answer.id !== undefined) line.append(', message #' + answer.id);
  box.append(line);
  if (answer.detail) box.append(el('p', answer.detail));
  const replies = Array.isArray(answer.replies) ? answer.replies : [];
  if (replies.length === 0) {
    box.append(el('p', ok ? 'No reply.' : ''));
  }
  for (const r of replies) {
    box.append(el('p', 'Reply #' + r.id + ':'));
    const pre = el('pre', dataText(r), 'reply');
    box.append(pre);
  }
  if (answer.reply_truncated) box.append(el('p', 'The reply was cut at the server\'s limit.'));
  out.append(box);
}

async function sendMessage(event) {
  event.preventDefault();
  clearError();
  const form = event.target;
  const device = $('send-device').value;
  const port = Number($('send-port').value);
  const wait = Number($('send-wait').value || 0);
  const body = { protocol: $('send-protocol').value, port, wait_for_reply_ms: wait };
  const topics = $('send-topics').value.split(',').map((t) => t.trim()).filter((t) => t);
  if (topics.length) body.topics = topics;
  const file = $('send-file').files[0];
  if (!device) { showError(new Error('Choose a device.')); return; }
  if (file) {
    if (file.size > MAX_FILE_BYTES) {
      showError(new Error('The file is larger than ' + formatBytes(MAX_FILE_BYTES) + '.'));
      return;
    }
    body.base64data = toBase64(await file.arrayBuffer());
  } else {
    body.data = $('send-data').value;
  }
  const button = form.querySelector('button[type=submit]');
  button.disabled = true;
  $('send-result').textContent = 'Sending…';
  try {
    const answer = await api('POST', '/api/v1/devices/' + encodeURIComponent(device) + '/messages', body);
    renderSendResult(answer);
  } catch (err) {
    $('send-result').textContent = '';
    failed(err);
  } finally {
    button.disabled = false;
  }
}

// ---- webhooks ----------------------------------------------------------------------------

async function listWebhooks() {
  const rows = [];
  for (const d of state.devices) {
    const body = await api('GET', '/api/v1/devices/' + encodeURIComponent(d.id) + '/webhooks');
    for (const w of (body && body.webhooks) || []) rows.push(w);
  }
  const tbody = $('webhooks-table').querySelector('tbody');
  clear(tbody);
  for (const w of rows) {
    const tr = el('tr');
    tr.dataset.webhook = String(w.id);
    const revoke = el('button', 'Revoke', 'secondary');
    revoke.type = 'button';
    revoke.setAttribute('aria-label', 'Revoke webhook ' + w.id + ' of ' + w.device);
    revoke.addEventListener('click', () => revokeWebhook(w));
    const actions = el('td');
    actions.append(revoke);
    tr.append(cell('id', w.id, 'num'), cell('device', w.device),
      cell('port', w.port + '/' + w.protocol), cell('created_by', w.created_by),
      cell('created', formatTime(w.created_ms)), actions);
    tbody.append(labelled($('webhooks-table'), tr));
  }
  if (rows.length === 0) {
    const tr = el('tr');
    const td = el('td', 'No webhooks.');
    td.colSpan = 6;
    tr.append(td);
    tbody.append(tr);
  }
}

async function startWebhooks() {
  $('webhook-created').hidden = true;
  $('webhook-url').value = '';
  await refreshDeviceSelects();
  try {
    await listWebhooks();
  } catch (err) {
    failed(err);
  }
}

async function createWebhook(event) {
  event.preventDefault();
  clearError();
  const device = $('webhook-device').value;
  const body = { port: Number($('webhook-port').value), protocol: $('webhook-protocol').value };
  try {
    const answer = await api('POST', '/api/v1/devices/' + encodeURIComponent(device) + '/webhooks', body);
    $('webhook-url').value = window.location.origin + answer.url;
    $('webhook-copied').textContent = '';
    $('webhook-created').hidden = false;
    $('webhook-url').focus();
    $('webhook-url').select();
    await listWebhooks();
  } catch (err) {
    failed(err);
  }
}

async function copyWebhook() {
  const input = $('webhook-url');
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(input.value);
    } else {
      input.select();
      if (!document.execCommand('copy')) throw new Error('the browser did not copy');
    }
    $('webhook-copied').textContent = 'Copied.';
  } catch (err) {
    input.select();
    $('webhook-copied').textContent = 'Could not copy (' + describe(err) + '): select the URL and copy it.';
  }
}

async function revokeWebhook(w) {
  if (!window.confirm('Revoke webhook ' + w.id + ' of ' + w.device + '? Calls to its URL will fail.')) return;
  clearError();
  try {
    await api('DELETE', '/api/v1/devices/' + encodeURIComponent(w.device) + '/webhooks/' + w.id);
    await listWebhooks();
  } catch (err) {
    failed(err);
  }
}

// ---- the message log ---------------------------------------------------------------------

function messageRow(m) {
  const tr = el('tr');
  tr.dataset.message = String(m.id);
  const direction = m.direction === 'from_device' ? 'from device' : 'to device';
  tr.append(cell('id', m.id, 'num'), cell('time', formatTime(m.created_ms)),
    cell('device', m.device), cell('port', m.port + '/' + m.protocol),
    cell('direction', direction + (m.reply_to ? ' (reply to #' + m.reply_to + ')' : '')),
    cell('status', m.status || ''), cell('sender', m.sender),
    cell('data', dataText(m), 'data'), cell('topics', (m.topics || []).join(', ')));
  return labelled($('messages-table'), tr);
}

function addMessages(rows, atTop) {
  const tbody = $('messages-table').querySelector('tbody');
  for (const m of rows) {
    if (state.messageIds.has(m.id)) continue;
    state.messageIds.add(m.id);
    const tr = messageRow(m);
    if (atTop) tbody.prepend(tr);
    else tbody.append(tr);
  }
  while (tbody.rows.length > MAX_MESSAGE_ROWS) {
    const last = tbody.rows[tbody.rows.length - 1];
    state.messageIds.delete(Number(last.dataset.message));
    last.remove();
  }
}

async function startMessages() {
  stopView();
  const tbody = $('messages-table').querySelector('tbody');
  clear(tbody);
  state.messageIds = new Set();
  const filter = new URLSearchParams();
  const device = $('messages-device').value.trim();
  const topic = $('messages-topic').value.trim();
  if (device) filter.set('device', device);
  if (topic) filter.set('topic', topic);
  const first = new URLSearchParams(filter);
  first.set('order', 'newest');
  first.set('limit', '100');
  let since = 0;
  let stopped = false;
  state.stops.push(() => { stopped = true; });
  try {
    const page = await api('GET', '/api/v1/messages?' + first.toString());
    if (stopped) return;
    addMessages(page.messages || [], false);
    since = page.next || 0;
  } catch (err) {
    failed(err);
    return;
  }
  const live = new URLSearchParams(filter);
  live.set('since', String(since));
  $('messages-status').textContent = 'Connecting…';
  state.stops.push(follow('/api/v1/messages/stream?' + live.toString(), (event, m) => {
    if (event === 'message') addMessages([m], true);
  }, (status) => {
    $('messages-status').textContent = status === 'live'
      ? 'Newest first; new messages appear as they come.' : 'Live feed ' + status + '.';
  }));
}

// ---- wiring ------------------------------------------------------------------------------

document.addEventListener('DOMContentLoaded', () => {
  $('login-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const key = $('login-key').value.trim();
    if (!key) { showError(new Error('Enter an API key.')); return; }
    login(key);
  });
  $('logout').addEventListener('click', () => logout(true));
  for (const b of document.querySelectorAll('nav button[data-view]')) {
    b.addEventListener('click', () => show(b.dataset.view));
  }
  $('send-form').addEventListener('submit', sendMessage);
  $('webhook-form').addEventListener('submit', createWebhook);
  $('webhook-copy').addEventListener('click', copyWebhook);
  $('messages-form').addEventListener('submit', (event) => {
    event.preventDefault();
    clearError();
    startMessages();
  });
  const kept = sessionStorage.getItem(KEY_STORAGE);
  if (kept) login(kept);
  else $('login-key').focus();
});
