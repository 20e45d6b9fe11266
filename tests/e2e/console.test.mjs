// Browser end-to-end test of the web console: starts the real `coffee-console` binary (which starts its own
// cluster of `coffee` processes on the real RabbitMQ), drives Debian's chromium through playwright-core, and
// does what a user does: launch two sessions on the bundled sample, watch them complete with their result
// counts, kill a node and see the kill and the restart in the event log, download an NDJSON, compare the two
// sessions. Then what an operator does: watch a backlog build up on the graph, drop a dead letter (thrown at
// a stage with amqplib, as a bad publisher would), rescale the cluster, and find the earlier runs after a
// restart of the console. Screenshots go to tests/output/screenshots/.
//
// Environment (scripts/e2e.sh sets it): COFFEE_CONSOLE_BIN (the console binary; `coffee` must sit beside it
// or be given by COFFEE_BIN), CHROMIUM (default /usr/bin/chromium), AMQP_URL (optional).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import amqp from 'amqplib';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const SHOTS = path.join(ROOT, 'tests/output/screenshots');
const OUT = path.join(ROOT, 'tests/output/e2e');
const CONSOLE_BIN = process.env.COFFEE_CONSOLE_BIN ?? path.join(ROOT, 'target/release/coffee-console');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
const SESSION_TIMEOUT = 180_000;

let consoleProcess;
let consoleLog = '';
let base;
let consoleArgs;
let namespace;
const AMQP_URL = process.env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672/%2f';
let browser;
let page;

/** A TCP port free right now. */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });
}

async function waitFor(what, check, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out waiting for ${what} (last: ${last})\nconsole log:\n${consoleLog.slice(-4000)}`);
}

async function shot(name) {
  const file = path.join(SHOTS, `${name}.png`);
  // From the top: a full-page shot of a scrolled page draws the sticky header in the middle.
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

before(async () => {
  assert.ok(fs.existsSync(CONSOLE_BIN), `${CONSOLE_BIN} is missing: run scripts/e2e.sh`);
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install -y chromium`);
  fs.mkdirSync(SHOTS, { recursive: true });
  fs.mkdirSync(OUT, { recursive: true });
  // A data folder of its own (a copy of the bundled sample), so results and uploads stay out of the repo.
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'coffee-e2e-'));
  fs.cpSync(path.join(ROOT, 'data/sample'), path.join(dataDir, 'sample'), { recursive: true });
  const [port, gatewayPort] = [await freePort(), await freePort()];
  base = `http://127.0.0.1:${port}`;
  namespace = `e2e-${process.pid}-${Date.now()}`;
  consoleArgs = [
    '--bind', `127.0.0.1:${port}`,
    '--gateway', `127.0.0.1:${gatewayPort}`,
    '--namespace', namespace,
    '--data-dir', dataDir,
    '--static-dir', path.join(ROOT, 'frontend/dist'),
  ];
  if (process.env.COFFEE_BIN) consoleArgs.push('--coffee-bin', process.env.COFFEE_BIN);
  await startConsole();
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
  const context = await browser.newContext({ viewport: { width: 1600, height: 1000 }, acceptDownloads: true });
  page = await context.newPage();
  page.on('pageerror', (e) => { consoleLog += `\n[page error] ${e}`; });
});

/** Starts the console (on the same port, data folder and namespace each time) and waits for its cluster. */
async function startConsole() {
  consoleProcess = spawn(CONSOLE_BIN, consoleArgs, {
    stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' },
  });
  consoleProcess.stdout.on('data', (d) => { consoleLog += d; });
  consoleProcess.stderr.on('data', (d) => { consoleLog += d; });
  await waitFor('the console and its cluster', async () => {
    const status = await (await fetch(`${base}/api/status`)).json();
    return status.cluster.state === 'up';
  }, 90_000);
}

/** Stops the console with SIGTERM (it stops its cluster and deletes its queues); SIGKILL after 15 s. */
async function stopConsole() {
  if (!consoleProcess || consoleProcess.exitCode !== null) return;
  const exited = new Promise((r) => consoleProcess.once('exit', r));
  consoleProcess.kill('SIGTERM');
  await Promise.race([exited, new Promise((r) => setTimeout(r, 15_000))]);
  if (consoleProcess.exitCode === null) {
    consoleProcess.kill('SIGKILL');
    await exited;
  }
}

/** POSTs to the console's API: for what a test sets up around what it does in the page. */
async function post(route, body = {}) {
  const response = await fetch(`${base}${route}`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
  });
  const text = await response.text();
  assert.ok(response.ok, `${route}: ${response.status} ${text}`);
  return JSON.parse(text);
}

