// Shared helpers: calls to the gateway's REST API v1 (docs/website.md), readable
// error messages, formatting and safe DOM building (no innerHTML with data).

export const API = '/api/v1';

// An HTTP failure from the API: status, the JSON body's code and message, and
// Retry-After (seconds) when the server sent one. status 0 = network failure.
export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null, problems = []) {
    super(message || `HTTP ${status}`);
    this.name = 'ApiError';
    this.status = status;
    this.code = code || '';
    this.retryAfter = retryAfter;
    this.problems = problems;  // e.g. every problem of an invalid job config
  }
}

function parseRetryAfter(value) {
  if (value === null || value === undefined || value === '') return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds) && seconds >= 0) return Math.ceil(seconds);
  const date = Date.parse(value);
  if (!Number.isNaN(date)) return Math.max(0, Math.ceil((date - Date.now()) / 1000));
  return null;
}

// Builds an ApiError from a status, response text and Retry-After header value.
export function errorFromResponse(status, text, retryAfterHeader) {
  let code = '';
  let message = '';
  let problems = [];
  try {
    const body = JSON.parse(text);
    if (body && typeof body === 'object') {
      code = typeof body.code === 'string' ? body.code : '';
      message = typeof body.message === 'string' ? body.message : '';
      if (Array.isArray(body.problems)) problems = body.problems.map(String);
    }
  } catch {
    message = '';
  }
  return new ApiError(status, code, message, parseRetryAfter(retryAfterHeader), problems);
}

// fetch() for JSON endpoints; throws ApiError on any non-2xx answer or network error.
export async function apiFetch(path, { method = 'GET', body = undefined, token = '' } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(path, { method, headers, body, cache: 'no-store' });
  } catch (err) {
    throw new ApiError(0, 'network', String(err && err.message ? err.message : err));
  }
  const text = await response.text();
  if (!response.ok) {
    throw errorFromResponse(response.status, text, response.headers.get('Retry-After'));
  }
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError(response.status, 'bad_response', 'The server sent a response that is not JSON.');
  }
}

// The upload limit named in a 413 message ("... 10 MiB", "10485760 bytes"), in MB.
function limitFromMessage(message) {
  const match = /(\d+(?:\.\d+)?)\s*(MiB|MB|KiB|KB|bytes|B)\b/i.exec(message || '');
  if (!match) return null;
  const value = Number(match[1]);
  const unit = match[2].toLowerCase();
  if (unit === 'mib' || unit === 'mb') return value;
  if (unit === 'kib' || unit === 'kb') return value / 1024;
  return value / (1024 * 1024);
}

function trimNumber(value) {
  return Number.isInteger(value) ? String(value) : value.toFixed(1);
}

// A sentence a person can act on, for any ApiError (or other thrown value).
export function describeError(err, { defaultMaxUploadMb = 10 } = {}) {
  if (!(err instanceof ApiError)) {
    return `Something went wrong in the page: ${err && err.message ? err.message : err}.`;
  }
  const detail = err.message && err.message !== `HTTP ${err.status}` ? ` (${err.message})` : '';
  const wait = err.retryAfter !== null && err.retryAfter !== undefined ? err.retryAfter : null;
  switch (err.status) {
    case 0:
      return 'Network error: the server could not be reached. Check your connection and try again.';
    case 400:
      if (err.code === 'invalid_image') {
        return `This file is not a readable image${detail}: it may be corrupt, truncated or ` +
               'not a photo. Please choose a JPEG, PNG, WebP or BMP image.';
      }
      return `The request was not accepted: ${err.message || 'bad request'}.`;
    case 401:
      return 'Not authorised: a valid access token is required for this action.';
    case 403:
      return `Forbidden: ${err.message || 'this action is not allowed'}.`;
    case 404:
      return `Not found${detail}.`;
    case 409:
      return `Conflict: ${err.message || 'the request conflicts with the current state'}.`;
    case 412:
      return `Refused by a safety gate: ${err.message || 'a precondition failed'}.`;
    case 413: {
      const limit = limitFromMessage(err.message) ?? defaultMaxUploadMb;
      return `Image too large (max ${trimNumber(limit)} MB). Please choose a smaller photo.`;
    }
    case 415:
      return 'Unsupported file type: please upload a JPEG, PNG, WebP or BMP image.';
    case 429:
      return `Too many requests: please wait ${wait ?? 'a few'} s and try again.`;
    case 502:
    case 503:
      return `The model service is unavailable, try again in ${wait ?? 'a few'} s.`;
    case 504:
      return 'The model service took too long to answer (timeout). Please try again.';
    default:
      if (err.status >= 500) return `Server error ${err.status}${detail}. Please try again later.`;
      return `Request failed with status ${err.status}${detail}.`;
  }
}

