// Real-browser test of the chat page served by the server itself: headless
// Debian Chromium (driven by playwright-core, no browser download) opens two
// pages as alice and bob, over wss (certificate made here) and ws on
// localhost. They see each other, exchange a broadcast, and alice sends bob
// an end-to-end encrypted private message that bob's page shows decrypted.
// A plain WebSocket client ("eve") checks that the server relays only
// ciphertext, and the Rust client examples/e2e_peer ("rusty") checks that
// the documented scheme interoperates with the page. A phone (390x844, then
// 360 px wide) and a desktop (1280x800) check the layout from inside the page
// and take screenshots.
//
// Run from a fresh clone: (cd tests/browser && npm ci && node --test).
// It builds what it needs first (cargo build --bin ragnarok --example
// e2e_peer, in the repository root; RAGNAROK_SKIP_BUILD=1 skips that, and
// RAGNAROK_BIN picks another server binary). Needs /usr/bin/chromium
// (apt-get install chromium; or $CHROMIUM) and openssl.
// Screenshots go to $SCREENSHOT_DIR or tests/screenshots/.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { createInterface } from "node:readline";
import { mkdtempSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createECDH } from "node:crypto";
import { chromium } from "playwright-core";
import WebSocket from "ws";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const { server: BUILT_BIN, peer: PEER } = build();
const BIN = process.env.RAGNAROK_BIN || BUILT_BIN;
const SHOTS = process.env.SCREENSHOT_DIR || path.join(root, "tests/screenshots");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const PASSWORD = "pw";
const PHONE = { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true };
const DESKTOP = { viewport: { width: 1280, height: 800 } };

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

const children = [];
after(() => children.forEach((c) => c.kill("SIGKILL")));

function lines(stream, onLine) {
  createInterface({ input: stream }).on("line", onLine);
}

async function startServer(tls) {
  const dir = mkdtempSync(path.join(tmpdir(), "ragnarok-browser-"));
  if (tls) {
    execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
      "-nodes", "-keyout", "key.pem", "-out", "cert.pem", "-days", "2", "-subj", "/CN=localhost",
      "-addext", "subjectAltName=DNS:localhost", "-addext", "basicConstraints=critical,CA:FALSE"],
    { cwd: dir, stdio: "ignore" });
  }
  writeFileSync(path.join(dir, "config.json"), JSON.stringify({
    SSL: tls, SSL_Cert: "cert.pem", SSL_Key: "key.pem", server_ip: "127.0.0.1", server_port: 0,
    server_name: "Browser Room", server_password: PASSWORD,
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

function launch(extraArgs = []) {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", ...extraArgs],
  });
}

/// Opens the page in its own browser context (`device`: viewport and the
/// like) and logs in as `name`. `page.cspViolations` collects what the
/// Content-Security-Policy blocked: it must stay empty.
async function openPage(browser, url, name, device = {}) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, ...device });
  const page = await context.newPage();
  page.on("pageerror", (e) => { throw e; });
  page.cspViolations = [];
  page.on("console", (m) => { if (/Content.Security.Policy/i.test(m.text())) page.cspViolations.push(m.text()); });
  await page.goto(url);
  await page.fill("#name", name);
  await page.fill("#password", PASSWORD);
  await page.click("#join");
  await page.waitForSelector(`#status:has-text("signed in as ${name}")`);
  return page;
}

/// Waits until `page` shows `user` online with a published key fingerprint.
async function waitForKey(page, user) {
  await page.waitForFunction((u) => {
    const fp = document.querySelector(`#users li[data-user="${u}"] .fp`);
    return fp && /^[0-9a-f]{4}( [0-9a-f]{4}){7}$/.test(fp.textContent);
  }, user);
}

/// On a narrow screen the people list is a drawer behind the header's
/// "People" button: open it (a no-op where the list is a sidebar).
async function openPeople(page) {
  if (!(await page.isVisible("#people"))) return;
  if ((await page.getAttribute("#people", "aria-expanded")) !== "true") await page.click("#people");
  await page.waitForSelector("#side", { state: "visible" });
  await page.$eval("#side", (el) => Promise.all(el.getAnimations().map((a) => a.finished))); // slid in
}

