/* cmrsearch web page: search (trainees), study comparison (clinicians), audit
 * (curators).  Plain script, no build step, no network beyond this server.
 * The API is schema/openapi.json; views are chosen by the URL hash so that
 * the back button and links to a case work. */
'use strict';

const $ = (sel) => document.querySelector(sel);
const API = '/api/v1';
const state = {
  text: '', caseQuery: null, k: 24, offset: 0, chips: new Set(), stats: null,
  seq: 0, lastResults: '#/search', auditKind: null, audit: null, labels: {}, kinds: {}, findings: [],
};

/* ---- API access ---------------------------------------------------------- */

/* The token lives in sessionStorage: it dies with the tab and is never put
 * in a URL, where logs and history would keep it. */
function token() { return sessionStorage.getItem('cmrsearch.token') || ''; }

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (token()) h.Authorization = 'Bearer ' + token();
  return h;
}

async function api(path, opts) {
  opts = opts || {};
  let r;
  try {
    r = await fetch(API + path, { method: opts.method || 'GET', body: opts.body,
                                   headers: headers(opts.headers) });
  } catch (e) {
    throw new Error('the server cannot be reached (' + e.message + ')');
  }
  let body = null;
  const type = r.headers.get('Content-Type') || '';
  if (type.includes('json')) body = await r.json().catch(() => null);
  if (!r.ok) {
    const d = body && (body.detail || body.error);
    const msg = r.status === 401 ? 'this server needs an access token (top right): ' + (d || '')
                                 : (d || r.status + ' ' + r.statusText);
    const err = new Error(msg);
    err.status = r.status;
    throw err;
  }
  return body;
}

/* <img> cannot send an Authorization header: with a token, images are
 * fetched and shown through object URLs; without one the URL is used as is so
 * that the browser caches it. */
const blobCache = new Map();
async function imageUrl(path) {
  if (!token()) return API + path;
  if (blobCache.has(path)) return blobCache.get(path);
  const r = await fetch(API + path, { headers: headers() });
  if (!r.ok) throw new Error('image ' + r.status);
  const u = URL.createObjectURL(await r.blob());
  blobCache.set(path, u);
  return u;
}

function setImage(img, path, fallbackText) {
  img.dataset.path = path;
  img.classList.remove('broken');
  img.onerror = () => { img.alt = fallbackText || 'image unavailable'; img.classList.add('broken'); };
  imageUrl(path).then((u) => { if (img.dataset.path === path) img.src = u; })
    .catch(() => { img.alt = fallbackText || 'image unavailable'; img.classList.add('broken'); });
}

/* ---- small DOM helpers --------------------------------------------------- */

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k === 'style') e.style.cssText = v;  /* CSSOM: the server's CSP forbids style attributes */
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const kid of kids.flat()) if (kid !== null && kid !== undefined)
    e.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  return e;
}

function showError(msg) {
  const box = $('#error');
  box.textContent = msg || '';
  box.hidden = !msg;
}

function short(s, n) { return s.length > n ? s.slice(0, n - 1).trimEnd() + '…' : s; }

function fmtScore(x) { return typeof x === 'number' ? x.toFixed(3) : '–'; }

function dxLabel(c) {
  /* A study carries the same diagnosis in several systems: show the
   * plainest name (the shortest label) with the ICD-10 code where there is one. */
  const ds = c.diagnoses || [];
  if (!ds.length) return 'no coded diagnosis';
  const named = ds.filter((x) => x.label).sort((a, b) => a.label.length - b.label.length);
  const icd = ds.find((x) => /ICD/i.test(x.system || '')) || ds[0];
  return named.length ? named[0].label + ' (' + icd.code + ')' : icd.code;
}

const VIEW_NAMES = { cine_sax: 'short axis cine', cine_2ch: '2-chamber cine', cine_3ch: '3-chamber cine',
  cine_4ch: '4-chamber cine', lge_sax: 'short axis LGE', lge_2ch: '2-chamber LGE',
  lge_3ch: '3-chamber LGE', lge_4ch: '4-chamber LGE' };

function cineView(views) {
  views = views || [];
  return ['cine_sax', 'cine_4ch', 'cine_2ch', 'cine_3ch'].find((v) => views.includes(v)) || views[0];
}

/* ---- header: health, token ---------------------------------------------- */

async function loadHealth() {
  try {
    const h = await api('/health');
    const m = h.model && h.model.name ? ' · model ' + h.model.name : '';
    $('#status').textContent = h.cases + ' cases' + m;
    return true;
  } catch (e) {
    $('#status').textContent = e.message;
    return false;
  }
}

$('#token').value = token();
$('#token-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  sessionStorage.setItem('cmrsearch.token', $('#token').value.trim());
  blobCache.clear();
  state.text = '';           /* so that route() runs the query again, now with the token */
  state.caseQuery = null;
  init();
});

/* ---- search: suggestions and filter chips -------------------------------- */

