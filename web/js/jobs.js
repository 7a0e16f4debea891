// The jobs page: the trainer's jobs with live progress (polled every 2 s while a
// job is queued or running), job details, cancel, and a submit form. The access
// token lives in sessionStorage only.

import {
  API, apiFetch, describeError, el, formatDate, formatDuration, formatMetric, publishedWords,
} from './api.js';

const $ = (id) => document.getElementById(id);
const main = $('main');
const statusBox = $('status');
const errorBox = $('error');
const table = $('jobs-table');
const tbody = $('jobs-body');
const emptyBox = $('jobs-empty');
const detail = $('job-detail');
const detailHeading = $('job-detail-heading');
const detailBody = $('job-detail-body');
const form = $('submit-form');
const configInput = $('config');
const tokenInput = $('token');
const submitResult = $('submit-result');

const POLL_MS = 2000;
const ERROR_RETRY_S = 10;
const TOKEN_KEY = 'skinlesion.token';
const ACTIVE = new Set(['queued', 'running']);
const EXAMPLE_CONFIG = {
  model_name: 'ham10000',
  architecture: 'resnet18',
  data_dir: '/data/ham10000',
  image_size: 112,
  epochs: 14,
  batch_size: 32,
  promote_to_production: false,
};

const rows = new Map();  // job_id -> {row, cells..., lastState}
let timer = null;
let lastSummary = '';

const stateName = (job) => String(job.state || 'unknown').toLowerCase();
const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : null);

// Training steps reported: loss, throughput and ETA come with them.
function hasSteps(job) {
  return (num(job.steps) ?? 0) > 0;
}

// Whether the training process has reported progress yet (before that the
// numbers are zeros, not measurements).
function hasProgress(job) {
  return Boolean(job.phase) || hasSteps(job);
}

// Fraction done from epoch/epochs and step/steps, as the trainer computes it: the
// reported epoch counts from 0 and step/steps is the part of it done.
export function jobFraction(job) {
  if (stateName(job) === 'succeeded') return 1;
  if (!hasProgress(job)) return null;
  const epoch = num(job.epoch) ?? 0;
  const epochs = num(job.epochs);
  const step = num(job.step) ?? 0;
  const steps = num(job.steps);
  let fraction = null;
  if (epochs && epochs > 0) {
    fraction = (epoch + (steps && steps > 0 ? step / steps : 0)) / epochs;
  } else if (steps && steps > 0) {
    fraction = step / steps;
  }
  return fraction === null ? null : Math.min(1, Math.max(0, fraction));
}

function progressWords(job) {
  if (!hasProgress(job)) {
    return ACTIVE.has(stateName(job)) ? 'waiting for the first progress report' : '';
  }
  const parts = [];
  if (job.phase) parts.push(job.phase);
  if (num(job.epochs)) parts.push(`epoch ${Math.min((num(job.epoch) ?? 0) + 1, job.epochs)}/${job.epochs}`);
  if (num(job.steps)) parts.push(`step ${job.step ?? 0}/${job.steps}`);
  return parts.join(' · ');
}

function token() {
  return tokenInput.value.trim();
}

function makeRow(job) {
  const entry = {
    row: el('tr', { dataset: { jobId: job.job_id } }),
    id: el('th', { scope: 'row' }),
    state: el('td', {}),
    progressCell: el('td', { class: 'job-progress' }),
    progress: el('progress', { max: 100, attrs: { 'aria-label': `Progress of job ${job.job_id}` } }),
    progressText: el('span', { class: 'progress-text' }),
    loss: el('td', { class: 'num' }),
    val: el('td', { class: 'num' }),
    throughput: el('td', { class: 'num' }),
    eta: el('td', {}),
    result: el('td', {}),
    actions: el('div', { class: 'actions' }),
    lastState: '',
  };
  entry.progressCell.append(entry.progress, entry.progressText);
  entry.details = el('button', {
    type: 'button', class: 'secondary', text: 'Details',
    attrs: { 'aria-label': `Details of job ${job.job_id}` },
    on: { click: () => showDetail(job.job_id) },
  });
  entry.cancel = el('button', {
    type: 'button', class: 'danger', text: 'Cancel',
    attrs: { 'aria-label': `Cancel job ${job.job_id}` },
    on: { click: () => cancelJob(job.job_id) },
  });
  entry.actions.append(entry.details, entry.cancel);
  entry.row.append(entry.id, entry.state, entry.progressCell, entry.loss, entry.val,
    entry.throughput, entry.eta, entry.result, el('td', {}, entry.actions));
  return entry;
}

