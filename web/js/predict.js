// The predict page: choose / drop / photograph an image, upload it with progress,
// show one probability per class of the model that answered (its own labels: the 7
// HAM10000 classes for the bundled model), risk, referral advice, model and timing, and the
// explanation overlay.

import {
  describeError, el, formatBytes, formatMs, percent, postPrediction, referralMessage, viewsMessage,
} from './api.js';
import { drawLegend, drawOverlay, validateExplanation } from './heatmap.js';

const $ = (id) => document.getElementById(id);

const main = $('main');
const fileInput = $('file-input');
const cameraInput = $('camera-input');
const cameraButton = $('camera-button');
const retryButton = $('retry-button');
const dropzone = $('dropzone');
const progressArea = $('progress-area');
const progressLabel = $('progress-label');
const progress = $('upload-progress');
const progressText = $('progress-text');
const previewEmpty = $('preview-empty');
const previewStage = $('preview-stage');
const previewImg = $('preview-img');
const previewCaption = $('preview-caption');
const heatCanvas = $('heat-canvas');
const explainToggle = $('explain-toggle');
const explainPanel = $('explain-panel');
const explainNote = $('explain-note');
const opacity = $('opacity');
const opacityValue = $('opacity-value');
const statusBox = $('status');
const errorBox = $('error');
const resultEmpty = $('result-empty');
const result = $('result');

// Risk levels shown on the badge, from malignancy_risk = the summed probability of the
// model's malignant classes (P(akiec) + P(bcc) + P(mel) for HAM10000).
const RISK_LEVELS = [
  { below: 0.15, name: 'low', cls: 'risk-low' },
  { below: 0.5, name: 'moderate', cls: 'risk-moderate' },
  { below: Infinity, name: 'high', cls: 'risk-high' },
];

const state = {
  file: null,
  previewUrl: '',
  result: null,
  sequence: 0,  // answers to superseded uploads are dropped
  busy: false,
};

function setPageState(value) {
  main.dataset.state = value;  // idle | busy | done | error (used by the e2e test)
}

function setStatus(text) {
  statusBox.textContent = text;
}

function showError(text) {
  errorBox.textContent = text;
}

function clearError() {
  errorBox.textContent = '';
}

function setBusy(busy) {
  state.busy = busy;
  dropzone.setAttribute('aria-disabled', busy ? 'true' : 'false');
  main.setAttribute('aria-busy', busy ? 'true' : 'false');
  retryButton.disabled = busy;
}

function setProgress(fraction, phase) {
  progressArea.hidden = false;
  if (phase === 'analyse') {
    progressLabel.textContent = 'Analysing';
    progress.removeAttribute('value');  // indeterminate while the model runs
    progressText.textContent = 'Upload complete; the model is analysing the photo…';
    return;
  }
  progressLabel.textContent = 'Uploading';
  if (fraction === null) {
    progress.removeAttribute('value');
    progressText.textContent = 'Uploading…';
  } else {
    progress.value = Math.round(fraction * 100);
    progressText.textContent = `Uploading: ${Math.round(fraction * 100)}%`;
  }
}

function hideProgress() {
  progressArea.hidden = true;
}

// Preview

function showPreview(file) {
  if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
  state.previewUrl = URL.createObjectURL(file);
  hideOverlay();
  previewEmpty.hidden = true;
  previewStage.hidden = false;
  previewImg.alt = `Preview of the chosen photo, ${file.name || 'unnamed file'}`;
  previewImg.src = state.previewUrl;
  previewCaption.textContent = `${file.name || 'image'} · ${formatBytes(file.size)}`;
}

previewImg.addEventListener('error', () => {
  if (!state.file) return;
  previewStage.hidden = true;
  previewEmpty.hidden = false;
  previewEmpty.textContent = 'This browser cannot display the chosen file.';
});

previewImg.addEventListener('load', () => {
  previewEmpty.textContent = 'No photo chosen yet.';
  redrawOverlay();
});

// Explanation overlay

function hideOverlay() {
  heatCanvas.hidden = true;
  explainNote.textContent = '';
}

function applyOpacity() {
  heatCanvas.style.opacity = String(Number(opacity.value) / 100);
  opacityValue.textContent = `${opacity.value}%`;
}

function redrawOverlay() {
  const explanation = state.result && state.result.explanation;
  if (!explainToggle.checked || !explanation || previewStage.hidden || !previewImg.complete ||
      previewImg.naturalWidth === 0) {
    heatCanvas.hidden = true;
    return;
  }
  const problem = validateExplanation(explanation);
  if (problem) {
    heatCanvas.hidden = true;
    showError(`The explanation cannot be shown: ${problem}.`);
    return;
  }
  heatCanvas.hidden = false;
  applyOpacity();
  drawOverlay(heatCanvas, previewImg, explanation);
  const method = explanation.method === 'attention-rollout' ? 'Attention rollout'
    : explanation.method === 'grad-cam' ? 'Grad-CAM' : (explanation.method || 'Explanation');
  const area = explanation.covers === 'center-square'
    ? 'the centred square of the photo that the model sees'
    : 'the whole photo';
  explainNote.textContent = `${method}, ${explanation.width} × ${explanation.height} grid, ` +
    `smoothly scaled over ${area}` +
    `${explanation.class ? `, for the class "${explanation.class}"` : ''}.`;
}

