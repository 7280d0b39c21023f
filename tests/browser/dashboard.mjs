// Drives Debian's chromium through the server's dashboard, as a user would, for
// tests/integration/test_dashboard.py (which starts the server, the devices, an agent and a
// tunnel, and passes what they are in DASHBOARD_TEST as JSON). Prints one line per check;
// exits 1 on the first check that fails.
import { chromium } from 'playwright-core';
import { execFile, spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const cfg = JSON.parse(process.env.DASHBOARD_TEST);
const T = Number(cfg.timeout_ms || 15000);
mkdirSync(cfg.screenshots, { recursive: true });

function check(ok, what, detail) {
  if (!ok) throw new Error('FAILED: ' + what + (detail !== undefined ? ': ' + JSON.stringify(detail) : ''));
  console.log('ok: ' + what);
}

function run(cmd, args) {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: T }, (error, stdout, stderr) =>
      resolve({ code: error ? (error.code ?? 1) : 0, stdout, stderr }));
  });
}

function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

async function view(page, name) {
  await page.locator(`nav button[data-view="${name}"]`).click();
}

async function shot(page, name) {
  // The page's content only, not the empty viewport below it.
  await page.locator('body').screenshot({ path: join(cfg.screenshots, name + '.png') });
}

const problems = [];  // CSP violations and script errors: any of them fails the test
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const page = await context.newPage();
  page.setDefaultTimeout(T);
  page.on('pageerror', (e) => problems.push('script error: ' + e.message));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) problems.push('console: ' + m.text());
  });
  page.on('dialog', (d) => d.accept());

  // ---- the page and its headers
  const response = await page.goto(cfg.url + '/');
  const headers = response.headers();
  check(response.status() === 200, 'the dashboard is served at /', response.status());
  const csp = headers['content-security-policy'] || '';
  check(csp.includes("default-src 'self'") && !csp.includes('unsafe-inline'),
    'a strict Content-Security-Policy', csp);
  check(headers['x-content-type-options'] === 'nosniff', 'X-Content-Type-Options: nosniff');
  check(!/[?&]key=/.test(page.url()), 'no key in the URL');

  // ---- logging in: a wrong key is refused with a message, the right one gets in
  await page.getByLabel('API key').fill('tt_not_a_key_at_all');
  await page.getByRole('button', { name: 'Log in' }).click();
  const error = page.locator('#error');
  await error.waitFor({ state: 'visible' });
  check(/not accepted/.test(await error.textContent()), 'a wrong key shows an error',
    await error.textContent());
  check(await page.locator('#nav').isHidden(), 'a wrong key does not get in');
  await shot(page, '01-login-refused');

  await page.getByLabel('API key').fill(cfg.keys.ops);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.locator('#nav').waitFor({ state: 'visible' });
  check(await error.isHidden(), 'the right key gets in');
  const stored = await page.evaluate(() => sessionStorage.getItem('tether.api_key'));
  check(stored === cfg.keys.ops, 'the key is kept in sessionStorage');
  const cookies = await context.cookies();
  check(cookies.length === 0, 'no cookie is set', cookies);

  // Every control has a label.
  const unlabelled = await page.evaluate(() => [...document.querySelectorAll('input, select, textarea')]
    .filter((e) => e.labels.length === 0).map((e) => e.id));
  check(unlabelled.length === 0, 'every form control has a label', unlabelled);

  // ---- devices: a direct device that answered, one that refused (the device is there, the
  // port closed), one that nothing answered, an agent online, one not
  const reach = (id) => page.locator(`#devices-table tr[data-device="${id}"] td[data-field="reachable"]`);
  const expectReach = async (id, text) => {
    await page.waitForFunction(([sel, want]) => {
      const e = document.querySelector(sel);
      return e && e.textContent === want;
    }, [`#devices-table tr[data-device="${id}"] td[data-field="reachable"]`, text]);
    check((await reach(id).textContent()) === text, `device ${id} reachable: ${text}`);
  };
  await expectReach(cfg.devices.direct_ok, 'yes');
  await expectReach(cfg.devices.direct_closed, 'yes (port closed)');
  await expectReach(cfg.devices.direct_dead, 'no');
  await expectReach(cfg.devices.agent_on, 'yes');
  await expectReach(cfg.devices.agent_off, 'no');
  const kinds = await page.locator('#devices-table td[data-field="kind"]').allTextContents();
  check(kinds.includes('direct') && kinds.includes('agent'), 'direct and agent devices are listed', kinds);
  await shot(page, '02-devices');

  // ---- sessions: the tunnel's session is listed and its bytes grow while curl runs
  await view(page, 'sessions');
  const row = page.locator('#sessions-table tr[data-credential="' + cfg.tunnel_credential + '"]');
  await row.waitFor();
  const peer = await row.locator('td[data-field="peer"]').textContent();
  check(/^127\.0\.0\.1:\d+$/.test(peer), 'the tunnel session shows its peer address', peer);
  const agentRow = page.locator('#sessions-table td[data-field="role"]', { hasText: 'agent of ' + cfg.devices.agent_on });
  check((await agentRow.count()) === 1, 'the agent session is listed as the agent of its device');
  const bytesNow = async () =>
    Number(await row.locator('td[data-field="bytes_from_devices"]').getAttribute('data-bytes'));
  const before = await bytesNow();
  // Downloads through the tunnel, one after another, for a few seconds.
  const loop = spawn('sh', ['-c',
    `for i in 1 2 3 4 5 6 7; do curl -sS -o /dev/null --max-time 10 "${cfg.tunnel_url}" || exit 1; sleep 0.6; done`],
    { stdio: 'inherit' });
  const loopDone = new Promise((resolve) => loop.on('exit', (code) => resolve(code)));
  let finished = null;
  loopDone.then((code) => { finished = code; });
  const seen = [before];
  while (finished === null) {
    const v = await bytesNow();
    if (v !== seen[seen.length - 1]) seen.push(v);
    await sleep(200);
  }
  check(finished === 0, 'curl through the tunnel worked', finished);
  const grewWhileRunning = seen.filter((v, i) => i > 0 && v > seen[i - 1]).length;
  check(grewWhileRunning >= 2, 'the session\'s bytes grew, live, while curl ran', seen);
  await page.waitForFunction(([sel, want]) => {
    const e = document.querySelector(sel);
    return e && Number(e.dataset.bytes) >= want;
  }, [`#sessions-table tr[data-credential="${cfg.tunnel_credential}"] td[data-field="bytes_from_devices"]`,
      before + 7 * cfg.tunnel_file_size]);
  check(true, 'the session counted every byte curl fetched');
  await shot(page, '03-sessions');

  // ---- the devices view counts the same traffic for its device
  await view(page, 'devices');
  await page.waitForFunction(([sel, want]) => {
    const e = document.querySelector(sel);
    return e && Number(e.dataset.bytes) >= want;
  }, [`#devices-table tr[data-device="${cfg.devices.direct_ok}"] td[data-field="bytes_from_device"]`,
      7 * cfg.tunnel_file_size]);
  check(true, 'the device counts the bytes that came from it');
  await shot(page, '03-devices-traffic');

  // ---- sending a message from the form: the reply appears in place, as text
  await view(page, 'send');
  await page.locator(`#send-device option[value="${cfg.devices.direct_ok}"]`).waitFor({ state: 'attached' });
  await page.locator('#send-device').selectOption(cfg.devices.direct_ok);
  await page.locator('#send-protocol').selectOption('tcp');
  await page.locator('#send-port').fill(String(cfg.reply_port));
  const text = '<b>hello</b> from the page';
  await page.getByLabel('Text', { exact: true }).fill(text);
  await page.getByLabel('Wait for a reply (ms)').fill('3000');
  await page.locator('#send-form button[type=submit]').click();
  await page.locator('#send-result pre.reply').waitFor();
  check((await page.locator('#send-result [data-field="status"]').textContent()) === 'delivered',
    'the form\'s message was delivered');
  check((await page.locator('#send-result pre.reply').textContent()) === 'reply:' + text,
    'the device\'s reply appears in place');
  check((await page.locator('#send-result b').count()) === 0, 'the reply is shown as text, not HTML');
  await shot(page, '04-send');

  // An API error (a payload over the server's limit) is shown as a message.
  await page.getByLabel('Text', { exact: true }).fill('x'.repeat(cfg.max_payload + 10));
  await page.locator('#send-form button[type=submit]').click();
  await error.waitFor({ state: 'visible' });
  check(/413/.test(await error.textContent()), 'an API error is shown', await error.textContent());
  await page.getByLabel('Text', { exact: true }).fill('');

  // A file is sent as it is, bytes and all.
  await page.getByLabel('Or a file').setInputFiles({
    name: 'request.bin', mimeType: 'application/octet-stream', buffer: Buffer.from('file\u0000body'),
  });
  await page.locator('#send-form button[type=submit]').click();
  await page.locator('#send-result pre.reply', { hasText: 'reply:file' }).waitFor();
  check((await page.locator('#send-result pre.reply').textContent()) === 'reply:file\u0000body',
    'a file is sent as its bytes and the reply appears');
  await page.getByLabel('Or a file').setInputFiles([]);

  // ---- webhooks: made in the page, called with curl, seen live in the log, revoked
  await view(page, 'webhooks');
  await page.locator(`#webhook-device option[value="${cfg.devices.direct_ok}"]`).waitFor({ state: 'attached' });
  await page.locator('#webhook-device').selectOption(cfg.devices.direct_ok);
  await page.locator('#webhook-port').fill(String(cfg.reply_port));
  await page.getByRole('button', { name: 'Create webhook' }).click();
  await page.locator('#webhook-created').waitFor({ state: 'visible' });
  const hookUrl = await page.getByLabel('Webhook URL').inputValue();
  check(hookUrl.startsWith(cfg.url + '/webhooks/'), 'the webhook URL is shown once', hookUrl);
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: cfg.url });
  await page.getByRole('button', { name: 'Copy' }).click();
  await page.locator('#webhook-copied', { hasText: 'Copied.' }).waitFor();
  const copied = await page.evaluate(() => navigator.clipboard.readText());
  check(copied === hookUrl, 'the Copy button puts the URL on the clipboard', copied);
  const hookRows = page.locator('#webhooks-table tr[data-webhook]');
  await hookRows.first().waitFor();
  check((await hookRows.count()) === 1, 'the webhook is listed');
  check(!(await page.locator('#webhooks-table').textContent()).includes(hookUrl.split('/').pop()),
    'the list does not show the token');
  await shot(page, '05-webhooks');

  await view(page, 'messages');
  await page.locator('#messages-status', { hasText: 'new messages appear' }).waitFor();
  const posted = 'from a webhook ' + Date.now();
  const called = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '-d',
    JSON.stringify({ data: posted, wait_for_reply_ms: 2000 }), hookUrl]);
  check(called.stdout === '200', 'curl sent a message through the webhook', called);
  const sentRow = page.locator('#messages-table td[data-field="data"]', { hasText: posted }).first();
  await page.locator('#messages-table td[data-field="data"]', { hasText: 'reply:' + posted }).waitFor();
  await sentRow.waitFor();
  check(true, 'the webhook\'s message and its reply appeared in the log, live');
  const firstData = await page.locator('#messages-table tbody tr').first()
    .locator('td[data-field="data"]').textContent();
  check(firstData === 'reply:' + posted, 'the log is newest first', firstData);
  await shot(page, '06-messages');

  // Filtering by device shows that device's rows only.
  await page.getByLabel('Device', { exact: true }).and(page.locator('#messages-device')).fill(cfg.devices.direct_closed);
  await page.getByRole('button', { name: 'Filter' }).click();
  await page.waitForFunction((id) => {
    const cells = [...document.querySelectorAll('#messages-table td[data-field="device"]')];
    return cells.length > 0 && cells.every((c) => c.textContent === id);
  }, cfg.devices.direct_closed);
  check(true, 'the log filters by device');

  await view(page, 'webhooks');
  await hookRows.first().waitFor();
  await page.getByRole('button', { name: /^Revoke webhook/ }).click();
  await page.locator('#webhooks-table tr[data-webhook]').waitFor({ state: 'detached' });
  const after = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '-d',
    JSON.stringify({ data: 'after revoking' }), hookUrl]);
  check(after.stdout === '404', 'a revoked webhook answers 404', after);

  // ---- a phone's width: the page does not scroll sideways, the tables do
  await page.setViewportSize({ width: 390, height: 844 });
  await view(page, 'devices');
  await page.locator('#devices-table tbody tr').first().waitFor();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 1, 'usable at a phone\'s width (no sideways scrolling of the page)', overflow);
  await shot(page, '07-devices-phone');
  await page.setViewportSize({ width: 1280, height: 860 });

  // ---- a key without see_sessions sees its own devices and is told why it sees no sessions
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.getByLabel('API key').fill(cfg.keys.viewer);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.locator('#devices-table tbody tr').first().waitFor();
  const ids = await page.locator('#devices-table td[data-field="id"]').allTextContents();
  check(ids.length === 1 && ids[0] === cfg.devices.direct_ok, 'a key sees only the devices its ACL covers', ids);
  await view(page, 'sessions');
  await error.waitFor({ state: 'visible' });
  check(/see_sessions/.test(await error.textContent()), 'a key without see_sessions is told why',
    await error.textContent());
  await shot(page, '08-sessions-refused');

  check(problems.length === 0, 'no script errors and no CSP violations', problems);
  console.log('dashboard: all checks passed');
} catch (e) {
  console.error(e.message || e);
  if (problems.length) console.error('page problems: ' + JSON.stringify(problems));
  process.exitCode = 1;
} finally {
  await browser.close();
}
