// Browser end-to-end test of the website: starts the real skinlesion-registry,
// skinlesion-inference (bundled model), skinlesion-trainer and skinlesion-gateway as
// child processes, drives Debian's headless Chromium with playwright-core, and keeps
// screenshots (docs/website.md).
//
//   SKINLESION_INFERENCE_BIN, SKINLESION_GATEWAY_BIN, SKINLESION_REGISTRY_BIN,
//   SKINLESION_TRAINER_BIN: the binaries (the trainer's jobs run a stand-in CLI)
//   SKINLESION_CLI_BIN: the skinlesion CLI (trains the 3-class model of the own-classes test)
//   SKINLESION_REPO: the repository root (default: three levels up from this file)
//   SKINLESION_ARTIFACTS: where screenshots and service logs go (default: a tmp dir)
//   SKINLESION_CHROMIUM: the browser (default /usr/bin/chromium)
//
// Run: (cd tests/js && npm ci) && node --test tests/js/e2e/   (ctest: website_e2e)

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(process.env.SKINLESION_REPO || path.join(here, '..', '..', '..'));
const ARTIFACTS = process.env.SKINLESION_ARTIFACTS ||
  fs.mkdtempSync(path.join(os.tmpdir(), 'skinlesion-e2e-'));
const CHROMIUM = process.env.SKINLESION_CHROMIUM || '/usr/bin/chromium';
const FIXTURES = path.join(REPO, 'tests', 'fixtures', 'ham10000');
const FIXTURE = path.join(FIXTURES, 'images', 'ISIC_0024698.jpg');
const TOKEN = 'e2e-website-token';
const SETPRIV = '/usr/bin/setpriv';  // util-linux
const START_TIMEOUT_MS = 90_000;
const RESULT_TIMEOUT_MS = 60_000;

// The trainer's stand-in for `skinlesion train --data=D --out=RUN --config=RUN/job_config.json
// ...`, chosen by the job config's seed: without one it waits to be cancelled; with
// PUBLISH_SEED it "trains" the bundled model (its files into RUN/model, its metrics.json
// into RUN/report) and exits 0, so the trainer publishes it; with OTHER_IMAGES_SEED the
// same, but its metrics say they were measured on the test partition of another split
// (the registry's promotion gate must then refuse to compare them with production's).
const PUBLISH_SEED = 1001;
const OTHER_IMAGES_SEED = 1002;
const STAND_IN_CLI = `#!/usr/bin/env node
const fs = require('node:fs');
const path = require('node:path');
const arg = (name) => (process.argv.find((a) => a.startsWith('--' + name + '=')) || '').slice(name.length + 3);
const seed = JSON.parse(fs.readFileSync(arg('config'), 'utf8')).seed;
if (seed !== ${PUBLISH_SEED} && seed !== ${OTHER_IMAGES_SEED}) {
  setTimeout(() => {}, 120000);
} else {
  const bundled = ${JSON.stringify(path.join(REPO, 'models', 'bundled'))};
  const model = path.join(arg('out'), 'model');
  const report = path.join(arg('out'), 'report');
  fs.mkdirSync(model, { recursive: true });
  fs.mkdirSync(report, { recursive: true });
  for (const name of fs.readdirSync(bundled)) {
    const to = name === 'metrics.json' || name.endsWith('.png') ? report : model;
    fs.copyFileSync(path.join(bundled, name), path.join(to, name));
  }
  if (seed === ${OTHER_IMAGES_SEED}) {
    const other = { partition: 'test', split_digest: 'e2e'.padEnd(64, '0') };
    for (const file of [path.join(model, 'manifest.json'), path.join(report, 'metrics.json')]) {
      const doc = JSON.parse(fs.readFileSync(file, 'utf8'));
      const metrics = file.endsWith('manifest.json') ? doc.metrics : doc;
      metrics.context = { ...metrics.context, ...other };
      fs.writeFileSync(file, JSON.stringify(doc, null, 2));
    }
  }
}
`;

const children = [];
const screenshots = [];
let chromium = null;
let browser = null;
let gatewayUrl = '';
let workDir = '';
let serviceArgs = null;  // What the own-classes test needs to start a second gateway.

