// Maintainer tool: (re)build workflows/*.json and their .jpg thumbnails in the real frontend.
// Each workflow below is an API graph plus a layout; the frontend builds the graph (app.loadApiJson),
// the layout is applied, and the frontend's own serializer writes the UI-format file.
// usage: node build_workflows.mjs URL OUT_DIR [CHROMIUM]   (a ComfyUI server with this pack must run at URL,
// with the model files the workflows name under its models/: empty placeholders will do, the names are
// tests/browser/conftest.py's PLACEHOLDER_MODELS; docs/workflows.md shows the commands)
import fs from 'node:fs';
import path from 'node:path';
import {
  closeDialogs, fitGraph, launchBrowser, loadWorkflow, nodesScreenRect, openComfy, runFromPage, waitForPreviews,
} from './comfy_page.mjs';

// Model files the workflows name: the workflow notes, docs/workflows.md and the browser tests'
// placeholders (tests/browser/conftest.py, PLACEHOLDER_MODELS) use the same names.
const SD15_CHECKPOINT = 'v1-5-pruned-emaonly-fp16.safetensors';
const SDXL_CHECKPOINT = 'sd_xl_base_1.0.safetensors';
const SD35_CHECKPOINT = 'sd3.5_medium.safetensors';
const SD35_TEXT_ENCODERS = ['clip_l.safetensors', 'clip_g.safetensors', 't5xxl_fp16.safetensors'];
const FLUX_UNET = 'flux1-dev.safetensors';
const FLUX_TEXT_ENCODERS = ['clip_l.safetensors', 't5xxl_fp16.safetensors'];
const FLUX_VAE = 'ae.safetensors';
const POSITIVE = 'a photograph of a lighthouse on a rocky coast at sunset, highly detailed';
const NEGATIVE = 'blurry, low quality, watermark';
const PROMPTS = [
  'a photograph of a lighthouse on a rocky coast at sunset, highly detailed',
  'a red vintage car parked on a cobblestone street',
  'a bowl of fresh fruit on a wooden kitchen table',
  'portrait of an old fisherman with a grey beard, studio lighting',
  'a snowy mountain village at night with warm lights in the windows',
  'a golden retriever puppy playing in autumn leaves',
  'an astronaut floating above the earth, digital art',
  'a cup of coffee and an open book beside a rainy window',
].join('\n');

// node: [class_type, inputs, {title, pos, size}]; links are [node_id, output_slot] as in API prompts.
const node = (classType, inputs, layout) => ({ class_type: classType, inputs, layout });

// The PAS Trainer's settings that every example shares (the library's defaults: docs/ab-study.md).
const TRAINER_DEFAULTS = { seed: 0, n_basis: 3, loss: 'l1', tolerance: 0.01 };

// The demo samples one class at a CFG above 1 against the empty (unconditional) prompt, like an SD prompt and
// negative; the trainer's prompt list covers every class, so one file serves them all.
const DEMO_CFG = 3.0;
const DEMO_CLASS = 'Sneaker';
const DEMO_CLASSES = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag',
  'Ankle boot'].join('\n');
const demoSampler = (sampler, sigmas, title, pos) => node('SamplerCustom', {
  model: [1, 0], add_noise: true, noise_seed: 42, cfg: DEMO_CFG, positive: [19, 0], negative: [20, 0],
  sampler, sigmas, latent_image: [2, 0],
}, { title, pos, size: [300, 270] });