// POST /api/v1/predictions as multipart/form-data (field "image") with upload
// progress. onProgress(fraction | null, phase) where phase is 'upload' or 'analyse'.
export function postPrediction(file, { explain = false, onProgress = () => {} } = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    const url = `${API}/predictions${explain ? '?explain=true' : ''}`;
    xhr.open('POST', url);
    xhr.setRequestHeader('Accept', 'application/json');
    xhr.responseType = 'text';
    xhr.upload.addEventListener('progress', (event) => {
      onProgress(event.lengthComputable && event.total > 0 ? event.loaded / event.total : null, 'upload');
    });
    xhr.upload.addEventListener('load', () => onProgress(1, 'analyse'));
    xhr.addEventListener('load', () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        try {
          resolve(JSON.parse(xhr.responseText));
        } catch {
          reject(new ApiError(xhr.status, 'bad_response', 'The server sent a response that is not JSON.'));
        }
        return;
      }
      reject(errorFromResponse(xhr.status, xhr.responseText, xhr.getResponseHeader('Retry-After')));
    });
    xhr.addEventListener('error', () => reject(new ApiError(0, 'network', 'network error')));
    xhr.addEventListener('timeout', () => reject(new ApiError(0, 'network', 'timeout')));
    xhr.addEventListener('abort', () => reject(new ApiError(0, 'network', 'aborted')));
    const form = new FormData();
    form.append('image', file, file.name || 'image');
    onProgress(0, 'upload');
    xhr.send(form);
  });
}

// el('p', {class: 'x', text: 'hi', dataset: {a: 1}, attrs: {'aria-label': 'y'}}, child...)
export function el(tag, options = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(options)) {
    if (value === undefined || value === null) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key === 'attrs') for (const [name, v] of Object.entries(value)) node.setAttribute(name, v);
    else if (key === 'on') for (const [name, fn] of Object.entries(value)) node.addEventListener(name, fn);
    else node[key] = value;
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// How the model looked at the photo (the API's model.test_time_views): the answer is
// the average over these views of the photo (skinlesion/common/tta.h).
export function viewsMessage(views) {
  switch (views) {
    case 'flips':
      return '3 views averaged: the photo and its left-right and up-down mirror images';
    case 'dihedral':
      return '8 views averaged: the photo, its rotations by 90, 180 and 270 degrees and their mirror images';
    case 'none':
    case undefined:
    case null:
    case '':
      return 'the photo as sent (one view)';
    default:
      return `views: ${views}`;
  }
}