function requireEnv(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: point it at the built binary (ctest sets it).`);
  if (!fs.existsSync(value)) throw new Error(`${name}=${value} does not exist: build it first.`);
  return value;
}

function killAll(signal) {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) {
      try {
        child.kill(signal);
      } catch {
        // already gone
      }
    }
  }
}

// The children never outlive this process, even when it fails or is interrupted.
process.on('exit', () => killAll('SIGKILL'));
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(signal, () => {
    killAll('SIGKILL');
    process.exit(128 + os.constants.signals[signal]);
  });
}

// Starts `bin args`, logs its output to ARTIFACTS/<name>.log, and resolves with the
// port from the first output line matching one of `patterns` (group 1).
function startService(name, bin, args, patterns) {
  return new Promise((resolve, reject) => {
    const logPath = path.join(ARTIFACTS, `${name}.log`);
    const log = fs.createWriteStream(logPath);
    // setpriv --pdeathsig: the service is killed by the kernel if this process dies
    // without running its handlers (SIGKILL from a test runner's timeout).
    const [command, argv] = fs.existsSync(SETPRIV)
      ? [SETPRIV, ['--pdeathsig', 'KILL', '--', bin, ...args]] : [bin, args];
    const child = spawn(command, argv, {
      cwd: workDir,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, OMP_WAIT_POLICY: process.env.OMP_WAIT_POLICY || 'PASSIVE' },
    });
    children.push(child);
    let output = '';
    let done = false;
    const timer = setTimeout(() => finish(new Error(
      `${name} did not report its port within ${START_TIMEOUT_MS / 1000} s; log ${logPath}:\n${output.slice(-2000)}`)),
    START_TIMEOUT_MS);
    function finish(error, port) {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (error) reject(error);
      else resolve(port);
    }
    const onData = (chunk) => {
      const text = chunk.toString();
      log.write(text);
      output += text;
      for (const pattern of patterns) {
        const match = pattern.exec(output);
        if (match) finish(null, Number(match[1]));
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('error', (err) => finish(new Error(`${name} (${bin}) could not start: ${err.message}`)));
    child.on('exit', (code, signal) => finish(new Error(
      `${name} exited (code ${code}, signal ${signal}) before it was ready; log ${logPath}:\n${output.slice(-2000)}`)));
  });
}

async function waitForReady(url) {
  const deadline = Date.now() + START_TIMEOUT_MS;
  let last = '';
  while (Date.now() < deadline) {
    try {
      const response = await fetch(url);
      if (response.ok) return;
      last = `HTTP ${response.status}: ${await response.text()}`;
    } catch (err) {
      last = err.message;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`${url} never became ready (last answer: ${last})`);
}

// A gateway in front of the inference service on `inferencePort` (and the shared
// registry and trainer): its ready base URL.
async function startGateway(name, inferencePort) {
  const { gatewayBin, registryPort, trainerPort, tokenFile, listening } = serviceArgs;
  const port = await startService(name, gatewayBin, [
    '--port', '0',
    '--inference_target', `127.0.0.1:${inferencePort}`,
    '--registry_target', `127.0.0.1:${registryPort}`,
    '--trainer_target', `127.0.0.1:${trainerPort}`,
    '--token_file', tokenFile,
    '--web_root', path.join(REPO, 'web'),
  ], [listening]);
  const url = `http://127.0.0.1:${port}`;
  await waitForReady(`${url}/readyz`);
  return url;
}

async function getJson(urlPath) {
  const response = await fetch(`${gatewayUrl}${urlPath}`);
  assert.equal(response.status, 200, `GET ${urlPath} -> ${response.status}`);
  return response.json();
}

async function screenshot(page, t, name) {
  const file = path.join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  screenshots.push(file);
  t.diagnostic(`screenshot: ${file}`);
}