const DEMO = {
  name: 'pas_demo_train_and_sample',
  note: [
    'PAS on the bundled class-conditional Fashion-MNIST model at CFG 3; runs on a CPU in about a minute.',
    '1. PAS Trainer integrates 60 accurate teacher trajectories, six per class of its prompt list (one class per '
      + 'line, encoded by the clip output of PAS Demo Model; the empty negative is the unconditional prompt), and '
      + 'learns a few coordinates that correct Euler (DDIM) on the 5-step Karras grid it gets as SIGMAS (grid: '
      + 'sigmas). Its error curve shows the per-step distance to the teacher with and without the correction.',
    `2. The same seed is sampled for the class "${DEMO_CLASS}" (PAS Demo Prompt; try another class or an index `
      + '0-9) with 5 Euler steps without and with PAS, next to a 30-step Heun reference.',
    'The coordinates are also saved in models/pas/pas_demo/.',
  ].join('\n\n'),
  nodes: {
    1: node('PAS_DemoModel', { weights: 'fashion_mnist_edm_cond.safetensors' }, { pos: [20, 260], size: [320, 120] }),
    2: node('PAS_DemoLatent', { batch_size: 8 }, { pos: [20, 420], size: [320, 60] }),
    3: node('BasicScheduler', { model: [1, 0], scheduler: 'karras', steps: 5, denoise: 1.0 },
      { title: 'Karras, 5 steps', pos: [20, 520], size: [320, 110] }),
    19: node('PAS_DemoPrompt', { text: DEMO_CLASS }, { title: 'Positive: class', pos: [20, 670], size: [320, 90] }),
    20: node('PAS_DemoPrompt', { text: '' }, { title: 'Negative: empty (unconditional)', pos: [20, 800], size: [320, 90] }),
    4: node('PAS_Trainer', {
      model: [1, 0], positive: [19, 0], negative: [20, 0], cfg: DEMO_CFG, latent: [2, 0], sigmas: [3, 0],
      solver: 'euler', max_order: 0, trajectories: 60, teacher_nfe: 40, ...TRAINER_DEFAULTS, n_basis: 4,
      filename_prefix: 'pas_demo/fashion_mnist_euler_5steps', clip: [1, 2], prompts: DEMO_CLASSES, grid: 'sigmas',
      scheduler: 'karras', steps: '5',
    }, { pos: [380, 20], size: [340, 560] }),
    5: node('PAS_Sampler', { solver: 'euler', max_order: 0, coordinates: 'none', pas_coords: [4, 0] },
      { pos: [760, 20], size: [300, 130] }),
    6: node('KSamplerSelect', { sampler_name: 'euler' }, { title: 'Euler (no PAS)', pos: [760, 190], size: [300, 60] }),
    7: demoSampler([6, 0], [3, 0], 'Sample: Euler, 5 steps', [1100, 20]),
    8: demoSampler([5, 0], [3, 0], 'Sample: Euler + PAS, 5 steps', [1100, 330]),
    9: node('PAS_DemoDecode', { samples: [7, 0], zoom: 4 }, { pos: [1440, 20], size: [240, 80] }),
    10: node('PAS_DemoDecode', { samples: [8, 0], zoom: 4 }, { pos: [1440, 330], size: [240, 80] }),
    11: node('PreviewImage', { images: [9, 0] }, { title: 'Euler, 5 steps (no PAS)', pos: [1720, 20], size: [300, 290] }),
    12: node('PreviewImage', { images: [10, 0] }, { title: 'Euler + PAS, 5 steps', pos: [1720, 330], size: [300, 290] }),
    13: node('PreviewImage', { images: [4, 1] }, { title: 'PAS error per step', pos: [380, 640], size: [340, 290] }),
    14: node('BasicScheduler', { model: [1, 0], scheduler: 'karras', steps: 30, denoise: 1.0 },
      { title: 'Karras, 30 steps (reference)', pos: [760, 650], size: [300, 110] }),
    15: node('KSamplerSelect', { sampler_name: 'heun' }, { title: 'Heun (reference)', pos: [760, 800], size: [300, 60] }),
    16: demoSampler([15, 0], [14, 0], 'Sample: Heun, 30 steps', [1100, 640]),
    17: node('PAS_DemoDecode', { samples: [16, 0], zoom: 4 }, { pos: [1440, 640], size: [240, 80] }),
    18: node('PreviewImage', { images: [17, 0] }, { title: 'Reference: Heun, 30 steps', pos: [1720, 640], size: [300, 290] }),
  },
  notePos: [20, 20], noteSize: [320, 200],
  ds: { scale: 0.74, offset: [10, 10] },
  run: true,
  thumbnailNodes: [7, 8, 9, 10, 11, 12, 16, 17, 18],
};