async function loadPrompts() {
  let prompts = [];
  try { prompts = (await api('/prompts')).prompts || []; } catch (e) { return []; }
  const list = $('#prompt-list');
  list.replaceChildren();
  const seen = new Set();
  for (const p of prompts) {
    if (!p.phrase || seen.has(p.phrase)) continue;
    seen.add(p.phrase);
    list.append(el('option', { value: p.phrase }));
  }
  const box = $('#suggest');
  box.replaceChildren(el('span', { class: 'hint', text: 'Try:' }));
  for (const p of [...seen].slice(0, 5))
    box.append(el('button', { type: 'button', class: 'link', text: p,
      onclick: () => { $('#q').value = p; runSearch({ text: p }); } }));
  return prompts;
}

/* Chips map to clauses of the --where grammar.  The grammar is a conjunction,
 * so chips of one group either combine into one clause (diagnosis in (...))
 * or exclude each other (one site, one sex, one date range). */
const GROUPS = {
  diagnosis: { multi: true, clause: (vals) => 'diagnosis in (' + vals.map(word).join(', ') + ')' },
  site: { clause: (v) => 'site = ' + quote(v[0]) },
  sex: { clause: (v) => 'sex = ' + v[0] },
  date: { clause: (v) => v[0] },
  age: { clause: (v) => v[0] },
  finding: { multi: true, clause: (vals) => vals.map((f) => 'has ' + f).join(' and ') },
};

