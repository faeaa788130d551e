'use strict';
// CaseFiles "Transfer Files" page: plain JavaScript, no framework, no build step.
// Everything user-supplied goes into the page with textContent, never as HTML.

// Chunk sizes follow the measured rate, as the CLI's ChunkSizer does (Sources/CaseFilesClient/ChunkSizer.swift):
// start at 8 MiB, aim each chunk at about 2 s, between 1 and 32 MiB, at most double or half per chunk.
const CHUNK = { initial: 8 * 1024 * 1024, minimum: 1024 * 1024, maximum: 32 * 1024 * 1024, targetSeconds: 2 };

function nextChunkSize(current, rate) {
  let next = CHUNK.minimum;
  while (next < CHUNK.maximum && next * 2 <= rate * CHUNK.targetSeconds) next *= 2;
  return Math.min(Math.max(next, current / 2), current * 2);
}
const MAX_RETRIES = 8;
const UPLOADS_KEY = 'casefiles.uploads';   // localStorage: unfinished uploads survive reloads and closed tabs
const TOKEN_KEY = 'casefiles.token';       // sessionStorage: the token lives in this tab only

const $ = (id) => document.getElementById(id);
const token = () => sessionStorage.getItem(TOKEN_KEY);

function el(tag, text, attributes = {}) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

function say(text) { $('message').textContent = text || ''; }

const HUMAN = {
  missing_token: 'Sign in with your access token first.',
  invalid_token: 'Your access token was not accepted (unknown or revoked). Sign in with a current one.',
  case_not_found: 'No case with that number is visible to you. Check the number, or sign in with the account that owns it.',
  case_closed: 'This case is closed, so it accepts no uploads. Reopen it (possible for a while after closure) or open a new case.',
  upload_gone: 'The server no longer has this upload (it expired or was removed). Pick the file again to start over.',
  checksum_mismatch: 'Part of the file was damaged on the way; it was sent again but failed twice. Check your connection and retry.',
  whole_file_digest_mismatch: 'The file arrived complete but its SHA-256 did not match: it changed while uploading or was damaged. Upload it again.',
  insufficient_storage: 'The server is out of disk space. Your progress is kept; resume later.',
  upload_too_large: 'This file is larger than the server accepts.',
  purged: 'This attachment was deleted under the retention policy.',
};

async function errorText(response) {
  try {
    const body = await response.json();
    return HUMAN[body.error] || body.message || `The server answered ${response.status}.`;
  } catch {
    return `The server answered ${response.status}.`;
  }
}

async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: 'Bearer ' + token() }, options.headers || {});
  let response;
  try {
    response = await fetch(path, Object.assign({}, options, { headers }));
  } catch {
    throw new Error('The server is unreachable. Check your connection; uploads resume by themselves when it is back.');
  }
  if (response.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    showSignIn(await errorText(response));
    throw new Error('signed out');
  }
  return response;
}

function formatBytes(count) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = count, unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit++; }
  return unit === 0 ? `${count} B` : `${value.toFixed(1)} ${units[unit]}`;
}

function formatDuration(seconds) {
  if (!isFinite(seconds)) return '--:--';
  const s = Math.round(seconds);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

const base64 = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes)));
const base64Text = (text) => base64(new TextEncoder().encode(text));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const backoff = (attempt) => Math.random() * Math.min(30000, 500 * 2 ** attempt);

// MARK: - Views

function show(section) {
  for (const id of ['signin', 'cases', 'case']) $(id).hidden = id !== section;
  $('signout').hidden = section === 'signin';
}

function showSignIn(message) {
  show('signin');
  say(message);
  $('token').focus();
}

async function showCases() {
  show('cases');
  // The listing comes in pages: follow `next` until the last one.
  const cases = [];
  for (let after = null; ;) {
    const response = await api('/api/v1/cases' + (after ? `?after=${encodeURIComponent(after)}` : ''));
    if (!response.ok) { say(await errorText(response)); return; }
    const page = await response.json();
    cases.push(...page.cases);
    if (!page.next) break;
    after = page.next;
  }
  const list = $('case-list');
  list.replaceChildren();
  for (const c of cases) {
    const item = el('li');
    item.append(el('a', `${c.number}: ${c.subject}`, { href: `/cases/${c.number}` }), el('span', ` (${c.status} / ${c.subStatus})`));
    list.append(item);
  }
  if (!list.children.length) list.append(el('li', 'No cases yet.'));
}

