// What the browser tests share: building and starting the real server,
// Chromium pages logged in to it, a hostile server played by
// page.routeWebSocket, and raw WebSocket clients, among them one that speaks
// the e2e2 scheme (docs/PROTOCOL.md), written here from the spec with node:crypto.
import { after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { createInterface } from "node:readline";
import { mkdtempSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createECDH, createHash, hkdfSync, createCipheriv, createDecipheriv } from "node:crypto";
import { chromium } from "playwright-core";
import WebSocket from "ws";

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const { server: BUILT_BIN, peer: BUILT_PEER } = build();
export const BIN = process.env.RAGNAROK_BIN || BUILT_BIN;
export const PEER = BUILT_PEER;
const SHOTS = process.env.SCREENSHOT_DIR || path.join(root, "tests/screenshots");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
export const PASSWORD = "pw";
export const PHONE = { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true };
export const DESKTOP = { viewport: { width: 1280, height: 800 } };

/// Builds the server and the Rust peer (so a fresh clone needs no separate
/// step) and returns their paths as cargo reports them, wherever the target
/// folder is (CARGO_TARGET_DIR, .cargo/config).
function build() {
  const fallback = (p) => path.join(process.env.CARGO_TARGET_DIR ? path.resolve(root, process.env.CARGO_TARGET_DIR)
    : path.join(root, "target"), "debug", p);
  if (process.env.RAGNAROK_SKIP_BUILD) return { server: fallback("ragnarok"), peer: fallback("examples/e2e_peer") };
  const out = execFileSync("cargo", ["build", "--bin", "ragnarok", "--example", "e2e_peer",
    "--message-format=json-render-diagnostics"], { cwd: root, stdio: ["ignore", "pipe", "inherit"], maxBuffer: 1 << 28 });
  const found = {};
  for (const l of out.toString().split("\n")) {
    if (!l.startsWith("{")) continue;
    const m = JSON.parse(l);
    if (m.reason !== "compiler-artifact" || !m.executable) continue;
    if (m.target.name === "ragnarok" && m.target.kind.includes("bin")) found.server = m.executable;
    if (m.target.name === "e2e_peer" && m.target.kind.includes("example")) found.peer = m.executable;
  }
  assert.ok(found.server && found.peer, "cargo build reported the server and the example: " + JSON.stringify(found));
  return found;
}

export const children = [];
after(() => children.forEach((c) => c.kill("SIGKILL")));

export function lines(stream, onLine) {
  createInterface({ input: stream }).on("line", onLine);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/// Polls `f` until it returns something truthy (10 s at most).
export async function until(f, what) {
  for (const deadline = Date.now() + 10000; Date.now() < deadline; await sleep(50)) {
    const v = await f();
    if (v) return v;
  }
  throw new Error("timed out waiting for " + what);
}

/// Runs `body` with a fresh server (plain ws on localhost, a secure
/// context; `extra` config keys on top) and a browser, and stops both after it.
export async function withRoom(body, extra = {}) {
  const { server, port } = await startServer(false, extra);
  const browser = await launch();
  try {
    await body({ browser, port, url: `http://localhost:${port}/` });
  } finally {
    await browser.close();
    server.kill();
  }
}

/// The real server on a free port; `extra` config keys on top (e.g. `{ e2e_room: true }`).
export async function startServer(tls, extra = {}) {
  const dir = mkdtempSync(path.join(tmpdir(), "ragnarok-browser-"));
  if (tls) {
    execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
      "-nodes", "-keyout", "key.pem", "-out", "cert.pem", "-days", "2", "-subj", "/CN=localhost",
      "-addext", "subjectAltName=DNS:localhost", "-addext", "basicConstraints=critical,CA:FALSE"],
    { cwd: dir, stdio: "ignore" });
  }
  writeFileSync(path.join(dir, "config.json"), JSON.stringify({
    SSL: tls, SSL_Cert: "cert.pem", SSL_Key: "key.pem", server_ip: "127.0.0.1", server_port: 0,
    server_name: "Browser Room", server_password: PASSWORD, ...extra,
  }));
  const server = spawn(BIN, ["--config", path.join(dir, "config.json")], { stdio: ["ignore", "ignore", "pipe"] });
  children.push(server);
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("server did not start")), 10000);
    lines(server.stderr, (l) => {
      const m = /listening on wss?:\/\/[\d.]+:(\d+)/.exec(l);
      if (m) { clearTimeout(timer); resolve(Number(m[1])); }
    });
  });
  return { server, port, dir, cert: path.join(dir, "cert.pem") };
}

export function launch(extraArgs = []) {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", ...extraArgs],
  });
}

/// A page in a browser context of its own (its own IndexedDB: a browser of
/// its own, as far as the page's identity key goes). `page.cspViolations`
/// collects what the Content-Security-Policy blocked: it must stay empty.
export async function newPage(browser, device = {}) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, ...device });
  const page = await context.newPage();
  page.on("pageerror", (e) => { throw e; });
  page.cspViolations = [];
  page.on("console", (m) => { if (/Content.Security.Policy/i.test(m.text())) page.cspViolations.push(m.text()); });
  return page;
}