/* A value stays bare when the grammar allows it, else it is quoted. */
function quote(v) { return '"' + v.replace(/["\\]/g, '\\$&') + '"'; }
function word(v) { return /^[\p{L}\p{N}._:\/+-]+$/u.test(v) ? v : quote(v); }

function chipKey(group, value) { return group + '\u0000' + value; }

function whereExpr() {
  const by = {};
  for (const key of state.chips) {
    const [g, v] = key.split('\u0000');
    (by[g] = by[g] || []).push(v);
  }
  return Object.keys(GROUPS).filter((g) => by[g]).map((g) => GROUPS[g].clause(by[g])).join(' and ');
}

function toggleChip(group, value) {
  const key = chipKey(group, value);
  if (state.chips.has(key)) state.chips.delete(key);
  else {
    if (!GROUPS[group].multi)
      for (const k of [...state.chips]) if (k.startsWith(group + '\u0000')) state.chips.delete(k);
    state.chips.add(key);
  }
  renderChips();
  if (state.text || state.caseQuery) runSearch({});
}

/* A diagnosis is coded in several systems (ICD-10 and SNOMED CT in the
 * phantom's reports): chips and counts use the non-numeric (ICD) codes when
 * there are any, so that each diagnosis appears once. */
function chipDiagnoses(stats) {
  const ds = ((stats && stats.diagnoses) || []).filter((d) => d.code && d.cases > 0);
  const icd = ds.filter((d) => !/^\d+$/.test(d.code));
  return icd.length ? icd : ds;
}

function renderChips() {
  const box = $('#filters');
  box.replaceChildren();
  const stats = state.stats || {};
  const groups = [
    ['Diagnosis', 'diagnosis', chipDiagnoses(stats).slice(0, 12).map((d) => [d.code, short(d.label || d.code, 26), d.label])],
    ['Site', 'site', (stats.sites || []).filter((s) => s.site).map((s) => [s.site, s.site])],
    ['Sex', 'sex', [['F', 'female'], ['M', 'male']]],
    ['Date', 'date', [['date >= 2020-01-01', 'since 2020'], ['date >= 2015-01-01', 'since 2015'],
      ['date < 2015-01-01', 'before 2015']]],
    ['Age', 'age', [['age < 40', 'under 40'], ['age between 40 and 69', '40–69'], ['age >= 70', '70 and over']]],
  ];
  if (state.findings && state.findings.length) groups.push(['Finding', 'finding', state.findings]);
  for (const [title, group, items] of groups) {
    if (!items.length) continue;
    const row = el('div', { class: 'chiprow', role: 'group', 'aria-labelledby': 'chips-' + group },
      el('span', { class: 'chiptitle', id: 'chips-' + group, text: title }));
    for (const [value, label, full] of items) {
      const on = state.chips.has(chipKey(group, value));
      row.append(el('button', { type: 'button', class: 'chip' + (on ? ' on' : ''), 'aria-pressed': on ? 'true' : 'false',
        title: (full ? full + ': ' : '') + GROUPS[group].clause([value]), 'data-group': group, 'data-value': value, text: label,
        onclick: () => toggleChip(group, value) }));
    }
    box.append(row);
  }
  const w = whereExpr();
  $('#where-line').replaceChildren(w ? el('span', {}, 'Filter: ', el('code', { text: w }), ' ',
    el('button', { type: 'button', class: 'link', text: 'clear',
      onclick: () => { state.chips.clear(); renderChips(); if (state.text || state.caseQuery) runSearch({}); } }))
    : 'No filter: every case.');
}

/* ---- search: results grid ----------------------------------------------- */

function searchParams(extra) {
  const p = new URLSearchParams();
  if (state.caseQuery) p.set('case', state.caseQuery); else p.set('text', state.text);
  p.set('k', String(state.k));
  p.set('offset', String(state.offset));
  const w = whereExpr();
  if (w) p.set('where', w);
  if ($('#one-per-patient').checked) p.set('one_per_patient', 'true');
  for (const [k, v] of Object.entries(extra || {})) p.set(k, v);
  return p;
}

async function runSearch(opts) {
  if (opts.text !== undefined) { state.text = opts.text; state.caseQuery = null; }
  if (opts.caseQuery !== undefined) { state.caseQuery = opts.caseQuery; state.text = ''; }
  state.k = Number($('#k').value) || 24;
  state.offset = opts.append ? state.offset + state.k : 0;
  const hash = '#/search?' + new URLSearchParams(state.caseQuery ? { case: state.caseQuery } : { text: state.text });
  if (location.hash !== hash) history.replaceState(null, '', hash);
  state.lastResults = hash;
  showView('search');
  showError('');
  const grid = $('#results');
  if (!opts.append) grid.replaceChildren();
  $('#search-summary').textContent = 'Searching…';
  grid.setAttribute('aria-busy', 'true');
  const seq = ++state.seq;  /* a later search (another chip) wins over a slower earlier one */
  try {
    const r = await api('/search?' + searchParams());
    if (seq !== state.seq) return;
    const what = state.caseQuery ? 'cases like case ' + state.caseQuery : '“' + state.text + '”';
    const shown = grid.children.length + r.results.length;
    $('#search-summary').textContent = shown + ' of ' + r.n_matching + ' matching cases for ' + what +
      (typeof r.took_us === 'number' ? ' · ' + (r.took_us / 1000).toFixed(1) + ' ms' : '');
    for (const hit of r.results) grid.append(card(hit));
    $('#more').hidden = r.results.length < state.k || shown >= Math.min(r.n_matching, 1000);
  } catch (e) {
    if (seq !== state.seq) return;
    $('#search-summary').textContent = '';
    showError(e.message);
  } finally {
    if (seq === state.seq) grid.removeAttribute('aria-busy');
  }
}

/* A card shows the first frame; hovering or focusing it swaps in the
 * animated cine (APNG) of the same view, so the grid stays cheap until a
 * case is looked at. */
function card(hit) {
  const c = hit.case || hit;
  const view = cineView(c.views);
  const img = el('img', { class: 'thumb', alt: 'case ' + c.id + ' ' + (VIEW_NAMES[view] || view || ''),
    width: 160, height: 120, loading: 'lazy' });
  if (view) setImage(img, '/cases/' + c.id + '/thumbnail.png?view=' + view);
  else img.classList.add('broken');
  const play = () => { if (view) { img.classList.add('playing'); setImage(img, '/cases/' + c.id + '/cine.png?view=' + view); } };
  const stop = () => { if (view) { img.classList.remove('playing'); setImage(img, '/cases/' + c.id + '/thumbnail.png?view=' + view); } };
  const sim = hit.similarity || {};
  const a = el('a', { class: 'card', href: '#/case/' + c.id, 'data-id': c.id, 'data-sex': c.sex,
    onmouseenter: play, onmouseleave: stop, onfocus: play, onblur: stop },
  img,
  el('span', { class: 'dxname', text: dxLabel(c) }),
  el('span', { class: 'sub', text: [c.study_date, c.sex, c.age != null ? c.age + ' y' : null, c.site]
    .filter(Boolean).join(' · ') }),
  el('span', { class: 'score', title: 'fused score; image and impression similarity',
    text: 'score ' + fmtScore(hit.score) + ' · img ' + fmtScore(sim.image) + ' · txt ' + fmtScore(sim.text) }),
  hit.closest_sentence ? el('span', { class: 'closest', text: '“' + hit.closest_sentence + '”' }) : null);
  return el('li', {}, a);
}

$('#search-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const t = $('#q').value.trim();
  if (t) runSearch({ text: t });
});
$('#more').addEventListener('click', () => runSearch({ append: true }));
for (const id of ['#k', '#one-per-patient'])
  $(id).addEventListener('change', () => { if (state.text || state.caseQuery) runSearch({}); });

/* ---- case detail -------------------------------------------------------- */

async function showCase(id) {
  showView('case');
  showError('');
  $('#case-h').textContent = 'Case ' + id;
  for (const s of ['#case-media', '#case-dx', '#case-meta', '#case-findings', '#case-zeroshot']) $(s).replaceChildren();
  $('#case-impression').textContent = 'Loading…';
  $('#back').href = state.lastResults;
  let c;
  try { c = await api('/cases/' + encodeURIComponent(id)); } catch (e) {
    $('#case-impression').textContent = '';
    showError(e.message);
    return;
  }
  $('#case-h').textContent = 'Case ' + c.id + ': ' + dxLabel(c);
  $('#case-impression').textContent = c.impression || 'No impression was found in the report.';
  for (const d of c.diagnoses || [])
    $('#case-dx').append(el('li', {}, el('code', { text: d.code }), ' ', d.label || '', d.system ? ' · ' + d.system : ''));
  if (!(c.diagnoses || []).length) $('#case-dx').append(el('li', { text: 'none coded' }));
  const meta = [['Date', c.study_date], ['Sex', c.sex], ['Age', c.age], ['Site', c.site],
    ['Scanner', [c.manufacturer, c.scanner_model, c.field_strength ? c.field_strength + ' T' : null].filter(Boolean).join(' ')],
    ['Study UID', c.study_uid], ['Model', c.model], ['Indexed', c.ingest_time]];
  for (const [k, v] of meta) if (v !== null && v !== undefined && v !== '')
    $('#case-meta').append(el('dt', { text: k }), el('dd', { text: String(v) }));
  /* The prompt bank scores findings and, as a softmax over the diagnosis
   * prompts, diagnoses: shown apart, the diagnoses' top three only. */
  const all = (c.findings || []).slice().sort((a, b) => b.score - a.score);
  const isDx = (f) => state.kinds[f.name] === 'diagnosis';
  fillScores('#case-findings', all.filter((f) => !isDx(f)));
  fillScores('#case-zeroshot', all.filter(isDx).slice(0, 3));
  const media = $('#case-media');
  if (c.images_available === false)
    media.append(el('p', { class: 'note', text: 'The study\'s source files are no longer readable: no images.' }));
  else for (const v of c.views || []) {
    const isCine = v.startsWith('cine_');
    const img = el('img', { class: 'cine', alt: (VIEW_NAMES[v] || v) + ' of case ' + c.id, width: 192, height: 192,
      'data-view': v });
    setImage(img, '/cases/' + c.id + '/' + (isCine ? 'cine.png' : 'thumbnail.png') + '?view=' + v);
    media.append(el('figure', {}, img, el('figcaption', { text: VIEW_NAMES[v] || v })));
  }
  $('#similar').onclick = () => { location.hash = '#/search?case=' + c.id; };
}

function fillScores(list, scores) {
  $(list).replaceChildren();
  $(list + '-h').hidden = !scores.length;
  for (const f of scores) {
    const name = state.labels[f.name] || f.name.replace(/_/g, ' ');
    $(list).append(el('li', {}, el('span', { class: 'fname', text: name }),
      el('meter', { min: 0, max: 1, value: f.score, 'aria-label': name, title: f.score.toFixed(2) }),
      el('span', { class: 'fval', text: f.score.toFixed(2) })));
  }
}

/* ---- views and routing -------------------------------------------------- */

const TITLES = { search: 'Search', case: 'Case', study: 'Compare a study', audit: 'Audit' };
function showView(name) {
  document.title = TITLES[name] + ' · cmrsearch';
  for (const v of ['search', 'case', 'study', 'audit']) $('#view-' + v).hidden = v !== name;
  for (const t of ['search', 'study', 'audit']) {
    const on = t === name || (t === 'search' && name === 'case');
    $('#tab-' + t).classList.toggle('on', on);
    if (on) $('#tab-' + t).setAttribute('aria-current', 'page'); else $('#tab-' + t).removeAttribute('aria-current');
  }
}

function route() {
  const h = location.hash || '#/search';
  const [path, query] = h.slice(1).split('?');
  const q = new URLSearchParams(query || '');
  let m;
  if ((m = path.match(/^\/case\/(\d+)$/))) return showCase(m[1]);
  if (path === '/study') return showView('study');
  if (path === '/audit') return showAudit();
  showView('search');
  if (q.get('case') && q.get('case') !== String(state.caseQuery)) return runSearch({ caseQuery: q.get('case') });
  if (q.get('text') && q.get('text') !== state.text) {
    $('#q').value = q.get('text');
    return runSearch({ text: q.get('text') });
  }
}

window.addEventListener('hashchange', route);

async function loadStats() {
  try { state.stats = await api('/stats'); } catch (e) { state.stats = null; }
  return state.stats;
}

async function init() {
  showError('');
  const ok = await loadHealth();
  if (!ok) { showError($('#status').textContent); route(); return; }
  const [prompts] = await Promise.all([loadPrompts(), loadStats()]);
  /* The prompt bank's findings become "has X" chips (X scored >= 0.5). */
  for (const p of prompts) if (p.name) { state.labels[p.name] = p.label; state.kinds[p.name] = p.kind; }
  const seen = new Set();
  state.findings = prompts.filter((p) => p.kind === 'finding' && p.name && !seen.has(p.name) && seen.add(p.name))
    .map((p) => [p.name, p.label || p.name.replace(/_/g, ' ')]);
  renderChips();
  if (window.matchMedia('(max-width: 760px)').matches) $('#facets').open = false;
  route();
}


/* ---- a minimal DICOM reader for the dropped study's preview -------------
 * Uncompressed little-endian MR only (implicit or explicit VR): enough to
 * play the query's own cine beside each hit.  Compressed transfer syntaxes
 * are reported, not decoded. */

const TS_NAMES = { '1.2.840.10008.1.2.4.80': 'JPEG-LS lossless', '1.2.840.10008.1.2.4.81': 'JPEG-LS near-lossless',
  '1.2.840.10008.1.2.4.70': 'JPEG lossless', '1.2.840.10008.1.2.4.57': 'JPEG lossless',
  '1.2.840.10008.1.2.4.50': 'JPEG baseline', '1.2.840.10008.1.2.4.90': 'JPEG 2000 lossless',
  '1.2.840.10008.1.2.4.91': 'JPEG 2000', '1.2.840.10008.1.2.5': 'RLE', '1.2.840.10008.1.2.2': 'big-endian' };
const LONG_VRS = new Set(['OB', 'OW', 'OF', 'OD', 'OL', 'OV', 'SQ', 'UT', 'UN', 'UC', 'UR', 'SV', 'UV']);
/* Implicit VR needs the VR of the few tags we read: strings unless listed. */
const US_TAGS = new Set(['00280010', '00280011', '00280100', '00280103']);
const WANT = { '0020000E': 'series', '0008103E': 'desc', '00200013': 'instance', '00200032': 'pos',
  '00201041': 'sliceloc', '00181060': 'trigger', '00280010': 'rows', '00280011': 'cols',
  '00280100': 'bits', '00280103': 'signed', '00280008': 'frames', '00281050': 'wc', '00281051': 'ww',
  '00281052': 'intercept', '00281053': 'slope', '00020010': 'ts', '00280004': 'photometric' };

function parseDicom(buf) {
  const dv = new DataView(buf);
  const out = { framePos: [] };
  let off = 0;
  let explicit = true;
  if (buf.byteLength > 132 && dv.getUint32(128) === 0x4449434d) off = 132;  /* "DICM" */
  else explicit = /^[A-Z]{2}$/.test(String.fromCharCode(dv.getUint8(4), dv.getUint8(5)));
  const str = (o, n) => new TextDecoder('latin1').decode(new Uint8Array(buf, o, n)).replace(/[\0 ]+$/, '').trim();
  /* depth > 0 inside sequence items; perFrame inside (5200,9230). */
  function walk(start, end, explicit, depth, perFrame) {
    let p = start;
    while (p + 8 <= end) {
      const g = dv.getUint16(p, true), e = dv.getUint16(p + 2, true);
      const tag = ((g << 16) | e) >>> 0;
      if (tag === 0xfffee00d || tag === 0xfffee0dd) return p + 8;  /* item / sequence end */
      const ex = explicit || g === 2;
      let vr = null, len, hdr;
      if (g === 0xfffe) { len = dv.getUint32(p + 4, true); hdr = 8; }  /* an item: descend */
      else if (ex) {
        vr = String.fromCharCode(dv.getUint8(p + 4), dv.getUint8(p + 5));
        if (LONG_VRS.has(vr)) { len = dv.getUint32(p + 8, true); hdr = 12; } else { len = dv.getUint16(p + 6, true); hdr = 8; }
      } else { len = dv.getUint32(p + 4, true); hdr = 8; }
      const key = tag.toString(16).toUpperCase().padStart(8, '0');
      const v0 = p + hdr;
      if (g === 2 && e === 0x10) explicit = str(v0, len) !== '1.2.840.10008.1.2';
      if (tag === 0x7fe00010) {
        if (len === 0xffffffff) { out.encapsulated = true; return end; }
        out.pixelOffset = v0; out.pixelLength = len;
        return end;
      }
      const isSeq = vr === 'SQ' || len === 0xffffffff || g === 0xfffe;
      if (isSeq) {
        const inFrame = perFrame || tag === 0x52009230;
        if (len === 0xffffffff) p = walk(v0, end, explicit, depth + 1, inFrame);
        else { walk(v0, Math.min(end, v0 + len), explicit, depth + 1, inFrame); p = v0 + len; }
        continue;
      }
      if (v0 + len > end) break;
      const name = WANT[key];
      if (name === 'pos' && perFrame) out.framePos.push(str(v0, len));
      else if (name && depth === 0) {
        if ((vr === 'US' || (!vr && US_TAGS.has(key))) && len >= 2) out[name] = dv.getUint16(v0, true);
        else out[name] = str(v0, len);
      }
      p = v0 + len;
    }
    return p;
  }
  /* The meta group is explicit; the dataset follows the transfer syntax. */
  walk(off, buf.byteLength, explicit, 0, false);
  return out;
}

function viewOf(desc) {
  const d = (desc || '').toLowerCase();
  if (/lge|mde|psir|delayed|ir_tfe|de_|stir|loc|flow|pc_|scout|survey|report|sr\b/.test(d)) return null;
  if (/4ch|4 chamber/.test(d)) return 'cine_4ch';
  if (/2ch|2 chamber/.test(d)) return 'cine_2ch';
  if (/3ch|lvot|3 chamber/.test(d)) return 'cine_3ch';
  if (/sax|short|(^|[^a-z])sa($|[^a-z])/.test(d)) return 'cine_sax';
  return 'cine';
}

/* Reads the dropped files, picks the mid slice of the short-axis cine (else a
 * long-axis cine) and returns {view, frames: [ImageData], note}. */
async function studyPreview(files) {
  const images = [];
  let compressed = null;
  for (const f of files) {
    if (f.size < 256 || f.size > 64 << 20) continue;
    let d;
    try { d = parseDicom(await f.arrayBuffer()); } catch (e) { continue; }
    if (!d.rows || !d.cols) continue;
    if (d.encapsulated || (d.ts && d.ts !== '1.2.840.10008.1.2' && d.ts !== '1.2.840.10008.1.2.1')) {
      compressed = TS_NAMES[d.ts] || 'transfer syntax ' + d.ts;
      continue;
    }
    const view = viewOf(d.desc);
    if (!view) continue;
    d.file = f;
    d.view = view;
    images.push(d);
  }
  const byView = {};
  for (const d of images) {
    const n = Number(d.frames) || 1;
    const positions = n > 1 && d.framePos.length === n ? d.framePos : [d.pos || d.sliceloc || '?'];
    for (let i = 0; i < n; i++) {
      const pos = (positions[i] || positions[0]).split('\\').map((x) => Math.round(Number(x))).join(',');
      ((byView[d.view] = byView[d.view] || {})[pos] = byView[d.view][pos] || [])
        .push({ d, frame: i, t: Number(d.trigger) || Number(d.instance) * 1000 + i });
    }
  }
  const order = ['cine_sax', 'cine_4ch', 'cine_2ch', 'cine_3ch', 'cine'];
  for (const view of order) {
    /* Slices of a stack lie on a line: sorting positions coordinate by
     * coordinate orders them along it, so the middle one is the mid slice. */
    const keys = Object.keys(byView[view] || {}).filter((k) => byView[view][k].length >= 3);
    const num = (k) => k.split(',').map(Number);
    keys.sort((x, y) => { const a = num(x), b = num(y); for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] - b[i]; return 0; });
    const slices = keys.map((k) => byView[view][k]);
    if (!slices.length) continue;
    const mid = slices[Math.floor(slices.length / 2)].sort((a, b) => a.t - b.t);
    const frames = [];
    for (const s of mid.slice(0, 60)) frames.push(await decodeFrame(s.d, s.frame));
    return { view: view === 'cine' ? 'cine_sax' : view, frames,
      note: 'Query: ' + (VIEW_NAMES[view] || 'cine') + ', ' + frames.length + ' frames' };
  }
  return { frames: [], note: compressed ? 'Preview unavailable: the study is compressed (' + compressed +
    '); this page reads only uncompressed DICOM.' : 'Preview unavailable: no uncompressed cine series found.' };
}

async function decodeFrame(d, frame) {
  const buf = d.buf || (d.buf = await d.file.arrayBuffer());  /* a multi-frame file is read once */
  const n = d.rows * d.cols, bytes = d.bits === 16 ? 2 : 1;
  const start = d.pixelOffset + frame * n * bytes;
  const px = bytes === 2 ? (d.signed === 1 ? new Int16Array(buf.slice(start, start + 2 * n))
    : new Uint16Array(buf.slice(start, start + 2 * n))) : new Uint8Array(buf, start, n);
  /* Window: the file's own centre/width if given, else the 1st-99th percentile. */
  let lo, hi;
  const wc = parseFloat(String(d.wc || '').split('\\')[0]), ww = parseFloat(String(d.ww || '').split('\\')[0]);
  const slope = parseFloat(d.slope) || 1, icpt = parseFloat(d.intercept) || 0;
  if (isFinite(wc) && isFinite(ww) && ww > 0) { lo = wc - ww / 2; hi = wc + ww / 2; } else {
    const s = Array.from(px).sort((a, b) => a - b);
    lo = s[Math.floor(s.length * 0.01)] * slope + icpt; hi = s[Math.floor(s.length * 0.99)] * slope + icpt;
  }
  const img = new ImageData(d.cols, d.rows);
  const scale = 255 / Math.max(1e-6, hi - lo), inv = d.photometric === 'MONOCHROME1';
  for (let i = 0; i < n; i++) {
    let v = Math.max(0, Math.min(255, ((px[i] * slope + icpt) - lo) * scale));
    if (inv) v = 255 - v;
    img.data[4 * i] = img.data[4 * i + 1] = img.data[4 * i + 2] = v;
    img.data[4 * i + 3] = 255;
  }
  return img;
}

/* One timer plays the query's frames on every canvas of the comparison. */
const player = { frames: [], i: 0, timer: null, canvases: [], shown: 0 };
function playQuery(frames) {
  player.frames = frames; player.i = 0; player.shown = 0;
  clearInterval(player.timer);
  if (!frames.length) return;
  player.timer = setInterval(() => {
    player.canvases = player.canvases.filter((c) => c.isConnected);
    const f = player.frames[player.i];
    for (const c of player.canvases) {
      if (c.width !== f.width) { c.width = f.width; c.height = f.height; }
      c.getContext('2d').putImageData(f, 0, 0);
      c.dataset.frame = String(player.i);
    }
    player.shown++;
    player.i = (player.i + 1) % player.frames.length;
  }, 60);
}

function queryCanvas(preview) {
  if (!preview.frames.length) return el('div', { class: 'nopreview', text: preview.note });
  const c = el('canvas', { class: 'cine query', 'aria-label': preview.note, role: 'img', width: 192, height: 192 });
  player.canvases.push(c);
  return c;
}

/* Folder drops are walked with the entries API; a zip goes up as is. */
async function filesFromDrop(dt) {
  const entries = [...dt.items].map((it) => it.webkitGetAsEntry && it.webkitGetAsEntry()).filter(Boolean);
  if (!entries.length) return [...dt.files];
  const out = [];
  async function walk(entry) {
    if (entry.isFile) out.push(await new Promise((res, rej) => entry.file(res, rej)));
    else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
        if (!batch.length) break;
        for (const e of batch) await walk(e);
      }
    }
  }
  for (const e of entries) await walk(e);
  return out;
}