// What a version's metrics were measured on, from the report's context.partition (the
// gateway's version summary carries it as metrics.partition): held-out test images,
// the validation images that chose the epoch and thresholds (optimistic), or the
// cross-validation rounds' held-out answers. Returns the table caption, the label of
// the image count, a short column text and a sentence for the reader.
export function metricsSource(partition) {
  if (partition === 'test' || /^fold[0-9]+$/.test(partition || '')) {
    return {
      caption: 'Metrics on held-out test images',
      count: 'Test images',
      short: 'test',
      note: 'Measured on images the model never saw while it was trained or its thresholds were fitted.',
    };
  }
  if (partition === 'val') {
    return {
      caption: 'Metrics on the validation images',
      count: 'Validation images',
      short: 'validation',
      note: 'Measured on the validation images, which also chose the training epoch, the calibration ' +
        'and the decision thresholds: these figures are optimistic. The model card\'s cross-validation ' +
        'says what to expect on new images.',
    };
  }
  if (partition === 'out_of_fold') {
    return {
      caption: 'Cross-validated metrics (every image held out once)',
      count: 'Images, each held out once',
      short: 'cross-validation',
      note: 'Each image was answered by a cross-validation round\'s model that never saw it; the ' +
        'served model is the same recipe trained on every image. Its decision rule and thresholds ' +
        'were fitted on these answers, so the figures that depend on them are slightly optimistic.',
    };
  }
  return {
    caption: 'Metrics',
    count: 'Images',
    short: partition ? String(partition) : 'not recorded',
    note: partition ? `Measured on the "${partition}" images.`
      : 'What these figures were measured on is not recorded with this version.',
  };
}

// What a job published (the API's published_version and published_alias): "v2 (staging)",
// "v3 (production)"; '' when it published nothing.
export function publishedWords(job) {
  if (!job || !job.published_version) return '';
  return `v${job.published_version}${job.published_alias ? ` (${job.published_alias})` : ''}`;
}

// What the page says about referral for a prediction (the API's refer, refer_rule,
// refer_reason and referral fields). A flagged answer is never described as "not
// uncertain": a risk referral says the risk crossed the model's threshold, an
// uncertainty referral says the answer is indeterminate.
export function referralMessage(json) {
  const reason = json && json.refer_reason ? ` (${json.refer_reason})` : '';
  if (!json || !json.refer) {
    const threshold = json && json.referral && Number(json.referral.malignancy_risk_threshold);
    const below = threshold > 0
      ? ` The malignancy risk is under this model's referral threshold of ${percent(threshold)}` +
        ' and the answer is not uncertain.'
      : ' The answer is not uncertain.';
    return {
      refer: false,
      text: `The model did not flag this photo for referral.${below} That is not a clean bill ` +
        'of health: any lesion that worries you belongs in front of a doctor.',
    };
  }
  if (json.refer_rule === 'malignancy_risk') {
    const target = json.referral && Number(json.referral.target_sensitivity);
    const confidence = json.referral && Number(json.referral.sensitivity_confidence);
    const shown = confidence > 0 ? ` (shown with ${percent(confidence, 0)} confidence on held-out images)` : '';
    const point = target > 0 ? `, set to catch ${percent(target, 0)} of malignant lesions${shown}` : '';
    return {
      refer: true,
      text: `The malignancy risk is at or above this model's referral threshold${point}${reason}. ` +
        'Have the lesion examined by a dermatologist, whatever the most likely class.',
    };
  }
  return {
    refer: true,
    text: `The model's answer for this photo is indeterminate${reason}. ` +
      'Have the lesion examined by a dermatologist; do not rely on this result.',
  };
}

export function percent(p, digits = 1) {
  return `${(100 * p).toFixed(digits)}%`;
}

export function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

export function formatMs(ms) {
  if (typeof ms !== 'number' || !Number.isFinite(ms)) return '–';
  return ms < 10 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`;
}

// Seconds -> "1:02:13" / "4:05"; '–' when unknown.
export function formatDuration(seconds) {
  if (typeof seconds !== 'number' || !Number.isFinite(seconds) || seconds < 0) return '–';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`;
}

export function formatDate(value, { time = true } = {}) {
  if (!value) return '–';
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  return time ? date.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' })
    : date.toLocaleDateString(undefined, { dateStyle: 'medium' });
}

