// Browser half of tests/browser/test_frontend_workflows.py: loads every workflow in the real ComfyUI
// frontend, checks node types and links as the page sees them, converts each to an API prompt with the
// frontend's own graphToPrompt, runs the demo workflow with the Run button and takes a screenshot, then
// opens the node help page of each node in config.help.
// usage: node drive_frontend.mjs CONFIG.json   (url, chromium, workflows[], run, screenshot, help[], report)
import fs from 'node:fs';
import path from 'node:path';
import {
  DIALOG_SELECTOR, closeDialogs, driveComfy, errorOverlayText, fitGraph, nodeHelp, packTemplates, runFromPage,
  waitForPreviews,
} from './comfy_page.mjs';

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const report = { frontendVersion: null, workflows: {}, run: null, help: {}, pageProblems: [], timings: {} };
const started = Date.now();
const lap = (name) => { report.timings[name] = (Date.now() - started) / 1000; };

// Everything the page can tell about a loaded workflow: missing types, broken links, the API prompt.
async function inspect(page, workflow, name) {
  const seen = await page.evaluate(async ({ workflow, name, dialogSelector }) => {
    const { app, LiteGraph } = window;
    window.__pasMissing = [];
    await app.loadGraphData(workflow, true, true, name);
    const g = app.graph;
    const problems = [];
    const links = g.links instanceof Map ? [...g.links.values()] : Object.values(g.links ?? {});
    const linkById = new Map(links.map((l) => [l.id, l]));
    for (const l of links) {
      const origin = g.getNodeById(l.origin_id);
      const target = g.getNodeById(l.target_id);
      if (!origin || !target) {
        problems.push(`link ${l.id}: node ${origin ? l.target_id : l.origin_id} does not exist`);
        continue;
      }
      const out = origin.outputs?.[l.origin_slot];
      const inp = target.inputs?.[l.target_slot];
      if (!out || !inp) {
        problems.push(`link ${l.id}: slot ${out ? `input ${l.target_slot} of ${target.type}` : `output ${l.origin_slot} of ${origin.type}`} does not exist`);
        continue;
      }
      const where = `${origin.type}#${origin.id}.${out.name} (${out.type}) -> ${target.type}#${target.id}.${inp.name} (${inp.type})`;
      if (inp.link !== l.id) problems.push(`link ${l.id} ${where}: the input holds link ${inp.link}`);
      if (!(out.links ?? []).includes(l.id)) problems.push(`link ${l.id} ${where}: not listed on the output`);
      if (!LiteGraph.isValidConnection(out.type, inp.type)) problems.push(`link ${l.id} ${where}: types do not match`);
    }
    for (const n of g.nodes) {
      for (const inp of n.inputs ?? []) {
        if (inp.link != null && !linkById.has(inp.link)) problems.push(`${n.type}#${n.id}.${inp.name}: dangling link ${inp.link}`);
      }
      if (n.has_errors) problems.push(`${n.type}#${n.id}: the frontend marked the node as having errors`);
    }
    // Every link stored in the file must have survived loading with the same endpoints. Node ids are
    // compared as strings: newer frontends hold a link's origin_id/target_id as strings, 1.32 as numbers.
    const same = (a, b) => String(a) === String(b);
    for (const [id, originId, originSlot, targetId, targetSlot] of workflow.links ?? []) {
      const l = linkById.get(id);
      if (!l || !same(l.origin_id, originId) || l.origin_slot !== originSlot || !same(l.target_id, targetId) || l.target_slot !== targetSlot) {
        problems.push(`file link ${id} (${originId}:${originSlot} -> ${targetId}:${targetSlot}) was dropped or changed on load`);
      }
    }
    const unregistered = g.nodes.filter((n) => !(n.type in LiteGraph.registered_node_types)).map((n) => n.type);
    let output = null;
    try {
      ({ output } = await app.graphToPrompt());
    } catch (error) {
      problems.push(`graphToPrompt failed: ${error?.message ?? error}`);
    }
    return {
      missing: window.__pasMissing, unregistered, problems, linkCount: links.length,
      nodes: g.nodes.map((n) => ({ id: n.id, type: n.type, mode: n.mode, virtual: Boolean(n.isVirtualNode) })),
      dialogs: [...document.querySelectorAll(dialogSelector)].filter((element) => element.checkVisibility()).length,
      output,
    };
  }, { workflow, name, dialogSelector: DIALOG_SELECTOR });
  await page.waitForTimeout(500);  // the newer frontends' error overlay follows the load
  seen.errorOverlay = await errorOverlayText(page);
  return seen;
}

await driveComfy(config, report, async (page) => {
  for (const file of config.workflows) {
    const name = path.basename(file, '.json');
    const workflow = JSON.parse(fs.readFileSync(file, 'utf8'));
    report.workflows[name] = await inspect(page, workflow, name);
    await closeDialogs(page);
    lap(`loaded_${name}`);
  }
  if (config.packName) {
    report.templates = await packTemplates(page, config.packName, config.workflows.length);
    await closeDialogs(page);
    lap('template_browser');
  }
  if (config.run) {
    const name = path.basename(config.run, '.json');
    const workflow = JSON.parse(fs.readFileSync(config.run, 'utf8'));
    await page.evaluate(async ({ workflow, name }) => { await window.app.loadGraphData(workflow, true, true, name); },
      { workflow, name });
    await closeDialogs(page);
    const run = await runFromPage(page, config.runTimeoutMs ?? 240_000);
    lap('run_finished');
    report.run = { name, status: run.status, error: run.error, promptId: run.promptId,
      executed: Object.keys(run.executed), previews: [] };
    if (run.status === 'success') {
      report.run.previews = await waitForPreviews(page, 60_000);
      lap('previews_shown');
      await fitGraph(page, { top: 140 });
      fs.mkdirSync(path.dirname(config.screenshot), { recursive: true });
      await page.screenshot({ path: config.screenshot });
      lap('screenshot');
    }
  }
  // Last, so that the help panel is not in the screenshot.
  await closeDialogs(page);
  for (const { type, expected } of config.help ?? []) {
    report.help[type] = await nodeHelp(page, type, expected);
    lap(`help_${type}`);
  }
}, lap);
