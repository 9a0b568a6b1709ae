// The console page: login, the live board of the user's scope, an alert's
// detail and the loop's actions. Everything shown comes from the centre's
// JSON API and is set as text (never as HTML): it is untrusted.
'use strict';

const $ = (id) => document.getElementById(id);
let me = null;          // /api/me
let open = null;        // the alert id whose detail is shown
let seen = new Set();   // alert ids already on the board (for the alarm)
let audio = null;

async function api(method, path, body) {
  const opts = { method, headers: {} };
  if (method !== 'GET') {
    opts.headers['X-CSRF-Token'] = me ? me.csrf : '';
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body || {});
  }
  const r = await fetch(path, opts);
  let data = null;
  try { data = await r.json(); } catch (_) { data = null; }
  return { status: r.status, data };
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function ago(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return s + ' s ago';
  if (s < 3600) return Math.round(s / 60) + ' min ago';
  return Math.round(s / 3600) + ' h ago';
}

function left(alert) {
  if (!alert.deadline_at) return { text: '—', late: false };
  const s = Math.round((alert.deadline_at - Date.now()) / 1000);
  if (s < 0 || alert.late) return { text: 'late ' + Math.round(-s / 60) + ' min', late: true };
  return { text: s < 120 ? s + ' s left' : Math.round(s / 60) + ' min left', late: false };
}

function place(a) {
  return a.community + ' / ' + a.street + (a.zone ? ' · ' + a.zone : '');
}

function beep() {
  if ($('mute').checked || !audio) return;
  const o = audio.createOscillator();
  const g = audio.createGain();
  o.frequency.value = 880;
  o.connect(g); g.connect(audio.destination);
  o.start(); o.stop(audio.currentTime + 0.3);
}

// ---- login ----------------------------------------------------------------

async function start() {
  $('mute').checked = localStorage.getItem('aw-mute') === '1';
  const r = await api('GET', '/api/me');
  if (r.status === 200) { me = r.data; showConsole(); } else { showLogin(); }
}

function showLogin() {
  $('console-view').hidden = true;
  $('login-view').hidden = false;
  $('login-name').focus();
}

async function login(ev) {
  ev.preventDefault();
  $('login-error').textContent = '';
  const r = await api('POST', '/api/login', { name: $('login-name').value, password: $('login-password').value });
  if (r.status !== 200) {
    $('login-error').textContent = (r.data && r.data.error) || ('login failed (' + r.status + ')');
    return;
  }
  me = r.data;
  $('login-password').value = '';
  showConsole();
}

function showConsole() {
  $('login-view').hidden = true;
  $('console-view').hidden = false;
  $('centre-name').textContent = me.centre.name + ' (' + me.centre.level + ')';
  $('user-line').textContent = me.name + ' · ' + me.role + ' · ' + me.scope;
  $('actions').hidden = me.role === 'viewer';
  refresh();
  listen();
}

// ---- board ----------------------------------------------------------------

async function refresh() {
  const r = await api('GET', '/api/alerts');
  if (r.status === 401) return showLogin();
  if (r.status !== 200) return;
  const rows = $('board-rows');
  rows.replaceChildren();
  for (const a of r.data.alerts) {
    if (!seen.has(a.id)) {
      if (seen.size && a.severity === 'critical') beep();
      seen.add(a.id);
    }
    const tr = el('tr', undefined, 'sev-' + a.severity + (a.id === open ? ' selected' : ''));
    tr.dataset.id = a.id;
    const img = el('td');
    if (a.snapshot) {
      const i = el('img');
      i.src = '/api/snapshots/' + a.snapshot;
      i.alt = 'snapshot';
      img.append(i);
    }
    const d = left(a);
    tr.append(img, el('td', a.severity, 'sev'), el('td', a.kind), el('td', a.camera_name), el('td', place(a)),
      el('td', ago(a.started_at)), el('td', a.state + (a.verdict ? ' (' + a.verdict + ')' : '')),
      el('td', d.text + (a.escalated_to ? ' → ' + a.escalated_to : ''), d.late ? 'late' : ''));
    tr.addEventListener('click', () => showDetail(a.id));
    rows.append(tr);
  }
  if (seen.size === 0) seen.add('');
  $('board-empty').hidden = r.data.alerts.length > 0;
  const gaps = $('gaps');
  gaps.replaceChildren(...r.data.gaps.map((g) =>
    el('li', 'agent ' + g.agent + ' (' + g.site + '): seq ' + g.first + '–' + g.last + ' missing')));
}

function listen() {
  const live = new EventSource('/api/live');
  const on = (data) => {
    refresh();
    let id = null;
    try { id = JSON.parse(data).id; } catch (_) { id = null; }
    if (open && (!id || id === open)) showDetail(open);
  };
  live.addEventListener('alert', (e) => on(e.data));
  live.addEventListener('step', (e) => on(e.data));
  live.onopen = () => { $('live').textContent = 'live'; $('live').className = 'live'; };
  live.onerror = () => { $('live').textContent = 'reconnecting'; $('live').className = 'live off'; };
}

// ---- detail ---------------------------------------------------------------

