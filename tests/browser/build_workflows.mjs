// Maintainer tool: (re)build workflows/*.json and their .jpg thumbnails in the real frontend.
// Each workflow below is an API graph plus a layout; the frontend builds the graph (app.loadApiJson),
// the layout is applied, and the frontend's own serializer writes the UI-format file.
// usage: node build_workflows.mjs URL OUT_DIR [CHROMIUM]   (a ComfyUI server with this pack must run at URL)
import fs from 'node:fs';
import path from 'node:path';
import {
  closeDialogs, fitGraph, launchBrowser, loadWorkflow, nodesScreenRect, openComfy, runFromPage, waitForPreviews,
} from './comfy_page.mjs';

const SD_CHECKPOINT = 'v1-5-pruned-emaonly-fp16.safetensors';
const SD_POSITIVE = 'a photograph of a lighthouse on a rocky coast at sunset, highly detailed';
const SD_NEGATIVE = 'blurry, low quality, watermark';
const SD_PROMPTS = [
  'a photograph of a lighthouse on a rocky coast at sunset, highly detailed',
  'a red vintage car parked on a cobblestone street',
  'a bowl of fresh fruit on a wooden kitchen table',
  'portrait of an old fisherman with a grey beard, studio lighting',
  'a snowy mountain village at night with warm lights in the windows',
  'a golden retriever puppy playing in autumn leaves',
  'an astronaut floating above the earth, digital art',
  'a cup of coffee and an open book beside a rainy window',
].join('\n');
const SD_COORDS = 'sd15/pas_euler_6steps_00001.safetensors';

// node: [class_type, inputs, {title, pos, size}]; links are [node_id, output_slot] as in API prompts.
const node = (classType, inputs, layout) => ({ class_type: classType, inputs, layout });

const DEMO = {
  name: 'pas_demo_train_and_sample',
  note: [
    'PAS on the bundled Fashion-MNIST model; runs on a CPU in well under a minute.',
    '1. PAS Trainer integrates 16 accurate teacher trajectories and learns a few coordinates that correct '
      + 'Euler (DDIM) on the 5-step Karras grid. Its error curve shows the per-step distance to the teacher '
      + 'with and without the correction.',
    '2. The same seed is sampled with 5 Euler steps without and with PAS, next to a 30-step Heun reference.',
    'The coordinates are also saved in models/pas/pas_demo/.',
  ].join('\n\n'),
  nodes: {
    1: node('PAS_DemoModel', { weights: 'fashion_mnist_edm.safetensors' }, { pos: [20, 260], size: [320, 100] }),
    2: node('PAS_DemoLatent', { batch_size: 8 }, { pos: [20, 400], size: [320, 60] }),
    3: node('BasicScheduler', { model: [1, 0], scheduler: 'karras', steps: 5, denoise: 1.0 },
      { title: 'Karras, 5 steps', pos: [20, 500], size: [320, 110] }),
    4: node('PAS_Trainer', {
      model: [1, 0], positive: [1, 1], negative: [1, 1], cfg: 1.0, latent: [2, 0], sigmas: [3, 0],
      solver: 'euler', max_order: 3, trajectories: 16, seed: 0, teacher_nfe: 40, n_basis: 4, loss: 'l1',
      tolerance: 0.01, filename_prefix: 'pas_demo/fashion_mnist_euler_5steps', prompts: '',
    }, { pos: [380, 20], size: [340, 470] }),
    5: node('PAS_Sampler', { solver: 'euler', max_order: 3, coordinates: 'none', pas_coords: [4, 0] },
      { pos: [760, 20], size: [300, 130] }),
    6: node('KSamplerSelect', { sampler_name: 'euler' }, { title: 'Euler (no PAS)', pos: [760, 190], size: [300, 60] }),
    7: node('SamplerCustom', {
      model: [1, 0], add_noise: true, noise_seed: 42, cfg: 1.0, positive: [1, 1], negative: [1, 1],
      sampler: [6, 0], sigmas: [3, 0], latent_image: [2, 0],
    }, { title: 'Sample: Euler, 5 steps', pos: [1100, 20], size: [300, 270] }),
    8: node('SamplerCustom', {
      model: [1, 0], add_noise: true, noise_seed: 42, cfg: 1.0, positive: [1, 1], negative: [1, 1],
      sampler: [5, 0], sigmas: [3, 0], latent_image: [2, 0],
    }, { title: 'Sample: Euler + PAS, 5 steps', pos: [1100, 330], size: [300, 270] }),
    9: node('PAS_DemoDecode', { samples: [7, 0], zoom: 4 }, { pos: [1440, 20], size: [240, 80] }),
    10: node('PAS_DemoDecode', { samples: [8, 0], zoom: 4 }, { pos: [1440, 330], size: [240, 80] }),
    11: node('PreviewImage', { images: [9, 0] }, { title: 'Euler, 5 steps (no PAS)', pos: [1720, 20], size: [300, 290] }),
    12: node('PreviewImage', { images: [10, 0] }, { title: 'Euler + PAS, 5 steps', pos: [1720, 330], size: [300, 290] }),
    13: node('PreviewImage', { images: [4, 1] }, { title: 'PAS error per step', pos: [380, 530], size: [340, 290] }),
    14: node('BasicScheduler', { model: [1, 0], scheduler: 'karras', steps: 30, denoise: 1.0 },
      { title: 'Karras, 30 steps (reference)', pos: [760, 650], size: [300, 110] }),
    15: node('KSamplerSelect', { sampler_name: 'heun' }, { title: 'Heun (reference)', pos: [760, 800], size: [300, 60] }),
    16: node('SamplerCustom', {
      model: [1, 0], add_noise: true, noise_seed: 42, cfg: 1.0, positive: [1, 1], negative: [1, 1],
      sampler: [15, 0], sigmas: [14, 0], latent_image: [2, 0],
    }, { title: 'Sample: Heun, 30 steps', pos: [1100, 640], size: [300, 270] }),
    17: node('PAS_DemoDecode', { samples: [16, 0], zoom: 4 }, { pos: [1440, 640], size: [240, 80] }),
    18: node('PreviewImage', { images: [17, 0] }, { title: 'Reference: Heun, 30 steps', pos: [1720, 640], size: [300, 290] }),
  },
  notePos: [20, 20], noteSize: [320, 200],
  ds: { scale: 0.74, offset: [10, 10] },
  run: true,
  thumbnailNodes: [7, 8, 9, 10, 11, 12, 16, 17, 18],
};