// ---- checkpoint models: one train and one sample workflow each --------------------------------------
// model: what differs between SD 1.5, SDXL and SD 3.5 (the loader nodes, latent, CFG, solver, grid).
// The loader nodes (ids 1-9, in the left column from the top) give `modelOut` (MODEL), `clipOut` (CLIP) and
// `vaeOut` (VAE); the latent (below them, at y = `latentY`), the note (below the latent) and the prompts
// follow at fixed ids.
const SD15 = {
  key: 'sd', label: 'Stable Diffusion 1.5', folder: 'sd15', cfg: 7.5, width: 512,
  needs: `${SD15_CHECKPOINT} in models/checkpoints/`,
  loaders: () => ({
    1: node('CheckpointLoaderSimple', { ckpt_name: SD15_CHECKPOINT }, { pos: [20, 20], size: [320, 100] }),
  }),
  modelOut: [1, 0], clipOut: [1, 1], vaeOut: [1, 2],
  latent: 'EmptyLatentImage', latentY: 170,
  solver: 'deis', solverLabel: 'DEIS', grid: 'scheduler', scheduler: 'karras', steps: '4-8', sampleSteps: 6,
  trajectories: 16, teacherNfe: 100,
};

const SDXL = {
  ...SD15,
  key: 'sdxl', label: 'SDXL 1.0 base', folder: 'sdxl', cfg: 6.0, width: 1024,
  needs: `${SDXL_CHECKPOINT} in models/checkpoints/`,
  loaders: () => ({
    1: node('CheckpointLoaderSimple', { ckpt_name: SDXL_CHECKPOINT }, { pos: [20, 20], size: [320, 100] }),
  }),
  steps: '5,6,8,10', sampleSteps: 8,
};

// SD 3.5 medium, a rectified-flow model: the checkpoint holds the MMDiT and the VAE, its three text
// encoders come separately (ComfyUI's own SD 3.5 example does the same). It learns its schedule.
const SD35 = {
  key: 'sd35', label: 'Stable Diffusion 3.5 medium', folder: 'sd35m', cfg: 4.5, width: 1024,
  needs: `${SD35_CHECKPOINT} in models/checkpoints/; ${SD35_TEXT_ENCODERS.join(', ')} in models/text_encoders/`,
  loaders: () => ({
    1: node('CheckpointLoaderSimple', { ckpt_name: SD35_CHECKPOINT }, { pos: [20, 20], size: [320, 100] }),
    2: node('TripleCLIPLoader', {
      clip_name1: SD35_TEXT_ENCODERS[0], clip_name2: SD35_TEXT_ENCODERS[1], clip_name3: SD35_TEXT_ENCODERS[2],
    }, { pos: [20, 170], size: [320, 130] }),
    3: node('ModelSamplingSD3', { model: [1, 0], shift: 3.0 }, { title: 'ModelSamplingSD3 (shift 3)', pos: [20, 350], size: [320, 60] }),
  }),
  modelOut: [3, 0], clipOut: [2, 0], vaeOut: [1, 2],
  latent: 'EmptySD3LatentImage', latentY: 460,
  solver: 'dpmpp_2m', solverLabel: 'DPM++ 2M', grid: 'learned', steps: '6', sampleSteps: 6,
  baselineScheduler: 'sgm_uniform', trajectories: 16, teacherNfe: 100,
};