let currentCase = null;

async function showCase(number) {
  show('case');
  const response = await api(`/api/v1/cases/${encodeURIComponent(number)}`);
  if (!response.ok) {
    $('case-title').textContent = `Case ${number}`;
    $('case-status').textContent = '';
    say(await errorText(response));
    $('drop').hidden = true;
    return;
  }
  currentCase = await response.json();
  $('case-title').textContent = `Case ${currentCase.number}: ${currentCase.subject}`;
  $('case-status').textContent = `${currentCase.status} / ${currentCase.subStatus} · ${currentCase.priority} · ${currentCase.account}`;
  const closed = currentCase.status === 'Closed';
  $('closed-note').hidden = !closed;
  $('closed-note').textContent = closed ? HUMAN.case_closed : '';
  $('drop').classList.toggle('disabled', closed);
  $('files').disabled = closed;
  await refreshAttachments();
}

async function refreshAttachments() {
  // The listing comes in pages: follow `next` until the last one.
  const body = { attachments: [], uploads: [] };
  for (let after = null; ;) {
    const response = await api(`/api/v1/cases/${currentCase.number}/attachments` + (after ? `?after=${encodeURIComponent(after)}` : ''));
    if (!response.ok) { say(await errorText(response)); return; }
    const page = await response.json();
    body.attachments.push(...page.attachments);
    body.uploads.push(...page.uploads);
    if (!page.next) break;
    after = page.next;
  }
  const rows = $('attachments').tBodies[0];
  rows.replaceChildren();
  for (const a of body.attachments) {
    const row = el('tr', null, { 'data-id': a.id });
    row.append(el('td', a.filename), el('td', formatBytes(a.size)), el('td', a.sha256 || '', { class: 'sha' }),
      el('td', a.uploadedBy), el('td', new Date(a.uploadedAt).toLocaleString()),
      el('td', a.state, { class: `state-${a.state}` }));
    const cell = el('td');
    if (a.state === 'verified') {
      const button = el('button', 'Download', { type: 'button', 'aria-label': `Download ${a.filename}` });
      button.addEventListener('click', () => download(a.id));
      cell.append(button);
      const browse = el('button', 'Browse', { type: 'button', 'aria-label': `Browse inside ${a.filename}` });
      browse.addEventListener('click', () => window.browseBundle(a.id, a.filename));
      cell.append(browse);
    }
    row.append(cell);
    rows.append(row);
  }
  for (const u of body.uploads) {
    const percent = u.length ? Math.floor((u.offset * 100) / u.length) : 0;
    const row = el('tr', null, { 'data-id': u.id });
    row.append(el('td', u.filename), el('td', u.length ? formatBytes(u.length) : '?'), el('td', ''), el('td', ''),
      el('td', ''), el('td', `uploading ${percent}%`), el('td', ''));
    rows.append(row);
  }
}

/// A signed, short-lived link streams the file to disk: no bearer header needed, nothing held in memory.
async function download(id) {
  const response = await api(`/api/v1/attachments/${id}/link`, { method: 'POST' });
  if (!response.ok) { say(await errorText(response)); return; }
  const link = el('a', null, { href: (await response.json()).url, download: '' });
  document.body.append(link);
  link.click();
  link.remove();
}

// MARK: - Compressed chunks (the server's casefiles-content-encoding extension; README "Compressed uploads")

// Text-like files by name or MIME type: logs, traces, configuration, exports. Anything else (archives, images,
// dumps in a binary format) goes as it is: compressing it again costs CPU and saves nothing.
const TEXT_NAME = /\.(log|txt|text|out|err|trace|csv|tsv|json|ndjson|xml|ya?ml|ini|conf|cfg|properties|sql|html?|md)(\.\d+)?$/i;
const TEXT_TYPE = /^text\/|json|xml|yaml|javascript/;
// A chunk that would expand more than this on the server goes uncompressed: the server refuses bodies past its
// --max-compression-ratio (default 1000:1) as possible bombs.
const MAX_RATIO = 500;