after(async () => {
  await browser?.close();
  await stopConsole();
  fs.writeFileSync(path.join(OUT, 'console.log'), consoleLog);
});

test('the console runs, kills, downloads and compares from the browser', async () => {
  await page.goto(base);
  await page.locator('#cluster-state[data-state="up"]').waitFor({ timeout: 30_000 });
  await page.locator('[data-testid="dataset"][data-id="sample"]').waitFor();
  await page.locator('[data-testid="node-row"]').first().waitFor({ timeout: 15_000 });
  await shot('01-ready');

  // The page's wasm is shrunk by wasm-opt and sent gzipped to a browser that accepts it.
  const wasm = await fetch(`${base}/frontend_bg.wasm`, { headers: { 'accept-encoding': 'gzip' } });
  assert.equal(wasm.headers.get('content-encoding'), 'gzip');
  assert.equal(wasm.headers.get('content-type'), 'application/wasm');
  assert.ok(Number(wasm.headers.get('content-length')) < 400_000, `gzipped wasm of ${wasm.headers.get('content-length')} bytes`);
  assert.ok((await wasm.arrayBuffer()).byteLength < 1_000_000, 'the wasm is shrunk');

  // Launch two sessions on the bundled sample.
  await page.locator('[data-testid="dataset"][data-id="sample"]').click();
  await page.fill('#launch-count', '2');
  await page.click('#launch-btn');
  await page.locator('[data-testid="session-row"]').nth(1).waitFor({ timeout: 30_000 });
  await shot('02-mid-run');

  // Both complete, with result counts for every query.
  const done = page.locator('[data-testid="session-row"][data-state="done"]');
  await waitFor('two finished sessions', async () => (await done.count()) >= 2, SESSION_TIMEOUT);
  assert.equal(await page.locator('[data-testid="session-row"][data-state="failed"]').count(), 0);
  const sessions = [];
  for (let i = 0; i < 2; i++) {
    const row = done.nth(i);
    const id = await row.getAttribute('data-session');
    const results = Number(await row.getAttribute('data-results'));
    assert.ok(results > 0, `session ${id} shows no results`);
    for (const kind of ['Q1', 'Q2_QTY', 'Q2_PROFIT', 'Q3', 'Q4']) {
      const count = Number((await row.locator(`td[data-kind="${kind}"]`).innerText()).replace(/,/g, ''));
      assert.ok(count > 0, `session ${id}: no ${kind} rows shown`);
    }
    sessions.push({ id, results });
  }
  assert.equal(sessions[0].results, sessions[1].results, 'both sessions have the same result counts');
  // Each is checked against the reference once done, and the row says so.
  const equal = page.locator('[data-testid="session-row"] [data-testid="reference"][data-matches="true"]');
  await waitFor('both sessions checked against the reference', async () => (await equal.count()) >= 2, 60_000);

  // Results of one session: Q3 table and chart.
  await done.first().locator('[data-testid="view-results"]').click();
  await page.click('[data-testid="tab-Q3"]');
  await page.locator('[data-testid="chart-q3"] svg rect').first().waitFor();
  await page.click('[data-testid="tab-Q2"]');
  await page.locator('[data-testid="chart"] svg rect').first().waitFor();
  await shot('03-sessions-done');

  // Kill a node from the page: the log shows the kill, then the restart a health monitor asked for.
  await page.click('[data-testid="kill-q3_agg-0"]');
  await page.locator('[data-testid="event"][data-kind="kill"]').first().waitFor({ timeout: 15_000 });
  await page.locator('[data-testid="event"][data-kind="restart"]').first().waitFor({ timeout: 15_000 });
  const killText = await page.locator('[data-testid="event"][data-kind="kill"]').first().innerText();
  assert.match(killText, /q3_agg-0/);
  const restartText = await page.locator('[data-testid="event"][data-kind="restart"]').first().innerText();
  assert.match(restartText, /q3_agg-0 .*by monitor-\d/);
  await page.locator('[data-testid="node-row"][data-node="q3_agg-0"][data-restarts="1"][data-up="true"]').waitFor({ timeout: 15_000 });
  // Restart one from the page: at once, and the log says the console asked.
  await page.click('[data-testid="restart-q4_top-1"]');
  await page.locator('[data-testid="event"][data-kind="restart"]', { hasText: 'q4_top-1' }).waitFor({ timeout: 15_000 });
  const consoleRestart = await page.locator('[data-testid="event"][data-kind="restart"]', { hasText: 'q4_top-1' }).innerText();
  assert.match(consoleRestart, /by the console/);
  await shot('04-node-killed');

  // The event log survives a reload of the page (kept in the browser), and the sessions, the console's.
  await page.reload();
  await page.locator('[data-testid="event"][data-kind="kill"]', { hasText: 'q3_agg-0' }).waitFor({ timeout: 15_000 });
  await page.locator('[data-testid="event"][data-kind="restart"]', { hasText: 'q4_top-1' }).waitFor({ timeout: 15_000 });
  await waitFor('the sessions listed again', async () => (await done.count()) >= 2, 15_000);
  // The graph shows the flow: each stage's backlog and rows per second.
  const figures = page.locator('[data-testid="graph-stage"][data-stage="tx_filter"] .flow-figures');
  await figures.waitFor({ timeout: 15_000 });
  assert.match(await figures.textContent(), /^\d[\d,]* queued · \d[\d,]* rows\/s$/);

  // Download one session's NDJSON.
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    done.first().locator('[data-testid="download"]').click(),
  ]);
  const first = await done.first().getAttribute('data-session');
  assert.equal(download.suggestedFilename(), `client-${first}.ndjson`);
  const saved = path.join(OUT, download.suggestedFilename());
  await download.saveAs(saved);
  const lines = fs.readFileSync(saved, 'utf8').split('\n').filter((l) => l.trim());
  assert.equal(lines.length, sessions.find((s) => s.id === first).results);
  for (const line of lines) assert.ok(JSON.parse(line).query, `not a result line: ${line}`);

  // Compare the two sessions: every query equal.
  await page.selectOption('#compare-left', sessions[0].id);
  await page.selectOption('#compare-right', sessions[1].id);
  await page.click('#compare-btn');
  await page.locator('[data-testid="compare-result"]').waitFor({ timeout: 15_000 });
  assert.equal(await page.locator('[data-testid="compare-result"]').getAttribute('data-equal'), 'true');
  const rows = page.locator('[data-testid="compare-row"]');
  assert.equal(await rows.count(), 5);
  for (let i = 0; i < 5; i++) assert.equal(await rows.nth(i).getAttribute('data-equal'), 'true');
  await shot('05-compare');
});