// A page that records script errors and CSP violations (the gateway's CSP forbids
// inline scripts and styles; the site must work under it).
async function newPage(options = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, ...options });
  const page = await context.newPage();
  page.problems = [];
  page.on('pageerror', (err) => page.problems.push(`page error: ${err.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error') page.problems.push(`console error: ${message.text()}`);
  });
  return page;
}

function assertNoProblems(page, allowed = []) {
  const problems = page.problems.filter((p) => !allowed.some((re) => re.test(p)));
  assert.deepEqual(problems, [], `the page reported problems:\n${problems.join('\n')}`);
}

// Waits for the predict page to finish (data-state done or error) after an upload.
async function waitForOutcome(page) {
  await page.waitForSelector('#main[data-state="done"], #main[data-state="error"]',
    { timeout: RESULT_TIMEOUT_MS });
  return page.getAttribute('#main', 'data-state');
}

// Picks the fixture photo on the predict page: the API's answer, once the page shows it.
async function uploadFixture(page) {
  const responsePromise = page.waitForResponse(
    (r) => r.url().includes('/api/v1/predictions') && r.request().method() === 'POST');
  await page.locator('#file-input').setInputFiles(FIXTURE);
  const response = await responsePromise;
  assert.equal(response.status(), 200, `prediction answered ${response.status()}`);
  const prediction = await response.json();
  assert.equal(await waitForOutcome(page), 'done', await page.locator('#error').innerText());
  return prediction;
}

// Reads the bar chart: [{cls, percent, text}] from the visible bars.
async function readBars(page) {
  return page.$$eval('#bars > li', (items) => items.map((li) => ({
    cls: li.dataset.class,
    testid: li.dataset.testid,
    text: li.querySelector('.bar-value').textContent.trim(),
    label: li.querySelector('.bar-label').textContent.trim(),
    width: li.querySelector('.bar-fill').getBoundingClientRect().width,
    visible: li.getBoundingClientRect().height > 0,
  })));
}

const CLASSES = ['akiec', 'bcc', 'bkl', 'df', 'mel', 'nv', 'vasc'];

function assertBars(bars, prediction, classes = CLASSES) {
  assert.equal(bars.length, classes.length, `${classes.length} bars`);
  assert.deepEqual(bars.map((b) => b.cls), classes, 'one bar per class, in index order');
  for (const bar of bars) {
    assert.ok(bar.visible, `bar ${bar.cls} is visible`);
    assert.equal(bar.testid, `bar-${bar.cls}`);
    assert.match(bar.text, /^\d{1,3}\.\d%$/, `bar ${bar.cls} shows a percentage: ${bar.text}`);
  }
  const sum = bars.reduce((s, b) => s + Number.parseFloat(b.text), 0);
  assert.ok(Math.abs(sum - 100) < 1, `the percentages sum to ~100 (got ${sum.toFixed(2)})`);
  if (prediction) {
    for (const p of prediction.probabilities) {
      const bar = bars.find((b) => b.cls === p.class);
      assert.equal(bar.text, `${(100 * p.probability).toFixed(1)}%`, `bar ${p.class} matches the API`);
      // What a screen reader reads: code, label and the malignant flag in words.
      const name = p.label && p.label !== p.class ? ` ${p.label}` : '';
      assert.equal(bar.label, `${p.class}${name}${p.malignant ? ' (malignant type)' : ''}`);
    }
  }
}

before(async () => {
  // playwright-core comes from tests/js/node_modules (npm ci); a clear failure otherwise.
  try {
    ({ chromium } = await import('playwright-core'));
  } catch (err) {
    throw new Error(`playwright-core is not installed (${err.code || err.message}): ` +
      `run \`npm ci\` in ${path.join(REPO, 'tests', 'js')} (scripts/test.sh does it).`);
  }
  const inferenceBin = requireEnv('SKINLESION_INFERENCE_BIN');
  const gatewayBin = requireEnv('SKINLESION_GATEWAY_BIN');
  const registryBin = requireEnv('SKINLESION_REGISTRY_BIN');
  const trainerBin = requireEnv('SKINLESION_TRAINER_BIN');
  if (!fs.existsSync(CHROMIUM)) throw new Error(`no browser at ${CHROMIUM} (apt install chromium)`);
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'skinlesion-e2e-work-'));
  console.log(`# artifacts (screenshots, service logs): ${ARTIFACTS}`);

  const listening = /listening on [^\s]+:(\d+)/;
  const bundled = path.join(REPO, 'models', 'bundled');
  const tokenFile = path.join(workDir, 'token');
  fs.writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
  // The trainer's jobs run this instead of `skinlesion train` (STAND_IN_CLI).
  const fakeCli = path.join(workDir, 'fake-cli.cjs');
  fs.writeFileSync(fakeCli, STAND_IN_CLI, { mode: 0o755 });
  const [registryPort, inferencePort, trainerPort] = await Promise.all([
    startService('registry', registryBin, [
      '--address', '127.0.0.1', '--port', '0', '--root', path.join(workDir, 'registry'),
      '--seed_model_dir', bundled, '--seed_model', 'ham10000', '--seed_alias', 'production',
    ], [listening]),
    // Inference logs "gRPC on HOST:0 (port N)" (and may print "listening on").
    startService('inference', inferenceBin, [
      '--model_dir', bundled, '--host', '127.0.0.1', '--port', '0', '--metrics_port', '0',
    ], [listening, /gRPC on \S+ \(port (\d+)\)/]),
    startService('trainer', trainerBin, [
      '--state_dir', path.join(workDir, 'trainer'), '--registry_root', path.join(workDir, 'trainer-registry'),
      '--cli', fakeCli, '--address', '127.0.0.1', '--port', '0', '--device', 'cpu',
      '--kill_grace_s', '2', '--token_file', tokenFile,
    ], [listening]),
  ]);
  serviceArgs = { inferenceBin, gatewayBin, registryPort, trainerPort, tokenFile, listening };
  gatewayUrl = await startGateway('gateway', inferencePort);

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: typeof process.getuid === 'function' && process.getuid() === 0 ? ['--no-sandbox'] : [],
  });
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  killAll('SIGTERM');
  await Promise.all(children.map((child) => new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    child.on('exit', () => {
      clearTimeout(timer);
      resolve();
    });
  })));
  if (workDir) fs.rmSync(workDir, { recursive: true, force: true });
  if (screenshots.length) console.log(`# screenshots:\n${screenshots.map((s) => `#   ${s}`).join('\n')}`);
});

