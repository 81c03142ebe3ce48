// Real-browser test of the chat page served by the server itself: headless
// Debian Chromium (driven by playwright-core, no browser download) opens two
// pages as alice and bob, over wss (certificate made here) and ws on
// localhost. They see each other, exchange a broadcast, and alice sends bob
// an end-to-end encrypted private message that bob's page shows decrypted.
// A plain WebSocket client ("eve") checks that the server relays only
// ciphertext, and the Rust client examples/e2e_peer ("rusty") checks that
// the documented scheme interoperates with the page.
//
// Needs: target/debug/ragnarok and target/debug/examples/e2e_peer
// (cargo build --examples), /usr/bin/chromium, openssl, npm install here.
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
const BIN = process.env.RAGNAROK_BIN || path.join(root, "target/debug/ragnarok");
const PEER = path.join(root, "target/debug/examples/e2e_peer");
const SHOTS = process.env.SCREENSHOT_DIR || path.join(root, "tests/screenshots");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const PASSWORD = "pw";
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

async function openPage(browser, url, name) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  page.on("pageerror", (e) => { throw e; });
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

async function sendTo(page, user, text) {
  if (user) await page.click(`#users li[data-user="${user}"]`);
  await page.fill("#text", text);
  await page.press("#text", "Enter");
  if (user) await page.click(`#users li[data-user="${user}"]`); // back to the room
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
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"],
    });
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

      mkdirSync(SHOTS, { recursive: true });
      await alice.screenshot({ path: path.join(SHOTS, `${mode}-alice.png`) });
      await bob.screenshot({ path: path.join(SHOTS, `${mode}-bob.png`) });
      rusty.peer.kill();
    } finally {
      await browser.close();
      server.kill();
    }
  });
}

test("plain http on a non-localhost name: the page says encryption needs HTTPS, chat still works", { timeout: 60000 }, async () => {
  const { server, port } = await startServer(false);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--host-resolver-rules=MAP chat.example 127.0.0.1"],
  });
  try {
    const url = `http://chat.example:${port}/`;
    const carol = await openPage(browser, url, "carol");
    assert.equal(await carol.evaluate(() => window.isSecureContext), false);
    assert.match(await carol.textContent("#insecure"), /need HTTPS/);
    assert.equal(await carol.isVisible("#insecure"), true);
    await sendTo(carol, null, "plain but working");
    await carol.waitForSelector('.msg.live:has-text("plain but working")');
    await carol.click('#users li[data-user="carol"]');
    await carol.waitForSelector('.msg.error:has-text("need HTTPS")');
    mkdirSync(SHOTS, { recursive: true });
    await carol.screenshot({ path: path.join(SHOTS, "insecure-http.png") });
  } finally {
    await browser.close();
    server.kill();
  }
});
