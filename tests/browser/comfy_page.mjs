// Shared helpers: Debian's headless Chromium (through playwright-core) on the real ComfyUI frontend.
import fs from 'node:fs';
import { chromium } from 'playwright-core';

// Headless, no sandbox (root in containers), no GPU, and nothing that phones home.
export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--disable-default-apps', '--disable-extensions', '--disable-breakpad', '--disable-domain-reliability',
  '--disable-client-side-phishing-detection', '--no-first-run', '--no-default-browser-check',
  '--metrics-recording-only', '--disable-features=Translate,OptimizationHints,MediaRouter',
];

export async function launchBrowser(executablePath) {
  if (!executablePath || !fs.existsSync(executablePath)) {
    throw new Error(`Chromium not found at ${executablePath}: run scripts/setup_browser.sh (make browser)`);
  }
  return chromium.launch({ executablePath, headless: true, args: CHROMIUM_ARGS, timeout: 60_000 });
}

// A driver's whole run: launch Chromium, open ComfyUI, note the frontend version, then `drive(page)`. The
// report gets the page's problems, or the error; it is written to config.report in any case, and an error
// exits with status 1. `lap(name)` is called after the browser start and once the frontend is ready.
export async function driveComfy(config, report, drive, lap = () => {}) {
  let browser;
  try {
    browser = await launchBrowser(config.chromium);
    lap('browser_started');
    const { page, problems } = await openComfy(browser, config.url);
    report.frontendVersion = await page.evaluate(() => window.__COMFYUI_FRONTEND_VERSION__ ?? null);
    lap('frontend_ready');
    await drive(page);
    report.pageProblems = problems;
  } catch (error) {
    report.error = String(error?.stack ?? error);
  } finally {
    if (browser) await browser.close();
    fs.writeFileSync(config.report, `${JSON.stringify(report, null, 1)}\n`);
  }
  if (report.error) {
    console.error(report.error);
    process.exit(1);
  }
}