async function searchStudy(files) {
  state.studyFiles = files;
  showView('study');
  showError('');
  const list = $('#compare');
  list.replaceChildren();
  files = files.filter((f) => f.size > 0 && !/\.(xml|txt|pdf|json)$/i.test(f.name));
  if (!files.length) { showError('No files were dropped.'); return; }
  const isZip = files.length === 1 && /\.zip$/i.test(files[0].name);
  $('#study-summary').textContent = 'Reading and searching ' + (isZip ? files[0].name : files.length + ' files') + '…';
  let body, hdr = {};
  if (isZip) { body = files[0]; hdr['Content-Type'] = 'application/zip'; } else {
    body = new FormData();
    for (const f of files) body.append('file', f, f.name);
  }
  const previewP = isZip ? Promise.resolve({ frames: [],
    note: 'Preview unavailable for a zip: browsers cannot open zip entries without a library; drop the folder to see the cine.' })
    : studyPreview(files).catch((e) => ({ frames: [], note: 'Preview unavailable: ' + e.message }));
  let r;
  try {
    /* Images only: the study against the stored studies' image vectors; the
     * default fuses that with the impressions' vectors (cross-modal). */
    const imagesOnly = document.querySelector('input[name=matchon]:checked').value === 'image';
    r = await api('/search/study?k=6' + (imagesOnly ? '&w_image=1&w_text=0' : ''), { method: 'POST', body, headers: hdr });
  } catch (e) {
    $('#study-summary').textContent = '';
    showError(e.message);
    return;
  }
  const preview = await previewP;
  $('#study-summary').textContent = r.results.length + ' similar cases of ' + r.n_matching +
    (r.query && r.query.files ? ' · ' + r.query.files + ' DICOM files read' : '') + ' · ' + preview.note;
  for (const hit of r.results) {
    const c = hit.case || hit;
    const view = (c.views || []).includes(preview.view) ? preview.view : cineView(c.views);
    const img = el('img', { class: 'cine', alt: (VIEW_NAMES[view] || view) + ' of case ' + c.id, width: 192, height: 192 });
    if (view) setImage(img, '/cases/' + c.id + '/cine.png?view=' + view);
    const sim = hit.similarity || {};
    list.append(el('li', { class: 'pair', 'data-id': c.id, 'data-image': sim.image },
      el('figure', {}, queryCanvas(preview), el('figcaption', { text: 'your study' })),
      el('figure', {}, img, el('figcaption', { text: 'case ' + c.id + ' · ' + (VIEW_NAMES[view] || view || '') })),
      el('div', { class: 'pairinfo' },
        el('h3', {}, el('a', { href: '#/case/' + c.id, text: '#' + hit.rank + ' ' + dxLabel(c) })),
        el('p', { class: 'sub', text: [c.study_date, c.site, 'score ' + fmtScore(hit.score),
          'image ' + fmtScore(sim.image)].filter(Boolean).join(' · ') }),
        el('p', { class: 'impression', text: c.impression || 'No impression.' }))));
  }
  playQuery(preview.frames);
}