export function formatMetric(value, digits = 3) {
  return typeof value === 'number' && Number.isFinite(value) ? value.toFixed(digits) : '–';
}

// What to expect on new images, from a manifest's metrics_leave_one_round_out (written by
// `skinlesion fit-thresholds --from_cv`): every cross-validation round scored at the
// operating point fitted on the other rounds' answers, as the served model's was fitted
// on all of them. Rows of [label, "mean ± sd", the worst round's figure], or null when
// the manifest has no such check (a model fitted on its own validation images).
const EXPECTED = [
  ['balanced_accuracy', 'Balanced accuracy', 'min'],
  ['macro_auc', 'Macro AUC', 'min'],
  ['melanoma_recall', 'Melanoma recall', 'min'],
  ['referral/malignant_sensitivity/value', 'Malignant lesions referred', 'min'],
  ['referral/refer_rate/value', 'Images referred', 'max'],
];

export function expectedFigures(check) {
  const summary = check && typeof check === 'object' ? check.summary : null;
  if (!summary || typeof summary !== 'object') return null;
  const present = EXPECTED.filter(([key]) => summary[key] && Number.isFinite(summary[key].mean));
  const rows = present.map(([key, label, worst]) => {
    const s = summary[key];
    const spread = Number.isFinite(s.sd) ? ` ± ${formatMetric(s.sd)}` : '';
    return [label, `${formatMetric(s.mean)}${spread}`, formatMetric(s[worst])];
  });
  if (rows.length === 0) return null;
  const rounds = Array.isArray(check.rounds) ? check.rounds.length : summary[present[0][0]].n;
  return { rounds: Number.isFinite(rounds) ? rounds : null, rows };
}

// A version's operating point, from its manifest, as [fact, text] rows for the model
// card: the test-time views, the referral rule (risk threshold with its sensitivity
// target, and the uncertainty limits) and the not-a-lesion check. Missing parts are
// said to be missing, not guessed.
const OOD_SCORES = {
  mahalanobis: 'Mahalanobis distance of the photo\'s features to the training lesions',
  energy: 'energy score of the logits',
};

export function operatingPointFacts(manifest) {
  const m = manifest && typeof manifest === 'object' ? manifest : {};
  const facts = [['Test-time views', viewsMessage(m.tta)]];
  const r = m.refer && typeof m.refer === 'object' ? m.refer : null;
  if (r && Number(r.malignancy_risk_threshold) > 0) {
    const confidence = Number(r.sensitivity_confidence);
    const target = Number(r.target_sensitivity) > 0
      ? ` (set to refer ${percent(r.target_sensitivity, 0)} of malignant lesions` +
        `${confidence > 0 ? `, shown with ${percent(confidence, 0)} confidence` : ''})` : '';
    const limits = Number(r.min_confidence) > 0
      ? `, or top probability under ${percent(r.min_confidence, 0)}` +
        `${Number(r.min_margin) > 0 ? `, or the top two classes under ${(100 * r.min_margin).toFixed(0)} ` +
          'points apart' : ''}` : '';
    facts.push(['Referral', `malignancy risk ≥ ${percent(r.malignancy_risk_threshold)}${target}${limits}`]);
  } else {
    facts.push(['Referral', r ? 'uncertain answers only (no malignancy-risk threshold fitted)'
      : 'not recorded with this version']);
  }
  const o = m.ood && typeof m.ood === 'object' ? m.ood : null;
  if (o && Number.isFinite(Number(o.threshold))) {
    const rate = Number(o.reject_rate) > 0 ? `, rejecting ${percent(o.reject_rate)} of held-out lesions` : '';
    const score = OOD_SCORES[o.method] || `${o.method || 'out-of-distribution'} score`;
    facts.push(['Not-a-lesion check', `${score} above ${Number(o.threshold).toFixed(1)}${rate}`]);
  } else {
    facts.push(['Not-a-lesion check', 'none: every photo gets a lesion answer']);
  }
  return facts;
}
