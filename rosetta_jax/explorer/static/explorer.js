/* rosetta_jax explorer: the page's list, search, filters and neuron cards.
 * Plain JavaScript, no libraries. Data arrive as base64 gzip JSON (index inline,
 * cards in cards/sNNNNN.js shards loaded with <script>, which works from file://).
 * Layout of the data: docs/explorer.md. */
(function () {
  'use strict';
  const RJ = window.RJ = window.RJ || {};
  const ROWH = 24;

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const k of kids) if (k != null) e.append(k);
    return e;
  }
  const fmt = (x, d) => (x == null || Number.isNaN(x)) ? '\u2013' : Number(x).toPrecision(d || 3);
  const layerOf = s => { const m = /layer_(\d+)/.exec(s); return m ? +m[1] : -1; };

  async function inflateJSON(b64) {
    const bin = atob(b64), bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'));
    return JSON.parse(await new Response(stream).text());
  }
  RJ.inflateJSON = inflateJSON;

  // ---------------------------------------------------------------- shards
  const waiters = {}, shards = {};
  RJ.shard = function (k, b64) {
    inflateJSON(b64).then(d => { shards[k] = d; if (waiters[k]) waiters[k].ok(d); },
                          e => { if (waiters[k]) waiters[k].fail(e); });
  };
  function loadShard(k) {
    if (shards[k]) return Promise.resolve(shards[k]);
    if (!waiters[k]) {
      const w = waiters[k] = {};
      w.p = new Promise((ok, fail) => { w.ok = ok; w.fail = fail; });
      const s = document.createElement('script');
      s.src = 'cards/s' + String(k).padStart(5, '0') + '.js';
      s.onerror = () => w.fail(new Error('cannot load ' + s.src));
      document.head.appendChild(s);
    }
    return waiters[k].p;
  }

  // ---------------------------------------------------------------- card
  function colour(v, scale) {
    if (!(scale > 0) || v == null) return '';
    const a = Math.min(1, Math.abs(v) / scale) * 0.85;
    if (a < 0.02) return '';
    return (v >= 0 ? 'rgba(255,122,0,' : 'rgba(40,110,220,') + a.toFixed(3) + ')';
  }
  function histogram(m) {
    const h = m.hist, n = h.counts.length, W = 300, H = 60, max = Math.log1p(Math.max(...h.counts));
    const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
    svg.setAttribute('class', 'hist');
    svg.setAttribute('viewBox', '0 0 ' + W + ' ' + (H + 10));
    svg.setAttribute('preserveAspectRatio', 'none');
    const ns = 'http://www.w3.org/2000/svg';
    h.counts.forEach((c, i) => {
      const r = document.createElementNS(ns, 'rect'), y = max > 0 ? Math.log1p(c) / max * H : 0;
      r.setAttribute('x', (i * W / n).toFixed(2)); r.setAttribute('width', (W / n * 0.92).toFixed(2));
      r.setAttribute('y', (H - y).toFixed(2)); r.setAttribute('height', y.toFixed(2));
      const t = document.createElementNS(ns, 'title');
      const w = (h.hi - h.lo) / n;
      t.textContent = '[' + fmt(h.lo + i * w) + ', ' + fmt(h.lo + (i + 1) * w) + '): ' + c + ' units';
      r.append(t); svg.append(r);
    });
    const nb = m.bands.length;
    for (let j = 1; j < nb; j++) {
      const l = document.createElementNS(ns, 'line'), x = (j * W / nb).toFixed(2);
      l.setAttribute('x1', x); l.setAttribute('x2', x); l.setAttribute('y1', 0); l.setAttribute('y2', H);
      svg.append(l);
    }
    [[2, 'start', h.lo], [W - 2, 'end', h.hi]].forEach(([x, anchor, v]) => {
      const t = document.createElementNS(ns, 'text');
      t.setAttribute('x', x); t.setAttribute('y', H + 9); t.setAttribute('text-anchor', anchor);
      t.textContent = fmt(v); svg.append(t);
    });
    return svg;
  }
  const expanded = new WeakMap();
  function unitDocs(card) {  // document index of each position of the unit table
    if (!expanded.has(card)) {
      const docs = [];
      for (const [, n, d] of card.units.runs) for (let j = 0; j < n; j++) docs.push(d);
      expanded.set(card, docs);
    }
    return expanded.get(card);
  }
  function context(card, ctx, by, scale) {
    const [c, a, b, v] = ctx, U = card.units, names = card.members.map(m => m.model);
    const li = el('li', {class: 'ctx'}, el('span', {class: 'v', text: fmt(v)}));
    for (let p = a; p < b; p++) {
      const act = U.act[by][p];
      const tip = names.map((nm, j) => nm + ': ' + fmt(U.act[j][p])).join(' \u00b7 ');
      const span = el('span', {class: 'tk' + (p === c ? ' centre' : ''), title: tip},
                      U.text[p].replace(/\n/g, '\u21b5'));
      const bg = colour(act, scale);
      if (bg) span.style.background = bg;
      li.append(span);
    }
    const d = card.docs[String(unitDocs(card)[c])];
    if (d) li.append(el('span', {class: 'dm', text: d[0] + ' \u00b7 ' + d[1]}));
    return li;
  }
  function memberView(card, i, colourBy) {
    const m = card.members[i], by = colourBy < 0 ? i : colourBy, cm = card.members[by];
    const scale = Math.max(Math.abs(cm.stats.max || 0), Math.abs(cm.stats.min || 0));
    const box = el('div', {class: 'member', 'data-model': m.model});
    const layer = layerOf(m.site);
    box.append(el('h3', {text: m.model + ' \u2014 ' + (layer >= 0 ? 'L' + layer + ' ' : '') +
                        'N' + m.neuron + ' (' + m.site + ')'}));
    const st = el('div', {class: 'stats'});
    const met = m.metrics || {};
    const parts = [['depth', m.depth], ['r', m.r], ['max', m.stats.max], ['mean', m.stats.mean],
                   ['freq>0', m.stats.frequency]];
    for (const [k, v] of Object.entries(met)) parts.push([k, v]);
    for (const k of ['kurtosis', 'skew', 'dsi']) if (!(k in met)) parts.push([k, m.stats[k]]);
    parts.forEach(([k, v]) => { if (v != null) st.append(k + ' ', el('b', {text: fmt(v)}), '  '); });
    if (m.domain) st.append('domain ', el('b', {text: m.domain}));
    box.append(st, histogram(m));
    if (by !== i) box.append(el('div', {class: 'band', text: 'coloured by ' + cm.model + ' N' + cm.neuron}));
    box.append(el('h4', {text: 'Top activations'}));
    const top = el('ol', {class: 'ctxs top'});
    m.top.forEach(ctx => top.append(context(card, ctx, by, scale)));
    box.append(top);
    box.append(el('h4', {text: 'Samples by activation band'}));
    for (let j = m.bands.length - 1; j >= 0; j--) {
      const bd = m.bands[j];
      box.append(el('div', {class: 'band', text: '[' + fmt(bd.lo) + ', ' + fmt(bd.hi) + ']  ' +
        bd.units + ' units, percentile ' + fmt(bd.pct[0], 4) + '\u2013' + fmt(bd.pct[1], 4)}));
      const ol = el('ol', {class: 'ctxs band-' + j});
      bd.samples.forEach(ctx => ol.append(context(card, ctx, by, scale)));
      box.append(ol);
    }
    if (m.vocab) {
      box.append(el('h4', {text: 'Vocabulary projection (kurtosis ' + fmt(m.vocab.kurtosis) +
                               ', skew ' + fmt(m.vocab.skew) + ')'}));
      const col = (title, list) => el('div', {}, el('div', {text: title}),
        ...list.map(([t, id, v]) => el('code', {title: 'id ' + id + ', logit ' + fmt(v),
                                                text: JSON.stringify(t).slice(1, -1)})));
      box.append(el('div', {class: 'vocab'}, col('promotes', m.vocab.top), col('suppresses', m.vocab.bottom)));
    }
    return box;
  }
  function renderCard(host, card, opts) {
    opts = opts || {};
    let colourBy = opts.colourBy == null ? -1 : opts.colourBy;
    const root = el('div', {class: 'card', 'data-id': card.id, 'data-kind': card.kind});
    const draw = () => {
      root.textContent = '';
      const title = card.kind + (card.group ? ' \u00b7 ' + card.group : '') +
                    (card.r != null ? ' \u00b7 r = ' + fmt(card.r, 4) : '');
      root.append(el('h2', {text: title}));
      const tools = el('div', {class: 'tools'});
      if (opts.link !== false) tools.append(el('a', {href: '#r=' + encodeURIComponent(card.id), text: 'link ' + card.id}));
      const sel = el('select', {class: 'colour-by', onchange: e => { colourBy = +e.target.value; draw(); }},
                     el('option', {value: -1, text: 'own activation'}),
                     ...card.members.map((m, j) => el('option', {value: j, text: m.model + ' N' + m.neuron})));
      sel.value = String(colourBy);
      tools.append(el('label', {}, 'colour by ', sel));
      tools.append(el('button', {class: 'dl', text: 'download JSON', onclick: () => {
        const a = el('a', {download: card.id + '.json',
                           href: URL.createObjectURL(new Blob([JSON.stringify(card)], {type: 'application/json'}))});
        document.body.append(a); a.click(); a.remove();
      }}));
      if (opts.also && opts.also.length) {
        tools.append(el('span', {class: 'also'}, 'also in: ',
          ...opts.also.map(id => el('a', {href: '#r=' + encodeURIComponent(id), text: id}))));
      }
      root.append(tools);
      const grid = el('div', {class: 'members'});
      grid.style.gridTemplateColumns = 'repeat(' + card.members.length + ', minmax(0, 1fr))';
      card.members.forEach((_, i) => grid.append(memberView(card, i, colourBy)));
      root.append(grid);
    };
    draw();
    host.textContent = '';
    host.append(root);
    return root;
  }
  RJ.renderCard = renderCard;

  // ---------------------------------------------------------------- index
  let IX = null, view = null, selected = -1;
  const S = {sort: 'r', dir: -1};

  function prepare(ix) {
    const R = ix.rows, n = R.id.length;
    ix.n = n;
    ix.siteLayer = ix.sites.map(layerOf);
    ix.byId = new Map(R.id.map((id, i) => [id, i]));
    ix.hay = new Array(n);
    ix.depth0 = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const mem = R.mem[i];
      ix.hay[i] = (mem.map(m => ix.models[m[0]] + ' ' + ix.sites[m[1]]).join(' ') + ' ' +
                   R.tok[i] + ' ' + ix.groups[R.group[i]]).toLowerCase();
      ix.depth0[i] = mem[0][3] == null ? NaN : mem[0][3];
    }
    ix.metricIdx = Object.fromEntries(ix.metrics.map((m, j) => [m, j]));
  }

  function parseQuery(q) {
    const out = {layer: null, neuron: null, models: [], terms: []};
    const re = /"([^"]+)"|(\S+)/g;
    let m;
    while ((m = re.exec(q)) !== null) {
      const t = m[1] != null ? m[1] : m[2];
      let g;
      if (m[1] == null && (g = /^(?:l|layer_?)(\d+)$/i.exec(t))) out.layer = +g[1];
      else if (m[1] == null && (g = /^(?:n|neuron_?|#)(\d+)$/i.exec(t))) out.neuron = +g[1];
      else if (m[1] == null && (g = /^(?:m|model):(.+)$/i.exec(t))) out.models.push(g[1].toLowerCase());
      else out.terms.push(t.toLowerCase());
    }
    return out;
  }

  function num(id) {
    const v = document.getElementById(id).value;
    return v === '' ? null : +v;
  }

  function applyFilters() {
    const R = IX.rows, q = parseQuery(document.getElementById('q').value);
    const rmin = num('f-rmin'), dlo = num('f-dlo'), dhi = num('f-dhi');
    const dom = document.getElementById('f-domain').value, grp = document.getElementById('f-group').value;
    const kinds = new Set([...document.querySelectorAll('.f-kind')].filter(c => c.checked).map(c => c.value));
    const keep = [];
    for (let i = 0; i < IX.n; i++) {
      if (!kinds.has(IX.kinds[R.kind[i]])) continue;
      if (grp !== '' && R.group[i] !== +grp) continue;
      if (rmin != null && !(R.r[i] != null && R.r[i] >= rmin)) continue;
      const mem = R.mem[i];
      if (dlo != null || dhi != null) {
        const ok = mem.some(m => m[3] != null && (dlo == null || m[3] >= dlo) && (dhi == null || m[3] <= dhi));
        if (!ok) continue;
      }
      if (dom !== '' && !mem.some(m => m[4] === +dom)) continue;
      if (q.layer != null || q.neuron != null) {
        const ok = mem.some(m => (q.layer == null || IX.siteLayer[m[1]] === q.layer) &&
                                 (q.neuron == null || m[2] === q.neuron));
        if (!ok) continue;
      }
      if (q.models.length && !q.models.every(s => mem.some(m => IX.models[m[0]].toLowerCase().includes(s)))) continue;
      if (q.terms.length && !q.terms.every(t => IX.hay[i].includes(t))) continue;
      keep.push(i);
    }
    view = Int32Array.from(keep);
    sortView();
  }

  function sortKey(col) {
    const R = IX.rows;
    if (col === 'r') return i => R.r[i] == null ? -Infinity : R.r[i];
    if (col === 'depth') return i => Number.isNaN(IX.depth0[i]) ? -Infinity : IX.depth0[i];
    if (col === 'neuron') return i => R.mem[i][0][2];
    if (col === 'kind') return i => R.kind[i];
    if (col === 'group') return i => IX.groups[R.group[i]];
    if (col === 'a') return i => IX.models[R.mem[i][0][0]] + '\u0000' + String(IX.siteLayer[R.mem[i][0][1]]).padStart(4, '0');
    if (col === 'domain') return i => { const d = R.mem[i][0][4]; return d < 0 ? '' : IX.domains[d]; };
    if (col in IX.metricIdx) {
      const j = IX.metricIdx[col];
      return i => { const v = R.met[i][0][j]; return v == null ? -Infinity : v; };
    }
    return i => i;
  }

  function sortView() {
    const key = sortKey(S.sort), keys = new Map();
    for (const i of view) keys.set(i, key(i));
    const arr = Array.from(view);
    arr.sort((a, b) => { const x = keys.get(a), y = keys.get(b); return (x < y ? -1 : x > y ? 1 : a - b) * S.dir; });
    view = Int32Array.from(arr);
    document.querySelectorAll('.lhead span').forEach(s => {
      s.classList.toggle('sorted', s.dataset.col === S.sort);
      s.classList.toggle('asc', S.dir > 0);
    });
    document.getElementById('count').textContent = view.length + ' of ' + IX.n + ' rows';
    const body = document.getElementById('lbody');
    document.getElementById('spacer').style.height = (view.length * ROWH) + 'px';
    body.scrollTop = 0;
    renderRows();
  }

  function columns() {
    const base = [['kind', 'kind', '60px'], ['group', 'group', 'minmax(0,0.8fr)'],
                  ['a', 'neuron', 'minmax(100px,1.2fr)'], ['b', 'partner(s)', 'minmax(100px,1.3fr)'],
                  ['r', 'r', '48px'], ['depth', 'depth', '64px']];
    const mets = IX.metrics.slice(0, 3).map(m => [m, m, '56px']);
    return base.concat(mets, [['domain', 'domain', '56px'], ['tokens', 'top units', 'minmax(0,1.2fr)']]);
  }

  function memberLabel(m) {
    const l = IX.siteLayer[m[1]];
    return (l >= 0 ? 'L' + l : IX.sites[m[1]]) + ' N' + m[2] + ' ' + IX.models[m[0]];
  }

  function renderRows() {
    const body = document.getElementById('lbody'), spacer = document.getElementById('spacer');
    const first = Math.max(0, Math.floor(body.scrollTop / ROWH) - 10);
    const last = Math.min(view.length, first + Math.ceil(body.clientHeight / ROWH) + 20);
    const R = IX.rows, cols = columns(), tmpl = cols.map(c => c[2]).join(' ');
    spacer.textContent = '';
    for (let p = first; p < last; p++) {
      const i = view[p], mem = R.mem[i];
      const row = el('div', {class: 'lrow' + (i === selected ? ' sel' : ''), 'data-i': i, 'data-id': R.id[i]});
      row.style.top = (p * ROWH) + 'px';
      row.style.gridTemplateColumns = tmpl;
      for (const [key] of cols) {
        let text, cls = '';
        if (key === 'kind') { text = IX.kinds[R.kind[i]]; cls = 'k-' + text; }
        else if (key === 'group') text = IX.groups[R.group[i]];
        else if (key === 'a') text = memberLabel(mem[0]);
        else if (key === 'b') text = mem.slice(1).map(memberLabel).join(', ');
        else if (key === 'r') { text = fmt(R.r[i]); cls = 'num'; }
        else if (key === 'depth') { text = mem.map(m => fmt(m[3], 2)).join('/'); cls = 'num'; }
        else if (key === 'domain') text = mem[0][4] >= 0 ? IX.domains[mem[0][4]] : '';
        else if (key === 'tokens') text = R.tok[i];
        else { text = fmt(R.met[i][0][IX.metricIdx[key]]); cls = 'num'; }
        row.append(el('span', {class: cls, text: text, title: text}));
      }
      spacer.append(row);
    }
  }

  function openRow(i) {
    selected = i;
    renderRows();
    const R = IX.rows, id = R.id[i], k = Math.floor(i / IX.shard_size);
    const host = document.getElementById('card');
    host.textContent = 'loading ' + id + '\u2026';
    const t0 = performance.now();
    return loadShard(k).then(sh => {
      const card = sh[id];
      if (!card) throw new Error('card ' + id + ' is not in shard ' + k);
      const key = R.mem[i].map(m => m[0] + ':' + m[1] + ':' + m[2]);
      const also = [];
      for (let j = 0; j < IX.n && also.length < 20; j++) {
        if (j !== i && R.mem[j].some(m => key.includes(m[0] + ':' + m[1] + ':' + m[2]))) also.push(R.id[j]);
      }
      renderCard(host, card, {also});
      window.RJ_CARD_MS = performance.now() - t0;
    }).catch(e => { host.textContent = String(e); throw e; });
  }

  function route() {
    const h = decodeURIComponent(location.hash.slice(1));
    let i = -1;
    if (h.startsWith('r=')) i = IX.byId.has(h.slice(2)) ? IX.byId.get(h.slice(2)) : -1;
    else if (h.startsWith('n=')) {
      const [model, site, neuron] = h.slice(2).split('|');
      const mi = IX.models.indexOf(model), si = IX.sites.indexOf(site);
      for (let j = 0; j < IX.n && i < 0; j++) {
        if (IX.rows.mem[j].some(m => m[0] === mi && m[1] === si && m[2] === +neuron)) i = j;
      }
    }
    if (h && i < 0) { document.getElementById('card').textContent = 'no row for #' + h; return; }
    if (i >= 0) openRow(i);
  }

  function controls() {
    const c = document.getElementById('controls');
    let timer = null;
    const later = () => { clearTimeout(timer); timer = setTimeout(applyFilters, 60); };
    c.append(el('input', {id: 'q', type: 'search', placeholder: 'search: L3 N59, model:name, a token or "text"', oninput: later}));
    c.append(el('label', {}, 'r \u2265', el('input', {id: 'f-rmin', type: 'number', step: '0.05', min: '-1', max: '1', oninput: later})));
    c.append(el('label', {}, 'depth', el('input', {id: 'f-dlo', type: 'number', step: '0.1', min: '0', max: '1', oninput: later}),
                '\u2013', el('input', {id: 'f-dhi', type: 'number', step: '0.1', min: '0', max: '1', oninput: later})));
    c.append(el('label', {}, 'domain', el('select', {id: 'f-domain', onchange: later}, el('option', {value: '', text: 'any'}),
      ...IX.domains.map((d, j) => el('option', {value: j, text: d})))));
    c.append(el('label', {}, 'group', el('select', {id: 'f-group', onchange: later}, el('option', {value: '', text: 'all'}),
      ...IX.groups.map((g, j) => el('option', {value: j, text: g})))));
    const present = new Set(IX.rows.kind);
    IX.kinds.forEach((k, j) => {
      if (!present.has(j)) return;
      c.append(el('label', {class: 'k-' + k}, el('input', {type: 'checkbox', class: 'f-kind', value: k, checked: '', onchange: later}), k));
    });
    c.append(el('span', {id: 'count', class: 'counts'}));
  }

  function layout() {
    const head = document.getElementById('lhead'), cols = columns();
    head.style.gridTemplateColumns = cols.map(c => c[2]).join(' ');
    cols.forEach(([key, label]) => head.append(el('span', {'data-col': key, text: label, onclick: () => {
      if (key === 'b' || key === 'tokens') return;
      S.dir = S.sort === key ? -S.dir : (key === 'r' || key in IX.metricIdx ? -1 : 1);
      S.sort = key;
      sortView();
    }})));
    document.getElementById('lbody').addEventListener('scroll', () => requestAnimationFrame(renderRows));
    document.getElementById('lbody').addEventListener('click', e => {
      const row = e.target.closest('.lrow');
      if (!row) return;
      const id = IX.rows.id[+row.dataset.i];
      if (location.hash === '#r=' + encodeURIComponent(id)) openRow(+row.dataset.i);
      else location.hash = 'r=' + encodeURIComponent(id);
    });
    window.addEventListener('hashchange', route);
    window.addEventListener('resize', () => requestAnimationFrame(renderRows));
  }

  RJ.boot = function (b64) {
    inflateJSON(b64).then(ix => {
      IX = ix;
      RJ.index = ix;
      prepare(ix);
      const t = document.getElementById('title');
      t.textContent = ix.title;
      document.title = ix.title;
      if (ix.synthetic) document.getElementById('banner').append(el('span', {class: 'synthetic', text: 'SYNTHETIC DATA (benchmark only)'}));
      const byKind = IX.kinds.map((k, j) => [k, ix.rows.kind.filter(x => x === j).length]).filter(x => x[1]);
      document.getElementById('summary').textContent = byKind.map(([k, c]) => c + ' ' + k).join(', ') +
        ' \u00b7 ' + ix.models.length + ' models';
      controls();
      layout();
      view = new Int32Array(0);
      applyFilters();
      route();
      window.RJ_READY_MS = performance.now();
    }).catch(e => { document.body.append(el('pre', {text: 'explorer failed: ' + e})); throw e; });
  };
})();
