// Unit tests of the pages' shared parts (scripts/web_layout.mjs): every page of web/ is
// what the script writes, has the same skip link, header, navigation, notice and
// footer (only aria-current moves, to the page's own link), the notice says the API's
// kDisclaimer word for word, and nothing inline would be blocked by the gateway's CSP.
// Reads the files as text: no browser, no npm packages.
//
// Run: node --test tests/js/unit/   (ctest: website_layout)

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { API_CC, PAGES, REPO, applyLayout, layoutPages, readApiDisclaimer } from '../../../scripts/web_layout.mjs';

const apiSource = fs.readFileSync(path.join(REPO, API_CC), 'utf8');
const pages = PAGES.map(({ file, href }) => ({
  file, href, html: fs.readFileSync(path.join(REPO, 'web', file), 'utf8'),
}));

// The text of an HTML fragment as a reader gets it: tags dropped, entities decoded,
// white space folded.
function text(fragment) {
  return fragment.replace(/<[^>]*>/g, '').replace(/&lt;/g, '<').replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&amp;/g, '&').replace(/\s+/g, ' ').trim();
}

function region(html, name) {
  const match = new RegExp(`<!-- layout:${name}\\b[^]*?-->\\n([^]*?)\\n *<!-- /layout:${name} -->`).exec(html);
  assert.ok(match, `a <!-- layout:${name} --> region`);
  return match[1];
}

function count(html, re) {
  return (html.match(re) || []).length;
}

test('every page is as scripts/web_layout.mjs writes it', () => {
  for (const page of layoutPages()) {
    assert.equal(page.current, page.expected,
      `web/${page.file} differs from its shared parts: run node scripts/web_layout.mjs`);
  }
});

test('the notice on every page is the API\'s kDisclaimer, word for word', () => {
  const disclaimer = readApiDisclaimer(apiSource);
  assert.match(disclaimer, /^Research software, not a diagnostic device\. /);
  // Read again without the script's parser: the literals of api.cc joined.
  const joined = apiSource.replace(/"\s*\n\s*"/g, '');
  const literal = disclaimer.replace(/["\\]/g, '\\$&').replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  assert.match(joined, new RegExp(`\\bkDisclaimer\\[\\]\\s*=\\s*"${literal}";`),
    `${API_CC} defines kDisclaimer as "${disclaimer}"`);
  for (const { file, html } of pages) {
    const notices = html.match(/<p id="disclaimer">[^]*?<\/p>/g) || [];
    assert.equal(notices.length, 1, `web/${file} has one #disclaimer`);
    assert.equal(text(notices[0]), disclaimer, `web/${file}: the notice is the API's disclaimer`);
    assert.match(notices[0], /^<p id="disclaimer"><strong>Research software, not a diagnostic device\.<\/strong>/);
  }
});

test('every page has the same header, navigation, notice and footer; only aria-current moves', () => {
  const [first, ...rest] = pages;
  const shared = (html, name) => region(html, name).replace(/ aria-current="page"/g, '');
  for (const name of ['top', 'footer']) {
    for (const page of rest) {
      assert.equal(shared(page.html, name), shared(first.html, name),
        `web/${page.file} and web/${first.file}: the same ${name}`);
    }
  }
  for (const { file, href, html } of pages) {
    const nav = /<nav class="site-nav" aria-label="Main">([^]*?)<\/nav>/.exec(html);
    assert.ok(nav, `web/${file} has the main navigation`);
    const links = [...nav[1].matchAll(/<a href="([^"]*)"( aria-current="page")?>([^<]*)<\/a>/g)];
    assert.deepEqual(links.map((l) => [l[1], l[3]]), PAGES.map((p) => [p.href, p.label]),
      `web/${file}: every page in the navigation, in order`);
    assert.deepEqual(links.filter((l) => l[2]).map((l) => l[1]), [href],
      `web/${file}: aria-current="page" on its own link only`);
    assert.equal(count(html, /aria-current=/g), 1, `web/${file}: one aria-current`);
  }
});

test('the landmarks and ids the pages and the browser test rely on are there once', () => {
  for (const { file, html } of pages) {
    for (const [what, re] of [
      ['skip link to #main', /<a class="skip-link" href="#main">Skip to main content<\/a>/g],
      ['header', /<header\b/g],
      ['main navigation', /<nav [^>]*aria-label="Main"/g],
      ['notice', /<aside class="disclaimer" aria-label="Important notice">/g],
      ['#disclaimer', /id="disclaimer"/g],
      ['main#main', /<main id="main"/g],
      ['footer', /<footer\b/g],
      ['h1', /<h1\b/g],
    ]) {
      assert.equal(count(html, re), 1, `web/${file}: one ${what}`);
    }
    // The notice comes right after the header, before the page's own content.
    assert.ok(html.indexOf('</header>') < html.indexOf('id="disclaimer"') &&
      html.indexOf('id="disclaimer"') < html.indexOf('<main'), `web/${file}: header, notice, main`);
  }
});

test('nothing inline for the CSP to block (script-src and style-src \'self\')', () => {
  for (const { file, html } of pages) {
    for (const tag of html.match(/<script\b[^>]*>[^]*?<\/script>/g) || []) {
      assert.match(tag, /^<script type="module" src="js\/[a-z]+\.js"><\/script>$/, `web/${file}: ${tag}`);
    }
    assert.equal(count(html, /<style\b/g), 0, `web/${file}: no <style>`);
    assert.equal(count(html, /\sstyle=/g), 0, `web/${file}: no style attribute`);
    assert.equal(count(html, /\son[a-z]+=/g), 0, `web/${file}: no on* handler`);
    assert.equal(count(html, /\s(?:src|href)="(?:[a-z]+:)?\/\//g), 0, `web/${file}: nothing from another origin`);
  }
});

test('applyLayout rewrites only the marked parts and says what is missing', () => {
  const page = (top) => [
    '<!doctype html>', '<body>', '  <!-- layout:top -->', top, '  <!-- /layout:top -->',
    '  <main id="main">own <b>content</b></main>', '  <!-- layout:footer -->', '  <!-- /layout:footer -->',
    '</body>', ''].join('\n');
  const out = applyLayout(page('  <p id="disclaimer">an old notice</p>'), 'jobs.html', 'A. B & <c>.');
  assert.match(out, /<p id="disclaimer"><strong>A\.<\/strong>\n {8}B &amp; &lt;c&gt;\.<\/p>/);
  assert.doesNotMatch(out, /an old notice/);
  assert.match(out, /\n {2}<main id="main">own <b>content<\/b><\/main>\n/);
  assert.match(out, /<a href="jobs.html" aria-current="page">Jobs<\/a>/);
  assert.equal(applyLayout(out, 'jobs.html', 'A. B & <c>.'), out, 'applying it twice changes nothing');
  assert.throws(() => applyLayout('<body></body>', 'index.html', 'x'), /index\.html: no <!-- layout:top -->/);
  assert.throws(() => applyLayout(page(''), 'about.html', 'x'), /about\.html is not one of the pages/);
});

test('kDisclaimer is read from its string literals', () => {
  assert.equal(readApiDisclaimer('const char kDisclaimer[] =\n    "One \\"two\\" " \n  "three.";\n'),
    'One "two" three.');
  assert.equal(readApiDisclaimer('const char kDisclaimer[] = "Just one.";'), 'Just one.');
  assert.throws(() => readApiDisclaimer('const char kNotice[] = "x";'), /no "const char kDisclaimer/);
  assert.throws(() => readApiDisclaimer('const char kDisclaimer[] = "a\\nb";'), /escape/);
});
