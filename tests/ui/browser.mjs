// Drives weir's web UI in a real browser (Debian's Chromium through playwright-core) the way
// a user does: opens the page with a token link, uploads a component by choosing its file and
// clicking Upload, submits a job with the form, waits for it to finish in the jobs table, then
// checks that the server's errors (a file that is not a component, a refused submit) are
// shown and stay shown. Prints a JSON summary of what it saw on stdout; exits 1 with the
// reason (on stderr) at the first thing that is not as expected.
//
// Inputs, each as `--name=value` or the environment variable in brackets:
//   --playwright      [WEIR_PLAYWRIGHT]      the playwright-core package directory (required)
//   --chromium        [WEIR_CHROMIUM]        the browser (default /usr/bin/chromium)
//   --url             [WEIR_URL]             the cluster, e.g. http://127.0.0.1:8081 (required)
//   --token           [WEIR_TOKEN]           the tenant's token (required)
//   --wasm            [WEIR_UI_WASM]         the component to upload (required)
//   --args            [WEIR_UI_ARGS]         the job's arguments, a JSON object (default {})
//   --parallelism     [WEIR_UI_PARALLELISM]  (default 1)
//   --interval        [WEIR_UI_INTERVAL]     checkpoint interval in ms (default: none)
//   --bad-file        [WEIR_UI_BAD_FILE]     a file that is not a component (optional)
//   --bad-upload-text [WEIR_UI_BAD_UPLOAD_TEXT] what its error must say
//   --bad-args        [WEIR_UI_BAD_ARGS]     arguments the server refuses, JSON (optional)
//   --bad-submit-text [WEIR_UI_BAD_SUBMIT_TEXT] what that error must say
//   --screenshot      [WEIR_UI_SCREENSHOT]   where to save a PNG of the page at the end
//                                            (and on failure) (optional)
//   --timeout-ms      [WEIR_UI_TIMEOUT_MS]   longest wait for one thing (default 60000)
import { createRequire } from "node:module";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";

const ENV = {
  playwright: "WEIR_PLAYWRIGHT",
  chromium: "WEIR_CHROMIUM",
  url: "WEIR_URL",
  token: "WEIR_TOKEN",
  wasm: "WEIR_UI_WASM",
  args: "WEIR_UI_ARGS",
  parallelism: "WEIR_UI_PARALLELISM",
  interval: "WEIR_UI_INTERVAL",
  "bad-file": "WEIR_UI_BAD_FILE",
  "bad-upload-text": "WEIR_UI_BAD_UPLOAD_TEXT",
  "bad-args": "WEIR_UI_BAD_ARGS",
  "bad-submit-text": "WEIR_UI_BAD_SUBMIT_TEXT",
  screenshot: "WEIR_UI_SCREENSHOT",
  "timeout-ms": "WEIR_UI_TIMEOUT_MS",
};

function options() {
  const o = {};
  for (const [name, env] of Object.entries(ENV)) {
    if (process.env[env] !== undefined && process.env[env] !== "") o[name] = process.env[env];
  }
  for (const a of process.argv.slice(2)) {
    const m = /^--([a-z-]+)=(.*)$/s.exec(a);
    if (!m || !(m[1] in ENV)) fail(`unknown argument '${a}' (expected --name=value, one of ${Object.keys(ENV).join(", ")})`);
    o[m[1]] = m[2];
  }
  for (const required of ["playwright", "url", "token", "wasm"]) {
    if (!o[required]) fail(`missing --${required} (or ${ENV[required]})`);
  }
  o.chromium ||= "/usr/bin/chromium";
  o.timeout = Number(o["timeout-ms"] || 60000);
  o.jobArgs = json(o.args || "{}", "--args");
  o.badArgs = o["bad-args"] ? json(o["bad-args"], "--bad-args") : null;
  return o;
}

function json(text, what) {
  try {
    return JSON.parse(text);
  } catch (e) {
    fail(`${what} is not JSON: ${e.message}`);
  }
}

function fail(message) {
  process.stderr.write(`browser.mjs: ${message}\n`);
  process.exit(1);
}

const o = options();
const require = createRequire(import.meta.url);
let chromium;
try {
  ({ chromium } = require(o.playwright));
} catch (e) {
  fail(`cannot load playwright-core from ${o.playwright} (run scripts/setup.sh): ${e.message}`);
}

// Everything the run saw; printed at the end.
const summary = { requests: [], console_errors: [], page_errors: [] };
// Nothing may hang: the whole run has a bound too.
const watchdog = setTimeout(() => fail("the run took longer than 10 minutes"), 10 * 60 * 1000);

