// The models page: every model with its aliases, the version inference serves,
// its versions with headline metrics, and a version's model card (#name/version).

import {
  API, apiFetch, describeError, el, expectedFigures, formatDate, formatMetric, metricsSource, operatingPointFacts,
} from './api.js';

const $ = (id) => document.getElementById(id);
const main = $('main');
const statusBox = $('status');
const errorBox = $('error');
const modelsBox = $('models');
const card = $('card');
const cardHeading = $('card-heading');
const cardBody = $('card-body');

const HEADLINE = [
  ['accuracy', 'Accuracy', 'Accuracy'],
  ['balanced_accuracy', 'Balanced accuracy', 'Bal. acc.'],
  ['macro_f1', 'Macro F1', 'Macro F1'],
  ['macro_auc', 'Macro AUC', 'Macro AUC'],
  ['melanoma_recall', 'Melanoma recall', 'Mel. recall'],
];

const CARD_METRICS = [
  ...HEADLINE,
  ['melanoma_sensitivity_at_specificity_90', 'Melanoma sensitivity at 90% specificity'],
  ['malignant_sensitivity', 'Malignant sensitivity'],
  ['malignant_specificity', 'Malignant specificity'],
  ['malignant_auc', 'Malignant vs benign AUC'],
  ['ece', 'Expected calibration error (lower is better)'],
  ['brier', 'Brier score (lower is better)'],
  ['nll', 'Negative log-likelihood (lower is better)'],
];

const PLOT_TEXT = {
  'confusion_matrix.png': ['Confusion matrix', 'rows: true class, columns: predicted class'],
  'roc_curves.png': ['ROC curves', 'one-vs-rest receiver operating characteristic curve per class'],
  'reliability.png': ['Reliability diagram', 'predicted confidence against observed accuracy (calibration)'],
  'training_curves.png': ['Training curves', 'loss and validation metrics per epoch'],
};

let modelsData = [];

function modelPath(name, version) {
  return `${API}/models/${encodeURIComponent(name)}/versions/${encodeURIComponent(version)}`;
}

function aliasPills(aliases) {
  const entries = Object.entries(aliases || {});
  if (entries.length === 0) return [el('span', { text: 'none' })];
  return entries.map(([alias, version]) => el('span', { class: 'pill', text: `${alias} → v${version}` }));
}

function servingText(serving) {
  if (!serving) return 'The inference service did not answer: the serving version is unknown.';
  return `Inference serves version ${serving.version}${serving.ready ? '' : ' (not ready yet)'}.`;
}

function versionsTable(model) {
  const servingVersion = model.serving ? model.serving.version : null;
  const head = el('tr', {},
    el('th', { scope: 'col', text: 'Version' }),
    el('th', { scope: 'col', text: 'Created' }),
    el('th', { scope: 'col', text: 'Architecture' }),
    el('th', { scope: 'col', class: 'num', text: 'Input px' }),
    el('th', { scope: 'col', text: 'Aliases' }),
    HEADLINE.map(([, title, short]) => el('th', { scope: 'col', class: 'num' },
      short === title ? title : el('abbr', { title, text: short }))),
    el('th', { scope: 'col', text: 'Measured on' }),
    el('th', { scope: 'col', text: 'Card' }));
  const rows = (model.versions || []).map((v) => {
    const metrics = v.metrics || {};
    const isServing = v.version === servingVersion;
    return el('tr', { class: isServing ? 'current' : '', dataset: { version: String(v.version) } },
      el('th', { scope: 'row' }, `v${v.version} `,
        isServing ? el('span', { class: 'pill serving', text: 'serving' }) : null),
      el('td', { text: formatDate(v.created, { time: false }) }),
      el('td', { text: v.architecture || '–' }),
      el('td', { class: 'num', text: v.image_size ? String(v.image_size) : '–' }),
      el('td', {}, (v.aliases || []).map((a) => el('span', { class: 'pill', text: a }))),
      HEADLINE.map(([key]) => el('td', { class: 'num', text: formatMetric(metrics[key]) })),
      el('td', {
        class: 'measured-on',
        text: v.metrics ? metricsSource(metrics.partition).short +
          (typeof metrics.n === 'number' ? ` (${metrics.n})` : '') : '–',
      }),
      el('td', {}, el('a', {
        href: `#${encodeURIComponent(model.name)}/${v.version}`,
        text: 'Open',
        attrs: { 'aria-label': `Model card of ${model.name} version ${v.version}` },
      })));
  });
  return el('div', { class: 'table-wrap' },
    el('table', {},
      el('caption', { text: `Versions of ${model.name}, newest first` }),
      el('thead', {}, head),
      el('tbody', {}, rows)));
}

