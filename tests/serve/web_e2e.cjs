// Headless Chromium test of the segicl web page (run by serve_web_test.cpp, label: integration).
// Drives Debian's chromium through playwright-core: loads the page from a running `segicl serve`,
// picks a bundled CHAOS volume as the query and another patient as the example pair, runs the
// segmentation and checks that a non-empty mask came back and that the canvas drew the image with
// the red mask overlay. Saves a screenshot as the test artifact.
// Usage: node web_e2e.cjs NODE_MODULES CHROMIUM URL TOKEN SCREENSHOT
'use strict';
const path = require('path');
const fs = require('fs');
const zlib = require('zlib');

const [nodeModules, chromiumPath, url, token, screenshot] = process.argv.slice(2);
const { chromium } = require(path.join(nodeModules, 'playwright-core'));

// Decodes an 8-bit RGB/RGBA, non-interlaced PNG (what Chromium's screenshots are) to RGBA pixels.
function decodePng(buffer) {
  let offset = 8, width = 0, height = 0, channels = 4;
  const idat = [];
  while (offset < buffer.length) {
    const length = buffer.readUInt32BE(offset), type = buffer.toString('ascii', offset + 4, offset + 8);
    const data = buffer.subarray(offset + 8, offset + 8 + length);
    if (type === 'IHDR') {
      width = data.readUInt32BE(0); height = data.readUInt32BE(4);
      if (data[8] !== 8 || data[12] !== 0) throw new Error('unsupported PNG (bit depth or interlace)');
      channels = { 2: 3, 6: 4 }[data[9]];
      if (!channels) throw new Error(`unsupported PNG colour type ${data[9]}`);
    } else if (type === 'IDAT') {
      idat.push(data);
    }
    offset += 12 + length;
  }
  const raw = zlib.inflateSync(Buffer.concat(idat));
  const stride = width * channels, out = Buffer.alloc(width * height * 4);
  let prev = Buffer.alloc(stride);
  for (let y = 0; y < height; ++y) {
    const filter = raw[y * (stride + 1)], line = Buffer.from(raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1)));
    for (let i = 0; i < stride; ++i) {
      const a = i >= channels ? line[i - channels] : 0, b = prev[i], c = i >= channels ? prev[i - channels] : 0;
      let p = 0;
      if (filter === 1) p = a;
      else if (filter === 2) p = b;
      else if (filter === 3) p = (a + b) >> 1;
      else if (filter === 4) {
        const pa = Math.abs(b - c), pb = Math.abs(a - c), pc = Math.abs(a + b - 2 * c);
        p = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
      line[i] = (line[i] + p) & 255;
    }
    for (let x = 0; x < width; ++x)
      for (let k = 0; k < 4; ++k) out[(y * width + x) * 4 + k] = k < channels ? line[x * channels + k] : 255;
    prev = line;
  }
  return { width, height, pixels: out };
}

function fail(message) {
  console.error(`web_e2e: FAIL: ${message}`);
  process.exitCode = 1;
}

(async () => {
  const browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    // No GPU here: WebGL2 (NiiVue) runs on SwiftShader. Root in CI needs --no-sandbox.
    args: ['--no-sandbox', '--use-angle=swiftshader', '--enable-unsafe-swiftshader', '--ignore-gpu-blocklist'],
  });
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console error: ${m.text()}`); });
  page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()}`));
  await page.addInitScript((t) => sessionStorage.setItem('segicl-token', t), token);
  const started = Date.now();
  const mark = (what) => console.log(`web_e2e: ${((Date.now() - started) / 1000).toFixed(1)} s ${what}`);
  try {
    await page.goto(url, { waitUntil: 'load' });
    mark('page loaded');
    await page.waitForFunction(() => document.getElementById('query-sample').options.length > 2, null, { timeout: 30000 });
    const ids = await page.$$eval('#query-sample option', (os) => os.map((o) => o.value).filter((v) => v.startsWith('chaos')));
    if (ids.length < 2) throw new Error(`expected two CHAOS samples, got ${JSON.stringify(ids)}`);
    await page.selectOption('#query-sample', ids[1]);
    await page.waitForFunction((f) => document.getElementById('query-name').textContent === f,
                               ids[1].split('/')[1], { timeout: 30000 });
    await page.selectOption('#example-sample', ids[0]);
    await page.click('#add-example-sample');
    await page.waitForFunction(() => document.querySelectorAll('#examples li').length === 1, null, { timeout: 30000 });
    await page.fill('#text', 'segment the liver');
    await page.fill('#label', '1');
    await page.fill('#steps', '1');
    await page.fill('#samples', '2');
    // A random-weight test model: threshold 0 makes any positive probability foreground.
    await page.$eval('#threshold', (el) => { el.value = '0'; el.dispatchEvent(new Event('input')); });
    mark('form filled');
    await page.click('#run');
    await page.waitForFunction(() => !window.segicl.running && (window.segicl.result ||
                                 !document.getElementById('error').hidden), null, { timeout: 280000 });
    mark('run finished');
    const error = await page.$eval('#error', (el) => (el.hidden ? '' : el.textContent));
    if (error) throw new Error(`the page shows an error: ${error}`);
    const result = await page.evaluate(() => ({
      foreground: window.segicl.result.foreground_voxels,
      maskBytes: window.segicl.result.mask.bytes,
      size: window.segicl.result.grid.size,
      layers: Object.keys(window.segicl.layers),
      download: document.getElementById('download').getAttribute('href') || '',
      timing: window.segicl.result.timing,
    }));
    console.log(`web_e2e: mask ${result.maskBytes} bytes, ${result.foreground} voxels, grid ${result.size}, ` +
                `timing ${JSON.stringify(result.timing)}`);
    if (!(result.foreground > 0)) fail('the mask is empty');
    if (!(result.maskBytes > 0)) fail('no mask file in the reply');
    if (!result.download.startsWith('blob:')) fail('the download link was not set');
    if (result.layers.join(',') !== 'image,live,uncertainty') fail(`viewer layers: ${result.layers}`);

    await page.waitForTimeout(500);  // let NiiVue finish the frame after the last volume upload
    const shot = decodePng(await page.locator('#gl').screenshot());
    let lit = 0, red = 0;
    for (let i = 0; i < shot.pixels.length; i += 4) {
      const [r, g, b] = [shot.pixels[i], shot.pixels[i + 1], shot.pixels[i + 2]];
      if (r + g + b > 30) ++lit;
      if (r > 120 && r > 1.6 * g && r > 1.6 * b) ++red;
    }
    const total = shot.width * shot.height;
    console.log(`web_e2e: canvas ${shot.width}x${shot.height}, ${(100 * lit / total).toFixed(1)}% lit, ` +
                `${(100 * red / total).toFixed(2)}% mask-red`);
    if (lit < 0.05 * total) fail('the canvas is (nearly) black: NiiVue did not draw the volume');
    if (red === 0) fail('no red mask pixels on the canvas');
  } catch (e) {
    fail(e.message);
  } finally {
    fs.mkdirSync(path.dirname(screenshot), { recursive: true });
    await page.screenshot({ path: screenshot, fullPage: true }).catch(() => {});
    console.log(`web_e2e: screenshot ${screenshot}`);
    for (const p of problems) console.error(`web_e2e: ${p}`);
    if (problems.some((p) => p.startsWith('page error'))) fail('uncaught error in the page');
    await browser.close();
  }
})();