// Flux dev, a guidance-distilled flow model: the diffusion model, its two text encoders and its VAE come as
// separate files (ComfyUI's own Flux example does the same). CFG 1 with a guidance value in the
// conditioning (FluxGuidance): the negative is not used at CFG 1, so the guided prompt fills both inputs.
const FLUX = {
  key: 'flux', label: 'Flux.1 dev', folder: 'flux', cfg: 1.0, width: 1024, guidance: 3.5,
  needs: `${FLUX_UNET} in models/diffusion_models/; ${FLUX_TEXT_ENCODERS.join(', ')} in models/text_encoders/; `
    + `${FLUX_VAE} in models/vae/`,
  loaders: () => ({
    1: node('UNETLoader', { unet_name: FLUX_UNET, weight_dtype: 'default' }, { pos: [20, 20], size: [320, 90] }),
    2: node('DualCLIPLoader', { clip_name1: FLUX_TEXT_ENCODERS[0], clip_name2: FLUX_TEXT_ENCODERS[1], type: 'flux' },
      { pos: [20, 150], size: [320, 130] }),
    3: node('VAELoader', { vae_name: FLUX_VAE }, { pos: [20, 320], size: [320, 60] }),
  }),
  modelOut: [1, 0], clipOut: [2, 0], vaeOut: [3, 0],
  latent: 'EmptySD3LatentImage', latentY: 420,
  solver: 'euler', solverLabel: 'Euler', grid: 'scheduler', scheduler: 'simple', steps: '6,8,10', sampleSteps: 8,
  trajectories: 16, teacherNfe: 100,
};

// The conditioning the trainer and the guider get: [positive, negative] links.
const guidanceWords = (model) => (model.guidance
  ? [`A guidance-distilled model: CFG 1 and FluxGuidance ${model.guidance} on the prompt (the negative input is not used `
    + 'at CFG 1, so the guided prompt fills it); the prompt list keeps that guidance.']
  : []);
const conditioningOut = (model) => (model.guidance ? [[13, 0], [13, 0]] : [[10, 0], [11, 0]]);

function prompts(model) {
  const latentSize = { width: model.width, height: model.width, batch_size: 1 };
  const nodes = {
    10: node('CLIPTextEncode', { clip: model.clipOut, text: POSITIVE },
      { title: 'Positive prompt', pos: [380, 20], size: [380, 160] }),
    12: node(model.latent, latentSize, { title: `Latent ${model.width}x${model.width}`, pos: [20, model.latentY], size: [320, 110] }),
  };
  if (model.guidance) {
    nodes[13] = node('FluxGuidance', { conditioning: [10, 0], guidance: model.guidance },
      { title: `FluxGuidance ${model.guidance}`, pos: [380, 220], size: [380, 60] });
  } else {
    nodes[11] = node('CLIPTextEncode', { clip: model.clipOut, text: NEGATIVE },
      { title: 'Negative prompt', pos: [380, 220], size: [380, 160] });
  }
  return nodes;
}

const gridWords = (model) => (model.grid === 'learned'
  ? `a ${model.steps}-step schedule it learns from the teacher (grid: learned)`
  : `${model.scheduler} grids of ${model.steps} steps, all in one file (grid: scheduler)`);
const coordsFile = (model) => `${model.folder}/pas_${model.solver}_${model.grid === 'learned' ? 'learned' : model.scheduler}`
  + `_${model.steps.replace(/,/g, '_')}`;
const trainName = (model) => `pas_${model.key}_train`;
const sampleName = (model) => `pas_${model.key}_sample`;