function updateRow(entry, job) {
  const s = stateName(job);
  entry.id.replaceChildren(el('span', { class: 'mono', text: job.job_id }),
    job.name ? el('span', { class: 'hint', text: ` ${job.name}` }) : null,
    el('span', { class: 'hint', text: ` · created ${formatDate(job.created)}` }));
  entry.state.replaceChildren(el('span', { class: `state state-${s}`, text: s }));
  const fraction = jobFraction(job);
  if (fraction === null) {
    if (ACTIVE.has(s)) entry.progress.removeAttribute('value');
    else entry.progress.value = 0;
  } else {
    entry.progress.value = Math.round(fraction * 100);
  }
  entry.progressText.textContent =
    `${fraction === null ? '' : `${Math.round(fraction * 100)}%`}${progressWords(job) ? ` ${progressWords(job)}` : ''}`.trim();
  // A job that reported only a phase (e.g. publishing a model it did not train here)
  // has no loss, throughput or ETA to show.
  const measured = hasSteps(job);
  entry.loss.textContent = measured ? formatMetric(job.loss, 4) : '–';
  entry.val.textContent = formatMetric(job.val_balanced_accuracy);
  entry.throughput.textContent = measured && num(job.throughput) !== null ? job.throughput.toFixed(1) : '–';
  entry.eta.textContent = measured && ACTIVE.has(s) ? formatDuration(job.eta_s) : '–';
  const result = [];
  if (job.published_version) result.push(`published ${publishedWords(job)}`);
  if (Array.isArray(job.notes)) result.push(...job.notes);
  if (job.error) result.push(job.error);
  if (job.finished) result.push(`finished ${formatDate(job.finished)}`);
  entry.result.textContent = result.join(' · ') || '–';
  entry.cancel.hidden = !ACTIVE.has(s);
  const change = entry.lastState && entry.lastState !== s ? `Job ${job.job_id} is now ${s}.` : '';
  entry.lastState = s;
  return change;
}

function render(jobs) {
  const sorted = [...jobs].sort((a, b) => String(b.created || '').localeCompare(String(a.created || '')));
  const seen = new Set();
  const changes = [];
  sorted.forEach((job, index) => {
    seen.add(job.job_id);
    let entry = rows.get(job.job_id);
    if (!entry) {
      entry = makeRow(job);
      rows.set(job.job_id, entry);
    }
    const change = updateRow(entry, job);
    if (change) changes.push(change);
    // Move rows only when the order changed (moving a row would drop keyboard focus).
    if (tbody.children[index] !== entry.row) tbody.insertBefore(entry.row, tbody.children[index] || null);
  });
  for (const [id, entry] of rows) {
    if (!seen.has(id)) {
      entry.row.remove();
      rows.delete(id);
    }
  }
  table.hidden = sorted.length === 0;
  emptyBox.hidden = sorted.length !== 0;
  return changes;
}

function schedule(ms) {
  clearTimeout(timer);
  timer = setTimeout(poll, ms);
}

async function poll() {
  clearTimeout(timer);
  timer = null;
  try {
    const json = await apiFetch(`${API}/jobs`);
    const jobs = Array.isArray(json && json.jobs) ? json.jobs : [];
    errorBox.textContent = '';
    const changes = render(jobs);
    const active = jobs.filter((j) => ACTIVE.has(stateName(j))).length;
    const summary = `${jobs.length} job${jobs.length === 1 ? '' : 's'}, ${active} active.`;
    // Announced only when something changed, not on every poll.
    if (changes.length || summary !== lastSummary) {
      statusBox.textContent = [...changes, summary].join(' ');
      lastSummary = summary;
    }
    main.dataset.state = active > 0 ? 'polling' : 'done';
    if (active > 0) schedule(POLL_MS);
  } catch (err) {
    const wait = err.retryAfter ?? ERROR_RETRY_S;
    errorBox.textContent = `${describeError(err)} The list is retried in ${wait} s.`;
    main.dataset.state = 'error';
    schedule(wait * 1000);
  }
}

