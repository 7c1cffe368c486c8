// x402d dashboard: polls /api/spend and /api/payments (same origin, read-only)
// and draws everything itself. Data is untrusted text: only textContent and
// attributes, never HTML.
'use strict';

const WALLET = '(wallet)';
const COLORS = ['#3a6fd8', '#e07b39', '#2a9d6a', '#a65ac4', '#c9a21a', '#d04a5b', '#3aaec0', '#7b8190'];
const EVERY_MS = 3000;

const $ = (id) => document.getElementById(id);

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = text;
  return e;
}

// SVG elements in the chart's own namespace (read from the page's <svg>).
function svg(tag, attrs, text) {
  const e = document.createElementNS($('chart').namespaceURI, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

// USD strings ("0.003") to integer micro-dollars and back, so sums are exact.
function micro(s) {
  return Math.round(parseFloat(s || '0') * 1e6) || 0;
}
function usd(m) {
  return '$' + (m / 1e6).toFixed(6).replace(/\.?0+$/, '');
}

async function getJSON(path) {
  const r = await fetch(path, { cache: 'no-store', credentials: 'same-origin' });
  if (!r.ok) throw new Error(path + ' answered ' + r.status);
  return r.json();
}

function colorOf(apps, app) {
  return COLORS[apps.indexOf(app) % COLORS.length];
}

function windowBar(label, row) {
  const w = el('div', 'window');
  w.dataset.window = row.window;
  const spent = micro(row.settled) + micro(row.at_risk);
  const cap = row.cap === null || row.cap === undefined ? null : micro(row.cap);
  const lab = el('div', 'label');
  lab.append(el('span', null, label));
  let text = usd(spent);
  if (cap !== null) text += ' of ' + usd(cap) + (cap > 0 ? ' (' + Math.floor((spent * 100) / cap) + '%)' : '');
  else text += ' (no cap)';
  lab.append(el('span', 'amount', text));
  w.append(lab);
  const bar = el('div', cap === null ? 'bar nocap' : 'bar');
  const fill = el('div', 'fill');
  const frac = cap ? Math.min(1, spent / cap) : spent > 0 ? 1 : 0;
  fill.style.width = (frac * 100).toFixed(1) + '%';
  if (cap !== null && cap > 0 && spent >= cap) fill.classList.add('full');
  else if (cap !== null && cap > 0 && spent >= 0.8 * cap) fill.classList.add('warn');
  bar.append(fill);
  w.append(bar);
  return w;
}

function card(app, rows, color) {
  const c = el('div', 'app');
  c.dataset.app = app;
  const name = el('div', 'name');
  if (color) {
    const sw = el('span', 'swatch');
    sw.style.background = color;
    name.append(sw);
  }
  name.append(el('span', 'app-name', app === WALLET ? 'All apps (wallet-wide limits)' : app));
  const calls = rows.total ? rows.total.calls : 0;
  name.append(el('span', 'calls', calls + (calls === 1 ? ' payment' : ' payments')));
  c.append(name);
  if (rows.today) c.append(windowBar('Today', rows.today));
  if (rows.month) c.append(windowBar('This month', rows.month));
  if (rows.total && rows.total.cap !== null) c.append(windowBar('Lifetime', rows.total));
  return c;
}

function renderCards(apps, byApp) {
  const box = $('apps');
  box.replaceChildren(...apps.map((a) => card(a, byApp.get(a), colorOf(apps, a))));
  $('wallet').replaceChildren(card(WALLET, byApp.get(WALLET) || {}, null));
}

// The smallest 1, 2, 2.5 or 5 times a power of ten at or above m (an axis top).
function niceCeil(m) {
  const p = Math.pow(10, Math.floor(Math.log10(m)));
  for (const f of [1, 2, 2.5, 5, 10]) if (m <= f * p) return f * p;
  return 10 * p;
}

function renderChart(days, apps, byApp) {
  const chart = $('chart');
  const W = 780, H = 250, L = 56, R = 10, T = 14, B = 30;
  const n = days.length;
  const slot = (W - L - R) / Math.max(1, n);
  const spentOn = (a, d) => {
    const r = byApp.get(a)[d] || {};
    return micro(r.settled) + micro(r.at_risk);
  };
  const perDay = days.map((d) => apps.map((a) => spentOn(a, d)));
  const totals = perDay.map((v) => v.reduce((x, y) => x + y, 0));
  const max = niceCeil(Math.max(1, ...totals));
  const y = (m) => T + (H - T - B) * (1 - m / max);
  const parts = [];
  parts.push(svg('line', { class: 'axis', x1: L, x2: W - R, y1: H - B, y2: H - B }));
  parts.push(svg('line', { class: 'axis', x1: L, x2: W - R, y1: T, y2: T }));
  parts.push(svg('text', { x: L - 6, y: T + 4, 'text-anchor': 'end' }, usd(max)));
  parts.push(svg('text', { x: L - 6, y: H - B + 4, 'text-anchor': 'end' }, '$0'));
  days.forEach((d, i) => {
    let base = 0;
    apps.forEach((a, j) => {
      const v = perDay[i][j];
      if (v <= 0) return;
      const r = svg('rect', {
        class: 'seg',
        x: (L + i * slot + slot * 0.15).toFixed(1),
        width: (slot * 0.7).toFixed(1),
        y: y(base + v).toFixed(1),
        height: Math.max(1, y(base) - y(base + v)).toFixed(1),
        fill: colorOf(apps, a),
        'data-app': a,
        'data-day': d,
        'data-amount': usd(v),
      });
      r.append(svg('title', {}, a + ' ' + d + ': ' + usd(v)));
      parts.push(r);
      base += v;
    });
    if (i % 5 === (n - 1) % 5) {
      parts.push(svg('text', { x: (L + i * slot + slot / 2).toFixed(1), y: H - B + 16, 'text-anchor': 'middle' }, d.slice(5)));
    }
  });
  if (totals.every((t) => t === 0)) {
    parts.push(svg('text', { class: 'empty', x: (L + W) / 2, y: H / 2, 'text-anchor': 'middle' }, 'No spend in the last 30 days'));
  }
  chart.replaceChildren(...parts);
  const legend = $('legend');
  legend.replaceChildren(
    ...apps
      .filter((a, j) => perDay.some((v) => v[j] > 0))
      .map((a) => {
        const li = el('li');
        li.dataset.app = a;
        const sw = el('span', 'swatch');
        sw.style.background = colorOf(apps, a);
        li.append(sw, el('span', null, a));
        return li;
      }),
  );
}

// Only TLS links to an explorer (x402d builds them; never a javascript: URL).
function secureLink(u) {
  try {
    return typeof u === 'string' && new URL(u).protocol.replace(':', '') === 'https';
  } catch (e) {
    return false;
  }
}

function paymentRow(p) {
  const tr = el('tr');
  tr.dataset.id = String(p.id);
  const t = new Date(p.time);
  tr.append(el('td', 'time', isNaN(t) ? p.time : t.toLocaleString()));
  tr.append(el('td', 'app-col', p.app));
  tr.append(el('td', 'model', p.model || '—'));
  tr.append(el('td', 'amount', usd(micro(p.amount))));
  tr.append(el('td', 'network', p.network_name || p.network));
  const st = el('td');
  st.append(el('span', 'state ' + p.state, p.state.replace('_', '-')));
  tr.append(st);
  const tx = el('td', 'tx');
  if (p.tx && secureLink(p.tx_url)) {
    const a = el('a', null, p.tx.slice(0, 10) + '…' + p.tx.slice(-6));
    a.href = p.tx_url;
    a.target = '_blank';
    a.rel = 'noopener noreferrer';
    a.title = p.tx;
    tx.append(a);
  } else {
    tx.append(el('span', 'none', p.tx || '—'));
  }
  tr.append(tx);
  return tr;
}

function renderPayments(table, list, empty) {
  const body = table.tBodies[0];
  if (!list.length) {
    const tr = el('tr');
    const td = el('td', 'none', empty);
    td.colSpan = 7;
    tr.append(td);
    body.replaceChildren(tr);
    return;
  }
  body.replaceChildren(...list.map(paymentRow));
}

function render(spend, pays) {
  const byApp = new Map();
  for (const r of spend.rows) {
    if (!byApp.has(r.app)) byApp.set(r.app, {});
    byApp.get(r.app)[r.window] = r;
  }
  const apps = [...byApp.keys()].filter((a) => a !== WALLET).sort();
  renderCards(apps, byApp);
  renderChart(spend.days, apps, byApp);
  $('at-risk-total').textContent = usd(micro(spend.at_risk));
  renderPayments($('at-risk'), pays.at_risk, 'Nothing at risk.');
  renderPayments($('latest'), pays.latest, 'No payments yet.');
  $('tz').textContent = '· windows in ' + spend.timezone;
}

async function refresh() {
  const status = $('updated');
  try {
    const [spend, pays] = await Promise.all([getJSON('/api/spend'), getJSON('/api/payments')]);
    render(spend, pays);
    status.textContent = 'Updated ' + new Date().toLocaleTimeString();
    status.className = 'ok';
    document.body.dataset.loaded = 'true';
  } catch (e) {
    status.textContent = 'Cannot reach x402d (' + e.message + '); retrying';
    status.className = 'err';
  }
}

refresh();
setInterval(refresh, EVERY_MS);