async function sendTo(page, user, text) {
  if (user) {
    await openPeople(page);
    await page.click(`#users li[data-user="${user}"]`);
    await page.waitForSelector(`#target:has-text("to ${user}")`);
  }
  await page.fill("#text", text);
  await page.press("#text", "Enter");
  if (user) await page.click("#target"); // back to the room
  await page.waitForSelector("#target", { state: "hidden" });
}

/// Layout facts measured inside the page.
function layout(page) {
  return page.evaluate(() => {
    const shown = (el) => {
      const r = el.getBoundingClientRect();
      const inside = r.width > 0 && r.height > 0 && r.top >= 0 && r.left >= 0 &&
        r.bottom <= window.innerHeight && r.right <= window.innerWidth;
      // Not covered by anything else either (a drawer, a banner).
      const hit = document.elementFromPoint(r.left + Math.min(8, r.width / 2), r.top + r.height / 2);
      return inside && el.contains(hit);
    };
    const $ = (sel) => document.querySelector(sel);
    return {
      scrollWidth: document.documentElement.scrollWidth,
      innerWidth: window.innerWidth,
      scrollY: window.scrollY,
      header: shown($("header")) && shown($("#title")) && $("#title").getBoundingClientRect().width > 20,
      send: shown($("#sendbtn")),
      input: shown($("#text")) && $("#text").getBoundingClientRect().width >= 150,
      logHeight: $("#log").getBoundingClientRect().height,
      sideWidth: $("#side").getBoundingClientRect().width,
      sideShown: $("#side").checkVisibility({ visibilityProperty: true }) &&
        $("#side").getBoundingClientRect().left < window.innerWidth,
    };
  });
}

async function assertLayout(page, label) {
  const l = await layout(page);
  assert.ok(l.scrollWidth <= l.innerWidth, `${label}: no horizontal overflow: ${JSON.stringify(l)}`);
  assert.equal(l.scrollY, 0, `${label}: the page itself does not scroll`);
  assert.ok(l.header, `${label}: the header is visible: ${JSON.stringify(l)}`);
  assert.ok(l.send, `${label}: the Send button is inside the viewport: ${JSON.stringify(l)}`);
  assert.ok(l.input, `${label}: the message field is visible: ${JSON.stringify(l)}`);
  assert.ok(l.logHeight >= 200, `${label}: the messages have room: ${JSON.stringify(l)}`);
  return l;
}

async function shot(page, name) {
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, name) });
}

function plainClient(port, tls, name) {
  const ws = new WebSocket(`${tls ? "wss" : "ws"}://localhost:${port}/`, { rejectUnauthorized: false });
  const inbox = [];
  const waiters = [];
  ws.on("message", (data) => {
    const m = JSON.parse(data.toString());
    inbox.push(m);
    waiters.splice(0).forEach((w) => w());
  });
  const next = async (pred) => {
    for (;;) {
      const i = inbox.findIndex(pred);
      if (i >= 0) return inbox.splice(i, 1)[0];
      await new Promise((resolve, reject) => {
        waiters.push(resolve);
        setTimeout(() => reject(new Error(`${name}: nothing matching in ${JSON.stringify(inbox)}`)), 10000);
      });
    }
  };
  const ready = new Promise((resolve) => ws.on("open", () => {
    ws.send(PASSWORD);
    ws.send(name);
    // A real P-256 public key, so the page will encrypt to eve.
    const ecdh = createECDH("prime256v1");
    ecdh.generateKeys();
    ws.send(JSON.stringify({ msgType: "PublicKey", key: ecdh.getPublicKey().toString("base64") }));
    resolve();
  }));
  return { ws, next, ready };
}

function startPeer(port, tls, name, cert) {
  const args = [`${tls ? "wss" : "ws"}://localhost:${port}/`, PASSWORD, name];
  if (tls) args.push(cert);
  const peer = spawn(PEER, args, { stdio: ["ignore", "pipe", "inherit"] });
  children.push(peer);
  const out = [];
  const waiters = [];
  lines(peer.stdout, (l) => { out.push(JSON.parse(l)); waiters.splice(0).forEach((w) => w()); });
  const next = async (key) => {
    for (;;) {
      const found = out.find((o) => key in o);
      if (found) return found;
      await new Promise((resolve, reject) => {
        waiters.push(resolve);
        setTimeout(() => reject(new Error(`${name}: no ${key} in ${JSON.stringify(out)}`)), 10000);
      });
    }
  };
  return { peer, next };
}

