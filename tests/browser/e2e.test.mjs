// Real-browser test of the chat page served by the server itself: headless
// Debian Chromium (driven by playwright-core, no browser download) opens two
// pages as alice and bob, over wss (certificate made here) and ws on
// localhost. They see each other, exchange a broadcast, and alice sends bob
// an end-to-end encrypted private message that bob's page shows decrypted.
// A plain WebSocket client ("eve") checks that the server relays only
// ciphertext, and the Rust client examples/e2e_peer ("rusty") checks that
// the documented scheme interoperates with the page. A phone (390x844, then
// 360 px wide) and a desktop (1280x800) check the layout from inside the page
// and take screenshots. The encryption against a hostile server is tested in
// private.test.mjs; what both files share is in harness.mjs.
//
// Run from a fresh clone: (cd tests/browser && npm ci && node --test).
// It builds what it needs first (cargo build --bin ragnarok --example
// e2e_peer, in the repository root; RAGNAROK_SKIP_BUILD=1 skips that, and
// RAGNAROK_BIN picks another server binary). Needs /usr/bin/chromium
// (apt-get install chromium; or $CHROMIUM) and openssl.
// Screenshots go to $SCREENSHOT_DIR or tests/screenshots/.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  startServer, launch, openPage, waitForKey, openPeople, openConversation, sendTo, shot, rawClient, startPeer,
  PASSWORD, PHONE, DESKTOP,
} from "./harness.mjs";

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
      // Bob's page shows alice's fingerprint as alice's page shows her own
      // (in the panel of the conversation with her).
      const aliceFp = await alice.textContent("#myfp");
      await openConversation(bob, "alice");
      await bob.click("#keys");
      assert.equal(await bob.textContent("#peer-fp"), aliceFp);
      await bob.click("#target");

      // What the server relays is ciphertext.
      const eve = rawClient(port, tls, "eve");
      await eve.ready;
      await waitForKey(alice, "eve");
      await sendTo(alice, "eve", "for eve's eyes only");
      const relayed = await eve.next((m) => m.msgType === "PrivateMessage");
      assert.equal(relayed.SrcUser, "alice");
      assert.match(relayed.text, /^e2e2:\d+:[A-Za-z0-9+/=]+$/);
      assert.ok(!relayed.text.includes("eyes only"), relayed.text);
      eve.ws.close();
      await shot(alice, `${mode}-alice.png`);
      await shot(bob, `${mode}-bob.png`);
      assert.deepEqual([...alice.cspViolations, ...bob.cspViolations], [], "nothing blocked by the CSP");

      // A Rust client written from the protocol doc interoperates with the page
      // (both ways: rusty answers "echo: ..." encrypted).
      const rusty = startPeer(port, tls, "rusty", cert);
      const ready = await rusty.next("ready");
      await waitForKey(alice, "rusty");
      // The same fingerprint and safety number on both sides.
      await openConversation(alice, "rusty");
      await alice.click("#keys");
      assert.equal(await alice.textContent("#peer-fp"), ready.fingerprint);
      const seen = await rusty.next((o) => o.peer === "alice");
      assert.equal((await alice.textContent("#peer-safety")).replace(/\s+/g, " "), seen.safety_number);
      await alice.click("#target");
      await sendTo(alice, "rusty", "hello from the browser");
      const got = await rusty.next("plaintext");
      assert.equal(got.plaintext, "hello from the browser");
      assert.match(got.ciphertext, /^e2e2:\d+:[A-Za-z0-9+/=]+$/);
      assert.ok(!got.ciphertext.includes("browser"));
      const reply = await alice.waitForSelector('.msg.private:has-text("echo: hello from the browser")');
      assert.match(await reply.textContent(), /from rusty.*decrypted/s);
      assert.deepEqual(alice.cspViolations, [], "nothing blocked by the CSP");
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

    // The people list opens as a drawer, with names and key marks.
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
    const dave = rawClient(port, false, "dave");
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

test("a malformed key published by one user breaks no one's encryption", { timeout: 60000 }, async () => {
  const { server, port } = await startServer(false);
  const browser = await launch();
  try {
    const url = `http://localhost:${port}/`;
    const bob = await openPage(browser, url, "bob");
    const bang = rawClient(port, false, "!", { key: "not*base64" });
    await bob.waitForSelector('#users li[data-user="!"]');
    // Its key has been taken (or refused) before carol joins.
    while (!bang.all.some((m) => m.msgType === "Error" || (m.msgType === "PublicKey" && m.SrcUser === "!"))) {
      await new Promise((r) => setTimeout(r, 20));
    }
    // The joiner gets everyone's keys in one PublicKeys, "!" sorted first.
    const carol = await openPage(browser, url, "carol");
    await waitForKey(carol, "bob");
    await sendTo(carol, "bob", "still private after a bad key");
    const got = await bob.waitForSelector('.msg.private:has-text("still private after a bad key")');
    assert.match(await got.textContent(), /from carol.*decrypted/s);
    // The server refused the key: its format is fixed (docs/PROTOCOL.md).
    const refusal = bang.all.find((m) => m.msgType === "Error");
    assert.equal(refusal && refusal.code, "invalid_field", JSON.stringify(bang.all));
    assert.equal(bang.all.filter((m) => m.msgType === "PublicKey" && m.SrcUser === "!").length, 0, "not relayed");
    bang.ws.close();
  } finally {
    await browser.close();
    server.kill();
  }
});