function describeEvent(event) {
  if (!event || typeof event !== 'object') return String(event);
  const when = event.time || event.timestamp || '';
  const kind = event.type || event.kind || '';
  const text = event.message || event.text || '';
  if (when || kind || text) {
    const rest = { ...event };
    for (const k of ['time', 'timestamp', 'type', 'kind', 'message', 'text']) delete rest[k];
    const extra = Object.keys(rest).length ? ` ${JSON.stringify(rest)}` : '';
    return `${when} ${kind} ${text}${extra}`.trim();
  }
  return JSON.stringify(event);
}

async function showDetail(id) {
  try {
    const job = await apiFetch(`${API}/jobs/${encodeURIComponent(id)}`);
    detailHeading.textContent = `Job ${job.job_id}`;
    const facts = [
      ['State', stateName(job)], ['Name', job.name || '–'], ['Created', formatDate(job.created)],
      ['Started', formatDate(job.started)], ['Finished', formatDate(job.finished)],
      ['Progress', progressWords(job) || '–'], ['Published version', publishedWords(job) || '–'],
      ['Notes', Array.isArray(job.notes) && job.notes.length ? job.notes.join('; ') : '–'],
      ['Error', job.error || '–'],
    ];
    const events = Array.isArray(job.events) ? job.events : [];
    detailBody.replaceChildren(
      el('dl', { class: 'meta' }, facts.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', { text: v })])),
      el('h4', { text: `Last ${events.length} events` }),
      el('pre', { class: 'events', tabindex: 0, text: events.map(describeEvent).join('\n') || 'No events.' }));
    detail.hidden = false;
    detail.focus();
  } catch (err) {
    errorBox.textContent = `Job ${id}: ${describeError(err)}`;
  }
}

async function cancelJob(id) {
  if (!token()) {
    errorBox.textContent = 'Cancelling a job needs the access token: enter it in the form below.';
    tokenInput.focus();
    return;
  }
  if (!window.confirm(`Cancel job ${id}?`)) return;
  try {
    await apiFetch(`${API}/jobs/${encodeURIComponent(id)}/cancel`, { method: 'POST', token: token() });
    statusBox.textContent = `Job ${id} cancelled.`;
  } catch (err) {
    errorBox.textContent = `Cancel ${id}: ${describeError(err)}`;
  }
  poll();
}

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  form.dataset.state = 'submitting';  // submitting | submitted | failed (read by the e2e test)
  submitResult.textContent = '';
  errorBox.textContent = '';
  let config;
  try {
    config = JSON.parse(configInput.value);
  } catch (err) {
    errorBox.textContent = `The job configuration is not valid JSON: ${err.message}.`;
    form.dataset.state = 'failed';
    configInput.focus();
    return;
  }
  if (!config || typeof config !== 'object' || Array.isArray(config)) {
    errorBox.textContent = 'The job configuration must be a JSON object ({"key": value, ...}).';
    form.dataset.state = 'failed';
    configInput.focus();
    return;
  }
  if (!token()) {
    errorBox.textContent = 'Submitting a job needs the access token.';
    form.dataset.state = 'failed';
    tokenInput.focus();
    return;
  }
  const button = $('submit-button');
  button.disabled = true;
  try {
    const json = await apiFetch(`${API}/jobs`, { method: 'POST', body: JSON.stringify(config), token: token() });
    submitResult.textContent = `Job ${json && json.job_id ? json.job_id : ''} submitted.`;
    submitResult.className = 'status success';
    form.dataset.state = 'submitted';
    poll();
  } catch (err) {
    const problems = err.problems || [];
    errorBox.replaceChildren(`The job was not submitted. ${describeError(err)}`,
      problems.length ? el('ul', { class: 'problems' }, problems.map((p) => el('li', { text: p }))) : '');
    form.dataset.state = 'failed';
  } finally {
    button.disabled = false;
  }
});

tokenInput.addEventListener('input', () => {
  if (token()) sessionStorage.setItem(TOKEN_KEY, token());
  else sessionStorage.removeItem(TOKEN_KEY);
});
$('forget-token').addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  tokenInput.value = '';
  submitResult.textContent = 'The token was removed from this tab.';
  submitResult.className = 'status';
});
$('refresh').addEventListener('click', () => poll());

tokenInput.value = sessionStorage.getItem(TOKEN_KEY) || '';
if (!configInput.value) configInput.value = JSON.stringify(EXAMPLE_CONFIG, null, 2);
poll();