new ResizeObserver(() => redrawOverlay()).observe(previewImg);

// Result

function riskLevel(risk) {
  return RISK_LEVELS.find((level) => risk < level.below);
}

function renderBars(probabilities, topClass) {
  const list = $('bars');
  list.replaceChildren();
  for (const p of probabilities) {
    const fill = el('span', { class: 'bar-fill' });
    fill.style.width = `${Math.max(0, Math.min(100, 100 * p.probability)).toFixed(2)}%`;
    const classes = [p.malignant ? 'malignant' : 'benign', p.class === topClass ? 'top' : '']
      .filter(Boolean).join(' ');
    list.append(el('li',
      {
        class: classes,
        dataset: { class: p.class, testid: `bar-${p.class}`, probability: String(p.probability) },
      },
      el('span', { class: 'bar-label' },
        el('span', { class: 'code', text: p.class }),
        // A model's own codes may have no separate name (the label is the code).
        p.label && p.label !== p.class ? ` ${p.label}` : '',
        p.malignant ? ' ' : null,
        p.malignant ? el('span', { class: 'tag', text: '(malignant type)' }) : null),
      el('span', { class: 'bar-track', attrs: { 'aria-hidden': 'true' } }, fill),
      el('span', { class: 'bar-value', text: percent(p.probability) })));
  }
}

function renderResult(json, roundTripMs) {
  const probabilities = Array.isArray(json.probabilities) ? json.probabilities : [];
  const top = probabilities.find((p) => p.class === json.top_class) ||
    (Array.isArray(json.top) && json.top[0]) || null;

  $('ood').hidden = !json.out_of_distribution;
  $('ood-text').textContent = json.out_of_distribution
    ? (json.ood_message || 'This does not look like a dermoscopic photo of a skin lesion.')
    : '';
  const referral = referralMessage(json);
  $('refer').hidden = !referral.refer;
  $('no-refer').hidden = referral.refer;
  $('refer-text').textContent = referral.refer ? referral.text : '';
  $('no-refer').textContent = referral.refer ? '' : referral.text;

  // The answer is the model's decision rule's class, which need not be the most
  // probable one (a rarer type is named sooner: docs/metrics.md, "Decision rule").
  const mostProbable = probabilities.reduce(
    (best, p) => (best === null || Number(p.probability) > Number(best.probability) ? p : best), null);
  const topLine = $('top-class');
  topLine.replaceChildren('Answer: ',
    el('strong', { text: top ? (top.label || top.class) : json.top_class }),
    top && top.label && top.label !== top.class ? ` (${top.class})` : '',
    ' with ',
    el('strong', { text: percent(json.confidence) }),
    ' confidence.',
    mostProbable && mostProbable.class !== json.top_class
      ? ` The most probable type is ${mostProbable.label || mostProbable.class} (${percent(mostProbable.probability)});` +
        ' this model names rarer types sooner, so treat the answer as a close call.'
      : '');

  const level = riskLevel(Number(json.malignancy_risk) || 0);
  const riskBadge = $('risk-badge');
  riskBadge.className = `badge ${level.cls}`;
  riskBadge.textContent = `Malignancy risk: ${level.name} (${percent(json.malignancy_risk)})`;
  const malignantCodes = probabilities.filter((p) => p.malignant).map((p) => p.class);
  riskBadge.title = malignantCodes.length > 0
    ? `Sum of the probabilities of the malignant types (${malignantCodes.join(', ')})`
    : 'This model has no malignant types: the risk is 0';
  const groupBadge = $('group-badge');
  const malignant = top ? Boolean(top.malignant) : false;
  groupBadge.className = `badge ${malignant ? 'group-malignant' : 'group-benign'}`;
  groupBadge.textContent = malignant ? 'Top class: a malignant type' : 'Top class: a benign type';

  renderBars(probabilities, json.top_class);

  const model = json.model || {};
  const version = $('model-version');
  version.textContent = `${model.name || 'unknown model'} version ${model.version ?? '?'}`;
  version.dataset.model = model.name || '';
  version.dataset.version = String(model.version ?? '');
  const sha = $('model-sha');
  sha.textContent = model.sha256 ? `sha256 ${model.sha256.slice(0, 12)}…` : '';
  sha.title = model.sha256 || '';
  const views = $('model-views');
  views.textContent = viewsMessage(model.test_time_views);
  views.dataset.views = model.test_time_views || 'none';

  const t = json.timing || {};
  const parts = [`model ${formatMs(t.inference_ms)}`];
  if (typeof t.compute_ms === 'number') parts.push(`compute ${formatMs(t.compute_ms)}`);
  if (typeof t.queue_ms === 'number') parts.push(`queue ${formatMs(t.queue_ms)}`);
  if (typeof t.batch_size === 'number') parts.push(`batch of ${t.batch_size}`);
  if (typeof t.gateway_ms === 'number') parts.push(`server total ${formatMs(t.gateway_ms)}`);
  parts.push(`round trip ${formatMs(roundTripMs)}`);
  $('timing').textContent = parts.join(' · ');
  $('prediction-id').textContent = json.prediction_id || '–';
  $('server-disclaimer').textContent = json.disclaimer || '';

  resultEmpty.hidden = true;
  result.hidden = false;
}

