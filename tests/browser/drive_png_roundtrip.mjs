// Browser half of tests/browser/test_png_coordinates.py, in two runs (each its own browser):
//   train:  on the demo model, the PAS Trainer's text output goes to Preview as Text; the text shown there is
//           put into a PAS Coordinates (text) widget of a sampling graph (as a user pastes it), which is
//           run with the Run button and saves a PNG;
//   replay: a fresh page opens that PNG through the frontend's file input (as "Open" does) and runs it.
// usage: node drive_png_roundtrip.mjs CONFIG.json   (url, chromium, mode, png, report, runTimeoutMs)
import fs from 'node:fs';
import { closeDialogs, driveComfy, runFromPage } from './comfy_page.mjs';

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const report = { frontendVersion: null, mode: config.mode, runs: [], pageProblems: [] };
const node = (classType, inputs) => ({ class_type: classType, inputs });

const MODEL = node('PAS_DemoModel', { weights: 'fashion_mnist_edm.safetensors' });
const LATENT = node('PAS_DemoLatent', { batch_size: 2 });
const TRAIN = {
  1: MODEL, 2: LATENT,
  3: node('BasicScheduler', { model: [1, 0], scheduler: 'karras', steps: 5, denoise: 1.0 }),
  4: node('PAS_Trainer', {
    model: [1, 0], positive: [1, 1], negative: [1, 1], cfg: 1.0, latent: [2, 0], sigmas: [3, 0], solver: 'euler',
    max_order: 0, trajectories: 8, seed: 0, teacher_nfe: 16, n_basis: 3, loss: 'l1', tolerance: 0.01,
    filename_prefix: 'png_roundtrip/demo', prompts: '', grid: 'sigmas', scheduler: 'karras', steps: '5',
  }),
  5: node('PreviewAny', { source: [4, 3] }),
};
const SAMPLE = {
  1: MODEL, 2: LATENT,
  6: node('PAS_CoordinatesText', { text: '', steps: 0 }),
  7: node('PAS_Sampler', { solver: 'euler', max_order: 0, coordinates: 'none', pas_coords: [6, 0] }),
  8: node('SamplerCustom', {
    model: [1, 0], add_noise: true, noise_seed: 42, cfg: 1.0, positive: [1, 1], negative: [1, 1],
    sampler: [7, 0], sigmas: [6, 1], latent_image: [2, 0],
  }),
  9: node('PAS_DemoDecode', { samples: [8, 0], zoom: 1 }),
  10: node('SaveImage', { images: [9, 0], filename_prefix: 'pas_png_roundtrip' }),
};

async function loadApi(page, api, name) {
  await page.evaluate(async ({ api, name }) => {
    await window.app.loadApiJson(api, name);
    // Seeds stay fixed: the run and its replay must use the same noise.
    for (const n of window.app.graph.nodes) {
      for (const w of n.widgets ?? []) if (w.name === 'control_after_generate') w.value = 'fixed';
    }
  }, { api, name });
  await closeDialogs(page);
}

async function run(page, label) {
  const result = await runFromPage(page, config.runTimeoutMs ?? 300_000);
  const entry = { label, status: result.status, error: result.error, promptId: result.promptId, outputs: result.executed };
  report.runs.push(entry);
  if (result.status !== 'success') throw new Error(`${label}: run ${result.status}: ${JSON.stringify(result.error)}`);
  return entry;
}

// The PAS Coordinates (text) widget of the graph on the canvas.
const textWidget = (page) => page.evaluate(() => {
  const n = window.app.graph.nodes.find((item) => item.type === 'PAS_CoordinatesText');
  return n ? n.widgets.find((w) => w.name === 'text').value : null;
});

async function train(page) {
  await loadApi(page, TRAIN, 'pas_png_train');
  const trained = await run(page, 'train');
  report.text = trained.outputs['5']?.text?.[0] ?? null;  // what Preview as Text shows
  if (!report.text) throw new Error(`Preview as Text showed nothing: ${JSON.stringify(trained.outputs)}`);
  await loadApi(page, SAMPLE, 'pas_png_sample');
  await page.evaluate((text) => {  // paste the line into the widget
    const n = window.app.graph.getNodeById(6);
    const widget = n.widgets.find((w) => w.name === 'text');
    widget.value = text;
    widget.callback?.(text);
    window.app.graph.setDirtyCanvas(true, true);
  }, report.text);
  report.widgetText = await textWidget(page);
  report.image = (await run(page, 'sample')).outputs['10']?.images?.[0] ?? null;
}

async function replay(page) {
  await page.locator('#comfy-file-input').setInputFiles(config.png);
  await page.waitForFunction(() => window.app.graph.nodes.some((n) => n.type === 'PAS_CoordinatesText'), null,
    { timeout: 60_000, polling: 250 });
  await closeDialogs(page);
  report.widgetText = await textWidget(page);
  report.nodeTypes = await page.evaluate(() => window.app.graph.nodes.map((n) => n.type).sort());
  const replayed = await run(page, 'replay');
  const save = Object.entries(replayed.outputs).find(([, output]) => output?.images?.length);
  report.image = save ? save[1].images[0] : null;
}

await driveComfy(config, report, (page) => (config.mode === 'train' ? train(page) : replay(page)));