function looksLikeText(file) {
  return typeof CompressionStream === 'function' && (TEXT_TYPE.test(file.type) || TEXT_NAME.test(file.name));
}

/// The chunk as one complete gzip stream (a Blob): Chromium cannot stream a request body over HTTP/1.1, so each
/// chunk is compressed whole before it is sent.
async function gzipChunk(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new CompressionStream('gzip'));
  return new Response(stream, { headers: { 'Content-Type': 'application/octet-stream' } }).blob();
}

// MARK: - Uploads (tus 1.0 with Upload-Checksum: sha256 per chunk)

const remembered = () => JSON.parse(localStorage.getItem(UPLOADS_KEY) || '{}');
function remember(key, url) { const all = remembered(); all[key] = url; localStorage.setItem(UPLOADS_KEY, JSON.stringify(all)); }
function forget(key) { const all = remembered(); delete all[key]; localStorage.setItem(UPLOADS_KEY, JSON.stringify(all)); }

class Transfer {
  constructor(caseNumber, file) {
    this.file = file;
    this.caseNumber = caseNumber;
    this.key = [caseNumber, file.name, file.size, file.lastModified].join('/');
    this.url = null;
    this.offset = 0;
    this.paused = false;
    this.compress = looksLikeText(file);
    this.bodyBytesSent = 0;
    this.render();
  }

  render() {
    this.row = el('li', null, { 'data-name': this.file.name });
    this.progress = el('progress', null, { max: String(this.file.size || 1), value: '0', 'aria-label': `Upload of ${this.file.name}` });
    this.status = el('span', 'waiting', { class: 'status' });
    const controls = el('div', null, { class: 'controls' });
    this.pauseButton = el('button', 'Pause', { type: 'button' });
    this.resumeButton = el('button', 'Resume', { type: 'button' });
    this.cancelButton = el('button', 'Cancel', { type: 'button' });
    this.resumeButton.hidden = true;
    this.pauseButton.addEventListener('click', () => this.pause());
    this.resumeButton.addEventListener('click', () => this.start());
    this.cancelButton.addEventListener('click', () => this.cancel());
    controls.append(this.pauseButton, this.resumeButton, this.cancelButton);
    this.row.append(el('div', this.file.name, { class: 'name' }), this.progress, this.status, controls);
    $('transfers').append(this.row);
  }

  /// `sent`: bytes of the current chunk's body on the wire; `scale`: file bytes per body byte (compressed chunks).
  report(sent, scale = 1) {
    const done = this.offset + Math.round(sent * scale);
    this.progress.value = done;
    const elapsed = (performance.now() - this.started) / 1000;
    const rate = (done - this.startOffset) / Math.max(elapsed, 0.001);
    const percent = this.file.size ? (done * 100) / this.file.size : 100;
    this.status.textContent = `uploading ${percent.toFixed(1)}% · ${formatBytes(done)} of ${formatBytes(this.file.size)} · `
      + `${formatBytes(rate)}/s · ETA ${formatDuration((this.file.size - done) / rate)}`
      + (this.compress ? ` · sent ${formatBytes(this.bodyBytesSent + sent)} compressed` : '');
  }

  async start() {
    this.paused = false;
    this.pauseButton.hidden = false;
    this.resumeButton.hidden = true;
    try {
      if (!this.url) {
        const known = remembered()[this.key];
        const offset = known ? await this.head(known) : null;
        if (offset !== null) {
          this.url = known;
          this.offset = offset;
          this.status.textContent = `resuming at ${formatBytes(offset)}`;
        } else {
          if (known) forget(this.key);
          await this.create();
        }
      }
      this.started = performance.now();
      this.startOffset = this.offset;
      await this.sendAll();
    } catch (error) {
      if (!this.paused) this.fail(error.message);
    }
  }