function trainSpec(model) {
  return {
    name: trainName(model),
    note: [
      `Train PAS for ${model.label}: ${model.solverLabel} (${model.solver}) on ${gridWords(model)}, CFG ${model.cfg}, `
        + `${model.trajectories} teacher trajectories over a list of prompts (one per line, cycled).`,
      `Put ${model.needs}.`,
      ...guidanceWords(model),
      `The coordinates are saved as models/pas/${coordsFile(model)}_NNNNN.safetensors; sample with them in `
        + `${sampleName(model)} (same model and CFG; PAS Load Coordinates gives the sampler the file's own sigmas). `
        + 'Training costs about trajectories x teacher_nfe model calls plus short roll-outs: minutes on a GPU. '
        + "The trainer's text shows the sigmas it trained on and the held-out error with and without PAS.",
    ].join('\n\n'),
    nodes: {
      ...model.loaders(),
      ...prompts(model),
      20: node('PAS_Trainer', {
        model: model.modelOut, positive: conditioningOut(model)[0], negative: conditioningOut(model)[1], cfg: model.cfg,
        latent: [12, 0],
        solver: model.solver, max_order: 0, trajectories: model.trajectories, teacher_nfe: model.teacherNfe,
        ...TRAINER_DEFAULTS, filename_prefix: coordsFile(model), clip: model.clipOut, prompts: PROMPTS,
        grid: model.grid, scheduler: model.scheduler ?? 'karras', steps: model.steps,
      }, { pos: [800, 20], size: [400, 760] }),
      21: node('PreviewImage', { images: [20, 1] }, { title: 'PAS error per step', pos: [1240, 20], size: [420, 360] }),
    },
    notePos: [20, model.latentY + 160], noteSize: [320, Math.max(300, 780 - model.latentY - 160)],
    ds: { scale: 0.85, offset: [10, 10] },
  };
}

function sampleSpec(model) {
  const learned = model.grid === 'learned';
  const steps = model.sampleSteps;
  const grid = learned ? `learned ${steps}-step schedule` : `${steps} ${model.scheduler} steps`;
  const file = `${coordsFile(model)}_00001.safetensors`;
  const nodes = {
    ...model.loaders(),
    ...prompts(model),
    20: node('PAS_LoadCoordinates', { coordinates: file, steps: learned ? 0 : steps },
      { title: learned ? 'PAS Load Coordinates (learned schedule)' : `PAS Load Coordinates (${steps} steps)`,
        pos: [380, 420], size: [380, 130] }),
    21: node('RandomNoise', { noise_seed: 42 }, { pos: [380, 610], size: [380, 90] }),
    22: node('CFGGuider', { model: model.modelOut, positive: conditioningOut(model)[0], negative: conditioningOut(model)[1], cfg: model.cfg },
      { pos: [380, 750], size: [380, 100] }),
    23: node('PAS_Sampler', { solver: model.solver, max_order: 0, coordinates: 'none', pas_coords: [20, 0] },
      { pos: [800, 20], size: [320, 130] }),
    24: node('KSamplerSelect', { sampler_name: model.solver }, { title: `${model.solverLabel} (no PAS)`, pos: [800, 420], size: [320, 60] }),
    30: node('SamplerCustomAdvanced', { noise: [21, 0], guider: [22, 0], sampler: [23, 0], sigmas: [20, 1], latent_image: [12, 0] },
      { title: `Sample: ${model.solverLabel} + PAS`, pos: [1160, 20], size: [300, 130] }),
    31: node('SamplerCustomAdvanced', { noise: [21, 0], guider: [22, 0], sampler: [24, 0], sigmas: [20, 1], latent_image: [12, 0] },
      { title: `Sample: ${model.solverLabel}`, pos: [1160, 420], size: [300, 130] }),
    32: node('VAEDecode', { samples: [30, 0], vae: model.vaeOut }, { pos: [1500, 20], size: [200, 50] }),
    33: node('VAEDecode', { samples: [31, 0], vae: model.vaeOut }, { pos: [1500, 420], size: [200, 50] }),
    34: node('SaveImage', { images: [32, 0], filename_prefix: `pas/${model.folder}_${model.solver}${steps}_pas` },
      { title: `With PAS (${grid})`, pos: [1740, 20], size: [340, 360] }),
    35: node('SaveImage', { images: [33, 0], filename_prefix: `pas/${model.folder}_${model.solver}${steps}_no_pas` },
      { title: `Without PAS (${grid})`, pos: [1740, 420], size: [340, 360] }),
  };
  const rows = [`${model.solverLabel} + PAS`, `plain ${model.solverLabel}`];
  if (model.baselineScheduler) {
    // The schedule ComfyUI's own examples use for this model, same steps, no PAS: what the learned grid beats.
    const base = model.baselineScheduler;
    Object.assign(nodes, {
      25: node('BasicScheduler', { model: model.modelOut, scheduler: base, steps, denoise: 1.0 },
        { title: `${base}, ${steps} steps`, pos: [800, 820], size: [320, 110] }),
      36: node('SamplerCustomAdvanced', { noise: [21, 0], guider: [22, 0], sampler: [24, 0], sigmas: [25, 0], latent_image: [12, 0] },
        { title: `Sample: ${model.solverLabel}, ${base}`, pos: [1160, 820], size: [300, 130] }),
      37: node('VAEDecode', { samples: [36, 0], vae: model.vaeOut }, { pos: [1500, 820], size: [200, 50] }),
      38: node('SaveImage', { images: [37, 0], filename_prefix: `pas/${model.folder}_${model.solver}${steps}_${base}` },
        { title: `Without PAS (${base}, ${steps} steps)`, pos: [1740, 820], size: [340, 360] }),
    });
    rows.push(`plain ${model.solverLabel} on ComfyUI's ${base} schedule with as many steps`);
  }
  return {
    name: sampleName(model),
    note: [
      `Text to image for ${model.label} with SamplerCustomAdvanced: the same seed, model and CFG ${model.cfg} `
        + `on the ${grid}, sampled with ${rows.join(', with ')}.`,
      `Put ${model.needs}, and pick your file from ${trainName(model)} in PAS Load Coordinates. Its sigmas `
        + 'output feeds the samplers, so grid and coordinates always match'
        + (learned ? '.' : `; its steps input picks one of the file's grids (${model.steps}).`),
      `PAS Sampler's solver must be the one the file was trained with (${model.solver}); max_order 0 takes the `
        + "file's order.",
      ...guidanceWords(model),
    ].join('\n\n'),
    nodes,
    notePos: [20, model.latentY + 160], noteSize: [320, Math.max(300, 780 - model.latentY - 160)],
    ds: { scale: 0.7, offset: [10, 10] },
  };
}