const drop = $('#drop');
drop.addEventListener('dragover', (ev) => { ev.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', async (ev) => {
  ev.preventDefault();
  drop.classList.remove('over');
  searchStudy(await filesFromDrop(ev.dataTransfer));
});
drop.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); $('#pick-dir').click(); } });
for (const r of document.querySelectorAll('input[name=matchon]'))
  r.addEventListener('change', () => { if (state.studyFiles) searchStudy(state.studyFiles); });
for (const id of ['#pick-dir', '#pick-files', '#pick-zip'])
  $(id).addEventListener('change', (ev) => { if (ev.target.files.length) searchStudy([...ev.target.files]); ev.target.value = ''; });

/* ---- audit dashboard ---------------------------------------------------- */

function bars(ul, rows) {
  ul.replaceChildren();
  const max = Math.max(1, ...rows.map((r) => r[1]));
  for (const [label, n, title] of rows)
    ul.append(el('li', { title: title || label }, el('span', { class: 'blabel', text: label }),
      el('span', { class: 'bar', style: 'width:' + (100 * n / max).toFixed(1) + '%' }),
      el('span', { class: 'bnum', text: String(n) })));
}

/* The audit report lists findings; older servers only report consistency
 * (sound, problems).  Both become rows of one table. */
function auditRows(a) {
  const rows = [];
  for (const f of a.findings || []) {
    /* One case (case_id), or a pair (other_case_id) for a duplicate. */
    const ids = f.cases || [f.case_id, f.other_case_id].filter((x) => x);
    const uids = f.study_uids || [f.study_uid, f.other_study_uid].filter((x) => x);
    rows.push({ kind: f.kind || 'finding', ids, uids, confidence: f.confidence, reason: f.reason || '',
      suggested: f.suggested ? (f.recorded ? f.recorded + ' → ' : '') + f.suggested : '' });
  }
  /* A consistency-only report lists problems; a full one has them as findings too. */
  if (!a.findings) for (const p of a.problems || []) rows.push({ kind: 'inconsistency', ids: [], uids: [], reason: String(p) });
  return rows;
}