function evidence(kind, ev) {
  const e = ev.evidence || {};
  const parts = [];
  if (kind === 'lane_blocked') {
    parts.push('blocked for ' + Number(ev.duration_s).toFixed(1) + ' s');
    if (e.occupancy !== null && e.occupancy !== undefined) parts.push(Math.round(e.occupancy * 100) + '% full');
    if (e.cause) parts.push('cause ' + e.cause);
    if (e.objects && e.objects.length) parts.push(e.objects.map((o) => o.label + ' ' + o.score.toFixed(2)).join(', '));
  } else if (kind === 'fall') {
    if (e.down_s !== undefined) parts.push('person down ' + Number(e.down_s).toFixed(1) + ' s');
    if (e.long_lie) parts.push('LONG LIE');
    if (Array.isArray(e.keypoints)) parts.push(e.keypoints.length + ' keypoints');
  } else if (kind === 'fire' || kind === 'smoke') {
    if (e.regions) parts.push('regions: ' + e.regions.length);
    if (e.flicker && typeof e.flicker === 'object') {
      parts.push('flicker: ' + Object.entries(e.flicker).map(([k, v]) => k + '=' + JSON.stringify(v)).join(' '));
    }
  }
  if (ev.score) parts.push('peak ' + Number(ev.score.peak).toFixed(2));
  return parts.join(' · ');
}

function allowed(a) {
  const s = a.state;
  return {
    assess: s === 'new' || s === 'assessed',
    dispatch: (s === 'assessed' || s === 'dispatched') && a.verdict === 'real',
    handled: s === 'dispatched',
    close: s === 'assessed' || s === 'dispatched' || s === 'handled',
  };
}

async function showDetail(id) {
  open = id;
  const r = await api('GET', '/api/alerts/' + encodeURIComponent(id));
  if (r.status !== 200) { $('detail').hidden = true; return; }
  const d = r.data;
  const a = d.alert;
  $('detail').hidden = false;
  $('detail-title').textContent = a.kind + ' · ' + a.camera_name + ' · ' + a.state;
  $('detail-sub').textContent = place(a) + ' · agent ' + a.agent + ' · ' + a.severity + ' · ' + left(a).text;
  const ok = allowed(a);
  for (const step of ['assess', 'dispatch', 'handled', 'close']) $(step + '-submit').disabled = !ok[step];
  $('steps').replaceChildren(...d.steps.map((s) => {
    const li = el('li', s.step + ' by ' + s.by + ', ' + new Date(s.at).toLocaleString() +
      [s.verdict, s.reason, s.handler, s.note].filter(Boolean).map((x) => ' · ' + x).join('') +
      (s.command ? ' · ' + s.command + ': ' + (s.reply ? (s.reply.ok ? 'ok' : 'refused: ' + s.reply.error) : 'no reply yet') : ''));
    if (s.photo) {
      const i = el('img');
      i.src = '/api/snapshots/' + s.photo;
      i.alt = 'photo';
      i.height = 60;
      li.append(i);
    }
    return li;
  }));
  $('snapshots').replaceChildren(...d.snapshots.map((s) => {
    const link = el('a');
    link.href = '/api/snapshots/' + s.sha256;
    link.target = '_blank';
    link.rel = 'noopener';
    const i = el('img');
    i.src = link.href;
    i.alt = 'snapshot ' + new Date(s.received_at).toLocaleTimeString();
    link.append(i);
    return link;
  }));
  $('timeline').replaceChildren(...d.messages.map((m) => el('li', '#' + m.seq + ' ' + m.phase + ' ' +
    new Date(m.received_at).toLocaleTimeString() + ' · ' + (m.event ? m.event.severity + ' · ' + evidence(a.kind, m.event) : ''))));
  $('recent').replaceChildren(...d.camera_recent.map((x) => {
    const li = el('li', x.kind + ' ' + ago(x.started_at) + ' · ' + x.state + (x.verdict ? ' (' + x.verdict + ')' : ''));
    li.addEventListener('click', () => showDetail(x.id));
    return li;
  }));
  for (const tr of $('board-rows').children) tr.classList.toggle('selected', tr.dataset.id === id);
}

function readPhoto() {
  const f = $('handled-photo').files[0];
  if (!f) return Promise.resolve(null);
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(String(r.result).replace(/^data:[^,]*,/, ''));
    r.onerror = () => reject(r.error);
    r.readAsDataURL(f);
  });
}

async function act(step) {
  if (!open) return;
  $('action-error').textContent = '';
  const v = (id) => $(id).value;
  let body;
  if (step === 'assess') body = { verdict: v('assess-verdict'), reason: v('assess-reason') };
  if (step === 'dispatch') body = { handler: v('dispatch-handler'), note: v('dispatch-note') };
  if (step === 'handled') body = { note: v('handled-note'), photo: await readPhoto() };
  if (step === 'close') body = { note: v('close-note') };
  const r = await api('POST', '/api/alerts/' + encodeURIComponent(open) + '/' + step, body);
  if (r.status !== 200) {
    $('action-error').textContent = (r.data && r.data.error) || ('refused (' + r.status + ')');
    return;
  }
  if (step === 'handled') $('handled-photo').value = '';
  await showDetail(open);
  refresh();
}

document.addEventListener('DOMContentLoaded', () => {
  $('login-form').addEventListener('submit', login);
  $('logout').addEventListener('click', async () => {
    await api('POST', '/api/logout');
    me = null;
    location.reload();
  });
  $('mute').addEventListener('change', () => localStorage.setItem('aw-mute', $('mute').checked ? '1' : '0'));
  for (const step of ['assess', 'dispatch', 'handled', 'close']) {
    $(step + '-submit').addEventListener('click', () => act(step));
  }
  // Browsers allow sound only after a gesture: make the audio context then.
  document.addEventListener('click', () => {
    if (!audio) audio = new AudioContext();
    if (audio.state === 'suspended') audio.resume();
  });
  setInterval(() => { if (me) refresh(); }, 10000);
  start();
});