  async create() {
    const metadata = [`filename ${base64Text(this.file.name)}`];
    if (this.file.type) metadata.push(`filetype ${base64Text(this.file.type)}`);
    const response = await this.withRetries(() => api(`/api/v1/cases/${this.caseNumber}/uploads`, {
      method: 'POST',
      headers: { 'Tus-Resumable': '1.0.0', 'Upload-Length': String(this.file.size), 'Upload-Metadata': metadata.join(',') },
    }));
    if (response.status !== 201) throw new Error(await errorText(response));
    this.url = response.headers.get('Location');
    this.offset = 0;
    remember(this.key, this.url);
  }

  /// The committed offset, or null when the server no longer has the upload.
  async head(url) {
    const response = await this.withRetries(() => api(url, { method: 'HEAD', headers: { 'Tus-Resumable': '1.0.0' } }));
    if (response.status === 404 || response.status === 410) return null;
    if (!response.ok) throw new Error(`Checking the upload failed (${response.status}).`);
    return Number(response.headers.get('Upload-Offset'));
  }

  async withRetries(request) {
    for (let attempt = 0; ; attempt++) {
      try {
        const response = await request();
        if (response.status < 500 || attempt >= MAX_RETRIES) return response;
      } catch (error) {
        if (error.message === 'signed out' || attempt >= MAX_RETRIES) throw error;
      }
      this.status.textContent = 'connection problem: retrying…';
      await sleep(backoff(attempt));
    }
  }

  async sendAll() {
    let failures = 0, checksumFailures = 0;
    this.chunkSize = this.chunkSize || CHUNK.initial;
    while (this.offset < this.file.size && !this.paused) {
      const bytes = await this.file.slice(this.offset, this.offset + this.chunkSize).arrayBuffer();
      let body = bytes, encoding = null;
      if (this.compress) {
        const packed = await gzipChunk(bytes);
        if (packed.size < bytes.byteLength && packed.size * MAX_RATIO >= bytes.byteLength) { body = packed; encoding = 'gzip'; }
      }
      // Upload-Checksum covers the body as sent (the compressed blob); the server checks the file's SHA-256.
      const checksum = base64(await crypto.subtle.digest('SHA-256', body instanceof Blob ? await body.arrayBuffer() : body));
      const sent = performance.now();
      const bodySize = body instanceof Blob ? body.size : body.byteLength;
      const result = await this.patch(body, checksum, encoding, bytes.byteLength / Math.max(1, bodySize));
      if (this.paused) return;
      this.bodyBytesSent += bodySize;
      if (result.status === 204) {
        const observed = bytes.byteLength / Math.max(0.001, (performance.now() - sent) / 1000);
        this.rate = this.rate ? (this.rate + observed) / 2 : observed;
        this.chunkSize = nextChunkSize(this.chunkSize, this.rate);
        this.offset = Number(result.offset);
        failures = 0;
        checksumFailures = 0;
        this.report(0);
      } else if (result.status === 409) {
        const offset = await this.head(this.url);
        if (offset === null) throw new Error(HUMAN.upload_gone);
        this.offset = offset;
      } else if (result.status === 460 && ++checksumFailures < 2) {
        continue;
      } else if (result.status === 0 || result.status >= 500) {
        if (++failures > MAX_RETRIES) throw new Error('The server stayed unreachable. Press Resume to try again.');
        this.status.textContent = `connection lost at ${formatBytes(this.offset)}: retrying…`;
        await sleep(backoff(failures));
        const offset = await this.head(this.url);
        if (offset === null) throw new Error(HUMAN.upload_gone);
        this.offset = offset;
      } else {
        if (result.status === 404 || result.status === 410 || result.status === 422) forget(this.key);
        throw new Error(result.message);
      }
    }
    if (this.offset >= this.file.size && !this.paused) this.finish();
  }