async function showAudit() {
  showView('audit');
  showError('');
  $('#audit-summary').textContent = 'Running the audit…';
  const [stats, audit] = await Promise.all([loadStats(), api('/audit').catch((e) => { showError(e.message); return null; })]);
  if (stats) {
    bars($('#bars-dx'), chipDiagnoses(stats).map((d) => [d.code + (d.label ? ' ' + d.label : ''), d.cases, d.label || d.code]));
    bars($('#bars-site'), (stats.sites || []).map((s) => [s.site || 'unknown', s.cases]));
    const v = stats.vectors || {};
    const tiles = [['cases', stats.cases], ['study vectors', v.image], ['impression vectors', v.text],
      ['queries logged', stats.queries]].filter((t) => t[1] != null);
    $('#tiles').replaceChildren(...tiles.map(([k, n]) => el('div', {}, el('dt', { text: k }), el('dd', { text: String(n) }))));
  }
  if (!audit) { $('#audit-summary').textContent = ''; return; }
  state.audit = auditRows(audit);
  const kinds = {};
  for (const r of state.audit) kinds[r.kind] = (kinds[r.kind] || 0) + 1;
  const n = audit.cases_checked != null ? audit.cases_checked : audit.cases;
  $('#audit-summary').textContent = (audit.sound === false ? 'Store: NOT sound. ' : audit.sound ? 'Store: sound. ' : '') +
    state.audit.length + ' findings' + (n != null ? ' over ' + n + ' cases' : '') + '.' +
    (audit.findings ? '' : ' This server reports only the store\'s consistency.') +
    (audit.notes && audit.notes.length ? ' Notes: ' + audit.notes.join('; ') : '');
  const chips = $('#audit-kinds');
  chips.replaceChildren();
  for (const k of Object.keys(kinds).sort()) {
    const on = state.auditKind === k;
    chips.append(el('button', { type: 'button', class: 'chip' + (on ? ' on' : ''), 'aria-pressed': on ? 'true' : 'false',
      'data-kind': k, text: k.replace(/_/g, ' ') + ' (' + kinds[k] + ')',
      onclick: () => { state.auditKind = on ? null : k; showAudit(); } }));
  }
  const tbody = $('#audit-rows');
  tbody.replaceChildren();
  for (const r of state.audit) {
    if (state.auditKind && r.kind !== state.auditKind) continue;
    const cases = el('td', { class: 'cases' });
    r.ids.forEach((id, i) => {
      const img = el('img', { class: 'mini', alt: '', width: 48, height: 36 });
      setImage(img, '/cases/' + id + '/thumbnail.png');
      cases.append(el('a', { href: '#/case/' + id, title: r.uids[i] || '' }, img, ' case ' + id));
    });
    tbody.append(el('tr', { 'data-kind': r.kind, 'data-cases': r.ids.join(','), 'data-uids': r.uids.join(',') },
      el('td', {}, el('span', { class: 'kind k-' + r.kind, text: r.kind.replace(/_/g, ' ') })), cases,
      el('td', { text: typeof r.confidence === 'number' ? r.confidence.toFixed(2) : '' }),
      el('td', { text: r.reason }), el('td', { text: r.suggested })));
  }
  if (!tbody.children.length) tbody.append(el('tr', {}, el('td', { colspan: 5, text: 'No findings.' })));
}

window.cmr = { state, api, runSearch, whereExpr, parseDicom, player };  /* for the end-to-end test and the console */
init();