function renderModels(models) {
  modelsBox.replaceChildren();
  if (models.length === 0) {
    modelsBox.append(el('p', { class: 'preview-empty', text: 'The registry holds no models yet.' }));
    return;
  }
  for (const model of models) {
    const headingId = `model-${model.name}`;
    modelsBox.append(el('section', {
      class: 'card model', dataset: { model: model.name }, attrs: { 'aria-labelledby': headingId },
    },
    el('h2', { id: headingId, text: model.name }),
    el('p', {}, el('strong', { text: 'Aliases: ' }), aliasPills(model.aliases)),
    el('p', { class: 'serving', dataset: { servingVersion: model.serving ? String(model.serving.version) : '' } },
      servingText(model.serving)),
    versionsTable(model)));
  }
}

// Model card

function metricsTable(metrics, source) {
  const rows = CARD_METRICS.filter(([key]) => typeof metrics[key] === 'number')
    .map(([key, title]) => el('tr', {},
      el('th', { scope: 'row', text: title }),
      el('td', { class: 'num', text: formatMetric(metrics[key]) })));
  if (typeof metrics.n === 'number') {
    rows.push(el('tr', {}, el('th', { scope: 'row', text: source.count }),
      el('td', { class: 'num', text: String(metrics.n) })));
  }
  return el('div', { class: 'table-wrap' },
    el('table', { class: 'metrics' },
      el('caption', { text: source.caption }),
      el('thead', {}, el('tr', {},
        el('th', { scope: 'col', text: 'Metric' }), el('th', { scope: 'col', class: 'num', text: 'Value' }))),
      el('tbody', {}, rows)));
}

// The leave-one-round-out check of a version fitted on cross-validation answers.
function expectedSection(manifest) {
  const expected = expectedFigures(manifest.metrics_leave_one_round_out);
  if (!expected) return [];
  const rounds = expected.rounds ? `${expected.rounds} cross-validation rounds` : 'the cross-validation rounds';
  return [
    el('h3', { text: 'What to expect on new images' }),
    el('p', {
      class: 'expected-note',
      text: `Each of ${rounds} was answered by a model of this recipe that never saw its images, at the ` +
        'decision rule and thresholds fitted on the other rounds\' answers (this version\'s were fitted on all ' +
        'of them). Images from another hospital or camera can do worse.',
    }),
    el('div', { class: 'table-wrap' },
      el('table', { class: 'metrics expected', dataset: { rounds: String(expected.rounds ?? '') } },
        el('caption', { text: 'Each round scored at the operating point fitted on the others' }),
        el('thead', {}, el('tr', {},
          el('th', { scope: 'col', text: 'Metric' }),
          el('th', { scope: 'col', class: 'num', text: 'Mean ± sd over the rounds' }),
          el('th', { scope: 'col', class: 'num', text: 'Worst round' }))),
        el('tbody', {}, expected.rows.map(([label, mean, worst]) => el('tr', {},
          el('th', { scope: 'row', text: label }),
          el('td', { class: 'num', text: mean }),
          el('td', { class: 'num', text: worst })))))),
  ];
}

function perClassTable(metrics) {
  const perClass = metrics.per_class;
  if (!perClass || typeof perClass !== 'object') return null;
  const labels = Array.isArray(metrics.labels) ? metrics.labels : Object.keys(perClass);
  const cols = ['precision', 'recall', 'f1', 'auc', 'support'];
  return el('div', { class: 'table-wrap' },
    el('table', {},
      el('caption', { text: 'Per-class metrics' }),
      el('thead', {}, el('tr', {}, el('th', { scope: 'col', text: 'Class' }),
        cols.map((c) => el('th', { scope: 'col', class: 'num', text: c === 'f1' ? 'F1' : c === 'auc' ? 'AUC' : c[0].toUpperCase() + c.slice(1) })))),
      el('tbody', {}, labels.filter((l) => perClass[l]).map((label) => el('tr', {},
        el('th', { scope: 'row', text: label }),
        cols.map((c) => el('td', {
          class: 'num',
          text: c === 'support' ? String(perClass[label][c] ?? '–') : formatMetric(perClass[label][c]),
        })))))));
}

function confusionTable(metrics) {
  const matrix = metrics.confusion_matrix;
  const labels = metrics.labels;
  if (!Array.isArray(matrix) || !Array.isArray(labels) || matrix.length !== labels.length) return null;
  return el('div', { class: 'table-wrap' },
    el('table', { class: 'confusion' },
      el('caption', { text: 'Confusion matrix (rows: true class, columns: predicted class)' }),
      el('thead', {}, el('tr', {}, el('td', {}),
        labels.map((l) => el('th', { scope: 'col', class: 'num', text: l })))),
      el('tbody', {}, matrix.map((row, i) => el('tr', {},
        el('th', { scope: 'row', text: labels[i] }),
        (Array.isArray(row) ? row : []).map((count, j) => el('td', {
          class: i === j ? 'num diag' : 'num', text: String(count),
        })))))));
}