  patch(bytes, checksum, encoding = null, scale = 1) {
    return new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      this.xhr = xhr;
      xhr.open('PATCH', this.url);
      xhr.setRequestHeader('Authorization', 'Bearer ' + token());
      xhr.setRequestHeader('Tus-Resumable', '1.0.0');
      xhr.setRequestHeader('Upload-Offset', String(this.offset));
      xhr.setRequestHeader('Content-Type', 'application/offset+octet-stream');
      xhr.setRequestHeader('Upload-Checksum', `sha256 ${checksum}`);
      if (encoding) xhr.setRequestHeader('Content-Encoding', encoding);
      xhr.upload.onprogress = (event) => this.report(event.loaded, scale);
      xhr.onload = () => {
        let message = `The server answered ${xhr.status}.`;
        try { const body = JSON.parse(xhr.responseText); message = HUMAN[body.error] || body.message; } catch { /* empty body */ }
        resolve({ status: xhr.status, offset: xhr.getResponseHeader('Upload-Offset'), message });
      };
      xhr.onerror = () => resolve({ status: 0 });
      xhr.onabort = () => resolve({ status: 0 });
      xhr.send(bytes);
    });
  }

  pause() {
    this.paused = true;
    if (this.xhr) this.xhr.abort();
    this.pauseButton.hidden = true;
    this.resumeButton.hidden = false;
    this.status.textContent = `paused at ${formatBytes(this.offset)}`;
  }

  async cancel() {
    this.pause();
    if (this.url) await api(this.url, { method: 'DELETE', headers: { 'Tus-Resumable': '1.0.0' } }).catch(() => {});
    forget(this.key);
    this.row.remove();
    refreshAttachments();
  }

  finish() {
    forget(this.key);
    this.progress.value = this.file.size;
    this.status.textContent = 'verified';
    this.row.dataset.state = 'verified';
    this.pauseButton.hidden = true;
    this.resumeButton.hidden = true;
    this.cancelButton.hidden = true;
    refreshAttachments();
  }

  fail(message) {
    this.status.textContent = `failed: ${message}`;
    this.row.dataset.state = 'failed';
    this.pauseButton.hidden = true;
    this.resumeButton.hidden = false;
    say(message);
  }
}

function addFiles(files) {
  if (!currentCase || currentCase.status === 'Closed') { say(HUMAN.case_closed); return; }
  for (const file of files) new Transfer(currentCase.number, file).start();
}

// MARK: - Start

document.addEventListener('DOMContentLoaded', () => {
  $('signin-form').addEventListener('submit', (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $('token').value.trim());
    say('');
    route();
  });
  $('signout').addEventListener('click', () => { sessionStorage.removeItem(TOKEN_KEY); showSignIn(''); });
  $('open-form').addEventListener('submit', (event) => {
    event.preventDefault();
    location.assign(`/cases/${encodeURIComponent($('case-number').value.trim())}`);
  });
  const drop = $('drop');
  $('files').addEventListener('change', (event) => { addFiles(event.target.files); event.target.value = ''; });
  drop.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' || event.key === ' ') { event.preventDefault(); $('files').click(); }
  });
  drop.addEventListener('dragover', (event) => { event.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (event) => { event.preventDefault(); drop.classList.remove('over'); addFiles(event.dataTransfer.files); });
  $('drop-token').addEventListener('click', () => makeDropToken().catch((error) => {
    if (error.message !== 'signed out') say(error.message);
  }));
  $('drop-token-copy').addEventListener('click', () => navigator.clipboard.writeText($('drop-token-curl').textContent));
  route();
});

function route() {
  if (!token()) { showSignIn(''); return; }
  const match = location.pathname.match(/^\/cases\/([0-9]{1,8})$/);
  (match ? showCase(match[1]) : showCases()).catch((error) => { if (error.message !== 'signed out') say(error.message); });
}

// A drop credential for the case (issue #20): POST /api/v1/cases/{n}/drop-tokens (engineers, admins), shown once
// as the curl command the customer runs on their server.
async function makeDropToken() {
  const response = await api(`/api/v1/cases/${currentCase.number}/drop-tokens`, { method: 'POST' });
  if (!response.ok) { say(await errorText(response)); return; }
  const created = await response.json();
  const url = `${location.origin}${created.uploadPath}`;
  $('drop-token-curl').textContent = `curl -fsS -T FILE -u ${created.caseNumber}:${created.token} ${url}`;
  $('drop-token-result').hidden = false;
  say(`Drop credential ${created.id} made; it expires ${new Date(created.expiresAt).toLocaleString()}.`);
}
