// segicl web page logic: gathers the form, calls POST /v1/segment (JSON reply with base64 files,
// docs/serve.md) and shows image, mask and uncertainty in NiiVue. No build step, no framework;
// NiiVue comes from ./vendor/niivue (copied from npm at build time).
import { Niivue, NVImage } from './vendor/niivue/index.js';

const $ = (id) => document.getElementById(id);
const state = {
  query: null,          // {blob, name}
  examples: [],         // [{image: {blob, name}, label: {blob, name}}]
  samples: [],          // GET /v1/samples
  result: null,         // last /v1/segment JSON
  layers: {},           // NiiVue volumes: image, live (probability at the slider), uncertainty
  running: false,
};
// Read by the end-to-end test (tests/serve/web_e2e.cjs).
window.segicl = state;

const nv = new Niivue({ backColor: [0, 0, 0, 1], show3Dcrosshair: true, isColorbar: false,
                        dragAndDropEnabled: false, crosshairColor: [0.2, 0.8, 1, 0.6] });
const viewerReady = nv.attachToCanvas($('gl')).then(() => nv.setSliceType(nv.sliceTypeAxial));

function authHeaders() {
  const token = $('token').value.trim();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function status(text) { $('status').textContent = text; }

function showError(err) {
  const box = $('error');
  if (!err) { box.hidden = true; box.textContent = ''; return; }
  box.hidden = false;
  box.textContent = typeof err === 'string' ? err
    : `${err.error}${err.field ? `\nfield: ${err.field}` : ''}${err.hint ? `\nhint: ${err.hint}` : ''}`;
}

async function api(path, options = {}) {
  const res = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
  const type = res.headers.get('Content-Type') || '';
  const body = type.includes('application/json') ? await res.json() : await res.blob();
  if (!res.ok) {
    const err = body && body.error ? body : { error: `HTTP ${res.status}` };
    err.status = res.status;
    throw err;
  }
  return body;
}

function base64ToBytes(b64) {
  const text = atob(b64);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; ++i) bytes[i] = text.charCodeAt(i);
  return bytes;
}

// ---- samples -----------------------------------------------------------------------------

async function loadSamples() {
  try {
    const { samples } = await api('/v1/samples');
    state.samples = samples;
    for (const select of [$('query-sample'), $('example-sample')]) {
      for (const s of samples) {
        const labels = s.labels ? ` (labels ${s.labels.join(', ')})` : '';
        select.add(new Option(`${s.dataset}: ${s.name}${labels}`, s.id));
      }
    }
  } catch (err) {
    if (err.status === 401) status('enter the server token, then reload samples by picking again');
  }
}

async function fetchSample(id, kind) {
  const s = state.samples.find((x) => x.id === id);
  const blob = await api(kind === 'label' ? s.label_url : s.image_url);
  return { blob, name: s.file, sample: s };
}

// ---- form --------------------------------------------------------------------------------

function renderExamples() {
  const list = $('examples');
  list.replaceChildren();
  state.examples.forEach((ex, i) => {
    const item = document.createElement('li');
    item.textContent = `${ex.image.name} + ${ex.label.name}`;
    const remove = document.createElement('button');
    remove.type = 'button';
    remove.textContent = '×';
    remove.title = 'remove this pair';
    remove.onclick = () => { state.examples.splice(i, 1); renderExamples(); };
    item.append(remove);
    list.append(item);
  });
}

async function setQuery(query) {
  state.query = query;
  $('query-name').textContent = query ? query.name : 'no image';
  if (!query) return;
  // Preview the raw upload until a result brings the server's own copy of the grid.
  try {
    await viewerReady;
    clearLayers();
    const image = await NVImage.loadFromUrl({ url: URL.createObjectURL(query.blob), name: query.name });
    nv.addVolume(image);
    state.layers.image = image;
    resetSliceSlider();
  } catch (err) {
    status(`preview unavailable (${err.message || err}); Segment still works`);
  }
}

$('query-file').addEventListener('change', (e) => {
  const file = e.target.files[0];
  if (file) setQuery({ blob: file, name: file.name });
});

$('query-sample').addEventListener('change', async (e) => {
  if (!e.target.value) return;
  try {
    const q = await fetchSample(e.target.value, 'image');
    await setQuery(q);
  } catch (err) { showError(err); }
});

$('add-example').addEventListener('click', () => {
  const image = $('example-image').files[0], label = $('example-label').files[0];
  if (!image || !label) { showError('choose both the example image and its mask'); return; }
  state.examples.push({ image: { blob: image, name: image.name }, label: { blob: label, name: label.name } });
  $('example-image').value = '';
  $('example-label').value = '';
  showError(null);
  renderExamples();
});

$('add-example-sample').addEventListener('click', async () => {
  const id = $('example-sample').value;
  if (!id) return;
  try {
    const image = await fetchSample(id, 'image'), label = await fetchSample(id, 'label');
    state.examples.push({ image, label });
    // Bundled label maps hold several structures; default to the first one.
    if ($('label').value === '-1' && image.sample.labels && image.sample.labels.length > 1)
      $('label').value = image.sample.labels[0];
    renderExamples();
  } catch (err) { showError(err); }
});

$('threshold').addEventListener('input', () => {
  const t = Number($('threshold').value);
  $('threshold-value').textContent = t.toFixed(2);
  applyThreshold(t);
});

// ---- viewer ------------------------------------------------------------------------------

function clearLayers() {
  while (nv.volumes.length) nv.removeVolume(nv.volumes[0]);
  state.layers = {};
}

// The live mask is the probability map shown as solid red above the slider's threshold (NiiVue
// draws overlay voxels below cal_min transparent), so moving the slider needs no round trip.
function applyThreshold(t) {
  const live = state.layers.live;
  if (!live) return;
  live.cal_min = Math.min(t, 0.999);
  live.cal_max = live.cal_min + 0.001;
  nv.updateGLVolume();
}

