// The explanation overlay: a heat grid (width x height floats in [0, 1], row-major)
// upsampled bilinearly and drawn as a colour map over the preview image.

// Colour stops (a turbo-like map: dark blue -> cyan -> green -> yellow -> red).
const STOPS = [
  [0.0, [48, 18, 59]],
  [0.15, [67, 110, 230]],
  [0.35, [30, 200, 210]],
  [0.5, [95, 245, 110]],
  [0.65, [205, 235, 55]],
  [0.8, [252, 155, 45]],
  [1.0, [175, 10, 5]],
];

// v in [0, 1] -> [r, g, b] (piecewise linear between the stops).
export function colourMap(v) {
  const x = Math.min(1, Math.max(0, v));
  for (let i = 1; i < STOPS.length; i++) {
    const [x1, c1] = STOPS[i];
    if (x <= x1) {
      const [x0, c0] = STOPS[i - 1];
      const t = (x - x0) / (x1 - x0);
      return [0, 1, 2].map((k) => Math.round(c0[k] + t * (c1[k] - c0[k])));
    }
  }
  return STOPS[STOPS.length - 1][1].slice();
}

// Checks an explanation object from the API; returns an error sentence or ''.
export function validateExplanation(explanation) {
  if (!explanation || typeof explanation !== 'object') return 'no explanation in the response';
  const { width, height, heat, covers } = explanation;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    return 'the explanation has no valid grid size';
  }
  if (!Array.isArray(heat) || heat.length !== width * height) {
    return `the explanation grid should hold ${width} x ${height} values`;
  }
  if (heat.some((v) => typeof v !== 'number' || !Number.isFinite(v))) {
    return 'the explanation grid holds non-numeric values';
  }
  if (covers !== undefined && covers !== 'full-image' && covers !== 'center-square') {
    return `unknown explanation coverage "${covers}"`;
  }
  return '';
}

// The rectangle (CSS px, relative to the displayed image) the heat grid covers.
export function coveredRect(displayWidth, displayHeight, covers) {
  if (covers === 'center-square') {
    const side = Math.min(displayWidth, displayHeight);
    return {
      x: (displayWidth - side) / 2,
      y: (displayHeight - side) / 2,
      width: side,
      height: side,
    };
  }
  return { x: 0, y: 0, width: displayWidth, height: displayHeight };
}

// Bilinear sample of the grid at (gx, gy) in grid coordinates (cell centres at
// integers), clamped at the edges.
function sample(heat, gw, gh, gx, gy) {
  const cx = Math.min(gw - 1, Math.max(0, gx));
  const cy = Math.min(gh - 1, Math.max(0, gy));
  const x0 = Math.floor(cx);
  const y0 = Math.floor(cy);
  const x1 = Math.min(gw - 1, x0 + 1);
  const y1 = Math.min(gh - 1, y0 + 1);
  const fx = cx - x0;
  const fy = cy - y0;
  const top = heat[y0 * gw + x0] * (1 - fx) + heat[y0 * gw + x1] * fx;
  const bottom = heat[y1 * gw + x0] * (1 - fx) + heat[y1 * gw + x1] * fx;
  return top * (1 - fy) + bottom * fy;
}

// Renders the heat grid into an ImageData of outWidth x outHeight pixels.
export function heatImage(explanation, outWidth, outHeight) {
  const { width: gw, height: gh, heat } = explanation;
  const image = new ImageData(outWidth, outHeight);
  const data = image.data;
  for (let y = 0; y < outHeight; y++) {
    const gy = ((y + 0.5) * gh) / outHeight - 0.5;
    for (let x = 0; x < outWidth; x++) {
      const gx = ((x + 0.5) * gw) / outWidth - 0.5;
      const v = Math.min(1, Math.max(0, sample(heat, gw, gh, gx, gy)));
      const [r, g, b] = colourMap(v);
      const i = 4 * (y * outWidth + x);
      data[i] = r;
      data[i + 1] = g;
      data[i + 2] = b;
      // Cool regions stay see-through so the lesion remains visible under them.
      data[i + 3] = Math.round(255 * (0.3 + 0.7 * v));
    }
  }
  return image;
}

const MAX_HEAT_SIDE = 512;  // larger targets are scaled up by the canvas (smoothly)

// Sizes `canvas` to the displayed `img` and draws the explanation over the part of
// the image it covers. Returns the covered rectangle (CSS px).
export function drawOverlay(canvas, img, explanation) {
  const displayWidth = img.clientWidth;
  const displayHeight = img.clientHeight;
  const ratio = window.devicePixelRatio || 1;
  canvas.style.width = `${displayWidth}px`;
  canvas.style.height = `${displayHeight}px`;
  canvas.width = Math.max(1, Math.round(displayWidth * ratio));
  canvas.height = Math.max(1, Math.round(displayHeight * ratio));
  const ctx = canvas.getContext('2d');
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const rect = coveredRect(displayWidth, displayHeight, explanation.covers);
  if (rect.width < 1 || rect.height < 1) return rect;

  const targetWidth = Math.max(1, Math.round(rect.width * ratio));
  const targetHeight = Math.max(1, Math.round(rect.height * ratio));
  const scale = Math.min(1, MAX_HEAT_SIDE / Math.max(targetWidth, targetHeight));
  const heatWidth = Math.max(1, Math.round(targetWidth * scale));
  const heatHeight = Math.max(1, Math.round(targetHeight * scale));
  const offscreen = document.createElement('canvas');
  offscreen.width = heatWidth;
  offscreen.height = heatHeight;
  offscreen.getContext('2d').putImageData(heatImage(explanation, heatWidth, heatHeight), 0, 0);
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = 'high';
  ctx.drawImage(offscreen, Math.round(rect.x * ratio), Math.round(rect.y * ratio), targetWidth, targetHeight);
  return rect;
}

// The legend: the colour map left (0) to right (1).
export function drawLegend(canvas) {
  const ctx = canvas.getContext('2d');
  const image = ctx.createImageData(canvas.width, canvas.height);
  for (let x = 0; x < canvas.width; x++) {
    const [r, g, b] = colourMap(canvas.width > 1 ? x / (canvas.width - 1) : 0);
    for (let y = 0; y < canvas.height; y++) {
      const i = 4 * (y * canvas.width + x);
      image.data[i] = r;
      image.data[i + 1] = g;
      image.data[i + 2] = b;
      image.data[i + 3] = 255;
    }
  }
  ctx.putImageData(image, 0, 0);
}