function reducedMotion() {
  return window.matchMedia('(prefers-reduced-motion: reduce)').matches;
}

function clearResult() {
  state.result = null;
  result.hidden = true;
  resultEmpty.hidden = false;
  hideOverlay();
}

// Upload

async function analyse() {
  const file = state.file;
  if (!file) return;
  const sequence = ++state.sequence;
  const explain = explainToggle.checked;
  clearError();
  clearResult();
  setBusy(true);
  setPageState('busy');
  setStatus(`Sending ${file.name || 'the photo'}…`);
  setProgress(0, 'upload');
  const started = performance.now();
  try {
    const json = await postPrediction(file, {
      explain,
      onProgress: (fraction, phase) => {
        if (sequence === state.sequence) setProgress(fraction, phase);
      },
    });
    if (sequence !== state.sequence) return;
    state.result = json;
    renderResult(json, performance.now() - started);
    redrawOverlay();
    if (explain && !json.explanation) {
      showError('The server returned no explanation for this model.');
    }
    // On a phone the result sits below the photo: bring it into view.
    if (window.matchMedia('(max-width: 48rem)').matches) {
      result.scrollIntoView({ block: 'start', behavior: reducedMotion() ? 'auto' : 'smooth' });
    }
    setStatus(`Result ready: ${json.top_class} (${percent(json.confidence)})` +
      `${json.refer ? '; see a dermatologist' : ''}.`);
    setPageState('done');
  } catch (err) {
    if (sequence !== state.sequence) return;
    clearResult();
    if (explain && err.status === 400 && /explain/i.test(err.message || '')) {
      showError(`The explanation is not available: ${err.message}. ` +
        'Untick "Show explanation" to get the prediction alone.');
    } else {
      showError(describeError(err));
    }
    setStatus('');
    setPageState('error');
  } finally {
    if (sequence === state.sequence) {
      hideProgress();
      setBusy(false);
      retryButton.hidden = false;
    }
  }
}

function chooseFile(file) {
  if (!file) return;
  state.file = file;
  showPreview(file);
  analyse();
}

// Inputs: drop zone (click / Enter / Space / drag and drop), camera, explanation.

dropzone.addEventListener('click', () => fileInput.click());
dropzone.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' || event.key === ' ') {
    event.preventDefault();
    fileInput.click();
  }
});
cameraButton.addEventListener('click', () => cameraInput.click());
retryButton.addEventListener('click', () => analyse());

for (const input of [fileInput, cameraInput]) {
  input.addEventListener('change', () => {
    const file = input.files && input.files[0];
    chooseFile(file);
    input.value = '';  // choosing the same file again fires change again
  });
}

let dragDepth = 0;
dropzone.addEventListener('dragenter', (event) => {
  event.preventDefault();
  dragDepth += 1;
  dropzone.classList.add('dragover');
});
dropzone.addEventListener('dragover', (event) => {
  event.preventDefault();
  if (event.dataTransfer) event.dataTransfer.dropEffect = 'copy';
});
dropzone.addEventListener('dragleave', () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (dragDepth === 0) dropzone.classList.remove('dragover');
});
dropzone.addEventListener('drop', (event) => {
  event.preventDefault();
  dragDepth = 0;
  dropzone.classList.remove('dragover');
  const files = event.dataTransfer ? event.dataTransfer.files : null;
  if (!files || files.length === 0) {
    showError('Nothing to analyse: drop an image file (JPEG, PNG, WebP or BMP).');
    return;
  }
  chooseFile(files[0]);
});
// A file dropped beside the zone must not make the browser navigate away.
window.addEventListener('dragover', (event) => event.preventDefault());
window.addEventListener('drop', (event) => event.preventDefault());

explainToggle.addEventListener('change', () => {
  explainPanel.hidden = !explainToggle.checked;
  if (!explainToggle.checked) {
    hideOverlay();
    return;
  }
  if (state.result && !state.result.explanation && state.file && !state.busy) {
    analyse();  // the current answer has no heat map: ask again with explain=true
  } else {
    redrawOverlay();
  }
});
opacity.addEventListener('input', applyOpacity);

drawLegend($('legend-canvas'));
applyOpacity();
setPageState('idle');