test('predict: a photo gives 7 bars, model version, disclaimer; corrupt and oversized files readable errors; drag and drop',
  { timeout: 180_000 }, async (t) => {
    const page = await newPage();
    await page.goto(`${gatewayUrl}/`);
    const csp = await (await fetch(`${gatewayUrl}/`)).headers.get('content-security-policy');
    assert.match(csp || '', /script-src 'self'/, 'the gateway sends its CSP');

    // The non-diagnostic statement is visible before anything is uploaded.
    const disclaimer = page.locator('#disclaimer');
    assert.ok(await disclaimer.isVisible(), 'the disclaimer is visible');
    assert.match(await disclaimer.innerText(), /not a diagnostic device/i);

    const prediction = await uploadFixture(page);

    assertBars(await readBars(page), prediction);
    assert.equal(await page.locator('#preview-img').evaluate((img) => img.naturalWidth > 0), true,
      'the preview shows the photo');

    // The model version shown is the one that answered and the one inference serves.
    const models = await getJson('/api/v1/models');
    const model = models.models.find((m) => m.name === prediction.model.name);
    assert.ok(model, `GET /api/v1/models lists ${prediction.model.name}`);
    assert.ok(model.serving, 'the models list says which version inference serves');
    assert.equal(model.serving.version, prediction.model.version);
    const shown = page.locator('#model-version');
    assert.equal(await shown.getAttribute('data-version'), String(prediction.model.version));
    assert.equal(await shown.innerText(), `${prediction.model.name} version ${prediction.model.version}`);
    assert.ok(await shown.isVisible());
    // Which views of the photo the answer averages (the bundled model: flips).
    const views = page.locator('#model-views');
    assert.equal(await views.getAttribute('data-views'), prediction.model.test_time_views || 'none');
    if (prediction.model.test_time_views === 'flips') assert.match(await views.innerText(), /^3 views averaged/);

    // Top class, confidence, risk badge, referral advice as the JSON says.
    const topText = await page.locator('#top-class').innerText();
    assert.ok(topText.includes(`(${prediction.top_class})`), topText);
    assert.ok(topText.includes(`${(100 * prediction.confidence).toFixed(1)}%`), topText);
    assert.match(await page.locator('#risk-badge').innerText(),
      new RegExp(`Malignancy risk: (low|moderate|high) \\(${(100 * prediction.malignancy_risk).toFixed(1)}%\\)`));
    assert.equal(await page.locator('#refer').isVisible(), prediction.refer);
    if (prediction.refer) assert.match(await page.locator('#refer').innerText(), /see a dermatologist/i);
    assert.ok(await disclaimer.isVisible(), 'the disclaimer stays visible with the result');
    await screenshot(page, t, 'predict-desktop');

    // A truncated JPEG (the header of a real one) and a text file named .jpg.
    const truncated = path.join(ARTIFACTS, 'truncated.jpg');
    fs.writeFileSync(truncated, fs.readFileSync(FIXTURE).subarray(0, 300));
    const textFile = path.join(ARTIFACTS, 'not-an-image.jpg');
    fs.writeFileSync(textFile, 'this is a text file, not a photo\n');
    for (const [file, shot] of [[truncated, 'predict-corrupt-jpeg'], [textFile, 'predict-text-file']]) {
      const errorResponse = page.waitForResponse(
        (r) => r.url().includes('/api/v1/predictions') && r.request().method() === 'POST');
      await page.locator('#file-input').setInputFiles(file);
      assert.equal((await errorResponse).status(), 400, `${path.basename(file)} is refused with 400`);
      assert.equal(await waitForOutcome(page), 'error');
      const error = page.locator('#error');
      assert.ok(await error.isVisible(), 'the error is visible');
      assert.equal(await error.getAttribute('aria-live'), 'assertive');
      assert.match(await error.innerText(), /not a readable image/i);
      assert.equal(await page.locator('#result').isVisible(), false, 'no stale result beside the error');
      await screenshot(page, t, shot);
    }
    // Over the upload limit (10 MiB by default): 413 and the limit in words.
    const bigResponse = page.waitForResponse(
      (r) => r.url().includes('/api/v1/predictions') && r.request().method() === 'POST');
    const big = Buffer.alloc(11 * 1024 * 1024, 0);
    fs.readFileSync(FIXTURE).copy(big);
    await page.locator('#file-input').setInputFiles({ name: 'huge.jpg', mimeType: 'image/jpeg', buffer: big });
    assert.equal((await bigResponse).status(), 413);
    assert.equal(await waitForOutcome(page), 'error');
    assert.match(await page.locator('#error').innerText(), /Image too large \(max 10 MB\)/);

    // Drag and drop of a real photo onto the drop zone.
    const dataTransfer = await page.evaluateHandle((jpegBase64) => {
      const bytes = Uint8Array.from(atob(jpegBase64), (c) => c.charCodeAt(0));
      const transfer = new DataTransfer();
      transfer.items.add(new File([bytes], 'dropped.jpg', { type: 'image/jpeg' }));
      return transfer;
    }, fs.readFileSync(FIXTURE).toString('base64'));
    await page.dispatchEvent('#dropzone', 'dragenter', { dataTransfer });
    assert.match(await page.getAttribute('#dropzone', 'class'), /dragover/);
    await page.dispatchEvent('#dropzone', 'drop', { dataTransfer });
    assert.equal(await waitForOutcome(page), 'done', await page.locator('#error').innerText());
    assertBars(await readBars(page), prediction);
    assert.equal(await page.locator('#error').innerText(), '', 'the old error is cleared');
    assert.match(await page.locator('#preview-caption').innerText(), /dropped\.jpg/);

    // The broken preview image of the corrupt files may log a decode error; nothing else may.
    assertNoProblems(page, [/Failed to load resource: the server responded with a status of 4(00|13)/]);
    await page.context().close();
  });