// Polls `probe` in the page (an expression over the document) until it answers a truthy
// value; answers it. While waiting for a success, an action's error in the page ends the
// wait at once with that error.
async function until(page, what, probe, arg, { failOnError = true } = {}) {
  const deadline = Date.now() + o.timeout;
  for (;;) {
    const value = await page.evaluate(probe, arg);
    if (value) return value;
    const shown = await page.evaluate(() => {
      const box = document.getElementById("error");
      return box && !box.hidden ? { kind: box.dataset.kind, text: document.getElementById("error-message").textContent } : null;
    });
    if (failOnError && shown?.kind === "action") throw new Error(`while waiting for ${what}, the page shows the error: ${shown.text}`);
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${o.timeout} ms waiting for ${what}${shown ? ` (the page shows the error: ${shown.text})` : ""}`);
    }
    await page.waitForTimeout(100);
  }
}

// The page's error box: its text when it is shown, in sight (wherever the page is scrolled
// to) and holding `t`, else null.
const errorShown = (t) => {
  const box = document.getElementById("error");
  const r = box.getBoundingClientRect();
  const inSight = !box.hidden && r.height > 0 && r.top >= 0 && r.bottom <= window.innerHeight;
  const m = document.getElementById("error-message").textContent;
  return inSight && m.includes(t || "") ? m : null;
};

// The rows of a table as {id, cells}.
const rows = (table) =>
  [...document.querySelectorAll(`#${table} tbody tr`)].map((r) => ({
    id: r.dataset.id,
    cells: [...r.cells].map((c) => c.textContent),
  }));

async function uploadFile(page, file) {
  await page.setInputFiles("#file", file);
  await page.click("#upload-button");
}

// The error shows `text` and stays shown across background refreshes (every 2 s).
async function errorStays(page, label, what, text) {
  const shown = await until(
    page,
    `the error of ${what} (containing '${text}')`,
    errorShown,
    text,
    { failOnError: false },
  );
  const role = await page.getAttribute("#error", "role");
  if (role !== "alert") throw new Error(`the error box's role is '${role}', not 'alert'`);
  if (o.screenshot) await page.screenshot({ path: o.screenshot.replace(/(\.png)?$/, `-${label}.png`) });
  const watched = 5000;
  const deadline = Date.now() + watched;
  while (Date.now() < deadline) {
    await page.waitForTimeout(250);
    const now = await page.evaluate(errorShown);
    if (now !== shown) throw new Error(`the error of ${what} ('${shown}') did not stay: now ${JSON.stringify(now)}`);
  }
  return { error: shown, still_shown_after_ms: watched };
}