function sdCommon() {
  return {
    1: node('CheckpointLoaderSimple', { ckpt_name: SD_CHECKPOINT }, { pos: [20, 250], size: [320, 100] }),
    2: node('CLIPTextEncode', { clip: [1, 1], text: SD_POSITIVE },
      { title: 'Positive prompt', pos: [380, 20], size: [380, 160] }),
    3: node('CLIPTextEncode', { clip: [1, 1], text: SD_NEGATIVE },
      { title: 'Negative prompt', pos: [380, 220], size: [380, 160] }),
    4: node('EmptyLatentImage', { width: 512, height: 512, batch_size: 1 }, { pos: [20, 400], size: [320, 110] }),
    5: node('BasicScheduler', { model: [1, 0], scheduler: 'karras', steps: 6, denoise: 1.0 },
      { title: 'Karras, 6 steps', pos: [20, 560], size: [320, 110] }),
  };
}

const SD_TRAIN = {
  name: 'pas_sd_train',
  note: [
    "Train PAS for Stable Diffusion 1.5 at the paper's setting: DDIM (euler) on 6 Karras steps, CFG 7.5, "
      + 'teacher trajectories over a list of prompts.',
    `Put ${SD_CHECKPOINT} in models/checkpoints/.`,
    'The coordinates are saved as models/pas/sd15/pas_euler_6steps_NNNNN.safetensors; sample with them in '
      + 'pas_sd_sample (same model, CFG, scheduler and steps). Training costs trajectories x teacher_nfe model '
      + 'calls: minutes on a GPU.',
  ].join('\n\n'),
  nodes: {
    ...sdCommon(),
    6: node('PAS_Trainer', {
      model: [1, 0], positive: [2, 0], negative: [3, 0], cfg: 7.5, latent: [4, 0], sigmas: [5, 0],
      solver: 'euler', max_order: 3, trajectories: 64, seed: 0, teacher_nfe: 100, n_basis: 4, loss: 'l1',
      tolerance: 0.01, filename_prefix: 'sd15/pas_euler_6steps', clip: [1, 1], prompts: SD_PROMPTS,
    }, { pos: [800, 20], size: [400, 640] }),
    7: node('PreviewImage', { images: [6, 1] }, { title: 'PAS error per step', pos: [1240, 20], size: [420, 360] }),
  },
  notePos: [20, 20], noteSize: [320, 190],
  ds: { scale: 0.85, offset: [10, 10] },
};