function plotFigures(info) {
  const files = (info.files || []).filter((f) => /\.png$/i.test(f.name));
  if (files.length === 0) return el('p', { class: 'preview-empty', text: 'This version has no plots.' });
  return el('div', { class: 'plots' }, files.map((f) => {
    const [title, description] = PLOT_TEXT[f.name] || [f.name, 'plot from the model version'];
    const img = el('img', {
      src: f.url,
      alt: `${title} of ${info.name} version ${info.version}: ${description}.`,
      dataset: { file: f.name },
    });
    img.addEventListener('error', () => {
      img.replaceWith(el('p', { class: 'error', text: `The plot ${f.name} could not be loaded.` }));
    });
    return el('figure', {}, img, el('figcaption', {}, el('strong', { text: title }), ` – ${description}.`));
  }));
}

function renderCard(info) {
  const manifest = info.manifest || {};
  const data = manifest.data || {};
  cardHeading.textContent = `Model card: ${info.name} version ${info.version}`;
  card.dataset.model = info.name;
  card.dataset.version = String(info.version);
  const facts = [
    ['Created', formatDate(info.created)],
    ['Architecture', info.architecture || '–'],
    ['Input size', info.image_size ? `${info.image_size} px` : '–'],
    ['Calibration temperature', typeof info.temperature === 'number' ? info.temperature.toFixed(3) : '–'],
    ['Aliases', (info.aliases || []).join(', ') || 'none'],
    ['Weights sha256', manifest.sha256 || '–'],
    ['Data', data.dataset ? `${data.dataset}${data.split_method ? `, split ${data.split_method}` : ''}` +
      `${typeof data.test_images === 'number' ? `, ${data.test_images} test images` : ''}` : '–'],
    ['Licence', data.licence || '–'],
    ...operatingPointFacts(manifest),
  ];
  const children = [
    el('dl', { class: 'meta' }, facts.flatMap(([k, v]) => [el('dt', { text: k }),
      el('dd', { class: k === 'Weights sha256' ? 'mono' : '', text: v })])),
  ];
  children.push(...expectedSection(manifest));
  if (info.metrics && typeof info.metrics === 'object') {
    const context = info.metrics.context;
    const source = metricsSource(context && typeof context === 'object' ? context.partition : undefined);
    children.push(el('h3', { text: 'Metrics' }),
      el('p', { class: 'metrics-source', dataset: { partition: source.short }, text: source.note }),
      metricsTable(info.metrics, source));
    const perClass = perClassTable(info.metrics);
    if (perClass) children.push(perClass);
    const confusion = confusionTable(info.metrics);
    if (confusion) children.push(confusion);
  } else {
    children.push(el('p', { class: 'preview-empty', text: 'No evaluation metrics were published with this version.' }));
  }
  children.push(el('h3', { text: 'Plots' }), plotFigures(info));
  cardBody.replaceChildren(...children);
  card.hidden = false;
}

async function openCard(name, version, { focus }) {
  errorBox.textContent = '';
  statusBox.textContent = `Loading the model card of ${name} version ${version}…`;
  try {
    const info = await apiFetch(modelPath(name, version));
    renderCard(info);
    statusBox.textContent = `Model card of ${name} version ${version} loaded.`;
    if (focus) card.focus();
  } catch (err) {
    card.hidden = true;
    statusBox.textContent = '';
    errorBox.textContent = `Model card of ${name} version ${version}: ${describeError(err)}`;
  }
}

function cardFromHash() {
  const match = /^#([^/]+)\/(\d+)$/.exec(window.location.hash);
  if (!match) return null;
  return { name: decodeURIComponent(match[1]), version: Number(match[2]) };
}

// The version to show when the page opens: served, else production, else newest.
function defaultCard(models) {
  const model = models[0];
  if (!model || !model.versions || model.versions.length === 0) return null;
  if (model.serving && model.serving.version) return { name: model.name, version: model.serving.version };
  if (model.aliases && model.aliases.production) return { name: model.name, version: model.aliases.production };
  return { name: model.name, version: model.versions[0].version };
}

async function load() {
  main.dataset.state = 'busy';
  statusBox.textContent = 'Loading models…';
  try {
    const json = await apiFetch(`${API}/models`);
    modelsData = Array.isArray(json && json.models) ? json.models : [];
    renderModels(modelsData);
    statusBox.textContent = `${modelsData.length} model${modelsData.length === 1 ? '' : 's'} loaded.`;
    const target = cardFromHash() || defaultCard(modelsData);
    if (target) await openCard(target.name, target.version, { focus: false });
    main.dataset.state = 'done';
  } catch (err) {
    statusBox.textContent = '';
    errorBox.textContent = describeError(err);
    main.dataset.state = 'error';
  }
}

window.addEventListener('hashchange', () => {
  const target = cardFromHash();
  if (target) openCard(target.name, target.version, { focus: true });
});

load();