/// Loads the page and logs in as `name` (typed as given); `shown` is the
/// name as the server has it (NFC), which the page ends up showing.
export async function login(page, url, name, shown = name) {
  await page.goto(url);
  await page.fill("#name", name);
  await page.fill("#password", PASSWORD);
  await page.click("#join");
  await page.waitForSelector(`#status:has-text("signed in as ${shown}")`);
}

export async function openPage(browser, url, name, device = {}) {
  const page = await newPage(browser, device);
  await login(page, url, name);
  return page;
}

/// Waits until `page` shows `user` online with a usable key (whatever its
/// trust: new, known or verified).
export async function waitForKey(page, user) {
  await page.waitForFunction((u) => {
    const li = document.querySelector(`#users li[data-user="${CSS.escape(u)}"]`);
    return li && ["new", "known", "verified"].includes(li.dataset.key);
  }, user);
}

/// On a narrow screen the people list is a drawer behind the header's
/// "People" button: open it (a no-op where the list is a sidebar).
export async function openPeople(page) {
  if (!(await page.isVisible("#people"))) return;
  if ((await page.getAttribute("#people", "aria-expanded")) !== "true") await page.click("#people");
  await page.waitForSelector("#side", { state: "visible" });
  await page.$eval("#side", (el) => Promise.all(el.getAnimations().map((a) => a.finished))); // slid in
}

/// Opens the private conversation with `user` (a click on their name).
export async function openConversation(page, user) {
  await openPeople(page);
  await page.click(`#users li[data-user="${user}"]`);
  await page.waitForSelector(`#target:has-text("to ${user}")`);
}

export async function sendTo(page, user, text) {
  if (user) await openConversation(page, user);
  await page.fill("#text", text);
  await page.press("#text", "Enter");
  if (user) await page.click("#target"); // back to the room
  await page.waitForSelector("#target", { state: "hidden" });
}

export async function shot(page, name) {
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, name) });
}

/// The text of the page's message log, as a user reads it.
export const logText = (page) => page.$eval("#log", (el) => el.innerText);

/// Plays a hostile server for `page` (call before it connects): every frame
/// goes through, in both directions, and is recorded; `filter(parsed, raw)`
/// may return the frames to hand the page instead of one from the server;
/// `inject(obj)` hands the page a frame the server never sent.
export async function hostile(page) {
  const route = {
    toServer: [], // parsed frames the page sent (null for the bare password and name)
    filter: null,
    ws: null,
    inject(obj) { route.ws.send(typeof obj === "string" ? obj : JSON.stringify(obj)); },
    sent(pred) { return route.toServer.filter((m) => m && pred(m)); },
  };
  await page.routeWebSocket(/.*/, (ws) => {
    const server = ws.connectToServer();
    route.ws = ws;
    ws.onMessage((m) => { route.toServer.push(parse(m)); server.send(m); });
    server.onMessage((m) => {
      const out = route.filter ? route.filter(parse(m), m) : [m];
      for (const f of out) ws.send(typeof f === "string" ? f : JSON.stringify(f));
    });
  });
  return route;
}

function parse(m) {
  try { const v = JSON.parse(m); return v && typeof v === "object" ? v : null; } catch { return null; }
}

// --- e2e2, from the spec (docs/PROTOCOL.md) -----------------------------

const POINT = "B[A-P][A-Za-z0-9+/]{84}[AEIMQUYcgkosw048]=";
const KEY = new RegExp(`^e2e2:(${POINT}):(${POINT})$`);

/// A party of the scheme: identity key IK and session key EK, as node ECDH objects.
export function e2e2Party() {
  const ik = createECDH("prime256v1"); ik.generateKeys();
  const ek = createECDH("prime256v1"); ek.generateKeys();
  const key = `e2e2:${ik.getPublicKey().toString("base64")}:${ek.getPublicKey().toString("base64")}`;
  return { ik, ek, key, ikRaw: ik.getPublicKey(), ekRaw: ek.getPublicKey() };
}

/// The raw identity and session keys of a published key, or null.
export function parseKey(key) {
  const m = KEY.exec(key);
  return m && { ik: Buffer.from(m[1], "base64"), ek: Buffer.from(m[2], "base64") };
}

/// The two directional keys between `me` (an e2e2Party) and the owner of `theirKey`.
export function pairKeys(me, theirKey) {
  const { ik: tik, ek: tek } = parseKey(theirKey);
  const low = Buffer.compare(Buffer.concat([me.ikRaw, me.ekRaw]), Buffer.concat([tik, tek])) < 0;
  const s = low
    ? [me.ik.computeSecret(tek), me.ek.computeSecret(tik), me.ek.computeSecret(tek)]
    : [me.ek.computeSecret(tik), me.ik.computeSecret(tek), me.ek.computeSecret(tek)];
  const [l, h] = low ? [[me.ikRaw, me.ekRaw], [tik, tek]] : [[tik, tek], [me.ikRaw, me.ekRaw]];
  const info = Buffer.concat([Buffer.from("ragnarok-e2e-v2"), ...l, ...h]);
  const okm = Buffer.from(hkdfSync("sha256", Buffer.concat(s), Buffer.alloc(32), info, 64));
  const [kLH, kHL] = [okm.subarray(0, 32), okm.subarray(32)];
  return low ? { send: kLH, recv: kHL } : { send: kHL, recv: kLH };
}

