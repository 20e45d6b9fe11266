// A screenshot of a running console, as a user sees it: `node screenshot.mjs URL OUT.png [SETTLE_MS] [SELECTOR]`
// (with a CSS selector, only that element, a panel say).
// Opens URL (with `?token=...` if the console needs one) in Debian's chromium through playwright-core, waits until
// the page has drawn its node list and SETTLE_MS more (default 3000: heartbeats and events keep arriving), and
// writes a full-page PNG. For the notes and docs (a console driving containers mid-chaos, say); not a test.
// CHROMIUM names the browser (default /usr/bin/chromium).

import { chromium } from 'playwright-core';

const [url, out, settle = '3000', selector] = process.argv.slice(2);
if (!url || !out) {
  console.error('usage: node screenshot.mjs URL OUT.png [SETTLE_MS]');
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  await page.goto(url);
  await page.waitForLoadState('networkidle');
  await page.waitForTimeout(Number(settle));
  if (selector) {
    await page.locator(selector).screenshot({ path: out });
  } else {
    await page.screenshot({ path: out, fullPage: true });
  }
  console.log(out);
} finally {
  await browser.close();
}