function applyVisibility() {
  if (state.layers.live) nv.setOpacity(nv.getVolumeIndexByID(state.layers.live.id), $('show-mask').checked ? 0.55 : 0);
  if (state.layers.uncertainty)
    nv.setOpacity(nv.getVolumeIndexByID(state.layers.uncertainty.id), $('show-uncertainty').checked ? 0.7 : 0);
}

function resetSliceSlider() {
  const image = state.layers.image;
  if (!image) return;
  const depth = image.dims[3] || 1;
  $('slice').max = Math.max(0, depth - 1);
  const vox = nv.frac2vox(nv.scene.crosshairPos);
  $('slice').value = Math.round(vox[2]);
  $('slice-value').textContent = `${Math.round(vox[2]) + 1} / ${depth}`;
}

$('slice').addEventListener('input', () => {
  if (!state.layers.image) return;
  const vox = nv.frac2vox(nv.scene.crosshairPos);
  nv.moveCrosshairInVox(0, 0, Number($('slice').value) - Math.round(vox[2]));
  $('slice-value').textContent = `${Number($('slice').value) + 1} / ${$('slice').max * 1 + 1}`;
});
nv.onLocationChange = () => {
  if (!state.layers.image) return;
  const z = Math.round(nv.frac2vox(nv.scene.crosshairPos)[2]);
  $('slice').value = z;
  $('slice-value').textContent = `${z + 1} / ${$('slice').max * 1 + 1}`;
};
$('show-mask').addEventListener('change', applyVisibility);
$('show-uncertainty').addEventListener('change', applyVisibility);
$('view').addEventListener('change', () => {
  const types = { axial: nv.sliceTypeAxial, multiplanar: nv.sliceTypeMultiplanar, render: nv.sliceTypeRender };
  nv.setSliceType(types[$('view').value]);
});

async function loadFile(file, options) {
  return NVImage.loadFromBase64({ base64: file.base64, name: file.filename, ...options });
}

async function showResult(result) {
  await viewerReady;
  clearLayers();
  const image = await loadFile(result.image, { colormap: 'gray' });
  nv.addVolume(image);
  const live = await loadFile(result.probability, { colormap: 'red', opacity: 0.55 });
  nv.addVolume(live);
  const uncertainty = await loadFile(result.uncertainty.file, { colormap: 'warm', opacity: 0 });
  uncertainty.cal_min = 1e-6;
  uncertainty.cal_max = Math.max(result.uncertainty.max, 1e-5);
  nv.addVolume(uncertainty);
  state.layers = { image, live, uncertainty };
  applyThreshold(Number($('threshold').value));
  applyVisibility();
  // Start on the slice with the most mask, where there is something to look at.
  resetSliceSlider();
  nv.drawScene();
}

// ---- run ---------------------------------------------------------------------------------

async function run() {
  if (state.running) return;
  if (!state.query) { showError('choose an image or a bundled sample first'); return; }
  showError(null);
  state.running = true;
  $('run').disabled = true;
  status('segmenting…');
  const form = new FormData();
  form.append('image', state.query.blob, state.query.name);
  for (const ex of state.examples) {
    form.append('example_image', ex.image.blob, ex.image.name);
    form.append('example_label', ex.label.blob, ex.label.name);
  }
  form.append('text', $('text').value);
  form.append('label', $('label').value || '-1');
  form.append('threshold', $('threshold').value);
  form.append('steps', $('steps').value);
  form.append('samples', $('samples').value);
  form.append('format', 'nifti');
  form.append('include', 'image,probability,uncertainty');
  const started = performance.now();
  try {
    const result = await api('/v1/segment', { method: 'POST', body: form });
    state.result = result;
    await showResult(result);
    const mask = new Blob([base64ToBytes(result.mask.base64)], { type: result.mask.media_type });
    const link = $('download');
    if (link.href) URL.revokeObjectURL(link.href);
    link.href = URL.createObjectURL(mask);
    link.download = result.mask.filename;
    link.classList.remove('disabled');
    const t = result.timing;
    status(`done in ${((performance.now() - started) / 1000).toFixed(1)} s ` +
           `(model ${t.segment_seconds.toFixed(2)} s, queue ${t.queue_seconds.toFixed(2)} s)`);
    $('summary').textContent = `${result.foreground_voxels} mask voxels at threshold ${result.threshold}; ` +
      `k = ${result.num_context} context pairs` +
      (result.recalled_tasks && result.recalled_tasks.length
        ? ` (recalled from the model's memory: ${result.recalled_tasks.join(', ')})` : '') +
      `; ${result.slices} slices; ` +
      `mean uncertainty ${result.uncertainty.mean.toExponential(2)}`;
  } catch (err) {
    status('failed');
    showError(err.error ? err : String(err.message || err));
  } finally {
    state.running = false;
    $('run').disabled = false;
  }
}
$('run').addEventListener('click', run);

// ---- start -------------------------------------------------------------------------------

$('token').value = sessionStorage.getItem('segicl-token') || '';
$('token').addEventListener('change', () => {
  sessionStorage.setItem('segicl-token', $('token').value.trim());
  start();
});

async function start() {
  try {
    const m = await api('/v1/model');
    $('model-info').textContent = `${m.checkpoint} · ${(m.parameters / 1e6).toFixed(2)} M parameters · ` +
      `k ≤ ${m.max_context} · ${m.device}`;
    if ($('query-sample').options.length <= 1) await loadSamples();
  } catch (err) {
    $('model-info').textContent = err.status === 401 ? 'this server needs a token (Options)' : 'server unreachable';
  }
}
start();