const SPECS = [DEMO, ...[SD15, SDXL, SD35, FLUX].flatMap((model) => [trainSpec(model), sampleSpec(model)])];

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
  // Every widget must hold the value the graph gives it, and a list value must be one the server offers
  // (model files included: give the server the placeholders of tests/browser/conftest.py).
  const wrong = await page.evaluate((api) => Object.entries(api).flatMap(([id, n]) => {
    const live = window.app.graph.getNodeById(Number(id));
    return Object.entries(n.inputs).filter(([, value]) => !Array.isArray(value)).flatMap(([name, value]) => {
      const widget = live?.widgets?.find((w) => w.name === name);
      if (!widget) return [`${n.class_type}#${id}.${name}: no such widget`];
      const options = widget.options?.values;
      if (Array.isArray(options) && !options.includes(value)) return [`${n.class_type}#${id}.${name}: the server offers no ${JSON.stringify(value)}`];
      return widget.value === value ? [] : [`${n.class_type}#${id}.${name} = ${JSON.stringify(widget.value)}, not ${JSON.stringify(value)}`];
    });
  }), toApi(spec));
  if (wrong.length) throw new Error(`${spec.name}: ${wrong.join('; ')}`);
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
  for (const spec of SPECS) {
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
    // (bottom: clear of the canvas toolbar in the bottom-right corner)
    await fitGraph(page, { top: 140, left: 70, right: 10, bottom: 70, maxScale: 1.5, ids });
    const clip = await nodesScreenRect(page, ids);
    await page.screenshot({ path: path.join(outDir, `${spec.name}.jpg`), type: 'jpeg', quality: 85, clip });
    console.log(`wrote ${file}`);
  }
} finally {
  await browser.close();
}