test('explanation: the heat map is drawn over the region it covers', { timeout: 180_000 }, async (t) => {
  const page = await newPage();
  await page.goto(`${gatewayUrl}/`);
  await page.locator('#explain-toggle').check();
  // A landscape (3:2) version of the fixture, so that "center-square" and
  // "full-image" cover different parts of the preview.
  const wide = await page.evaluate(async (jpegBase64) => {
    const img = new Image();
    img.src = `data:image/jpeg;base64,${jpegBase64}`;
    await img.decode();
    const canvas = document.createElement('canvas');
    canvas.height = img.naturalHeight;
    canvas.width = Math.round(img.naturalHeight * 1.5);
    const ctx = canvas.getContext('2d');
    ctx.fillStyle = '#b08870';
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.drawImage(img, (canvas.width - img.naturalWidth) / 2, 0);
    return canvas.toDataURL('image/jpeg', 0.92).split(',')[1];
  }, fs.readFileSync(FIXTURE).toString('base64'));
  const responsePromise = page.waitForResponse(
    (r) => r.url().includes('/api/v1/predictions?explain=true') && r.request().method() === 'POST');
  await page.locator('#file-input').setInputFiles(
    { name: 'wide.jpg', mimeType: 'image/jpeg', buffer: Buffer.from(wide, 'base64') });
  const response = await responsePromise;
  const body = await response.json();
  assert.equal(response.status(), 200, `explain=true answered ${response.status()}: ${JSON.stringify(body)}`);
  assert.equal(await waitForOutcome(page), 'done');
  const explanation = body.explanation;
  assert.ok(explanation, 'the response has an explanation');
  assert.equal(explanation.heat.length, explanation.width * explanation.height);

  const canvas = page.locator('#heat-canvas');
  assert.ok(await canvas.isVisible(), 'the overlay canvas is shown');
  // The canvas matches the displayed image and is painted inside the covered area only.
  const paint = await page.evaluate(() => {
    const img = document.getElementById('preview-img');
    const c = document.getElementById('heat-canvas');
    const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let painted = 0;
    for (let i = 3; i < data.length; i += 4) if (data[i] > 0) painted += 1;
    return {
      img: [img.clientWidth, img.clientHeight],
      css: [c.getBoundingClientRect().width, c.getBoundingClientRect().height],
      painted, total: c.width * c.height,
    };
  });
  assert.ok(Math.abs(paint.css[0] - paint.img[0]) <= 1 && Math.abs(paint.css[1] - paint.img[1]) <= 1,
    `canvas ${paint.css} over image ${paint.img}`);
  assert.ok(paint.img[0] > paint.img[1] * 1.4, `the preview is landscape (${paint.img})`);
  const side = Math.min(...paint.img);
  const expected = explanation.covers === 'center-square' ? (side * side) / (paint.img[0] * paint.img[1]) : 1;
  assert.ok(Math.abs(paint.painted / paint.total - expected) < 0.05,
    `painted fraction ${(paint.painted / paint.total).toFixed(3)} vs ${expected.toFixed(3)} (${explanation.covers})`);

  // The opacity slider drives the overlay; the legend is there.
  await page.locator('#opacity').fill('30');
  assert.equal(await canvas.evaluate((c) => c.style.opacity), '0.3');
  assert.ok(await page.locator('#legend').isVisible());
  assert.match(await page.locator('#explain-note').innerText(), /grid/);
  await screenshot(page, t, 'predict-explanation');
  assertNoProblems(page);
  await page.context().close();
});

// The committed fixtures as a clinic's image folders (benign/, melanoma/, other/).
function classFolders(root) {
  const groups = { mel: 'melanoma', akiec: 'other', bcc: 'other' };
  const lines = fs.readFileSync(path.join(FIXTURES, 'metadata_subset.csv'), 'utf8').trim().split('\n');
  const header = lines[0].split(',');
  for (const line of lines.slice(1)) {
    const row = Object.fromEntries(line.split(',').map((v, i) => [header[i], v]));
    const folder = path.join(root, groups[row.dx] || 'benign');
    fs.mkdirSync(folder, { recursive: true });
    fs.copyFileSync(path.join(FIXTURES, 'images', `${row.image_id}.jpg`), path.join(folder, `${row.image_id}.jpg`));
  }
  return root;
}

test('a model with its own classes: the website shows its 3 bars and its malignant type', { timeout: 240_000 }, async (t) => {
  // A 3-class model trained here on image folders (seconds: 32 px, 2 epochs).
  const cli = requireEnv('SKINLESION_CLI_BIN');
  const data = classFolders(path.join(workDir, 'clinic'));
  const run = path.join(workDir, 'clinic-run');
  const trained = spawnSync(cli, ['train', '--data', data, '--out', run, '--set',
    'architecture=resnet18,image_size=32,epochs=2,batch_size=4,frozen_epochs=1,num_workers=1,threads=1,' +
    'progress_interval_s=0,patience=0,malignant_classes=melanoma'], { encoding: 'utf8', timeout: 180_000 });
  assert.equal(trained.status, 0, `skinlesion train failed:\n${trained.stderr.slice(-3000)}`);
  const { inferenceBin, listening } = serviceArgs;
  const inferencePort = await startService('inference-clinic', inferenceBin, [
    '--model_dir', path.join(run, 'model'), '--model', 'clinic', '--host', '127.0.0.1', '--port', '0',
    '--metrics_port', '0',
  ], [listening, /gRPC on \S+ \(port (\d+)\)/]);
  const clinicUrl = await startGateway('gateway-clinic', inferencePort);

  const page = await newPage();
  await page.goto(`${clinicUrl}/`);
  await page.locator('#explain-toggle').check();  // Explained too, for its own top class.
  const prediction = await uploadFixture(page);
  assert.deepEqual(prediction.probabilities.map((p) => p.class), ['benign', 'melanoma', 'other']);
  assert.ok(prediction.explanation, 'the 3-class model explains its answer');
  assert.equal(prediction.explanation.heat.length, prediction.explanation.width * prediction.explanation.height);
  assertBars(await readBars(page), prediction, ['benign', 'melanoma', 'other']);
  // The risk is the model's own malignant type, named on the badge.
  assert.equal(await page.locator('#risk-badge').getAttribute('title'),
    'Sum of the probabilities of the malignant types (melanoma)');
  await screenshot(page, t, 'predict-own-classes');
  assertNoProblems(page);
  await page.context().close();
});

