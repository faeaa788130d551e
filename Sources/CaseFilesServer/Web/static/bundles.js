'use strict';
// Inside a support bundle (issue #21): the archive's tree from GET /api/v1/attachments/{id}/entries, a text
// preview of an entry (its first and last 64 KiB, through Range requests), and a download per entry.
// Every name and every byte from an archive goes into the page with textContent: never parsed as HTML.

(() => {
  const PREVIEW = 64 * 1024;
  const $ = (id) => document.getElementById(id);
  const auth = () => ({ Authorization: 'Bearer ' + sessionStorage.getItem('casefiles.token') });
  const node = (tag, text, attributes = {}) => {
    const n = document.createElement(tag);
    if (text !== undefined && text !== null) n.textContent = String(text);
    for (const [k, v] of Object.entries(attributes)) n.setAttribute(k, v);
    return n;
  };
  // The whole path as one segment (`/` as %2F), so `..` in an archive's names is never resolved by the browser.
  const entryURL = (id, e) => `/api/v1/attachments/${id}/entries/${encodeURIComponent(e.path)}?n=${e.number}`;

  async function allEntries(id) {
    let entries = [], after = null, first = null;
    for (let page = 0; page < 200; page++) {   // 200 pages of 1,000: the most an index holds by default
      const response = await fetch(`/api/v1/attachments/${id}/entries?limit=1000${after ? '&after=' + after : ''}`,
        { headers: auth() });
      const body = await response.json();
      if (!response.ok) throw new Error(body.message || `The server answered ${response.status}.`);
      first = first || body;
      entries = entries.concat(body.entries);
      if (!body.next) break;
      after = body.next;
    }
    return { index: first, entries };
  }

  // Directories from the paths: { children: Map(name -> dir), files: [entry] }.
  function tree(entries) {
    const root = { children: new Map(), files: [] };
    for (const e of entries) {
      const parts = e.path.split('/').filter((p) => p !== '');
      let dir = root;
      for (const part of parts.slice(0, e.type === 'directory' ? parts.length : -1)) {
        if (!dir.children.has(part)) dir.children.set(part, { children: new Map(), files: [] });
        dir = dir.children.get(part);
      }
      if (e.type !== 'directory') dir.files.push(e);
    }
    return root;
  }

  function renderDir(id, dir, list) {
    for (const [name, child] of [...dir.children].sort((a, b) => a[0].localeCompare(b[0]))) {
      const item = node('li');
      const toggle = node('button', `▸ ${name}/`, { type: 'button', 'aria-expanded': 'false' });
      const sub = node('ul');
      sub.hidden = true;
      toggle.addEventListener('click', () => {
        if (!sub.hasChildNodes()) renderDir(id, child, sub);
        sub.hidden = !sub.hidden;
        toggle.setAttribute('aria-expanded', String(!sub.hidden));
        toggle.textContent = `${sub.hidden ? '▸' : '▾'} ${name}/`;
      });
      item.append(toggle, sub);
      list.append(item);
    }
    for (const e of dir.files) {
      const item = node('li');
      const label = `${e.path.split('/').pop()} (${e.size} bytes${e.modifiedAt ? ', ' + new Date(e.modifiedAt).toLocaleString() : ''})`;
      if (e.readable) {
        const open = node('button', label, { type: 'button' });
        open.addEventListener('click', () => preview(id, e));
        item.append(open);
      } else {
        item.append(node('span', `${label}: ${e.type === 'symlink' ? '→ ' + e.linkTarget : e.problem || e.type}`));
      }
      if (e.flags.length) item.append(node('span', ` [${e.flags.join(', ')}]`, { class: 'flag' }));
      list.append(item);
    }
  }

  async function range(url, header) {
    const response = await fetch(url, { headers: Object.assign(auth(), { Range: header }) });
    if (!response.ok) throw new Error(`The server answered ${response.status}.`);
    return new TextDecoder('utf-8', { fatal: false }).decode(await response.arrayBuffer());
  }

  async function preview(id, e) {
    $('bundle-preview').hidden = false;
    $('preview-title').textContent = e.path;
    $('preview-digest').textContent = e.sha256 ? `SHA-256 ${e.sha256}` : '';
    $('preview-download').onclick = () => downloadEntry(id, e);
    $('preview-head').textContent = '';
    $('preview-tail').textContent = '';
    try {
      if (e.size === 0) return;
      $('preview-head').textContent = await range(entryURL(id, e), `bytes=0-${Math.min(e.size, PREVIEW) - 1}`);
      $('preview-gap').hidden = e.size <= 2 * PREVIEW;
      if (e.size > PREVIEW) {
        $('preview-tail').textContent = await range(entryURL(id, e), `bytes=-${Math.min(PREVIEW, e.size - PREVIEW)}`);
      }
    } catch (error) {
      $('preview-head').textContent = error.message;
    }
  }

  // A bearer header cannot ride on a plain link, so the entry is fetched and handed to the browser as a file.
  async function downloadEntry(id, e) {
    const response = await fetch(entryURL(id, e), { headers: auth() });
    if (!response.ok) { $('bundle-state').textContent = `The server answered ${response.status}.`; return; }
    const link = node('a', null, { href: URL.createObjectURL(await response.blob()), download: e.path.split('/').pop() });
    document.body.append(link);
    link.click();
    link.remove();
    URL.revokeObjectURL(link.href);
  }

  window.browseBundle = async (id, filename) => {
    $('bundle').hidden = false;
    $('bundle-preview').hidden = true;
    $('bundle-title').textContent = `Inside ${filename}`;
    $('bundle-tree').replaceChildren();
    try {
      const { index, entries } = await allEntries(id);
      const states = { pending: 'Still being indexed; try again in a moment.', not_an_archive: 'Not an archive.',
        unreadable: `Cannot be read in place: ${index.reason}.` };
      $('bundle-state').textContent = states[index.state]
        || `${index.entryCount} entries${index.truncated ? ` (index stopped early: ${index.reason})` : ''}.`;
      renderDir(id, tree(entries), $('bundle-tree'));
    } catch (error) {
      $('bundle-state').textContent = error.message;
    }
  };
})();