test('an operator sees a backlog on the graph, drops a dead letter, rescales, and finds runs after a restart', async () => {
  const stage = (name) => page.locator(`[data-testid="graph-stage"][data-stage="${name}"]`);
  const queuedAt = async (name) => Number(await stage(name).getAttribute('data-queued'));

  // A backlog: with the health monitors paused (so nothing restarts what is killed for a while), both
  // tx_filter replicas are killed from the page and a session launched; its transactions wait in tx_filter's
  // queues, and the graph shows them there, then drain once the replicas are back.
  for (const monitor of ['monitor-0', 'monitor-1', 'monitor-2']) {
    await post(`/api/nodes/${monitor}/pause`, { ms: 12_000 });
  }
  await page.click('[data-testid="kill-tx_filter-0"]');
  await page.click('[data-testid="kill-tx_filter-1"]');
  const before = await page.locator('[data-testid="session-row"]').count();
  await page.locator('[data-testid="dataset"][data-id="sample"]').click();
  await page.fill('#launch-count', '1');
  await page.click('#launch-btn');
  await waitFor('a backlog at tx_filter on the graph', async () => (await queuedAt('tx_filter')) > 0, 12_000);
  assert.ok(await page.locator('line.edge[class*="backlog-"]').count() > 0, 'an edge coloured by its backlog');
  assert.match(await stage('tx_filter').locator('.flow-figures').textContent(), /^[1-9][\d,]* queued/);
  await shot('06-backlog');
  const done = page.locator('[data-testid="session-row"][data-state="done"]');
  await waitFor('the held-up session done', async () => (await done.count()) === before + 1, SESSION_TIMEOUT);
  await waitFor('the backlog drained', async () => (await queuedAt('tx_filter')) === 0, 15_000);
  const equal = page.locator('[data-testid="session-row"] [data-testid="reference"][data-matches="true"]');
  await waitFor('every session equal to the reference', async () => (await equal.count()) === before + 1, 60_000);

  // A dead letter: a message no stage can read, published straight to a stage's queue, is set aside; the page
  // lists it with why, and drops it.
  const connection = await amqp.connect(AMQP_URL);
  const channel = await connection.createChannel();
  channel.sendToQueue(`${namespace}.q3_agg.0`, Buffer.from('e2e poison: not a batch'));
  await channel.close();
  await connection.close();
  const letter = page.locator('[data-testid="dead-letter"][data-stage="q3_agg"]');
  await letter.waitFor({ timeout: 15_000 });
  await page.locator('[data-testid="dead-letters"][data-total="1"]').waitFor({ timeout: 15_000 });
  assert.match(await letter.innerText(), /e2e poison/);
  await shot('07-dead-letter');
  await letter.locator('[data-testid="drop-dead-letter"]').click();
  await letter.waitFor({ state: 'detached', timeout: 15_000 });
  await page.locator('[data-testid="dead-letters"]').waitFor({ state: 'detached', timeout: 15_000 });
  assert.equal((await post('/api/dead-letters/purge')).purged, 0, 'the dropped letter is gone from the broker');

  // Rescale between runs: three q4_count replicas; the graph redraws and the new nodes come up.
  await page.click('[data-testid="rescale-toggle"]');
  await page.fill('[data-testid="replicas-q4_count"]', '3');
  await page.click('[data-testid="rescale-apply"]');
  await waitFor('three q4_count replicas on the graph', async () => (await stage('q4_count').locator('circle.replica').count()) === 3, 60_000);
  await page.locator('[data-testid="node-row"][data-node="q4_count-2"][data-up="true"]').waitFor({ timeout: 30_000 });
  await page.locator('[data-testid="event"][data-kind="cluster"]', { hasText: 'q4_count=3' }).waitFor({ timeout: 15_000 });
  await waitFor('every replica up on the graph', async () => (await stage('q4_count').locator('circle.replica.up').count()) === 3, 30_000);
  await shot('08-rescaled');

  // The console restarted on the same data folder: the runs of the one before are listed, with their verdicts.
  const ids = await done.evaluateAll((rows) => rows.map((r) => r.getAttribute('data-session')));
  assert.ok(ids.length >= 3, `finished sessions before the restart: ${ids}`);
  await stopConsole();
  await startConsole();
  await page.reload();
  for (const id of ids) {
    const row = page.locator(`[data-testid="session-row"][data-session="${id}"][data-state="done"]`);
    await row.waitFor({ timeout: 30_000 });
    await row.locator('[data-testid="reference"][data-matches="true"]').waitFor({ timeout: 30_000 });
  }
  await page.locator('#cluster-state[data-state="up"]').waitFor({ timeout: 30_000 });
  await shot('09-history-after-restart');
});