test('phone width (375 px): readable, no horizontal scrolling, 7 bars', { timeout: 180_000 }, async (t) => {
  const page = await newPage({ viewport: { width: 375, height: 812 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  await page.goto(`${gatewayUrl}/`);
  assert.ok(await page.locator('#disclaimer').isVisible());
  assert.ok(await page.locator('#camera-button').isVisible(), 'the camera button is offered');
  assert.equal(await page.locator('#camera-input').getAttribute('capture'), 'environment');
  await page.locator('#file-input').setInputFiles(FIXTURE);
  assert.equal(await waitForOutcome(page), 'done', await page.locator('#error').innerText());
  assertBars(await readBars(page), null);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page scrolls sideways by ${overflow} px at 375 px`);
  const barsWidth = await page.locator('#bars').evaluate((ol) => ol.getBoundingClientRect().right);
  assert.ok(barsWidth <= 375, `the bar chart fits (${barsWidth} px)`);
  await screenshot(page, t, 'predict-375px');
  assertNoProblems(page);
  await page.context().close();
});

test('keyboard only: Tab to the picker, Enter opens it, the result follows', { timeout: 180_000 }, async (t) => {
  const page = await newPage();
  await page.goto(`${gatewayUrl}/`);
  // Listen before any key is pressed: Playwright turns on file chooser interception
  // asynchronously, and a chooser opened before that would be missed.
  const chooserPromise = page.waitForEvent('filechooser', { timeout: 30_000 });
  const visited = [];
  for (let i = 0; i < 15; i++) {
    await page.keyboard.press('Tab');
    const id = await page.evaluate(() => document.activeElement && (document.activeElement.id ||
      document.activeElement.textContent.trim().slice(0, 20)));
    visited.push(id);
    if (id === 'dropzone') break;
  }
  assert.equal(visited.at(-1), 'dropzone', `Tab reaches the picker (visited ${visited.join(' > ')})`);
  const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  assert.notEqual(outline, 'none', 'the focused picker shows a focus ring');
  assert.equal(await page.locator('#dropzone').getAttribute('role'), 'button');
  await screenshot(page, t, 'predict-keyboard-focus');

  // Landmarks and accessible names, as a screen reader finds them.
  for (const [role, options] of [
    ['banner', {}], ['navigation', { name: 'Main' }], ['main', {}], ['contentinfo', {}],
    ['complementary', { name: 'Important notice' }],
    ['button', { name: /Choose a photo of the lesion/ }],
    ['button', { name: 'Take a photo (phone camera)' }],
    ['checkbox', { name: 'Show explanation' }],
    ['link', { name: 'Skip to main content' }],
  ]) {
    assert.equal(await page.getByRole(role, options).count(), 1, `one ${role} ${JSON.stringify(options)}`);
  }

  await page.keyboard.press('Enter');
  const chooser = await chooserPromise;
  assert.equal(await chooser.element().evaluate((input) => input.id), 'file-input');
  await chooser.setFiles(FIXTURE);
  assert.equal(await waitForOutcome(page), 'done', await page.locator('#error').innerText());
  assertBars(await readBars(page), null);
  // The result is announced through the polite status region.
  assert.match(await page.locator('#status').innerText(), /Result ready: [a-z]+ \(\d+\.\d%\)/);
  assert.equal(await page.locator('#status').getAttribute('aria-live'), 'polite');
  assertNoProblems(page);
  await page.context().close();
});

test('models page: the bundled model, its served version and a loading plot', { timeout: 180_000 }, async (t) => {
  const models = await getJson('/api/v1/models');
  const model = models.models.find((m) => m.name === 'ham10000');
  assert.ok(model, 'the registry seeded ham10000');
  const version = model.aliases.production;
  assert.ok(Number.isInteger(version) && version > 0, `production -> ${version}`);

  const page = await newPage();
  await page.goto(`${gatewayUrl}/models.html`);
  await page.waitForSelector('#main[data-state="done"], #main[data-state="error"]', { timeout: RESULT_TIMEOUT_MS });
  assert.equal(await page.getAttribute('#main', 'data-state'), 'done', await page.locator('#error').innerText());

  const section = page.locator('section.model[data-model="ham10000"]');
  assert.ok(await section.isVisible());
  assert.match(await section.innerText(), new RegExp(`production → v${version}`));
  assert.equal(await section.locator('p.serving').getAttribute('data-serving-version'), String(model.serving.version));
  const row = section.locator(`tr[data-version="${version}"]`);
  assert.ok(await row.isVisible(), `version ${version} is listed`);
  const accuracy = model.versions.find((v) => v.version === version).metrics.accuracy;
  assert.ok((await row.innerText()).includes(accuracy.toFixed(3)), 'the row shows the accuracy');

  // The card of the served version opens with its metrics and plots.
  const card = page.locator('#card');
  assert.ok(await card.isVisible());
  assert.equal(await card.getAttribute('data-version'), String(model.serving.version));
  assert.match(await card.innerText(), /Balanced accuracy/);
  // The card and the row say what the figures were measured on (the bundled model's
  // metrics.json context): validation or cross-validated figures are never called test ones.
  const served = await getJson(`/api/v1/models/ham10000/versions/${model.serving.version}`);
  const partition = served.metrics.context.partition;
  const expected = {
    val: [/Metrics on the validation images/, 'validation'],
    out_of_fold: [/Cross-validated metrics/, 'cross-validation'],
    test: [/Metrics on held-out test images/, 'test'],
  }[partition];
  assert.ok(expected, `the bundled model's metrics were measured on "${partition}"`);
  const cardText = await card.innerText();
  assert.match(cardText, expected[0]);
  if (partition !== 'test') assert.doesNotMatch(cardText, /held-out test|Test images|Test-set/);
  // The operating point the version serves with, from its manifest.
  const threshold = served.manifest.refer.malignancy_risk_threshold;
  assert.match(cardText, new RegExp(`Referral\\s+malignancy risk ≥ ${(100 * threshold).toFixed(1)}%`));
  assert.match(cardText, new RegExp(`Not-a-lesion check\\s+.*above ${served.manifest.ood.threshold.toFixed(1)}`));
  // "What to expect on new images": the manifest's leave-one-round-out check, when the
  // version was fitted on cross-validation answers; no such section otherwise.
  const check = served.manifest.metrics_leave_one_round_out;
  const expectedTable = card.locator('table.expected');
  if (check) {
    assert.match(cardText, /What to expect on new images/);
    assert.equal(await expectedTable.getAttribute('data-rounds'), String(check.rounds.length));
    const balanced = check.summary.balanced_accuracy;
    assert.equal(await expectedTable.locator('tbody tr').first().innerText(),
      `Balanced accuracy\t${balanced.mean.toFixed(3)} ± ${balanced.sd.toFixed(3)}\t${balanced.min.toFixed(3)}`);
  } else {
    assert.equal(await expectedTable.count(), 0);
    assert.doesNotMatch(cardText, /What to expect on new images/);
  }
  const servedRow = section.locator(`tr[data-version="${model.serving.version}"] td.measured-on`);
  assert.equal(await servedRow.innerText(), `${expected[1]} (${served.metrics.n})`);
  const plot = card.locator('img[data-file="confusion_matrix.png"]');
  await plot.scrollIntoViewIfNeeded();
  await page.waitForFunction(
    () => {
      const img = document.querySelector('#card img[data-file="confusion_matrix.png"]');
      return img && img.complete && img.naturalWidth > 0;
    }, null, { timeout: 30_000 });
  assert.match(await plot.getAttribute('alt'), /Confusion matrix of ham10000 version/);
  assert.ok(await card.locator('img[data-file="roc_curves.png"]').count() === 1, 'the ROC plot is listed');
  await screenshot(page, t, 'models');

  // A card link moves focus to the card (hash navigation).
  await page.locator(`a[href="#ham10000/${version}"]`).click();
  await page.waitForFunction(() => document.activeElement && document.activeElement.id === 'card');
  assertNoProblems(page);
  await page.context().close();
});

test('jobs page: invalid config problems, wrong token, submit, live state, cancel', { timeout: 180_000 }, async (t) => {
  const page = await newPage();
  await page.goto(`${gatewayUrl}/jobs.html`);
  await page.waitForSelector('#main[data-state="done"], #main[data-state="polling"], #main[data-state="error"]',
    { timeout: RESULT_TIMEOUT_MS });
  assert.notEqual(await page.getAttribute('#main', 'data-state'), 'error', await page.locator('#error').innerText());
  assert.ok(await page.locator('#jobs-empty').isVisible(), 'a fresh trainer has no jobs');

  const config = {
    model_name: 'e2e-website', architecture: 'resnet18',
    data_dir: path.join(FIXTURES, 'images'), metadata_file: path.join(FIXTURES, 'metadata_subset.csv'),
    image_size: 32, epochs: 1, batch_size: 4, frozen_epochs: 0,
  };
  const submit = async (body, token) => {
    await page.locator('#config').fill(body);
    await page.locator('#token').fill(token);
    const response = page.waitForResponse((r) => r.url().endsWith('/api/v1/jobs') && r.request().method() === 'POST');
    await page.locator('#submit-button').click();
    const r = await response;
    // The page has shown the outcome once the form leaves the submitting state.
    await page.waitForSelector('#submit-form:is([data-state="submitted"], [data-state="failed"])');
    return `${r.status()} ${r.status() >= 400 ? await r.text() : ''}`.trim();
  };

  // Every problem of an invalid config is listed.
  const invalid = { ...config, architecture: 'resnet9000', data_dir: '/nonexistent/images', batch_size: -1 };
  assert.match(await submit(JSON.stringify(invalid), TOKEN), /^400 /);
  const problems = await page.locator('#error li').allInnerTexts();
  assert.ok(problems.length >= 3, `problems listed: ${problems.join(' | ')}`);
  assert.match(problems.join('\n'), /unknown architecture 'resnet9000'/);
  assert.match(problems.join('\n'), /batch_size must be >= 1/);

  assert.match(await submit(JSON.stringify(config), 'wrong-token'), /^401 /);
  assert.match(await page.locator('#error').innerText(), /Not authorised/);

  assert.equal(await submit(JSON.stringify(config), TOKEN), '201');
  const submitted = await page.locator('#submit-result').innerText();
  const id = /Job (\S+) submitted/.exec(submitted)?.[1];
  assert.ok(id, `submitted: ${submitted}`);
  assert.equal(await page.evaluate(() => sessionStorage.getItem('skinlesion.token')), TOKEN);
  assert.equal(await page.evaluate(() => localStorage.length), 0, 'nothing in localStorage');

  // The new job shows up and is polled into the running state (the stand-in CLI sleeps).
  const row = page.locator(`tr[data-job-id="${id}"]`);
  await row.waitFor({ timeout: 30_000 });
  await page.waitForFunction((jobId) => {
    const state = document.querySelector(`tr[data-job-id="${jobId}"] .state`);
    return state && state.textContent === 'running';
  }, id, { timeout: 60_000 });
  assert.equal(await page.getAttribute('#main', 'data-state'), 'polling');
  // The stand-in CLI reports no progress: an indeterminate bar, no made-up numbers.
  assert.equal(await row.locator('progress').count(), 1);
  assert.equal(await row.locator('progress').getAttribute('value'), null);
  assert.match(await row.locator('.progress-text').innerText(), /waiting for the first progress report/);
  assert.match(await page.locator('#status').innerText(), /1 job, 1 active/);
  await screenshot(page, t, 'jobs-running');

  // The token survives a reload of the tab (sessionStorage) and cancels the job.
  await page.reload();
  await row.waitFor({ timeout: 30_000 });
  assert.equal(await page.locator('#token').inputValue(), TOKEN);
  page.once('dialog', (dialog) => dialog.accept());
  await row.getByRole('button', { name: `Cancel job ${id}` }).click();
  await page.waitForFunction((jobId) => {
    const state = document.querySelector(`tr[data-job-id="${jobId}"] .state`);
    return state && state.textContent === 'cancelled';
  }, id, { timeout: 60_000 });
  await page.waitForSelector('#main[data-state="done"]', { timeout: 10_000 });  // polling stopped
  assert.equal(await row.getByRole('button', { name: `Cancel job ${id}` }).isVisible(), false);
  await screenshot(page, t, 'jobs-cancelled');
  assertNoProblems(page, [/Failed to load resource: the server responded with a status of 40[01]/]);
  await page.context().close();
});

test('jobs page: a finished job names its published version, and why production did not move',
  { timeout: 180_000 }, async (t) => {
    // Two jobs of one model through the real trainer and its registry: the first becomes
    // production; the second's metrics were measured on other images, so the promotion
    // gate keeps production where it is and the job's notes say why.
    const submitJob = async (seed) => {
      const r = await fetch(`${gatewayUrl}/api/v1/jobs`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${TOKEN}` },
        body: JSON.stringify({
          model_name: 'e2e-published', architecture: 'resnet18', data_dir: path.join(FIXTURES, 'images'),
          metadata_file: path.join(FIXTURES, 'metadata_subset.csv'), image_size: 32, epochs: 1,
          batch_size: 4, frozen_epochs: 0, seed, promote_to_production: true,
        }),
      });
      assert.equal(r.status, 201, await r.clone().text());
      return (await r.json()).job_id;
    };
    // Until the job has ended (a page with no active job stops polling: it is reloaded after).
    const ended = async (id) => {
      const deadline = Date.now() + 90_000;
      for (;;) {
        const job = await (await fetch(`${gatewayUrl}/api/v1/jobs/${id}`)).json();
        if (!['queued', 'running'].includes(job.state)) return job;
        assert.ok(Date.now() < deadline, `job ${id} still ${job.state}`);
        await new Promise((r) => setTimeout(r, 250));
      }
    };
    const firstId = await submitJob(PUBLISH_SEED);
    const firstJob = await ended(firstId);
    assert.equal(firstJob.state, 'succeeded', JSON.stringify(firstJob));
    const secondId = await submitJob(OTHER_IMAGES_SEED);
    const secondJob = await ended(secondId);
    assert.equal(secondJob.state, 'succeeded', JSON.stringify(secondJob));

    const page = await newPage();
    await page.goto(`${gatewayUrl}/jobs.html`);
    await page.waitForSelector('#main[data-state="done"]', { timeout: RESULT_TIMEOUT_MS });
    const first = page.locator(`tr[data-job-id="${firstId}"]`);
    const second = page.locator(`tr[data-job-id="${secondId}"]`);
    assert.equal(await first.locator('.state').innerText(), 'succeeded');
    assert.match(await first.innerText(), /published v1 \(production\)/);
    assert.equal(await second.locator('.state').innerText(), 'succeeded');
    // The stand-in reported no training step: no loss or throughput made up from zeros.
    assert.deepEqual(await second.locator('td.num').allInnerTexts(), ['–', '–', '–']);
    const words = await second.innerText();
    assert.match(words, /published v2 \(staging\)/);
    assert.match(words, /production not moved to version 2: .*different images do not compare/);
    await screenshot(page, t, 'jobs-published');

    // The detail view says the same.
    await second.getByRole('button', { name: `Details of job ${secondId}` }).click();
    await page.waitForSelector('#job-detail:not([hidden])');
    const detail = await page.locator('#job-detail').innerText();
    assert.match(detail, /Published version\s+v2 \(staging\)/);
    assert.match(detail, /Notes\s+production not moved to version 2/);
    assertNoProblems(page);
    await page.context().close();
  });