for (const tls of [true, false]) {
  const mode = tls ? "wss" : "ws";
  test(`chat page over ${mode}: broadcast and end-to-end private messages`, { timeout: 90000 }, async () => {
    const { server, port, cert } = await startServer(tls);
    const browser = await launch();
    try {
      const url = `${tls ? "https" : "http"}://localhost:${port}/`;
      const alice = await openPage(browser, url, "alice");
      const bob = await openPage(browser, url, "bob");
      assert.equal(await alice.isVisible("#insecure"), false, "WebCrypto available on a secure context");
      assert.equal(await alice.textContent("#title"), "Browser Room");
      await alice.waitForSelector('#users li[data-user="bob"]');
      await bob.waitForSelector('#users li[data-user="alice"]');

      await sendTo(alice, null, "hello bob, this is the room");
      await bob.waitForSelector('.msg.live:has-text("hello bob, this is the room")');

      // Encrypted private message alice -> bob, shown decrypted on bob's page.
      await waitForKey(alice, "bob");
      await sendTo(alice, "bob", "a secret for bob");
      const received = await bob.waitForSelector('.msg.private:has-text("a secret for bob")');
      assert.match(await received.textContent(), /from alice.*decrypted/s);
      // Bob's page shows alice's fingerprint as alice's page shows her own.
      const aliceFp = await alice.textContent("#myfp");
      assert.match(await bob.textContent('#users li[data-user="alice"] .fp'), new RegExp(aliceFp));

      // What the server relays is ciphertext.
      const eve = plainClient(port, tls, "eve");
      await eve.ready;
      await waitForKey(alice, "eve");
      await sendTo(alice, "eve", "for eve's eyes only");
      const relayed = await eve.next((m) => m.msgType === "PrivateMessage");
      assert.equal(relayed.SrcUser, "alice");
      assert.match(relayed.text, /^e2e1:[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$/);
      assert.ok(!relayed.text.includes("eyes only"), relayed.text);
      eve.ws.close();

      // A Rust client written from the protocol doc interoperates with the page.
      const rusty = startPeer(port, tls, "rusty", cert);
      await rusty.next("ready");
      await waitForKey(alice, "rusty");
      await sendTo(alice, "rusty", "hello from the browser");
      const got = await rusty.next("plaintext");
      assert.equal(got.plaintext, "hello from the browser");
      assert.ok(!got.ciphertext.includes("browser"));
      const reply = await alice.waitForSelector('.msg.private:has-text("echo: hello from the browser")');
      assert.match(await reply.textContent(), /from rusty.*decrypted/s);

      await shot(alice, `${mode}-alice.png`);
      await shot(bob, `${mode}-bob.png`);
      assert.deepEqual([...alice.cspViolations, ...bob.cspViolations], [], "nothing blocked by the CSP");
      rusty.peer.kill();
    } finally {
      await browser.close();
      server.kill();
    }
  });
}

test("layout on a phone (390x844, 360 px) and a desktop (1280x800)", { timeout: 90000 }, async () => {
  const { server, port } = await startServer(true);
  const browser = await launch();
  try {
    const url = `https://localhost:${port}/`;
    const bob = await openPage(browser, url, "bob", DESKTOP);
    await sendTo(bob, null, "said before alice came");
    const long = "https://example.com/" + "a-very-long-unbroken-word".repeat(12);
    await sendTo(bob, null, long);
    await bob.waitForSelector(`.msg.live:has-text("${long}")`);

    // The login form on a phone.
    const lobby = await (await browser.newContext({ ignoreHTTPSErrors: true, ...PHONE })).newPage();
    await lobby.goto(url);
    await lobby.waitForSelector("#join");
    const fits = await lobby.evaluate(() => {
      const join = document.querySelector("#join").getBoundingClientRect();
      return document.documentElement.scrollWidth <= window.innerWidth && join.bottom <= window.innerHeight;
    });
    assert.ok(fits, "the login form fits a phone");
    await shot(lobby, "phone-login.png");
    await lobby.context().close();

    const alice = await openPage(browser, url, "alice", PHONE);
    // History replays are marked as such; a live message has its local time.
    const early = await alice.waitForSelector('.msg.history:has-text("said before alice came")');
    assert.equal(await early.$eval(".ts", (t) => t.textContent), "earlier");
    await sendTo(bob, null, "live hello from bob");
    const live = await alice.waitForSelector('.msg.live:has-text("live hello from bob")');
    const stamp = await live.$eval(".ts", (t) => t.textContent);
    assert.match(stamp, /^\d\d:\d\d$/);
    const times = await alice.evaluate(() => [-1, 0, 1].map((d) => {
      const t = new Date(Date.now() + d * 60000);
      return String(t.getHours()).padStart(2, "0") + ":" + String(t.getMinutes()).padStart(2, "0");
    }));
    assert.ok(times.includes(stamp), `${stamp} is the local time (${times})`);

    // An encrypted private message from the desktop to the phone.
    await waitForKey(bob, "alice");
    await sendTo(bob, "alice", "a secret for your phone");
    const got = await alice.waitForSelector('.msg.private:has-text("a secret for your phone")');
    assert.match(await got.textContent(), /from bob.*decrypted/s);

    // Phone, 390 px: one column, the people list closed, everything in view.
    let l = await assertLayout(alice, "phone 390");
    assert.equal(l.innerWidth, 390);
    assert.equal(l.sideShown, false, "the people list does not take the phone's width");
    assert.equal(await alice.isVisible("#people"), true, "a People button in the header");
    assert.equal(await alice.textContent("#count"), "2");
    await shot(alice, "phone-chat.png");

    // The people list opens as a drawer, with names and fingerprints.
    await openPeople(alice);
    const bobItem = await alice.waitForSelector('#users li[data-user="bob"]', { state: "visible" });
    const box = await bobItem.boundingBox();
    assert.ok(box.x >= 0 && box.x + box.width <= 390 && box.y >= 0 && box.y + box.height <= 844, JSON.stringify(box));
    await waitForKey(alice, "bob");
    assert.ok((await alice.evaluate(() => document.documentElement.scrollWidth)) <= 390);
    await shot(alice, "phone-people.png");

    // Clicking your own name starts no private message.
    await alice.click('#users li[data-user="alice"]');
    await alice.click("#scrim", { position: { x: 10, y: 10 } });
    await alice.waitForSelector("#side", { state: "hidden" });
    assert.equal(await alice.isVisible("#target"), false);
    assert.equal(await alice.getAttribute("#text", "placeholder"), "Message the room");
    await sendTo(alice, null, "just me, to everyone");
    await bob.waitForSelector('.msg.live:has-text("just me, to everyone")');
    await alice.waitForSelector('.msg.live:has-text("just me, to everyone")');
    assert.equal(await alice.locator('.msg:has-text("just me")').count(), 1, "shown once, as a broadcast");
    assert.equal(await alice.locator(".msg.private:has-text(\"to alice\")").count(), 0);

    // A paste over max_message_bytes is refused by the page, kept in the
    // composer, and the connection stays (the server would close it: 1009).
    const paste = "x".repeat(20000);
    await alice.fill("#text", paste);
    await alice.press("#text", "Enter");
    await alice.waitForSelector('.msg.error:has-text("Too long to send")');
    assert.equal((await alice.inputValue("#text")).length, paste.length, "the text is kept");
    await alice.fill("#text", "");
    await sendTo(alice, null, "short again");
    await bob.waitForSelector('.msg.live:has-text("short again")');

    // From the phone's drawer to a private message; the chip leads back.
    await openPeople(alice);
    await alice.click('#users li[data-user="bob"]');
    await alice.waitForSelector("#side", { state: "hidden" });
    await alice.waitForSelector('#target:has-text("to bob")');
    await assertLayout(alice, "phone 390, private");
    await alice.fill("#text", "typed on a phone");
    await shot(alice, "phone-private.png");
    await alice.press("#text", "Enter");
    const fromPhone = await bob.waitForSelector('.msg.private:has-text("typed on a phone")');
    assert.match(await fromPhone.textContent(), /from alice.*decrypted/s);
    await alice.click("#target");
    await alice.waitForSelector("#target", { state: "hidden" });

    // Phone, 360 px.
    await alice.setViewportSize({ width: 360, height: 740 });
    l = await assertLayout(alice, "phone 360");
    assert.equal(l.innerWidth, 360);
    await shot(alice, "phone-360.png");

    // Desktop: the list is a sidebar, no People button; own name inert too.
    l = await assertLayout(bob, "desktop");
    assert.equal(l.sideShown, true);
    assert.ok(l.sideWidth <= 0.3 * l.innerWidth, JSON.stringify(l));
    assert.equal(await bob.isVisible("#people"), false);
    assert.equal(await bob.isVisible('#users li[data-user="alice"]'), true);
    await bob.click('#users li[data-user="bob"]');
    assert.equal(await bob.isVisible("#target"), false);
    await bob.click('#users li[data-user="alice"]'); // a name starts a private message...
    await bob.waitForSelector('#target:has-text("to alice")');
    await bob.click('#users li[data-user="alice"]'); // ...and a second click goes back to the room
    await bob.waitForSelector("#target", { state: "hidden" });
    await shot(bob, "desktop.png");
    assert.deepEqual([...alice.cspViolations, ...bob.cspViolations], [], "nothing blocked by the CSP");
  } finally {
    await browser.close();
    server.kill();
  }
});

test("plain http on a non-localhost name: the page says encryption needs HTTPS, chat still works", { timeout: 60000 }, async () => {
  const { server, port } = await startServer(false);
  const browser = await launch(["--host-resolver-rules=MAP chat.example 127.0.0.1"]);
  try {
    const url = `http://chat.example:${port}/`;
    const carol = await openPage(browser, url, "carol");
    assert.equal(await carol.evaluate(() => window.isSecureContext), false);
    assert.match(await carol.textContent("#insecure"), /need HTTPS/);
    assert.equal(await carol.isVisible("#insecure"), true);
    await sendTo(carol, null, "plain but working");
    await carol.waitForSelector('.msg.live:has-text("plain but working")');
    const dave = plainClient(port, false, "dave");
    await dave.ready;
    await carol.click('#users li[data-user="dave"]');
    await carol.waitForSelector('.msg.error:has-text("need HTTPS")');
    await assertLayout(carol, "desktop, plain http");
    await shot(carol, "insecure-http.png");

    // On a phone the notice sits under the header, which stays in view.
    const carla = await openPage(browser, url, "carla", PHONE);
    assert.equal(await carla.isVisible("#insecure"), true);
    await assertLayout(carla, "phone, plain http");
    const [header, banner] = await carla.evaluate(() =>
      ["header", "#insecure"].map((s) => document.querySelector(s).getBoundingClientRect().toJSON()));
    assert.ok(header.top >= 0 && banner.top >= header.bottom - 1, JSON.stringify({ header, banner }));
    await shot(carla, "insecure-phone.png");
    await carla.click("#insecure-close");
    assert.equal(await carla.isVisible("#insecure"), false);
    assert.deepEqual([...carol.cspViolations, ...carla.cspViolations], [], "nothing blocked by the CSP");
    dave.ws.close();
  } finally {
    await browser.close();
    server.kill();
  }
});

test("a wrong password, then the right one: the error is on the login form, never in the chat", { timeout: 60000 }, async () => {
  const { server, port } = await startServer(false);
  const browser = await launch();
  try {
    const context = await browser.newContext();
    const page = await context.newPage();
    page.on("pageerror", (e) => { throw e; });
    await page.goto(`http://localhost:${port}/`);
    await page.fill("#name", "alice");
    await page.fill("#password", "not the password");
    await page.click("#join");
    await page.waitForSelector('#login-error:has-text("wrong password")');
    await shot(page, "login-wrong-password.png");
    await page.fill("#password", PASSWORD);
    await page.click("#join");
    await page.waitForSelector('#status:has-text("signed in as alice")');
    assert.equal(await page.textContent("#login-error"), "", "cleared on the next attempt");
    // Let the old connection's close and anything queued arrive.
    await sendTo(page, null, "first words");
    await page.waitForSelector('.msg.live:has-text("first words")');
    await new Promise((r) => setTimeout(r, 300));
    const log = await page.$$eval("#log .msg", (els) => els.map((e) => e.className + ": " + e.textContent));
    assert.deepEqual(log.filter((l) => !/first words/.test(l)), [], "nothing but the chat in the chat log");
    assert.match(await page.textContent("#status"), /signed in as alice/);
  } finally {
    await browser.close();
    server.kill();
  }
});

/// A raw client that logs in as `name` and publishes `key` as it is.
async function rawKeyClient(port, name, key) {
  const ws = new WebSocket(`ws://localhost:${port}/`);
  const inbox = [];
  ws.on("message", (data) => inbox.push(JSON.parse(data.toString())));
  await new Promise((resolve) => ws.on("open", resolve));
  ws.send(PASSWORD);
  ws.send(name);
  ws.send(JSON.stringify({ msgType: "PublicKey", key }));
  return { ws, inbox };
}

test("a malformed key published by one user breaks no one's encryption", { timeout: 60000 }, async () => {
  const { server, port } = await startServer(false);
  const browser = await launch();
  try {
    const url = `http://localhost:${port}/`;
    const bob = await openPage(browser, url, "bob");
    const bang = await rawKeyClient(port, "!", "not*base64");
    await bob.waitForSelector('#users li[data-user="!"]');
    // Its key has been taken (or refused) before carol joins.
    while (!bang.inbox.some((m) => m.msgType === "Error" || (m.msgType === "PublicKey" && m.SrcUser === "!"))) {
      await new Promise((r) => setTimeout(r, 20));
    }
    // The joiner gets everyone's keys in one PublicKeys, "!" sorted first.
    const carol = await openPage(browser, url, "carol");
    await waitForKey(carol, "bob");
    await sendTo(carol, "bob", "still private after a bad key");
    const got = await bob.waitForSelector('.msg.private:has-text("still private after a bad key")');
    assert.match(await got.textContent(), /from carol.*decrypted/s);
    // The server refused the key: its format is fixed (docs/PROTOCOL.md).
    const refusal = bang.inbox.find((m) => m.msgType === "Error");
    assert.equal(refusal && refusal.code, "invalid_field", JSON.stringify(bang.inbox));
    assert.equal(bang.inbox.filter((m) => m.msgType === "PublicKey" && m.SrcUser === "!").length, 0, "not relayed");
    bang.ws.close();
  } finally {
    await browser.close();
    server.kill();
  }
});

test("the page imports each key on its own: a bad one marks only its owner", { timeout: 60000 }, async () => {
  const { server, port } = await startServer(false);
  const browser = await launch();
  try {
    const url = `http://localhost:${port}/`;
    const bob = await openPage(browser, url, "bob");
    await waitForKey(bob, "bob");
    const zed = await openPage(browser, url, "zed");
    await waitForKey(zed, "zed");
    // Whatever a server (or a man in the middle) sends: the joiner's
    // PublicKeys gets keys that are not base64, and not a point of P-256
    // (the right length and format, all zeros), before and among good ones.
    const context = await browser.newContext();
    const carol = await context.newPage();
    carol.on("pageerror", (e) => { throw e; });
    await carol.routeWebSocket(/.*/, (ws) => {
      const srv = ws.connectToServer();
      ws.onMessage((m) => srv.send(m));
      srv.onMessage((m) => {
        const parsed = typeof m === "string" ? JSON.parse(m) : null;
        if (parsed && parsed.msgType === "PublicKeys") {
          parsed.Keys = { "!": "not*base64", "b-zero": "B" + "A".repeat(86) + "=", ...parsed.Keys };
          return ws.send(JSON.stringify(parsed));
        }
        ws.send(m);
      });
    });
    const bad = await rawKeyClient(port, "!", "");
    const zero = await rawKeyClient(port, "b-zero", "");
    await carol.goto(url);
    await carol.fill("#name", "carol");
    await carol.fill("#password", PASSWORD);
    await carol.click("#join");
    await carol.waitForSelector('#status:has-text("signed in as carol")');
    await waitForKey(carol, "bob");
    await waitForKey(carol, "zed");
    for (const user of ["!", "b-zero"]) {
      await carol.waitForSelector(`#users li[data-user="${user}"] .fp:has-text("unusable key")`);
    }
    await sendTo(carol, "bob", "to bob despite the bad keys");
    await bob.waitForSelector('.msg.private:has-text("to bob despite the bad keys")');
    await sendTo(carol, "zed", "and to zed");
    await zed.waitForSelector('.msg.private:has-text("and to zed")');
    // To the user with the unusable key: a plain error, nothing sent.
    await sendTo(carol, "!", "cannot go");
    await carol.waitForSelector('.msg.error:has-text("not a usable key")');
    await shot(carol, "unusable-key.png");
    bad.ws.close();
    zero.ws.close();
  } finally {
    await browser.close();
    server.kill();
  }
});
