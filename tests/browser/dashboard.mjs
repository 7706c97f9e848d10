// Opens the dashboard in headless Chromium, waits until the price chart holds data points and a
// price changes on screen, saves a screenshot, and fails on any page error.
//
// usage: node dashboard.mjs URL SCREENSHOT.png
// env:   CHROMIUM (default /usr/bin/chromium), DASHBOARD_TIMEOUT_MS (default 30000)
import { chromium } from "playwright-core";

const [url, screenshot] = process.argv.slice(2);
if (!url || !screenshot) {
  console.error("usage: node dashboard.mjs URL SCREENSHOT.png");
  process.exit(2);
}
const timeout = Number(process.env.DASHBOARD_TIMEOUT_MS || 30000);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
let failed = false;
try {
  const page = await browser.newPage({ viewport: { width: 1366, height: 768 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });

  await page.goto(url);
  await page.waitForSelector("#status.live", { timeout });
  // The chart of the selected ticker holds at least three points...
  await page.waitForFunction(
    () => Number(document.querySelector("#price-chart").dataset.points) >= 3, null, { timeout });
  const ticker = (await page.textContent("#selected")).trim();
  const cell = `tr[data-ticker="${ticker}"] .price`;
  const before = (await page.textContent(cell)).trim();
  // ...and its price changes on screen while we watch.
  await page.waitForFunction(
    ([sel, old]) => document.querySelector(sel).textContent.trim() !== old, [cell, before], { timeout });
  const after = (await page.textContent(cell)).trim();
  const points = Number(await page.getAttribute("#price-chart", "data-points"));
  const canvases = await page.$$eval(".chart canvas", (cs) => cs.filter((c) => c.width > 0).length);
  const rows = await page.$$eval("#tickers tbody tr", (rs) => rs.length);
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify({ ticker, before, after, points, canvases, rows, errors }));
  if (errors.length > 0 || canvases < 2) failed = true;
} catch (e) {
  console.error(String(e));
  failed = true;
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