// A console bound beyond loopback (no cluster: its broker URL leads nowhere; the page still lists datasets):
// the API answers 401 without its token, and the page opened with `?token=` sends it on every fetch and on the
// WebSocket, while the same page without it gets nothing.
test('a console bound beyond loopback needs its token, which the page takes from its URL', async () => {
  const [port, gatewayPort] = [await freePort(), await freePort()];
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'coffee-e2e-token-'));
  fs.cpSync(path.join(ROOT, 'data/sample'), path.join(dataDir, 'sample'), { recursive: true });
  const token = `e2e-token-${process.pid}`;
  const args = [
    '--bind', `0.0.0.0:${port}`, '--token', token,
    '--gateway', `127.0.0.1:${gatewayPort}`, '--namespace', `e2e-token-${process.pid}`,
    '--data-dir', dataDir, '--static-dir', path.join(ROOT, 'frontend/dist'),
  ];
  const child = spawn(CONSOLE_BIN, args, {
    stdio: 'ignore', env: { ...process.env, NO_COLOR: '1', AMQP_URL: 'amqp://127.0.0.1:1/%2f' },
  });
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitFor('the tokened console', async () => (await fetch(`${url}/api/status`)).status === 401, 30_000);
    const authorized = await fetch(`${url}/api/status`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(authorized.status, 200);

    const withToken = await browser.newPage();
    await withToken.goto(`${url}/?token=${token}`);
    await withToken.locator('[data-testid="dataset"][data-id="sample"]').waitFor({ timeout: 30_000 });
    await withToken.locator('.pill.ok', { hasText: 'live' }).waitFor({ timeout: 15_000 });
    await withToken.close();

    const without = await browser.newPage();
    await without.goto(url);
    await new Promise((r) => setTimeout(r, 3_000));
    assert.equal(await without.locator('[data-testid="dataset"]').count(), 0);
    assert.equal(await without.locator('.pill.ok', { hasText: 'live' }).count(), 0);
    await without.close();
  } finally {
    child.kill('SIGTERM');
  }
});