const SD_SAMPLE = {
  name: 'pas_sd_sample',
  note: [
    'Text to image with SamplerCustomAdvanced: the same seed, model, CFG and 6 Karras steps, sampled with '
      + 'DDIM (euler) + PAS and without PAS.',
    `Put ${SD_CHECKPOINT} in models/checkpoints/ and pick your trained file (from pas_sd_train) in the `
      + "PAS Sampler's coordinates list.",
  ].join('\n\n'),
  nodes: {
    ...sdCommon(),
    6: node('RandomNoise', { noise_seed: 42 }, { pos: [380, 420], size: [380, 90] }),
    7: node('CFGGuider', { model: [1, 0], positive: [2, 0], negative: [3, 0], cfg: 7.5 },
      { pos: [380, 550], size: [380, 100] }),
    8: node('PAS_Sampler', { solver: 'euler', max_order: 3, coordinates: SD_COORDS },
      { pos: [800, 20], size: [320, 130] }),
    9: node('KSamplerSelect', { sampler_name: 'euler' }, { title: 'Euler / DDIM (no PAS)', pos: [800, 400], size: [320, 60] }),
    10: node('SamplerCustomAdvanced', { noise: [6, 0], guider: [7, 0], sampler: [8, 0], sigmas: [5, 0], latent_image: [4, 0] },
      { title: 'Sample: DDIM + PAS', pos: [1160, 20], size: [300, 130] }),
    11: node('SamplerCustomAdvanced', { noise: [6, 0], guider: [7, 0], sampler: [9, 0], sigmas: [5, 0], latent_image: [4, 0] },
      { title: 'Sample: DDIM', pos: [1160, 400], size: [300, 130] }),
    12: node('VAEDecode', { samples: [10, 0], vae: [1, 2] }, { pos: [1500, 20], size: [200, 50] }),
    13: node('VAEDecode', { samples: [11, 0], vae: [1, 2] }, { pos: [1500, 400], size: [200, 50] }),
    14: node('SaveImage', { images: [12, 0], filename_prefix: 'pas/sd15_euler6_pas' },
      { title: 'With PAS (6 steps)', pos: [1740, 20], size: [340, 340] }),
    15: node('SaveImage', { images: [13, 0], filename_prefix: 'pas/sd15_euler6_no_pas' },
      { title: 'Without PAS (6 steps)', pos: [1740, 420], size: [340, 340] }),
  },
  notePos: [20, 20], noteSize: [320, 190],
  ds: { scale: 0.7, offset: [10, 10] },
};

function toApi(spec) {
  const api = {};
  for (const [id, n] of Object.entries(spec.nodes)) {
    api[id] = { class_type: n.class_type, inputs: n.inputs, _meta: { title: n.layout.title } };
    if (!n.layout.title) delete api[id]._meta;
  }
  return api;
}

async function build(page, spec) {
  await page.evaluate(async ({ api, name }) => { await window.app.loadApiJson(api, name); }, { api: toApi(spec), name: spec.name });
  const missing = await page.evaluate((api) => Object.values(api).map((n) => n.class_type)
    .filter((t) => !(t in window.LiteGraph.registered_node_types)), toApi(spec));
  if (missing.length) throw new Error(`${spec.name}: node types not registered: ${missing}`);
  const layouts = Object.fromEntries(Object.entries(spec.nodes).map(([id, n]) => [id, n.layout]));
  const workflow = await page.evaluate(({ layouts, spec }) => {
    const { app, LiteGraph } = window;
    for (const [id, layout] of Object.entries(layouts)) {
      const n = app.graph.getNodeById(Number(id));
      if (!n) throw new Error(`node ${id} was not created`);
      n.pos = [...layout.pos];
      const min = n.computeSize();
      n.setSize([Math.max(layout.size[0], min[0]), Math.max(layout.size[1], min[1])]);
      // Seeds stay fixed, so the example is reproducible and the trainer is not re-run on every queue.
      for (const w of n.widgets ?? []) if (w.name === 'control_after_generate') w.value = 'fixed';
    }
    const note = LiteGraph.createNode('Note');
    note.title = 'About this workflow';
    note.pos = [...spec.notePos];
    note.setSize([...spec.noteSize]);
    note.widgets[0].value = spec.note;
    app.graph.add(note);
    app.canvas.ds.scale = spec.ds.scale;
    app.canvas.ds.offset = [...spec.ds.offset];
    app.graph.setDirtyCanvas(true, true);
    return app.graph.serialize();
  }, { layouts, spec: { note: spec.note, notePos: spec.notePos, noteSize: spec.noteSize, ds: spec.ds } });
  workflow.extra = { ...(workflow.extra ?? {}), ds: { scale: spec.ds.scale, offset: spec.ds.offset } };
  return workflow;
}

const [url, outDir, executable = '/usr/bin/chromium'] = process.argv.slice(2);
if (!url || !outDir) throw new Error('usage: node build_workflows.mjs URL OUT_DIR [CHROMIUM]');
fs.mkdirSync(outDir, { recursive: true });
const browser = await launchBrowser(executable);
try {
  const { page } = await openComfy(browser, url);
  for (const spec of [DEMO, SD_TRAIN, SD_SAMPLE]) {
    const workflow = await build(page, spec);
    const file = path.join(outDir, `${spec.name}.json`);
    fs.writeFileSync(file, `${JSON.stringify(workflow, null, 2)}\n`);
    // Reload the written file through the frontend's loader, as a user would, for the thumbnail.
    await loadWorkflow(page, workflow, spec.name);
    await closeDialogs(page);
    if (spec.run) {
      const run = await runFromPage(page, 300_000);
      if (run.status !== 'success') throw new Error(`${spec.name}: run ${run.status}: ${JSON.stringify(run.error)}`);
      await waitForPreviews(page, 60_000);
    }
    // Thumbnail for the template browser: the canvas around the nodes that tell the story.
    const ids = spec.thumbnailNodes ?? [];
    await fitGraph(page, { top: 140, left: 70, right: 10, bottom: 10, maxScale: 1.5, ids });
    const clip = await nodesScreenRect(page, ids);
    await page.screenshot({ path: path.join(outDir, `${spec.name}.jpg`), type: 'jpeg', quality: 85, clip });
    console.log(`wrote ${file}`);
  }
} finally {
  await browser.close();
}
