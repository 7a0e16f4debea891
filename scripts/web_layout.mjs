// The parts every page of web/ shares, in one place: the skip link, the header with
// the main navigation (aria-current="page" on the page's own link), the notice under
// it and the footer. The notice's text is the API's kDisclaimer, read from
// services/gateway/api.cc, so the pages and every prediction say the same words.
//
// Each page marks the shared parts with <!-- layout:NAME ... --> ... <!-- /layout:NAME -->
// and this script rewrites what is between the marks. The result is committed and
// served as it is (plain HTML: nothing to build at deploy time, nothing that needs
// JavaScript, nothing inline for the CSP to block). The unit test website_layout
// fails while a page differs from what this script writes.
//
//   node scripts/web_layout.mjs           # rewrites the pages that differ
//   node scripts/web_layout.mjs --check   # exit 1 naming the pages that differ

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const API_CC = 'services/gateway/api.cc';

// The pages, in navigation order: file in web/, link target, link text.
export const PAGES = [
  { file: 'index.html', href: './', label: 'Predict' },
  { file: 'models.html', href: 'models.html', label: 'Models' },
  { file: 'jobs.html', href: 'jobs.html', label: 'Jobs' },
];

const REGION = /^ *<!-- layout:([a-z]+)\b[\s\S]*?<!-- \/layout:\1 -->$/gm;

export function escapeHtml(text) {
  return String(text).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;');
}

// kDisclaimer's value from the text of api.cc: its adjacent string literals joined.
export function readApiDisclaimer(source) {
  const match = /\bkDisclaimer\[\]\s*=\s*((?:"(?:[^"\\\n]|\\.)*"\s*)+);/.exec(source);
  if (!match) throw new Error(`no "const char kDisclaimer[] = \"...\";" in ${API_CC}`);
  const literals = match[1].match(/"(?:[^"\\\n]|\\.)*"/g).map((s) => s.slice(1, -1));
  const text = literals.join('');
  if (/\\[^"\\']/.test(text)) throw new Error(`kDisclaimer holds an escape this script does not read: ${text}`);
  return text.replace(/\\(["\\'])/g, '$1');
}

// Words of `text` on lines of at most `width` characters, each starting with `indent`.
function wrap(text, indent, width = 92) {
  const lines = [];
  let line = '';
  for (const word of text.split(/\s+/).filter(Boolean)) {
    if (line && indent.length + line.length + 1 + word.length > width) {
      lines.push(indent + line);
      line = word;
    } else {
      line = line ? `${line} ${word}` : word;
    }
  }
  if (line) lines.push(indent + line);
  return lines;
}

// The notice: its first sentence in bold, then the rest (text content = disclaimer).
function notice(disclaimer) {
  const cut = disclaimer.indexOf('. ');
  const lead = cut < 0 ? disclaimer : disclaimer.slice(0, cut + 1);
  const rest = cut < 0 ? '' : disclaimer.slice(cut + 2);
  const lines = [`      <p id="disclaimer"><strong>${escapeHtml(lead)}</strong>`,
    ...wrap(escapeHtml(rest), '        ')];
  lines[lines.length - 1] += '</p>';
  return lines;
}

function top(page, disclaimer) {
  const links = PAGES.map((p) => `          <li><a href="${p.href}"${p === page ? ' aria-current="page"' : ''}>` +
    `${escapeHtml(p.label)}</a></li>`);
  return [
    '  <a class="skip-link" href="#main">Skip to main content</a>',
    '  <header class="site-header">',
    '    <div class="wrap">',
    '      <a class="brand" href="./">skinlesion <span class="visually-hidden">home</span></a>',
    '      <nav class="site-nav" aria-label="Main">',
    '        <ul>',
    ...links,
    '        </ul>',
    '      </nav>',
    '    </div>',
    '  </header>',
    '  <aside class="disclaimer" aria-label="Important notice">',
    '    <div class="wrap">',
    ...notice(disclaimer),
    '    </div>',
    '  </aside>',
  ];
}

function footer() {
  return [
    '  <footer class="site-footer">',
    '    <div class="wrap">',
    '      <p>skinlesion: trained on HAM10000 (CC BY-NC 4.0, non-commercial use only).',
    '        <a href="models.html">Model cards</a> list each model\'s measured accuracy and',
    '        limits.</p>',
    '    </div>',
    '  </footer>',
  ];
}

const REGIONS = { top, footer };

// `html` (the page web/<file>) with its shared parts as this script writes them.
export function applyLayout(html, file, disclaimer) {
  const page = PAGES.find((p) => p.file === file);
  if (!page) throw new Error(`${file} is not one of the pages (${PAGES.map((p) => p.file).join(', ')})`);
  const seen = new Set();
  const out = html.replace(REGION, (whole, name) => {
    if (!REGIONS[name]) throw new Error(`${file}: unknown region <!-- layout:${name} -->`);
    if (seen.has(name)) throw new Error(`${file}: two <!-- layout:${name} --> regions`);
    seen.add(name);
    return [`  <!-- layout:${name}: the same on every page; edit scripts/web_layout.mjs and run it -->`,
      ...REGIONS[name](page, disclaimer), `  <!-- /layout:${name} -->`].join('\n');
  });
  for (const name of Object.keys(REGIONS)) {
    if (!seen.has(name)) {
      throw new Error(`${file}: no <!-- layout:${name} --> ... <!-- /layout:${name} --> region`);
    }
  }
  return out;
}

// Every page: its path, its text now, and its text as this script writes it.
export function layoutPages(repo = REPO) {
  const disclaimer = readApiDisclaimer(fs.readFileSync(path.join(repo, API_CC), 'utf8'));
  return PAGES.map(({ file }) => {
    const pagePath = path.join(repo, 'web', file);
    const current = fs.readFileSync(pagePath, 'utf8');
    return { file, path: pagePath, current, expected: applyLayout(current, file, disclaimer) };
  });
}

function main(args) {
  const check = args.includes('--check');
  const stale = layoutPages().filter((p) => p.current !== p.expected);
  if (check) {
    if (stale.length) {
      console.error(`web_layout: out of date: ${stale.map((p) => `web/${p.file}`).join(', ')}; ` +
        'run node scripts/web_layout.mjs');
      return 1;
    }
    return 0;
  }
  for (const p of stale) {
    fs.writeFileSync(p.path, p.expected);
    console.log(`web_layout: wrote web/${p.file}`);
  }
  return 0;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exitCode = main(process.argv.slice(2));
}