const nonce = (n) => { const b = Buffer.alloc(12); b.writeBigUInt64BE(BigInt(n), 4); return b; };
const aad = (from, to, n) => Buffer.from(`ragnarok-e2e-v2\n${from}\n${to}\n${n}`);

/// The raw AES-GCM output (ciphertext ‖ tag) of a message `from` -> `to`, number `n`.
export function sealRaw(k, from, to, n, text) {
  const c = createCipheriv("aes-256-gcm", k, nonce(n));
  c.setAAD(aad(from, to, n));
  return Buffer.concat([c.update(text, "utf8"), c.final(), c.getAuthTag()]);
}

export const seal = (k, from, to, n, text) => `e2e2:${n}:${sealRaw(k, from, to, n, text).toString("base64")}`;

/// The plaintext of `text`, or null: strict, like the spec asks.
export function open(k, from, to, text) {
  const m = /^e2e2:([1-9][0-9]{0,15}):((?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?)$/.exec(text);
  if (!m || !Number.isSafeInteger(Number(m[1]))) return null;
  const ct = Buffer.from(m[2], "base64");
  if (ct.length < 16 || ct.toString("base64") !== m[2]) return null;
  try {
    const d = createDecipheriv("aes-256-gcm", k, nonce(m[1]));
    d.setAAD(aad(from, to, m[1]));
    d.setAuthTag(ct.subarray(ct.length - 16));
    return Buffer.concat([d.update(ct.subarray(0, ct.length - 16)), d.final()]).toString("utf8");
  } catch { return null; }
}

export function fingerprint(raw) {
  return createHash("sha256").update(raw).digest("hex").slice(0, 32).match(/.{4}/g).join(" ");
}

export function safetyNumber(a, b) {
  const [lo, hi] = Buffer.compare(a, b) <= 0 ? [a, b] : [b, a];
  const h = createHash("sha256").update("ragnarok-safety-v1").update(lo).update(hi).digest();
  const groups = [];
  for (let i = 0; i < 30; i += 3) groups.push(String(h.readUIntBE(i, 3) % 100000).padStart(5, "0"));
  return groups.join(" ");
}

/// A raw WebSocket client that logs in as `name`, publishes `key` (an e2e2
/// key of its own unless given: a string is sent as it is, null sends none)
/// and keeps everything it receives. `next(pred)` waits for a message.
export function rawClient(port, tls, name, { key, party = e2e2Party() } = {}) {
  const ws = new WebSocket(`${tls ? "wss" : "ws"}://localhost:${port}/`, { rejectUnauthorized: false });
  const inbox = [], all = [], waiters = [];
  ws.on("message", (data) => {
    const m = JSON.parse(data.toString());
    inbox.push(m);
    all.push(m);
    waiters.splice(0).forEach((w) => w());
  });
  const next = async (pred, what = "a message") => {
    const deadline = Date.now() + 10000;
    for (;;) {
      const i = inbox.findIndex(pred);
      if (i >= 0) return inbox.splice(i, 1)[0];
      if (Date.now() > deadline) throw new Error(`${name}: no ${what} in ${JSON.stringify(all).slice(0, 2000)}`);
      await new Promise((resolve) => { waiters.push(resolve); setTimeout(resolve, 200); });
    }
  };
  const published = key === undefined ? party.key : key;
  const ready = new Promise((resolve) => ws.on("open", () => {
    ws.send(PASSWORD);
    ws.send(name);
    if (published !== null) ws.send(JSON.stringify({ msgType: "PublicKey", key: published }));
    resolve();
  }));
  // The key each user published last, as relayed.
  const keyOf = (user) => {
    let k;
    for (const m of all) {
      if (m.msgType === "PublicKeys" && user in m.Keys) k = m.Keys[user];
      if (m.msgType === "PublicKey" && m.SrcUser === user) k = m.key;
    }
    return k;
  };
  return { ws, next, ready, all, party, keyOf, send: (obj) => ws.send(JSON.stringify(obj)) };
}

export function startPeer(port, tls, name, cert) {
  const args = [`${tls ? "wss" : "ws"}://localhost:${port}/`, PASSWORD, name];
  if (tls) args.push(cert);
  const peer = spawn(PEER, args, { stdio: ["ignore", "pipe", "inherit"] });
  children.push(peer);
  const out = [];
  const waiters = [];
  lines(peer.stdout, (l) => { out.push(JSON.parse(l)); waiters.splice(0).forEach((w) => w()); });
  // The first line with the field `want`, or for which `want(line)` holds.
  const next = async (want) => {
    const pred = typeof want === "function" ? want : (o) => want in o;
    for (;;) {
      const found = out.find(pred);
      if (found) return found;
      await new Promise((resolve, reject) => {
        waiters.push(resolve);
        setTimeout(() => reject(new Error(`${name}: no ${want} in ${JSON.stringify(out)}`)), 10000);
      });
    }
  };
  return { peer, next };
}
