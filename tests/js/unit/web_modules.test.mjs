// Unit tests of the website's pure modules (web/js/api.js, web/js/heatmap.js) in
// Node: the error sentences for every API status, response parsing, the overlay
// geometry and the bilinear heat upsampling. No browser, no npm packages.
//
// Run: node --test tests/js/unit/   (ctest: website_unit)

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

// web/ has no package.json (the gateway serves it as is), so Node would read its
// .js files as CommonJS: load copies named .mjs (the modules import nothing).
const webJs = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'web', 'js');
const copies = fs.mkdtempSync(path.join(os.tmpdir(), 'skinlesion-web-unit-'));
async function load(name) {
  const copy = path.join(copies, name.replace(/\.js$/, '.mjs'));
  fs.copyFileSync(path.join(webJs, name), copy);
  return import(pathToFileURL(copy).href);
}
const {
  ApiError, describeError, errorFromResponse, expectedFigures, formatDuration, metricsSource,
  operatingPointFacts, percent, publishedWords, referralMessage, viewsMessage,
} = await load('api.js');
const { colourMap, coveredRect, heatImage, validateExplanation } = await load('heatmap.js');
fs.rmSync(copies, { recursive: true, force: true });

// heatImage() builds an ImageData; Node has none, so a minimal stand-in.
globalThis.ImageData = class {
  constructor(width, height) {
    this.width = width;
    this.height = height;
    this.data = new Uint8ClampedArray(width * height * 4);
  }
};