async function run(page) {
  page.on("request", (r) => summary.requests.push(`${r.method()} ${new URL(r.url()).pathname}`));
  page.on("console", (m) => {
    if (m.type() === "error") summary.console_errors.push(m.text());
  });
  page.on("pageerror", (e) => summary.page_errors.push(String(e)));

  // The token link: the token goes into this browser's storage and out of the address bar.
  await page.goto(`${o.url}/#token=${encodeURIComponent(o.token)}`, { timeout: o.timeout });
  // The first refresh is complete when the page says when it was updated.
  await until(page, "the page's first update", () => document.getElementById("updated").textContent);
  summary.cluster = await until(page, "the cluster line", () => {
    const t = document.getElementById("cluster").textContent;
    return t.includes("slots free") ? t : null;
  });
  summary.address = page.url();
  if (summary.address.includes(o.token)) throw new Error(`the token stays in the address bar: ${summary.address}`);
  summary.initial = { components: await page.evaluate(rows, "components"), jobs: await page.evaluate(rows, "jobs") };

  // Upload: choose the file, click Upload, wait for the component's row.
  const name = basename(o.wasm);
  await uploadFile(page, o.wasm);
  const component = await until(
    page,
    `the component ${name} in the components table`,
    (n) => {
      const row = [...document.querySelectorAll("#components tbody tr")].find((r) => r.cells[1]?.textContent === n);
      return row ? { id: row.dataset.id, cells: [...row.cells].map((c) => c.textContent) } : null;
    },
    name,
  );
  summary.component = { ...component, notice: await page.textContent("#notice") };

  // Submit: the form, as a user fills it.
  await page.selectOption("#component", component.id);
  const lines = Object.entries(o.jobArgs).map(([k, v]) => `${k}=${v}`);
  await page.fill("#args", lines.join("\n"));
  await page.fill("#parallelism", String(o.parallelism || 1));
  if (o.interval) await page.fill("#interval", String(o.interval));
  await page.click("#submit-button");
  const job = await until(page, "the submitted job's details", () => {
    const j = document.getElementById("job");
    return !j.hidden && j.dataset.id && document.getElementById("notice").textContent.includes(j.dataset.id)
      ? j.dataset.id
      : null;
  });
  const ended = await until(
    page,
    `job ${job} to be FINISHED in the jobs table`,
    (id) => {
      const row = document.querySelector(`#jobs tbody tr[data-id="${id}"]`);
      const state = row?.cells[2]?.textContent;
      const details = document.getElementById("job");
      if (["FAILED", "CANCELED"].includes(state)) return { state, summary: document.getElementById("job-summary").textContent };
      return state === "FINISHED" && details.dataset.state === "FINISHED" ? { state } : null;
    },
    job,
  );
  if (ended.state !== "FINISHED") throw new Error(`job ${job} ended ${ended.state}: ${ended.summary}`);
  summary.job = await page.evaluate(
    (id) => ({
      id,
      row: [...document.querySelector(`#jobs tbody tr[data-id="${id}"]`).cells].map((c) => c.textContent),
      title: document.getElementById("job-title").textContent,
      summary: document.getElementById("job-summary").textContent,
      operators: [...document.querySelectorAll("#operators tbody tr")].map((r) => [...r.cells].map((c) => c.textContent)),
      checkpoints: document.getElementById("checkpoints").textContent,
    }),
    job,
  );
  const afterJob = await page.evaluate(() =>
    document.getElementById("error").hidden ? null : document.getElementById("error-message").textContent,
  );
  if (afterJob) throw new Error(`an error is shown after the job finished: ${afterJob}`);

  // A file that is not a component: the server's message, shown until dealt with.
  if (o["bad-file"]) {
    const before = (await page.evaluate(rows, "components")).length;
    await uploadFile(page, o["bad-file"]);
    summary.bad_upload = await errorStays(page, "bad-upload", "uploading a file that is not a component", o["bad-upload-text"] || "");
    const after = (await page.evaluate(rows, "components")).length;
    if (after !== before) throw new Error(`the refused upload added a component (${before} → ${after})`);
    // The next action that succeeds clears it: uploading the component again (the same bytes).
    await uploadFile(page, o.wasm);
    await until(
      page,
      "the error to clear after uploading the component again",
      () => document.getElementById("error").hidden && document.getElementById("notice").textContent.startsWith("Uploaded"),
      null,
      { failOnError: false },
    );
    summary.bad_upload.cleared_by_a_successful_upload = true;
  }

  // A submit the server refuses: its message, until the user dismisses it.
  if (o.badArgs) {
    await page.selectOption("#component", component.id);
    await page.fill("#args", Object.entries(o.badArgs).map(([k, v]) => `${k}=${v}`).join("\n"));
    await page.click("#submit-button");
    summary.bad_submit = await errorStays(page, "bad-submit", "a refused submit", o["bad-submit-text"] || "");
    await page.click("#error-dismiss");
    await until(page, "the error to go when dismissed", () => document.getElementById("error").hidden, null, {
      failOnError: false,
    });
    summary.bad_submit.dismissed = true;
  }

  summary.final = {
    components: await page.evaluate(rows, "components"),
    jobs: await page.evaluate(rows, "jobs"),
    text: await page.evaluate(() => document.body.innerText),
  };
  if (summary.page_errors.length) throw new Error(`the page's script threw: ${summary.page_errors.join("; ")}`);
}

const profile = mkdtempSync(join(tmpdir(), "weir-ui-"));
let context;
let status = 0;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: o.chromium,
    headless: true,
    timeout: o.timeout,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  context.setDefaultTimeout(o.timeout);
  const page = context.pages()[0] || (await context.newPage());
  try {
    await run(page);
  } catch (e) {
    status = 1;
    summary.failure = e.message;
    try {
      summary.page_text = await page.evaluate(() => document.body.innerText);
    } catch {}
  }
  if (o.screenshot) {
    try {
      await page.screenshot({ path: o.screenshot, fullPage: true });
      summary.screenshot = o.screenshot;
    } catch (e) {
      process.stderr.write(`browser.mjs: no screenshot: ${e.message}\n`);
    }
  }
} catch (e) {
  status = 1;
  summary.failure = `cannot start ${o.chromium}: ${e.message}`;
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
  clearTimeout(watchdog);
}
process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
if (status !== 0) fail(summary.failure);