// Open the ComfyUI page and wait until the frontend's app has registered every server node type.
export async function openComfy(browser, url, { width = 1600, height = 900 } = {}) {
  const context = await browser.newContext({ viewport: { width, height }, deviceScaleFactor: 1 });
  // No "Nodes 2.0" banner: the frontend keeps its dismissal in localStorage.
  await context.addInitScript(() => localStorage.setItem('vueNodesBannerDismissed', 'true'));
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (error) => problems.push(`pageerror: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(`console: ${message.text()}`);
  });
  await page.goto(url, { waitUntil: 'domcontentloaded', timeout: 120_000 });
  await page.waitForFunction(
    () => window.app?.graph && window.LiteGraph?.registered_node_types?.PAS_Sampler !== undefined,
    null, { timeout: 120_000, polling: 250 });
  await page.evaluate(() => {
    // Record what the frontend itself reports as missing node types after each load.
    window.__pasMissing = [];
    window.app.registerExtension({
      name: 'ComfyUI-PAS.browser-test',
      async afterConfigureGraph(missing) { window.__pasMissing = (missing ?? []).map((m) => (typeof m === 'string' ? m : m.type)); },
    });
    // Execution events from the frontend's own api client (the websocket it opened).
    window.__pasRun = { executed: {}, status: null, error: null, promptId: null };
    const api = window.comfyAPI.api.api;
    api.addEventListener('executed', (e) => { window.__pasRun.executed[e.detail.node] = e.detail.output; });
    api.addEventListener('execution_success', (e) => {
      window.__pasRun.status = 'success'; window.__pasRun.promptId = e.detail.prompt_id;
    });
    api.addEventListener('execution_error', (e) => { window.__pasRun.status = 'error'; window.__pasRun.error = e.detail; });
    api.addEventListener('execution_interrupted', () => { window.__pasRun.status = 'interrupted'; });
  });
  await page.evaluate(() => { window.app.canvas.show_info = false; });  // no FPS overlay in screenshots
  await closeDialogs(page);
  return { context, page, problems };
}

// Open dialogs in both frontend generations: PrimeVue's .p-dialog (frontend 1.32; it has role=dialog and a
// .p-dialog-mask around it) and the newer frontends' dialogs, which are [role=dialog] without PrimeVue.
export const DIALOG_SELECTOR = '[role=dialog], .p-dialog-mask';

export async function openDialogCount(page) {
  return page.evaluate((selector) => [...document.querySelectorAll(selector)]
    .filter((element) => element.checkVisibility()).length, DIALOG_SELECTOR);
}

// Close any open dialog (template browser, notices): Escape, then (PrimeVue) a click on the mask outside it.
export async function closeDialogs(page) {
  for (let i = 0; i < 4; i++) {
    if (!(await openDialogCount(page))) return;
    if (i % 2 === 1 && await page.locator('.p-dialog-mask').count()) {
      const { height } = page.viewportSize();
      await page.mouse.click(8, height - 10);
    } else {
      await page.keyboard.press('Escape');
    }
    await page.waitForTimeout(400);
  }
  if (await openDialogCount(page)) throw new Error('a dialog over the canvas does not close');
}

// What the frontend flags on the canvas: the newer frontends' error overlay ("N issues found", e.g. for
// missing models); frontend 1.32 has none and marks nodes (node.has_errors) instead.
export async function errorOverlayText(page) {
  return page.evaluate(() => [...document.querySelectorAll('[data-testid=error-overlay]')]
    .filter((element) => element.checkVisibility()).map((element) => element.innerText.trim()));
}

// Load a UI-format workflow through the frontend's own loader; returns what the page saw.
export async function loadWorkflow(page, workflow, name) {
  return page.evaluate(async ({ workflow, name }) => {
    window.__pasMissing = [];
    await window.app.loadGraphData(workflow, true, true, name);
    await new Promise((resolve) => requestAnimationFrame(() => resolve()));
    return { missing: window.__pasMissing };
  }, { workflow, name });
}

// The queue ("Run") button: its test id in newer frontends, where more than one button is named "Run";
// frontend 1.32 has no test id on it but only one button of that name.
export async function runButton(page) {
  const byTestId = page.getByTestId('queue-button');
  return (await byTestId.count()) ? byTestId : page.getByRole('button', { name: 'Run', exact: true });
}

// Press the frontend's Run button and wait until the server reports the prompt finished.
export async function runFromPage(page, timeoutMs) {
  await page.evaluate(() => { window.__pasRun = { ...window.__pasRun, executed: {}, status: null, error: null, promptId: null }; });
  await (await runButton(page)).click();
  await page.waitForFunction(() => window.__pasRun.status !== null, null, { timeout: timeoutMs, polling: 250 });
  return page.evaluate(() => window.__pasRun);
}

// Wait until every image-preview node in the graph shows its loaded images; returns their sizes.
export async function waitForPreviews(page, timeoutMs) {
  await page.waitForFunction(() => {
    const previews = window.app.graph.nodes.filter((n) => n.type === 'PreviewImage' || n.type === 'SaveImage');
    return previews.length > 0 && previews.every((n) => n.imgs?.length > 0
      && n.imgs.every((img) => img.complete && img.naturalWidth > 0));
  }, null, { timeout: timeoutMs, polling: 250 });
  return page.evaluate(() => window.app.graph.nodes
    .filter((n) => n.type === 'PreviewImage' || n.type === 'SaveImage')
    .map((n) => ({ id: n.id, title: n.title, images: n.imgs.map((img) => [img.naturalWidth, img.naturalHeight]) })));
}

// Scale and scroll the canvas so that every node (or the nodes in ids) is visible below the top bars.
export async function fitGraph(page, { top = 120, left = 70, right = 24, bottom = 56, maxScale = 1, ids = [] } = {}) {
  await page.evaluate(({ top, left, right, bottom, maxScale, ids }) => {
    const { app, LiteGraph } = window;
    const rect = app.canvas.canvas.getBoundingClientRect();
    const title = LiteGraph.NODE_TITLE_HEIGHT ?? 30;
    let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
    for (const n of app.graph.nodes.filter((node) => !ids.length || ids.includes(node.id))) {
      x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - title);
      x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]);
    }
    const width = rect.width - left - right;
    const height = rect.height - top - bottom;
    const scale = Math.min(maxScale, width / (x1 - x0), height / (y1 - y0));
    app.canvas.ds.scale = scale;
    app.canvas.ds.offset = [left / scale - x0, top / scale - y0];
    app.graph.setDirtyCanvas(true, true);
  }, { top, left, right, bottom, maxScale, ids });
  await page.waitForTimeout(300);
}

// The on-screen rectangle (page pixels) around the given nodes (all nodes when ids is empty).
export async function nodesScreenRect(page, ids = [], pad = 12) {
  return page.evaluate(({ ids, pad }) => {
    const { app, LiteGraph } = window;
    const rect = app.canvas.canvas.getBoundingClientRect();
    const { scale, offset } = app.canvas.ds;
    const title = LiteGraph.NODE_TITLE_HEIGHT ?? 30;
    const nodes = app.graph.nodes.filter((n) => !ids.length || ids.includes(n.id));
    const xs = nodes.flatMap((n) => [n.pos[0], n.pos[0] + n.size[0]]);
    const ys = nodes.flatMap((n) => [n.pos[1] - title, n.pos[1] + n.size[1]]);
    const toX = (x) => rect.left + (x + offset[0]) * scale;
    const toY = (y) => rect.top + (y + offset[1]) * scale;
    const x = Math.max(0, toX(Math.min(...xs)) - pad);
    const y = Math.max(0, toY(Math.min(...ys)) - pad);
    return { x, y, width: toX(Math.max(...xs)) + pad - x, height: toY(Math.max(...ys)) + pad - y };
  }, { ids, pad });
}

// Open the frontend's template browser on this pack's section; returns the card titles and image sizes.
// The card grid is virtual: a card gets its thumbnail when scrolled into view and loses it when scrolled far
// out, so the cards are visited one by one and each card's loaded thumbnail is recorded under its title.
export async function packTemplates(page, packName, expected, timeoutMs = 30_000) {
  await page.getByRole('button', { name: 'Templates', exact: true }).click();
  const dialog = page.locator('[role=dialog]');
  await dialog.getByText(packName, { exact: true }).first().click();
  const thumbnails = {};
  let titles = [];
  for (const deadline = Date.now() + timeoutMs; Date.now() < deadline;) {
    const seen = await page.evaluate(() => [...document.querySelectorAll('[role=dialog] h3')].map((h) => {
      let card = h;  // the largest element around the title that holds no other title
      while (card.parentElement && card.parentElement.querySelectorAll('h3').length === 1) card = card.parentElement;
      const img = card.querySelector('img');
      return [h.innerText.trim(), img?.complete && img.naturalWidth > 0 ? [img.naturalWidth, img.naturalHeight] : null];
    }));
    titles = seen.map(([title]) => title);
    for (const [title, size] of seen) if (size) thumbnails[title] = size;
    const missing = titles.slice(-expected).find((title) => !(title in thumbnails));
    if (missing === undefined && Object.keys(thumbnails).length >= expected) break;
    if (missing !== undefined) {
      await page.evaluate((title) => [...document.querySelectorAll('[role=dialog] h3')]
        .find((h) => h.innerText.trim() === title)?.scrollIntoView({ block: 'center' }), missing);
    }
    await page.waitForTimeout(250);
  }
  await closeDialogs(page);
  return { titles, images: Object.values(thumbnails) };
}

// Open the frontend's help page for a node of this type, as a user does: select the node and press the
// selection toolbox's info button (data-testid=info-button in both frontend generations). Frontend 1.32
// shows the help in the node library sidebar, newer ones in the right-hand panel's Info tab; both render
// it in .node-help-content. Waits until the panel shows `expected`; returns the panel's text.
export async function nodeHelp(page, type, expected, timeoutMs = 30_000) {
  await page.evaluate((type) => {
    const { app, LiteGraph } = window;
    app.graph.clear();
    const node = LiteGraph.createNode(type);
    node.pos = [700, 300];
    app.graph.add(node);
    app.canvas.ds.scale = 1;
    app.canvas.ds.offset = [0, 0];
    app.canvas.selectNode(node);
    app.graph.setDirtyCanvas(true, true);
  }, type);
  await page.getByTestId('info-button').first().click({ timeout: 15_000 });
  // The panel's visible text, whitespace collapsed (rendered markdown wraps lines differently).
  const panelText = () => page.evaluate(() => [...document.querySelectorAll('.node-help-content')]
    .filter((element) => element.checkVisibility())
    .map((element) => element.innerText.replace(/\s+/g, ' ').trim()).join(' '));
  try {
    await page.waitForFunction((expected) => [...document.querySelectorAll('.node-help-content')]
      .some((element) => element.checkVisibility() && element.innerText.replace(/\s+/g, ' ').includes(expected)),
    expected, { timeout: timeoutMs, polling: 250 });
  } catch {
    // the caller judges the text it got
  }
  return panelText();
}