test('a flagged answer is never called "not uncertain"; each rule has its own words', () => {
  const risk = referralMessage({
    refer: true, refer_rule: 'malignancy_risk',
    refer_reason: 'malignancy risk 0.26 >= 0.18 (90% sensitivity point)',
    referral: { malignancy_risk_threshold: 0.18, target_sensitivity: 0.9 },
  });
  assert.equal(risk.refer, true);
  assert.match(risk.text, /at or above this model's referral threshold, set to catch 90% of malignant lesions/);
  assert.match(risk.text, /0\.26 >= 0\.18/);
  assert.doesNotMatch(risk.text, /not uncertain|indeterminate/);
  assert.doesNotMatch(risk.text, /confidence on/);  // Fitted to the point estimate.
  const shown = referralMessage({
    refer: true, refer_rule: 'malignancy_risk',
    refer_reason: 'malignancy risk 0.26 >= 0.15 (90% sensitivity point, 95% confidence)',
    referral: { malignancy_risk_threshold: 0.15, target_sensitivity: 0.9, sensitivity_confidence: 0.95 },
  });
  assert.match(shown.text, /set to catch 90% of malignant lesions \(shown with 95% confidence on held-out images\)/);
  const unsure = referralMessage({ refer: true, refer_rule: 'low_confidence', refer_reason: 'top probability 0.35 is under 0.50' });
  assert.equal(unsure.refer, true);
  assert.match(unsure.text, /indeterminate \(top probability 0\.35 is under 0\.50\)/);
  assert.doesNotMatch(unsure.text, /not uncertain/);
  const clear = referralMessage({ refer: false, referral: { malignancy_risk_threshold: 0.18, target_sensitivity: 0.9 } });
  assert.equal(clear.refer, false);
  assert.match(clear.text, /did not flag this photo for referral\. The malignancy risk is under this model's referral threshold of 18\.0%/);
  const old = referralMessage({ refer: false, referral: { malignancy_risk_threshold: null } });
  assert.match(old.text, /did not flag this photo for referral\. The answer is not uncertain\./);
});

test('a model card says what its metrics were measured on', () => {
  // Held-out test images: a training run's test partition or a cross-validation round's.
  for (const partition of ['test', 'fold3']) {
    const s = metricsSource(partition);
    assert.equal(s.caption, 'Metrics on held-out test images');
    assert.equal(s.count, 'Test images');
  }
  // Validation images chose the epoch and thresholds: never called test figures.
  const val = metricsSource('val');
  assert.equal(val.count, 'Validation images');
  assert.match(val.note, /optimistic/);
  assert.doesNotMatch(`${val.caption} ${val.count}`, /test/i);
  const oof = metricsSource('out_of_fold');
  assert.match(oof.caption, /Cross-validated/);
  assert.equal(oof.short, 'cross-validation');
  assert.match(oof.note, /never saw it/);
  assert.doesNotMatch(`${oof.caption} ${oof.count}`, /test/i);
  // Unknown or missing: said so, not guessed.
  assert.equal(metricsSource(undefined).short, 'not recorded');
  assert.match(metricsSource(null).note, /not recorded/);
  assert.equal(metricsSource('train').short, 'train');
  assert.doesNotMatch(metricsSource('train').caption, /test|held-out/i);
});

test('a model card says what to expect on new images (the leave-one-round-out check)', () => {
  // The committed check of the out-of-fold mechanics run (fit-thresholds --from_cv).
  const file = path.join(webJs, '..', '..', 'docs', 'cv', 'ship_out_of_fold_mechanics', 'leave_one_round_out_flips.json');
  const check = JSON.parse(fs.readFileSync(file, 'utf8'));
  const expected = expectedFigures(check);
  assert.equal(expected.rounds, check.rounds.length);
  const byLabel = Object.fromEntries(expected.rows.map(([label, mean, worst]) => [label, { mean, worst }]));
  const s = check.summary;
  assert.equal(byLabel['Balanced accuracy'].mean,
    `${s.balanced_accuracy.mean.toFixed(3)} ± ${s.balanced_accuracy.sd.toFixed(3)}`);
  // The worst round: the lowest sensitivity, the highest refer rate.
  assert.equal(byLabel['Malignant lesions referred'].worst,
    Math.min(...check.rounds.map((r) => r['referral/malignant_sensitivity/value'])).toFixed(3));
  assert.equal(byLabel['Images referred'].worst,
    Math.max(...check.rounds.map((r) => r['referral/refer_rate/value'])).toFixed(3));
  assert.deepEqual(expected.rows.map(([label]) => label), ['Balanced accuracy', 'Macro AUC', 'Melanoma recall',
    'Malignant lesions referred', 'Images referred']);
  // One round: no spread to show. Missing or malformed: no section, not zeros.
  const one = expectedFigures({ summary: { macro_auc: { mean: 0.9, n: 1 } } });
  assert.deepEqual(one, { rounds: 1, rows: [['Macro AUC', '0.900', '–']] });
  for (const bad of [undefined, null, 'x', {}, { summary: null }, { summary: { macro_auc: { mean: 'NaN' } } }]) {
    assert.equal(expectedFigures(bad), null, JSON.stringify(bad));
  }
});

test('a model card states the operating point from the manifest', () => {
  const facts = Object.fromEntries(operatingPointFacts({
    tta: 'flips',
    refer: { malignancy_risk_threshold: 0.1907, target_sensitivity: 0.9, sensitivity_confidence: 0.95,
      min_confidence: 0.5, min_margin: 0.1 },
    ood: { method: 'mahalanobis', threshold: 330.418, reject_rate: 0.01 },
  }));
  assert.match(facts['Test-time views'], /^3 views averaged/);
  assert.equal(facts.Referral, 'malignancy risk ≥ 19.1% (set to refer 90% of malignant lesions, shown with ' +
    '95% confidence), or top probability under 50%, or the top two classes under 10 points apart');
  assert.equal(facts['Not-a-lesion check'],
    'Mahalanobis distance of the photo\'s features to the training lesions above 330.4, rejecting 1.0% of held-out lesions');
  // Older manifests: said to be missing, never invented.
  const old = Object.fromEntries(operatingPointFacts({ refer: { malignancy_risk_threshold: null, min_confidence: 0.5 } }));
  assert.equal(old['Test-time views'], 'the photo as sent (one view)');
  assert.match(old.Referral, /uncertain answers only/);
  assert.match(old['Not-a-lesion check'], /^none/);
  for (const bad of [undefined, null, 'x']) {
    const facts = Object.fromEntries(operatingPointFacts(bad));
    assert.equal(facts.Referral, 'not recorded with this version');
  }
  const energy = Object.fromEntries(operatingPointFacts({ ood: { method: 'energy', threshold: -4.25 } }));
  assert.equal(energy['Not-a-lesion check'], 'energy score of the logits above -4.3');
});

test('a job says which alias its published version reached', () => {
  assert.equal(publishedWords({ published_version: 2, published_alias: 'staging' }), 'v2 (staging)');
  assert.equal(publishedWords({ published_version: 3, published_alias: 'production' }), 'v3 (production)');
  assert.equal(publishedWords({ published_version: 4, published_alias: null }), 'v4');
  assert.equal(publishedWords({ published_version: null }), '');
  assert.equal(publishedWords(undefined), '');
});

test('the page says which views of the photo the answer averages', () => {
  assert.match(viewsMessage('flips'), /^3 views averaged: .*left-right and up-down mirror/);
  assert.match(viewsMessage('dihedral'), /^8 views averaged/);
  assert.equal(viewsMessage('none'), 'the photo as sent (one view)');
  assert.equal(viewsMessage(undefined), 'the photo as sent (one view)');  // An older server.
  assert.equal(viewsMessage('rotations'), 'views: rotations');
});

test('every API error status gives a sentence a person can act on', () => {
  const cases = [
    [new ApiError(413, 'payload_too_large', 'The image is larger than 10485760 bytes.'), /^Image too large \(max 10 MB\)/],
    [new ApiError(413, 'payload_too_large', 'The body exceeds 5 MiB.'), /^Image too large \(max 5 MB\)/],
    [new ApiError(413, 'payload_too_large', 'The request body is too large.'), /^Image too large \(max 10 MB\)/],
    [new ApiError(415, 'unsupported_media_type', 'x'), /^Unsupported file type: please upload a JPEG, PNG, WebP or BMP image\./],
    [new ApiError(400, 'invalid_image', 'The image was refused: truncated JPEG data'),
      /^This file is not a readable image \(The image was refused: truncated JPEG data\): it may be corrupt/],
    [new ApiError(400, 'bad_request', 'top_k must be in 1..7'), /^The request was not accepted: top_k must be in 1\.\.7\./],
    [new ApiError(401, 'unauthorized', 'missing token'), /^Not authorised/],
    [new ApiError(429, 'rate_limited', 'slow down', 7), /^Too many requests: please wait 7 s and try again\./],
    [new ApiError(503, 'inference_unavailable', 'down', 3), /^The model service is unavailable, try again in 3 s\./],
    [new ApiError(503, 'inference_unavailable', 'down'), /^The model service is unavailable, try again in a few s\./],
    [new ApiError(504, 'upstream_timeout', 'deadline'), /^The model service took too long to answer \(timeout\)/],
    [new ApiError(0, 'network', 'network error'), /^Network error: the server could not be reached/],
    [new ApiError(500, 'internal', 'boom'), /^Server error 500 \(boom\)/],
    [new ApiError(412, 'failed_precondition', 'gate: balanced accuracy dropped'), /^Refused by a safety gate: gate: balanced/],
  ];
  for (const [err, expected] of cases) {
    assert.match(describeError(err), expected, `status ${err.status} ${err.code}`);
  }
  assert.match(describeError(new TypeError('x is undefined')), /^Something went wrong in the page: x is undefined/);
});

test('error responses are parsed: code, message, problems, Retry-After', () => {
  const body = JSON.stringify({ code: 'bad_request', message: 'invalid job config', problems: ['a', 'b'] });
  const err = errorFromResponse(400, body, null);
  assert.equal(err.status, 400);
  assert.equal(err.code, 'bad_request');
  assert.equal(err.message, 'invalid job config');
  assert.deepEqual(err.problems, ['a', 'b']);
  assert.equal(err.retryAfter, null);

  assert.equal(errorFromResponse(503, '{"code":"x","message":"y"}', '12').retryAfter, 12);
  const later = new Date(Date.now() + 30_000).toUTCString();
  const fromDate = errorFromResponse(429, '', later).retryAfter;
  assert.ok(fromDate >= 28 && fromDate <= 31, `Retry-After as an HTTP date: ${fromDate}`);
  // A body that is not JSON (a proxy's HTML page) still gives a usable error.
  const html = errorFromResponse(502, '<html>Bad gateway</html>', 'soon');
  assert.equal(html.code, '');
  assert.equal(html.retryAfter, null);
  assert.match(describeError(html), /^The model service is unavailable, try again in a few s\./);
});

test('the overlay covers the centred square or the whole image', () => {
  assert.deepEqual(coveredRect(300, 200, 'center-square'), { x: 50, y: 0, width: 200, height: 200 });
  assert.deepEqual(coveredRect(200, 300, 'center-square'), { x: 0, y: 50, width: 200, height: 200 });
  assert.deepEqual(coveredRect(300, 200, 'full-image'), { x: 0, y: 0, width: 300, height: 200 });
});

test('heat grids are upsampled bilinearly with cell centres aligned and edges clamped', () => {
  // A 2 x 1 grid [0, 1] at 4 x 1 pixels: pixel centres fall at grid x = -0.25, 0.25,
  // 0.75, 1.25, so the values are 0 (clamped), 0.25, 0.75, 1 (clamped).
  const image = heatImage({ width: 2, height: 1, heat: [0, 1] }, 4, 1);
  const expected = [0, 0.25, 0.75, 1];
  expected.forEach((v, x) => {
    const [r, g, b] = colourMap(v);
    assert.deepEqual(Array.from(image.data.slice(4 * x, 4 * x + 4)),
      [r, g, b, Math.round(255 * (0.3 + 0.7 * v))], `pixel ${x} (heat ${v})`);
  });
  // Same size in and out: the grid itself.
  const same = heatImage({ width: 2, height: 2, heat: [0, 1, 1, 0] }, 2, 2);
  assert.deepEqual(Array.from(same.data.slice(0, 4)), [...colourMap(0), Math.round(255 * 0.3)]);
  assert.deepEqual(Array.from(same.data.slice(4, 8)), [...colourMap(1), 255]);
  // Two dimensions: the centre pixel of a 3 x 3 upsampling mixes all four cells.
  const odd = heatImage({ width: 2, height: 2, heat: [0, 1, 1, 0] }, 3, 3);
  assert.deepEqual(Array.from(odd.data.slice(4 * 4, 4 * 4 + 4)),
    [...colourMap(0.5), Math.round(255 * (0.3 + 0.7 * 0.5))], 'the centre pixel is the mean');
  // Out-of-range values are clamped to [0, 1].
  const clamped = heatImage({ width: 1, height: 1, heat: [3] }, 1, 1);
  assert.deepEqual(Array.from(clamped.data), [...colourMap(1), 255]);
});

test('the colour map runs from dark blue (low) to red (high)', () => {
  const [r0, , b0] = colourMap(0);
  const [r1, , b1] = colourMap(1);
  assert.ok(b0 > r0, 'low is blue');
  assert.ok(r1 > b1, 'high is red');
  assert.deepEqual(colourMap(-1), colourMap(0));
  assert.deepEqual(colourMap(2), colourMap(1));
});

test('malformed explanations are described, not drawn', () => {
  assert.equal(validateExplanation({ width: 2, height: 2, heat: [0, 0.5, 1, 0.2], covers: 'full-image' }), '');
  assert.match(validateExplanation(null), /no explanation/);
  assert.match(validateExplanation({ width: 0, height: 2, heat: [] }), /grid size/);
  assert.match(validateExplanation({ width: 2, height: 2, heat: [1, 2, 3] }), /2 x 2 values/);
  assert.match(validateExplanation({ width: 1, height: 1, heat: ['x'] }), /non-numeric/);
  assert.match(validateExplanation({ width: 1, height: 1, heat: [0], covers: 'left-half' }), /unknown explanation coverage/);
});

test('durations and percentages are formatted for people', () => {
  assert.equal(formatDuration(3733), '1:02:13');
  assert.equal(formatDuration(65), '1:05');
  assert.equal(formatDuration(null), '–');
  assert.equal(formatDuration(-1), '–');
  assert.equal(percent(0.8123), '81.2%');
});
