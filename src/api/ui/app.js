// The operator's page: export tasks, exporters, throughput.
//
// Every piece of data reaches the DOM through textContent or text nodes,
// never as markup: task messages come from remote servers. The access
// token lives in sessionStorage and travels only in the Authorization
// header, never in a URL.
'use strict';

(function () {
  const TOKEN_KEY = 'stow-exporter.apiToken';
  const TASKS_EVERY_MS = 2500;
  const METRICS_EVERY_MS = 2000;
  const EXPORTERS_EVERY_MS = 15000;
  // More rows than this in one task would make the page sluggish; the
  // failed ones come first, so those are the ones shown.
  const MAX_INSTANCE_ROWS = 500;

  // The page is served at <root>/dcm4chee-arc/ui2/; the API is next to it,
  // so a reverse proxy's path prefix is kept.
  const at = location.pathname.lastIndexOf('/dcm4chee-arc/ui2/');
  const ROOT = at > 0 ? location.pathname.slice(0, at) : '';
  const API = ROOT + '/dcm4chee-arc';
  // Per exporter and web app, as JSON: the page never parses the
  // Prometheus text format.
  const METRICS_SUMMARY = ROOT + '/metrics/summary';

  const $ = (id) => document.getElementById(id);

  // Builds an element; strings among the children become text nodes.
  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === null || v === undefined) continue;
      if (k === 'class') e.className = v;
      else if (k === 'dataset') Object.assign(e.dataset, v);
      else e.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  // Writes only on change, so a refresh does not disturb a text selection.
  function setText(node, text) {
    const s = text === null || text === undefined ? '' : String(text);
    if (node.textContent !== s) node.textContent = s;
  }

  const pad = (n) => String(n).padStart(2, '0');

  // Local time, yyyy-MM-dd HH:mm:ss (MM-dd HH:mm:ss when `short`, for the
  // narrow table columns; their title has the full time); anything
  // unparsable as given.
  function fmtTime(iso, short) {
    if (!iso) return '';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    const day = `${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
    const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    return short ? `${day} ${time}` : `${d.getFullYear()}-${day} ${time}`;
  }

  // ---- Access token --------------------------------------------------

  class AuthRequired extends Error {}
  let needToken = false;

  function storedToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || '';
    } catch (e) {
      return '';
    }
  }

  function askForToken(refused) {
    needToken = true;
    const panel = $('token-panel');
    setText($('token-note'), refused ? 'That token was refused; enter it again.' : '');
    if (panel.hidden) {
      panel.hidden = false;
      $('token-input').focus();
    }
  }

  // fetch with the token; a 401 asks for one and ends the caller's work.
  async function api(path, opts) {
    const o = Object.assign({}, opts || {});
    const headers = new Headers(o.headers || {});
    const token = storedToken();
    if (token) headers.set('Authorization', 'Bearer ' + token);
    o.headers = headers;
    o.cache = 'no-store';
    o.credentials = 'same-origin';
    const r = await fetch(path, o);
    if (r.status === 401) {
      askForToken(token !== '');
      throw new AuthRequired('401');
    }
    return r;
  }

  // dcm4chee's {"errorMessage": ...}, else the HTTP status.
  async function errorText(r) {
    try {
      const j = await r.json();
      if (j && typeof j.errorMessage === 'string') return j.errorMessage;
    } catch (e) {
      // not JSON: fall through to the status line
    }
    return `HTTP ${r.status} ${r.statusText}`.trim();
  }

  // ---- Notices ---------------------------------------------------------

  let noticeTimer = null;
  let noticeKind = null;

  function showNotice(text, kind) {
    const n = $('notice');
    setText($('notice-text'), text);
    n.className = 'notice ' + kind;
    n.hidden = false;
    noticeKind = kind;
    clearTimeout(noticeTimer);
    if (kind === 'info') noticeTimer = setTimeout(hideNotice, 6000);
  }

  function hideNotice() {
    $('notice').hidden = true;
    noticeKind = null;
  }

  // A lost connection is reported once and cleared when the service answers.
  function reportFailure(what, e) {
    if (e instanceof AuthRequired) return;
    showNotice(`${what}: cannot reach the service (${e.message})`, 'conn');
  }

  function connectionBack() {
    if (noticeKind === 'conn') hideNotice();
  }

  // ---- Throughput ----------------------------------------------------------

  // The sum of one field over every exporter and web app; a destination
  // that has not sent yet is absent, which is zero.
  function total(destinations, field) {
    let sum = 0;
    for (const d of destinations) if (Number.isFinite(d[field])) sum += d[field];
    return sum;
  }

  let lastSample = null;

  // Three significant digits or so, and a trickle of small objects does
  // not read as 0.00.
  function fmtRate(v) {
    if (v === 0) return '0.00';
    return v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : v >= 0.1 ? 2 : 3);
  }

  async function refreshMetrics() {
    if (needToken) return;
    const r = await api(METRICS_SUMMARY);
    if (!r.ok) return;
    const body = await r.json();
    const dests = Array.isArray(body.destinations) ? body.destinations : [];
    connectionBack();
    const now = performance.now();
    const sent = total(dests, 'instancesSent');
    const bytes = total(dests, 'bytesSent');
    setText($('tp-inflight'), String(total(dests, 'requestsInFlight')));
    // Counters only grow; a smaller value means the service restarted,
    // and the next poll measures from the new baseline.
    if (lastSample && now > lastSample.t && sent >= lastSample.sent && bytes >= lastSample.bytes) {
      const dt = (now - lastSample.t) / 1000;
      setText($('tp-instances'), ((sent - lastSample.sent) / dt).toFixed(1));
      setText($('tp-mbytes'), fmtRate((bytes - lastSample.bytes) / dt / 1e6));
    }
    lastSample = { t: now, sent, bytes };
  }

  // ---- Exporters ---------------------------------------------------------

  // "open now (until …)" / "closed, opens …" from the exporter's schedule
  // fields; older services lack them, so each one is optional.
  function windowText(e) {
    const sched = Array.isArray(e.dcmSchedule) ? e.dcmSchedule : null;
    if (typeof e.scheduleOpen === 'boolean') {
      if (e.scheduleOpen) {
        return { text: e.nextScheduleClose ? `open now (until ${fmtTime(e.nextScheduleClose)})` : 'open now', cls: 'open' };
      }
      return { text: e.nextScheduleOpen ? `closed, opens ${fmtTime(e.nextScheduleOpen)}` : 'closed', cls: 'closed' };
    }
    if (sched && sched.length === 0) return { text: 'open now', cls: 'open' };
    return { text: '—', cls: 'unknown' };
  }

  async function refreshExporters() {
    if (needToken) return;
    const r = await api(API + '/export');
    if (!r.ok) {
      showNotice('Exporters: ' + await errorText(r), 'error');
      return;
    }
    const list = await r.json();
    connectionBack();
    const tbody = $('exporters').tBodies[0];
    const rows = [];
    const options = [];
    for (const e of Array.isArray(list) ? list : []) {
      const sched = Array.isArray(e.dcmSchedule) ? e.dcmSchedule : null;
      const w = windowText(e);
      rows.push(el('tr', { class: 'exporter', dataset: { exporterId: String(e.id) } },
        el('td', { class: 'id' }, String(e.id ?? '')),
        el('td', null, String(e.description ?? '')),
        el('td', { class: 'uri' }, String(e.dcmURI ?? '')),
        el('td', null, String(e.dcmQueueName ?? '')),
        el('td', { class: 'schedule' }, sched ? (sched.length ? sched.join('; ') : 'always') : '—'),
        el('td', { class: 'window ' + w.cls }, w.text)));
      options.push(el('option', { value: String(e.id ?? '') }));
    }
    if (rows.length === 0) rows.push(el('tr', null, el('td', { colspan: '6', class: 'empty' }, 'No exporters configured.')));
    tbody.replaceChildren(...rows);
    $('exporter-ids').replaceChildren(...options);
  }

  // The dcmExportRule entries: what received objects would be forwarded
  // by, each with its own schedule window (a filter on receipt).
  async function refreshExportRules() {
    if (needToken) return;
    const r = await api(API + '/export-rules');
    if (!r.ok) {
      showNotice('Export rules: ' + await errorText(r), 'error');
      return;
    }
    const list = await r.json();
    connectionBack();
    const rows = [];
    for (const x of Array.isArray(list) ? list : []) {
      const sched = Array.isArray(x.dcmSchedule) ? x.dcmSchedule : null;
      const conditions = Array.isArray(x.dcmProperty) ? x.dcmProperty : [];
      const w = windowText(x);
      const name = x.dicomAETitle ? `${x.cn ?? ''} (${x.dicomAETitle})` : String(x.cn ?? '');
      rows.push(el('tr', { class: 'export-rule', dataset: { rule: String(x.dn ?? '') } },
        el('td', { class: 'name' }, name),
        el('td', null, String(x.dcmEntity ?? '')),
        el('td', null, Array.isArray(x.dcmExporterID) ? x.dcmExporterID.join(', ') : ''),
        el('td', { class: 'conditions' }, conditions.length ? conditions.join(' & ') : 'any object'),
        el('td', null, String(x.dcmDuration ?? '')),
        el('td', { class: 'schedule' }, sched ? (sched.length ? sched.join('; ') : 'always') : '—'),
        el('td', { class: 'window ' + w.cls }, w.text)));
    }
    if (rows.length === 0) rows.push(el('tr', null, el('td', { colspan: '7', class: 'empty' }, 'No export rules configured.')));
    $('export-rules').tBodies[0].replaceChildren(...rows);
  }

  // ---- Tasks -------------------------------------------------------------

  const state = {
    offset: 0,
    limit: 50,
    filters: { exporters: [], study: '', status: '', batch: '', created: '', updated: '' },
    count: null, // of the listed filter, from the last refresh
    bulkBusy: false,
    expanded: new Set(),
    rows: new Map(), // taskID -> row parts, reused across refreshes
    seq: 0,
  };

  function filterQuery() {
    const q = new URLSearchParams();
    const f = state.filters;
    for (const x of f.exporters) q.append('ExporterID', x);
    if (f.study) q.set('StudyInstanceUID', f.study);
    if (f.status) q.set('status', f.status);
    if (f.batch) q.set('batchID', f.batch);
    if (f.created) q.set('createdTime', f.created);
    if (f.updated) q.set('updatedTime', f.updated);
    return q;
  }

  // A datetime-local value (yyyy-MM-ddTHH:mm[:ss], this browser's time)
  // as the API's yyyyMMddHHmmssZ, in UTC, so that the service filters
  // exactly whatever its own time zone. An end without seconds takes :59,
  // so the minute shown is included; '' when unset.
  function rangeBound(v, end) {
    const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2}))?/.exec(v || '');
    if (!m) return '';
    const sec = m[6] ?? (end ? '59' : '00');
    const d = new Date(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +sec);
    if (Number.isNaN(d.getTime())) return '';
    return String(d.getUTCFullYear()).padStart(4, '0') + pad(d.getUTCMonth() + 1) + pad(d.getUTCDate()) +
      pad(d.getUTCHours()) + pad(d.getUTCMinutes()) + pad(d.getUTCSeconds()) + 'Z';
  }

  // The name of a range whose start is after its end, else ''.
  function rangeBackwards() {
    for (const [prefix, name] of [['f-created', 'Created'], ['f-updated', 'Updated']]) {
      const from = rangeBound($(prefix + '-from').value, false);
      const to = rangeBound($(prefix + '-to').value, true);
      if (from && to && from > to) return name;
    }
    return '';
  }

  // from-to, from- or -to; '' when neither end is set.
  function rangeParam(prefix) {
    const from = rangeBound($(prefix + '-from').value, false);
    const to = rangeBound($(prefix + '-to').value, true);
    return from || to ? `${from}-${to}` : '';
  }

  function readFilters() {
    state.filters = {
      exporters: $('f-exporter').value.split(',').map((s) => s.trim()).filter(Boolean),
      study: $('f-study').value.trim(),
      status: $('f-status').value,
      batch: $('f-batch').value.trim(),
      created: rangeParam('f-created'),
      updated: rangeParam('f-updated'),
    };
    state.limit = Number($('page-size').value) || 50;
    state.offset = 0;
  }

  const statusClass = (s) => 'st-' + String(s || 'unknown').toLowerCase().replace(/[^a-z]+/g, '-');

  function makeRow(id) {
    const cells = {};
    const tr = el('tr', { class: 'task', dataset: { taskId: id } });
    const toggle = el('button', { type: 'button', class: 'toggle', title: 'Show the instances', 'aria-expanded': 'false' }, '▸');
    tr.append(el('td', { class: 'tgl' }, toggle));
    for (const [name, cls] of [['id', 'id'], ['exporter', ''], ['study', 'uid'], ['status', 'status'],
      ['n', 'num'], ['completed', 'num'], ['warning', 'num'], ['failed', 'num'], ['missing', 'num'],
      ['remaining', 'num'], ['failures', 'num'], ['created', 'time'], ['updated', 'time'], ['message', 'msg']]) {
      cells[name] = el('td', { class: `${name} ${cls}`.trim() });
      tr.append(cells[name]);
    }
    cells.badge = el('span', { class: 'badge' });
    cells.status.append(cells.badge);
    const cancel = el('button', { type: 'button', class: 'act cancel', title: 'Cancel the task' }, 'Cancel');
    const reschedule = el('button', { type: 'button', class: 'act reschedule', title: 'Schedule the task again, now' }, 'Reschedule');
    const del = el('button', { type: 'button', class: 'act delete', title: 'Delete the task' }, 'Delete');
    tr.append(el('td', { class: 'actions' }, cancel, reschedule, del));

    const meta = el('dl', { class: 'meta' });
    const instances = el('div', { class: 'instances' }, el('p', { class: 'note' }, 'Loading instances…'));
    const detail = el('tr', { class: 'detail', dataset: { taskId: id } },
      el('td', { colspan: '16' }, el('div', { class: 'detail-box' }, meta, instances)));

    const row = { id, tr, detail, cells, toggle, meta, instances, cancel, reschedule, del, armed: null, busy: false, task: null, instancesOf: null, loading: false };
    toggle.addEventListener('click', () => toggleRow(id));
    tr.addEventListener('click', (ev) => {
      // Buttons act on their own; selecting text is not a click on the row.
      if (ev.target.closest('button') || String(window.getSelection())) return;
      toggleRow(id);
    });
    cancel.addEventListener('click', () => act(row, 'cancel'));
    reschedule.addEventListener('click', () => act(row, 'reschedule'));
    del.addEventListener('click', () => deleteClicked(row));
    return row;
  }

  function num(v) {
    return typeof v === 'number' ? String(v) : '';
  }

  function updateRow(row, t) {
    const c = row.cells;
    row.task = t;
    setText(c.id, t.taskID);
    setText(c.exporter, t.ExporterID);
    setText(c.study, t.StudyInstanceUID);
    c.study.title = t.StudyInstanceUID || '';
    const cls = 'badge ' + statusClass(t.status);
    if (c.badge.className !== cls) c.badge.className = cls;
    setText(c.badge, t.status);
    setText(c.n, num(t.NumberOfInstances));
    setText(c.completed, num(t.completed));
    setText(c.warning, num(t.warning));
    setText(c.failed, num(t.failed));
    setText(c.missing, num(t.missing));
    // The API has no "remaining": what of NumberOfInstances has no result yet.
    const done = (t.completed || 0) + (t.warning || 0) + (t.failed || 0) + (t.missing || 0);
    setText(c.remaining, typeof t.NumberOfInstances === 'number' ? String(Math.max(0, t.NumberOfInstances - done)) : '');
    setText(c.failures, num(t.failures));
    setText(c.created, fmtTime(t.createdTime, true));
    c.created.title = fmtTime(t.createdTime);
    setText(c.updated, fmtTime(t.updatedTime, true));
    c.updated.title = fmtTime(t.updatedTime);
    const msg = t.errorMessage || t.outcomeMessage || '';
    setText(c.message, msg);
    c.message.title = msg;
    c.message.classList.toggle('error', Boolean(t.errorMessage));
    c.failed.classList.toggle('bad', (t.failed || 0) > 0);
    c.warning.classList.toggle('warn', (t.warning || 0) > 0);
    setActions(row);
    if (state.expanded.has(row.id)) renderMeta(row);
  }

  const ENDED = ['COMPLETED', 'WARNING', 'FAILED', 'CANCELED'];

  // Offer only what the API would allow: an ended task cannot be canceled,
  // a running one not rescheduled (it answers 409 to both).
  function setActions(row) {
    const status = row.task ? row.task.status : '';
    const ended = ENDED.includes(status);
    row.cancel.disabled = row.busy || ended;
    row.cancel.title = ended ? `The task has ended (${status})` : 'Cancel the task';
    row.reschedule.disabled = row.busy || status === 'IN PROCESS';
    row.reschedule.title = status === 'IN PROCESS' ? 'The task is running' : 'Schedule the task again, now';
    row.del.disabled = row.busy || status === 'IN PROCESS';
    if (row.del.disabled) disarm(row);
    row.del.title = status === 'IN PROCESS' ? 'The task is running; cancel it first'
      : row.armed ? 'Click again to delete the task and its results' : 'Delete the task';
  }

  // ---- Delete, with a second click to confirm ------------------------------

  const CONFIRM_MS = 4000;

  function disarm(row) {
    if (!row.armed) return;
    clearTimeout(row.armed);
    row.armed = null;
    row.del.classList.remove('armed');
    setText(row.del, 'Delete');
  }

  // The first click turns the button into "Confirm?" for a few
  // seconds; a second click within them deletes.
  function deleteClicked(row) {
    if (!row.armed) {
      row.armed = setTimeout(() => {
        disarm(row);
        setActions(row);
      }, CONFIRM_MS);
      row.del.classList.add('armed');
      setText(row.del, 'Confirm?');
      setActions(row);
      return;
    }
    disarm(row);
    deleteTask(row);
  }

  function forget(row) {
    disarm(row);
    row.tr.remove();
    row.detail.remove();
    state.rows.delete(row.id);
    state.expanded.delete(row.id);
  }

  async function deleteTask(row) {
    const id = row.id;
    row.busy = true;
    setActions(row);
    try {
      const r = await api(`${API}/monitor/export/${encodeURIComponent(id)}`, { method: 'DELETE' });
      if (r.ok || r.status === 404) {
        forget(row);
        showNotice(`Task ${id} deleted.`, 'info');
      } else {
        showNotice(`Task ${id}: ${await errorText(r)}`, 'error');
      }
      await refreshTasks();
    } catch (e) {
      reportFailure('Delete', e);
    } finally {
      row.busy = false;
      setActions(row);
    }
  }

  function renderMeta(row) {
    const t = row.task;
    const items = [
      ['Task ID', t.taskID], ['Study Instance UID', t.StudyInstanceUID], ['Queue', t.queue], ['Device', t.dicomDeviceName], ['Local AET', t.LocalAET],
      ['Batch ID', t.batchID], ['Series Instance UID', t.SeriesInstanceUID], ['SOP Instance UID', t.SOPInstanceUID],
      ['Scheduled', fmtTime(t.scheduledTime)], ['Processing start', fmtTime(t.processingStartTime)],
      ['Processing end', fmtTime(t.processingEndTime)], ['Outcome', t.outcomeMessage], ['Error', t.errorMessage],
    ];
    const parts = [];
    for (const [k, v] of items) {
      if (v === undefined || v === null || v === '' || v === '*') continue;
      parts.push(el('dt', null, k), el('dd', { class: k === 'Error' ? 'error' : null }, String(v)));
    }
    row.meta.replaceChildren(...parts);
  }

  const INSTANCE_ORDER = { FAILED: 0, MISSING: 1, WARNING: 2, COMPLETED: 3 };

  function renderInstances(row, list) {
    const box = row.instances;
    if (!Array.isArray(list) || list.length === 0) {
      box.replaceChildren(el('p', { class: 'note' }, 'No per-instance results yet.'));
      return;
    }
    const counts = {};
    for (const i of list) counts[i.status] = (counts[i.status] || 0) + 1;
    const summary = Object.entries(counts).map(([s, n]) => `${n} ${s}`).join(', ');
    const sorted = list.slice().sort((a, b) => (INSTANCE_ORDER[a.status] ?? 9) - (INSTANCE_ORDER[b.status] ?? 9));
    const shown = sorted.slice(0, MAX_INSTANCE_ROWS);
    const body = el('tbody');
    shown.forEach((i, n) => {
      body.append(el('tr', { class: 'inst', dataset: { sop: String(i.SOPInstanceUID ?? '') } },
        el('td', { class: 'num' }, String(n + 1)),
        el('td', { class: 'sop uid' }, String(i.SOPInstanceUID ?? '')),
        el('td', { class: 'status' }, el('span', { class: 'badge ' + statusClass(i.status) }, String(i.status ?? ''))),
        el('td', { class: 'reason' }, String(i.reason ?? ''))));
    });
    const more = list.length > shown.length ? `; the first ${shown.length} shown, failures first` : '';
    box.replaceChildren(
      el('p', { class: 'note' }, `Instances: ${summary}${more}`),
      el('table', { class: 'grid inner' },
        el('thead', null, el('tr', null, el('th', { class: 'num' }, '#'), el('th', null, 'SOP Instance UID'),
          el('th', null, 'Status'), el('th', null, 'Reason'))),
        body));
  }

  // Fetches the instances of an expanded task again only when it changed.
  async function refreshInstances(row) {
    if (row.loading || !row.task || row.instancesOf === row.task.updatedTime) return;
    row.loading = true;
    const of = row.task.updatedTime;
    try {
      const r = await api(`${API}/monitor/export/${encodeURIComponent(row.id)}/instances`);
      if (!r.ok) {
        row.instances.replaceChildren(el('p', { class: 'note error' }, 'Instances: ' + await errorText(r)));
        return;
      }
      renderInstances(row, await r.json());
      row.instancesOf = of;
    } finally {
      row.loading = false;
    }
  }

  function toggleRow(id) {
    const row = state.rows.get(id);
    if (!row) return;
    const open = !state.expanded.has(id);
    if (open) {
      state.expanded.add(id);
      row.tr.after(row.detail);
      renderMeta(row);
      refreshInstances(row).catch((e) => reportFailure('Instances', e));
    } else {
      state.expanded.delete(id);
      row.detail.remove();
    }
    row.toggle.setAttribute('aria-expanded', String(open));
    setText(row.toggle, open ? '▾' : '▸');
    row.tr.classList.toggle('expanded', open);
  }

  async function act(row, what) {
    const id = row.id;
    row.busy = true;
    setActions(row);
    try {
      const r = await api(`${API}/monitor/export/${encodeURIComponent(id)}/${what}`, { method: 'POST' });
      if (r.ok) showNotice(`Task ${id} ${what === 'cancel' ? 'canceled' : 'rescheduled'}.`, 'info');
      else showNotice(`Task ${id}: ${await errorText(r)}`, 'error');
      await refreshTasks();
    } catch (e) {
      reportFailure(what === 'cancel' ? 'Cancel' : 'Reschedule', e);
    } finally {
      row.busy = false;
      setActions(row);
    }
  }

  function renderTasks(tasks, count) {
    const tbody = $('tasks').tBodies[0];
    const seen = new Set();
    let prev = null;
    // Moves a node only when it is out of place: a row under the pointer
    // stays put, so a click on it is never lost to a refresh.
    const place = (node) => {
      const want = prev ? prev.nextSibling : tbody.firstChild;
      if (want !== node) tbody.insertBefore(node, want);
      prev = node;
    };
    for (const t of tasks) {
      const id = String(t.taskID);
      seen.add(id);
      let row = state.rows.get(id);
      if (!row) {
        row = makeRow(id);
        state.rows.set(id, row);
      }
      updateRow(row, t);
      place(row.tr);
      if (state.expanded.has(id)) {
        place(row.detail);
        refreshInstances(row).catch((e) => reportFailure('Instances', e));
      } else {
        row.detail.remove();
      }
    }
    for (const [id, row] of state.rows) {
      if (!seen.has(id)) {
        row.tr.remove();
        row.detail.remove();
        state.rows.delete(id);
      }
    }
    $('tasks-empty').hidden = tasks.length > 0;
    const from = tasks.length ? state.offset + 1 : 0;
    const to = state.offset + tasks.length;
    setText($('page-info'), count === null ? `${from}–${to}` : `${from}–${to} of ${count}`);
    $('page-prev').disabled = state.offset === 0;
    $('page-next').disabled = count === null ? tasks.length < state.limit : to >= count;
    state.count = count;
    updateBulk();
    setText($('tasks-updated'), 'Updated ' + fmtTime(new Date().toISOString()));
  }

  async function refreshTasks() {
    if (needToken) return;
    const seq = ++state.seq;
    const q = filterQuery();
    const list = new URLSearchParams(q);
    list.set('offset', String(state.offset));
    list.set('limit', String(state.limit));
    list.set('orderby', '-updatedTime');
    const [lr, cr] = await Promise.all([
      api(`${API}/monitor/export?${list}`),
      api(`${API}/monitor/export/count?${q}`),
    ]);
    if (!lr.ok) {
      if (seq === state.seq) showNotice('Tasks: ' + await errorText(lr), 'error');
      return;
    }
    const tasks = await lr.json();
    const count = cr.ok ? (await cr.json()).count : null;
    // A newer refresh (after a filter change) has started: its answer wins.
    if (seq !== state.seq) return;
    connectionBack();
    if (tasks.length === 0 && state.offset > 0 && typeof count === 'number') {
      // The page ran past the end (tasks were deleted): go to the last one.
      state.offset = Math.max(0, Math.floor((count - 1) / state.limit) * state.limit);
      return refreshTasks();
    }
    renderTasks(Array.isArray(tasks) ? tasks : [], typeof count === 'number' ? count : null);
  }

  // ---- Bulk actions on every task matching the listed filter --------------

  const BULK = {
    cancel: { verb: 'Cancel', done: 'canceled', method: 'POST', path: '/monitor/export/cancel',
      why: 'they had ended or were gone' },
    reschedule: { verb: 'Reschedule', done: 'rescheduled', method: 'POST', path: '/monitor/export/reschedule',
      why: 'in process, or gone' },
    delete: { verb: 'Delete', done: 'deleted', method: 'DELETE', path: '/monitor/export',
      why: 'in process: cancel them first' },
  };
  // The API cancels in bulk only by one of these statuses.
  const CANCELABLE = ['SCHEDULED', 'SCHEDULED FOR RETRY', 'IN PROCESS'];

  const tasksWord = (n) => (n === 1 ? '1 task' : `${n} tasks`);

  // The applied filter in words, for the confirmation.
  function describeFilter(q) {
    const parts = [];
    for (const [k, v] of q) parts.push(`${k}=${v}`);
    return parts.length ? 'matching ' + parts.join(', ') : '(no filter: all tasks)';
  }

  // Offers the bulk actions the API would take for the listed filter.
  function updateBulk() {
    const none = state.count === 0;
    const status = state.filters.status;
    for (const [action, b] of Object.entries(BULK)) {
      const button = $('bulk-' + action);
      let why = none ? 'No tasks match the filter' : '';
      if (!why && action === 'delete' && status === 'IN PROCESS') {
        why = 'Tasks in process cannot be deleted; cancel them first';
      }
      if (!why && action === 'cancel' && !CANCELABLE.includes(status)) {
        why = status
          ? `${status} tasks have ended and cannot be canceled`
          : 'Choose a Status first (SCHEDULED, SCHEDULED FOR RETRY or IN PROCESS): the API cancels in bulk only by status';
      }
      button.disabled = Boolean(why) || state.bulkBusy === true;
      button.title = why || `${b.verb} every task matching the filter (after a confirmation)`;
    }
    const cancelWhy = !none && !CANCELABLE.includes(status) ? $('bulk-cancel').title : '';
    setText($('bulk-note'), cancelWhy && !status ? 'Cancel needs a Status filter.' : '');
  }

  let confirmAction = null;

  function hideConfirm() {
    confirmAction = null;
    $('confirm').hidden = true;
  }

  function showConfirm(text, yes, data, action) {
    const c = $('confirm');
    setText($('confirm-text'), text);
    setText($('confirm-yes'), yes);
    c.dataset.action = data.action;
    c.dataset.count = String(data.count);
    confirmAction = action;
    c.hidden = false;
    $('confirm-no').focus();
  }

  // Counts what the filter matches now, then asks.
  async function askBulk(action) {
    const b = BULK[action];
    const q = filterQuery();
    hideConfirm();
    const r = await api(`${API}/monitor/export/count?${q}`);
    if (!r.ok) {
      showNotice(`${b.verb} matching: ${await errorText(r)}`, 'error');
      return;
    }
    const n = (await r.json()).count;
    if (!n) {
      showNotice('No tasks match the filter.', 'info');
      return;
    }
    const note = action === 'delete' ? ' Tasks in process are kept. This cannot be undone.' : '';
    showConfirm(`${b.verb} ${tasksWord(n)} ${describeFilter(q)}?${note}`, `${b.verb} ${tasksWord(n)}`,
      { action, count: n }, () => runBulk(action, q));
  }

  // Every bulk form answers 200 {count}, 202 {count, failed} or 409
  // {failed}; failed counts the matching tasks it could not change.
  async function runBulk(action, q) {
    const b = BULK[action];
    state.bulkBusy = true;
    updateBulk();
    try {
      const r = await api(`${API}${b.path}?${q}`, { method: b.method });
      if (r.status === 200 || r.status === 202 || r.status === 409) {
        const j = await r.json();
        const count = Number(j.count) || 0;
        const failed = Number(j.failed) || 0;
        if (!failed) {
          showNotice(`${tasksWord(count)} ${b.done}.`, 'info');
        } else {
          const done = count ? `${tasksWord(count)} ${b.done}; ` : '';
          showNotice(`${done}${failed} of ${count + failed} could not be ${b.done} (${b.why}).`, count ? 'warn' : 'error');
        }
      } else {
        showNotice(`${b.verb} matching: ${await errorText(r)}`, 'error');
      }
      await refreshTasks();
    } catch (e) {
      reportFailure(`${b.verb} matching`, e);
    } finally {
      state.bulkBusy = false;
      updateBulk();
    }
  }

  // ---- Wiring ------------------------------------------------------------

  // Runs fn now and then every ms after it finished, so polls never pile up.
  function every(ms, what, fn) {
    const run = async () => {
      try {
        await fn();
      } catch (e) {
        reportFailure(what, e);
      } finally {
        setTimeout(run, ms);
      }
    };
    run();
  }

  function refreshAll() {
    refreshExporters().catch((e) => reportFailure('Exporters', e));
    refreshExportRules().catch((e) => reportFailure('Export rules', e));
    refreshTasks().catch((e) => reportFailure('Tasks', e));
    refreshMetrics().catch((e) => reportFailure('Metrics', e));
  }

  function start() {
    $('token-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const input = $('token-input');
      const token = input.value.trim();
      if (!token) return;
      try {
        sessionStorage.setItem(TOKEN_KEY, token);
      } catch (e) {
        setText($('token-note'), 'This browser does not keep the token (sessionStorage unavailable).');
        return;
      }
      input.value = '';
      needToken = false;
      $('token-panel').hidden = true;
      refreshAll();
    });
    $('filters').addEventListener('submit', (ev) => {
      ev.preventDefault();
      // What the confirmation counted is no longer what is listed.
      hideConfirm();
      const backwards = rangeBackwards();
      if (backwards) {
        showNotice(`${backwards}: the start is after the end.`, 'error');
        return;
      }
      if (noticeKind === 'error' && /: the start is after the end\.$/.test($('notice-text').textContent)) hideNotice();
      readFilters();
      updateBulk();
      refreshTasks().catch((e) => reportFailure('Tasks', e));
    });
    for (const id of ['f-status', 'page-size']) {
      $(id).addEventListener('change', () => $('filters').requestSubmit());
    }
    $('f-clear').addEventListener('click', () => {
      for (const id of ['f-exporter', 'f-study', 'f-batch', 'f-created-from', 'f-created-to',
        'f-updated-from', 'f-updated-to']) $(id).value = '';
      $('f-status').value = '';
      $('filters').requestSubmit();
    });
    $('page-prev').addEventListener('click', () => {
      state.offset = Math.max(0, state.offset - state.limit);
      refreshTasks().catch((e) => reportFailure('Tasks', e));
    });
    $('page-next').addEventListener('click', () => {
      state.offset += state.limit;
      refreshTasks().catch((e) => reportFailure('Tasks', e));
    });
    $('notice-close').addEventListener('click', hideNotice);
    for (const action of Object.keys(BULK)) {
      $('bulk-' + action).addEventListener('click', () => {
        askBulk(action).catch((e) => reportFailure(`${BULK[action].verb} matching`, e));
      });
    }
    $('confirm-yes').addEventListener('click', () => {
      const run = confirmAction;
      hideConfirm();
      if (run) run();
    });
    $('confirm-no').addEventListener('click', hideConfirm);
    document.addEventListener('keydown', (ev) => {
      if (ev.key === 'Escape' && !$('confirm').hidden) hideConfirm();
    });
    // The times are this browser's, as the list shows them; the page sends
    // them in UTC, so the service's own time zone does not matter.
    let zone = '';
    try {
      zone = Intl.DateTimeFormat().resolvedOptions().timeZone || '';
    } catch (e) {
      // no Intl: leave the zone out
    }
    for (const [id, param] of [['f-created', 'createdTime'], ['f-updated', 'updatedTime']]) {
      $(id).title = `${param} range, in this browser's time${zone ? ' (' + zone + ')' : ''} like the list. ` +
        'Either end may stay empty; the end minute is included.';
    }
    updateBulk();
    state.limit = Number($('page-size').value) || 50;

    every(TASKS_EVERY_MS, 'Tasks', refreshTasks);
    every(METRICS_EVERY_MS, 'Metrics', refreshMetrics);
    every(EXPORTERS_EVERY_MS, 'Exporters', refreshExporters);
    every(EXPORTERS_EVERY_MS, 'Export rules', refreshExportRules);
  }

  start();
})();
