// The page heals itself (issue 19; docs/PROTOCOL.md "Resuming after a
// dropped connection"): a page reaches the real server through a TCP relay
// written here (node:net) that can cut every connection it carries (both
// sockets destroyed: a real drop, no WebSocket Close) and refuse or hold new
// ones for a while. The page must reconnect by itself, resume, show what it
// missed exactly once, send what was typed meanwhile once, keep its
// encrypted conversations, say so on a reset; a client of the seed's
// protocol beside it must never see the user leave. Also the page's polish:
// own messages, join and leave lines, the room's name on the login screen,
// fingerprints on demand, opt-in notifications.
import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import {
  startServer, launch, newPage, login, openPage, waitForKey, openPeople, sendTo, shot, rawClient, logText,
  sleep, hostile, PASSWORD, PHONE, DESKTOP,
} from "./harness.mjs";

/// A TCP relay to 127.0.0.1:`target`. `cut()` destroys every connection it
/// carries (both ends, at once); `mode` decides what happens to new ones:
/// "open" (relayed), "refuse" (closed at once), "hold" (accepted, nothing
/// read or relayed until `open()` relays them: a link that hangs, then
/// recovers). `target` may change (a restarted server).
async function relay(target) {
  const r = { target, mode: "open", pairs: new Set(), held: new Set(), accepted: 0 };
  const forward = (client) => {
    const up = net.connect(r.target, "127.0.0.1");
    const pair = { client, up };
    r.pairs.add(pair);
    const end = () => { client.destroy(); up.destroy(); r.pairs.delete(pair); };
    for (const s of [client, up]) { s.on("error", end); s.on("close", end); }
    client.pipe(up);
    up.pipe(client);
  };
  const server = net.createServer((client) => {
    r.accepted++;
    client.on("error", () => {});
    if (r.mode === "refuse") return client.resetAndDestroy();
    if (r.mode === "hold") {
      client.pause();
      r.held.add(client);
      client.on("close", () => r.held.delete(client));
      return;
    }
    forward(client);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  r.port = server.address().port;
  r.url = `http://localhost:${r.port}/`;
  r.cut = (mode = "refuse") => {
    r.mode = mode;
    for (const { client, up } of r.pairs) { client.resetAndDestroy(); up.resetAndDestroy(); }
    r.pairs.clear();
  };
  r.open = () => {
    r.mode = "open";
    for (const c of r.held) { r.held.delete(c); forward(c); c.resume(); }
  };
  r.close = () => { r.cut(); for (const c of r.held) c.destroy(); server.close(); };
  return r;
}

/// A fresh server, a relay in front of it and a browser; all stopped after `body`.
async function withRelay(body, extra = {}) {
  const srv = await startServer(false, extra);
  const r = await relay(srv.port);
  const browser = await launch();
  const ctx = { browser, relay: r, srv, port: srv.port, url: `http://localhost:${srv.port}/` };
  try {
    await body(ctx);
  } finally {
    await browser.close();
    r.close();
    ctx.srv.server.kill();
  }
}

/// How many times `text` is in `page`'s log.
const count = async (page, text) => (await logText(page)).split(text).length - 1;

/// A raw client of the seed's protocol (bare password, bare name; no Login
/// JSON, no key), connected straight to the server.
async function seedClient(port, name) {
  const c = rawClient(port, false, name, { key: null });
  await c.ready;
  await c.next((m) => m.msgType === "OnlineUsers", "its first OnlineUsers");
  return c;
}

/// `client` was never told `user` left: no UsersLeft naming them, no
/// OnlineUsers without them (after the first that had them).
function neverLeft(client, user) {
  let seen = false;
  for (const m of client.all) {
    if (m.msgType === "UsersLeft") assert.ok(!m.Users.includes(user), `told ${user} left: ${JSON.stringify(m)}`);
    if (m.msgType === "OnlineUsers") {
      if (m.Users.includes(user)) seen = true;
      else assert.ok(!seen, `an OnlineUsers without ${user}: ${JSON.stringify(m)}`);
    }
  }
  assert.ok(seen, `${user} was seen online`);
}

const indicator = (page) => page.isVisible("#link");

test("cut off for 5 s: the page resumes by itself and shows each missed message once; a seed client never sees it leave", { timeout: 120000 }, () =>
  withRelay(async ({ browser, relay: r, port }) => {
    const watcher = await seedClient(port, "watcher");
    const bob = await seedClient(port, "bob");
    const alice = await openPage(browser, r.url, "alice", DESKTOP);
    await alice.evaluate(() => { window.sameDocument = true; }); // gone if the page reloads
    bob.send({ msgType: "Broadcast", text: "before the tunnel" });
    await alice.waitForSelector('.msg.live:has-text("before the tunnel")');
    // The page opted in: the seed's clients see its messages as always.
    await sendTo(alice, null, "alice here");
    await watcher.next((m) => m.msgType === "Broadcast" && m.text === "alice here");
    assert.ok(!watcher.all.some((m) => "seq" in m || m.msgType === "Resumed"), "the seed client sees nothing of resuming");

    // The tunnel: every connection cut, new ones refused, then held; 5 s.
    r.cut("refuse");
    await alice.waitForSelector("#link:has-text('reconnecting')");
    const missed = ["missed one", "missed two", "missed three"];
    for (const text of missed) { bob.send({ msgType: "Broadcast", text }); await sleep(300); }
    await sleep(2000);
    await shot(alice, "resume-reconnecting-desktop.png");
    r.mode = "hold";
    await sleep(2000);
    r.open();
    const back = Date.now();

    for (const text of missed) await alice.waitForSelector(`.msg.live:has-text("${text}")`, { timeout: 20000 });
    const took = Date.now() - back;
    assert.ok(took < 20000, `shown ${took} ms after the link came back`);
    await alice.waitForSelector("#link", { state: "hidden" });
    await sleep(1000); // anything repeated would be here by now
    for (const text of [...missed, "before the tunnel", "alice here"]) assert.equal(await count(alice, text), 1, `"${text}" shown once`);
    assert.equal(await alice.evaluate(() => window.sameDocument), true, "no reload");
    assert.match(await alice.textContent("#status"), /signed in as alice/);
    // The session goes on: both ways.
    await sendTo(alice, null, "alice after the tunnel");
    await watcher.next((m) => m.msgType === "Broadcast" && m.text === "alice after the tunnel");
    bob.send({ msgType: "Broadcast", text: "bob after the tunnel" });
    await alice.waitForSelector('.msg.live:has-text("bob after the tunnel")');
    neverLeft(watcher, "alice");
    neverLeft(bob, "alice");
    assert.ok(!watcher.all.some((m) => m.msgType === "UsersJoined" && m.Users.includes("alice")), "nor joined again");
    console.log(`resumed and shown ${took} ms after the link came back`);
  }));

test("a repeat (a seq at or below the highest seen) is never shown; a newer one is", { timeout: 60000 }, () =>
  withRelay(async ({ browser, port, url }) => {
    const bob = await seedClient(port, "bob");
    const alice = await newPage(browser);
    const route = await hostile(alice);
    const got = [];
    route.filter = (m, raw) => { if (m) got.push(m); return [raw]; };
    await login(alice, url, "alice");
    bob.send({ msgType: "Broadcast", text: "once only" });
    await alice.waitForSelector('.msg.live:has-text("once only")');
    const original = got.find((m) => m.msgType === "Broadcast" && m.text === "once only");
    assert.ok(Number.isSafeInteger(original.seq), "an opted-in page gets a seq: " + JSON.stringify(original));
    route.inject(original);
    route.inject({ ...original, seq: original.seq - 1, text: "an older seq" });
    route.inject({ ...original, seq: original.seq + 1000, text: "a newer seq" });
    await alice.waitForSelector('.msg.live:has-text("a newer seq")');
    assert.equal(await count(alice, "once only"), 1);
    assert.equal(await count(alice, "an older seq"), 0);
  }));

test("typed while cut off: shown as sending, sent once after the resume and marked sent", { timeout: 90000 }, () =>
  withRelay(async ({ browser, relay: r, port }) => {
    const watcher = await seedClient(port, "watcher");
    const dave = await seedClient(port, "dave");
    const alice = await openPage(browser, r.url, "alice", PHONE);
    await alice.waitForSelector('#users li[data-user="dave"]', { state: "attached" }); // (a phone: in the drawer)
    r.cut("refuse");
    await alice.waitForSelector("#link:has-text('reconnecting')");
    // Meanwhile carol comes and dave goes: said once the list is back.
    await seedClient(port, "carol");
    dave.ws.close(1000);
    await alice.fill("#text", "typed in the tunnel");
    await alice.press("#text", "Enter");
    const pending = alice.locator(".msg.own.pending", { hasText: "typed in the tunnel" });
    await pending.waitFor();
    assert.equal(await pending.locator(".state").textContent(), "sending…");
    assert.equal(await alice.inputValue("#text"), "", "the composer is free again");
    await alice.fill("#text", "and a second one");
    await alice.press("#text", "Enter");
    await shot(alice, "resume-reconnecting-phone.png");
    await sleep(3000);
    assert.ok(!watcher.all.some((m) => m.msgType === "Broadcast"), "nothing went while cut off");
    r.open();
    const sent = alice.locator(".msg.own:not(.pending)", { hasText: "typed in the tunnel" });
    await sent.waitFor({ timeout: 20000 });
    assert.equal(await sent.locator(".state").textContent(), "sent");
    await alice.locator(".msg.own:not(.pending)", { hasText: "and a second one" }).locator(".state:text-is('sent')").waitFor();
    await sleep(1500);
    const got = watcher.all.filter((m) => m.msgType === "Broadcast").map((m) => m.text);
    assert.deepEqual(got, ["typed in the tunnel", "and a second one"], "each sent once, in order");
    assert.equal(await count(alice, "typed in the tunnel"), 1, "shown once on the page");
    await alice.waitForSelector('.msg.presence:has-text("While you were away: carol joined; dave left.")');
    await shot(alice, "resume-chat-phone.png");
  }));

test("a reload of the tab signs in again by itself (sessionStorage) and goes on", { timeout: 90000 }, () =>
  withRelay(async ({ browser, relay: r, port }) => {
    const bob = await seedClient(port, "bob");
    const alice = await openPage(browser, r.url, "alice");
    const kept = JSON.parse(await alice.evaluate(() => sessionStorage.getItem("ragnarok-session")));
    assert.equal(kept.name, "alice");
    assert.match(kept.token, /^[A-Za-z0-9_-]{43}$/, "the token from the welcome");
    assert.equal(typeof kept.epoch, "string");
    const frames = [];
    alice.on("websocket", (ws) => ws.on("framesent", (f) => frames.push(String(f.payload))));
    await alice.reload();
    await alice.waitForSelector('#status:has-text("signed in as alice")'); // nothing typed
    const resume = frames.map((f) => { try { return JSON.parse(f); } catch { return null; } }).find((m) => m && m.msgType === "Resume");
    assert.ok(resume, "the reloaded page sent Resume: " + frames.join(" | "));
    assert.equal(resume.token, kept.token);
    assert.equal(frames[0], PASSWORD, "the password from sessionStorage first");
    bob.send({ msgType: "Broadcast", text: "after the reload" });
    await alice.waitForSelector('.msg.live:has-text("after the reload")');
    await sendTo(alice, null, "alice reloaded");
    await bob.next((m) => m.msgType === "Broadcast" && m.text === "alice reloaded");
  }));

test("an encrypted private message works across a resume, both ways", { timeout: 90000 }, () =>
  withRelay(async ({ browser, relay: r, url }) => {
    const bob = await openPage(browser, url, "bob"); // straight to the server
    const alice = await openPage(browser, r.url, "alice");
    await waitForKey(alice, "bob");
    await waitForKey(bob, "alice");
    await sendTo(alice, "bob", "secret before");
    await bob.waitForSelector('.msg.private:has-text("secret before")');
    r.cut("refuse");
    await alice.waitForSelector("#link:has-text('reconnecting')");
    await sendTo(bob, "alice", "secret while you were away");
    await sleep(2000);
    r.open();
    const got = await alice.waitForSelector('.msg.private:has-text("secret while you were away")', { timeout: 20000 });
    assert.match(await got.textContent(), /from bob.*decrypted/s);
    await alice.waitForSelector("#link", { state: "hidden" });
    await sendTo(alice, "bob", "secret after");
    await bob.waitForSelector('.msg.private:has-text("secret after")');
    await sendTo(bob, "alice", "secret back");
    await alice.waitForSelector('.msg.private:has-text("secret back")');
    await sleep(500);
    for (const [page, text] of [[alice, "secret while you were away"], [bob, "secret after"], [alice, "secret back"]]) {
      assert.equal(await count(page, text), 1);
    }
    assert.equal(await alice.locator(".msg.undecrypted").count(), 0, "nothing refused on alice's page");
    assert.equal(await bob.locator(".msg.undecrypted").count(), 0, "nothing refused on bob's page");
  }));

test("the browser's online and visibilitychange events retry at once, past an attempt that hangs", { timeout: 90000 }, () =>
  withRelay(async ({ browser, relay: r, port }) => {
    const bob = await seedClient(port, "bob");
    const alice = await openPage(browser, r.url, "alice");
    for (const [i, fire] of [
      [1, () => window.dispatchEvent(new Event("online"))],
      [2, () => document.dispatchEvent(new Event("visibilitychange"))], // the tab is visible
    ]) {
      r.cut("refuse");
      await alice.waitForSelector("#link:has-text('reconnecting')");
      await sleep(3000);
      r.mode = "hold"; // longer than the longest backoff: an attempt hangs here
      await sleep(6000);
      assert.ok(r.held.size >= 1, "an attempt hangs in the relay");
      r.mode = "open"; // the held attempt stays hung: only a new one gets through
      bob.send({ msgType: "Broadcast", text: `while away ${i}` });
      const at = Date.now();
      await alice.evaluate(fire);
      await alice.waitForSelector(`.msg.live:has-text("while away ${i}")`, { timeout: 2500 });
      await alice.waitForSelector("#link", { state: "hidden", timeout: 1000 });
      console.log(`event ${i}: resumed ${Date.now() - at} ms after it`);
      for (const c of r.held) c.destroy();
    }
    neverLeft(bob, "alice");
  }));

test("an encrypted room goes on across a resume: sender keys kept, both ways", { timeout: 90000 }, () =>
  withRelay(async ({ browser, relay: r, url }) => {
    const bob = await openPage(browser, url, "bob");
    const alice = await openPage(browser, r.url, "alice");
    await waitForKey(alice, "bob");
    await waitForKey(bob, "alice");
    const shown = (page, who, text) => page.waitForSelector(`.msg.live:has(.who:text-is("${who}")):has-text("${text}")`, { timeout: 20000 });
    await sendTo(alice, null, "sealed before");
    await shown(bob, "alice", "sealed before");
    await sendTo(bob, null, "sealed from bob before");
    await shown(alice, "bob", "sealed from bob before");
    r.cut("refuse");
    await alice.waitForSelector("#link:has-text('reconnecting')");
    await sendTo(bob, null, "sealed while alice was away");
    await sleep(2000);
    r.open();
    await shown(alice, "bob", "sealed while alice was away");
    await alice.waitForSelector("#link", { state: "hidden" });
    await sendTo(alice, null, "sealed after");
    await shown(bob, "alice", "sealed after");
    await sendTo(bob, null, "sealed from bob after");
    await shown(alice, "bob", "sealed from bob after");
    for (const page of [alice, bob]) assert.equal(await page.locator(".msg.undecrypted").count(), 0, "nothing refused");
    assert.equal(await count(alice, "sealed while alice was away"), 1);
  }, { e2e_room: true }));

test("the server restarted while cut off: the page says messages may be missing and starts a new session", { timeout: 120000 }, () =>
  withRelay(async (ctx) => {
    const { browser, relay: r } = ctx;
    const alice = await openPage(browser, r.url, "alice");
    const bob1 = await seedClient(ctx.port, "bob");
    bob1.send({ msgType: "Broadcast", text: "said before the restart" });
    await alice.waitForSelector('.msg.live:has-text("said before the restart")');
    const epoch = JSON.parse(await alice.evaluate(() => sessionStorage.getItem("ragnarok-session"))).epoch;
    r.cut("refuse");
    await alice.waitForSelector("#link:has-text('reconnecting')");
    await alice.fill("#text", "typed before the reset");
    await alice.press("#text", "Enter");
    ctx.srv.server.kill();
    ctx.srv = await startServer(false); // a new port, a new epoch
    r.target = ctx.srv.port;
    const bob = await seedClient(ctx.srv.port, "bob");
    bob.send({ msgType: "Broadcast", text: "said after the restart" });
    await bob.next((m) => m.msgType === "Broadcast");
    r.open();
    await alice.waitForSelector(".msg.reset:has-text('some messages may be missing')", { timeout: 20000 });
    await alice.waitForSelector('.msg.history:has-text("said after the restart")');
    await alice.locator(".msg.own.failed", { hasText: "typed before the reset" }).locator(".state:text-is('not sent')").waitFor();
    await alice.waitForSelector("#link", { state: "hidden" });
    await alice.waitForSelector('#users li[data-user="bob"]');
    const kept = JSON.parse(await alice.evaluate(() => sessionStorage.getItem("ragnarok-session")));
    assert.notEqual(kept.epoch, epoch, "the new epoch is kept");
    // A new session: a new key published, and the room goes on.
    await sendTo(alice, null, "alice in the new session");
    await bob.next((m) => m.msgType === "Broadcast" && m.text === "alice in the new session");
    assert.ok(bob.all.some((m) => m.msgType === "PublicKey" && m.SrcUser === "alice"), "a new session key published");
    await sleep(500);
    assert.equal(await count(alice, "said before the restart"), 1);
    assert.equal(await count(alice, "typed before the reset"), 1);
    assert.ok(!bob.all.some((m) => m.msgType === "Broadcast" && m.text === "typed before the reset"), "not sent after a reset");
  }));

test("away longer than the grace: a reset; the history repeats nothing on screen and brings what was missed", { timeout: 90000 }, () =>
  withRelay(async ({ browser, relay: r, port }) => {
    const bob = await seedClient(port, "bob");
    const alice = await openPage(browser, r.url, "alice");
    for (const text of ["old one", "old two"]) bob.send({ msgType: "Broadcast", text });
    await alice.waitForSelector('.msg.live:has-text("old two")');
    r.cut("refuse");
    await alice.waitForSelector("#link:has-text('reconnecting')");
    // The grace (2 s) ends: the others see alice leave.
    await bob.next((m) => (m.msgType === "UsersLeft" && m.Users.includes("alice")) ||
      (m.msgType === "OnlineUsers" && !m.Users.includes("alice")), "alice's leave after the grace");
    bob.send({ msgType: "Broadcast", text: "said while alice was gone" });
    await sleep(500);
    r.open();
    await alice.waitForSelector(".msg.reset:has-text('some messages may be missing')", { timeout: 20000 });
    await alice.waitForSelector('.msg.history:has-text("said while alice was gone")');
    await alice.waitForSelector("#link", { state: "hidden" });
    await sleep(500);
    for (const text of ["old one", "old two", "said while alice was gone"]) assert.equal(await count(alice, text), 1, `"${text}" once`);
    await shot(alice, "resume-reset-desktop.png");
    await sendTo(alice, null, "alice is back");
    await bob.next((m) => m.msgType === "Broadcast" && m.text === "alice is back");
  }, { resume_grace_secs: 2 }));

test("polish: the room's name before login, own messages, join and leave lines, fingerprint on demand, notifications", { timeout: 90000 }, async () => {
  const name = 'Tom & "Jerry" <b>room</b>';
  const { server, port } = await startServer(false, { server_name: name });
  const browser = await launch();
  try {
    const url = `http://localhost:${port}/`;
    const alice = await newPage(browser, DESKTOP);
    // Notifications: the browser's permission prompt answered "granted", and
    // the tab made hidden, by a stand-in recording what the page shows.
    await alice.addInitScript(() => {
      window.shown = [];
      window.hiddenTab = false;
      class Recorder { constructor(title, o) { window.shown.push({ title, body: o && o.body }); } }
      Recorder.permission = "default";
      Recorder.requestPermission = async () => (Recorder.permission = "granted");
      window.Notification = Recorder;
      Object.defineProperty(document, "visibilityState", { get: () => (window.hiddenTab ? "hidden" : "visible") });
    });
    await alice.goto(url);
    assert.equal(await alice.textContent("#lobby-room"), name, "the login screen names the room (escaped by the server)");
    assert.ok(await alice.isVisible("#lobby-room"));
    await shot(alice, "polish-login-desktop.png");
    await login(alice, url, "alice");
    assert.equal(await alice.isVisible("#myfp"), false, "no fingerprint until asked");
    await alice.click("#myfp-show");
    assert.match(await alice.textContent("#myfp"), /^([0-9a-f]{4} ){7}[0-9a-f]{4}$/);
    assert.ok(await alice.isVisible("#myfp"));

    const bob = await openPage(browser, url, "bob", PHONE);
    await alice.waitForSelector('.msg.presence:has-text("bob joined")');
    await sendTo(alice, null, "mine");
    await sendTo(bob, null, "theirs");
    await alice.waitForSelector('.msg.live:has-text("theirs")');
    assert.equal(await alice.locator(".msg.own", { hasText: "mine" }).count(), 1, "own message marked");
    assert.equal(await alice.locator(".msg.own", { hasText: "theirs" }).count(), 0);
    assert.equal(await bob.locator(".msg.own", { hasText: "theirs" }).count(), 1);
    const sides = await alice.evaluate(() => {
      const body = (t) => [...document.querySelectorAll("#log .msg")].find((d) => d.textContent.includes(t)).querySelector(".body");
      const [a, b] = [body("mine"), body("theirs")];
      return { mine: a.getBoundingClientRect().right, theirs: b.getBoundingClientRect().left, log: document.querySelector("#log").getBoundingClientRect(),
        bgMine: getComputedStyle(a).backgroundColor, bgTheirs: getComputedStyle(b).backgroundColor };
    });
    assert.ok(sides.mine > sides.log.left + sides.log.width * 0.8, "own messages on the right: " + JSON.stringify(sides));
    assert.ok(sides.theirs < sides.log.left + sides.log.width * 0.2, "others' on the left: " + JSON.stringify(sides));
    assert.notEqual(sides.bgMine, sides.bgTheirs, "and another colour");

    // Five join at once: one line; then they leave: one line.
    const five = ["c1", "c2", "c3", "c4", "c5"].map((n) => rawClient(port, false, n, { key: null }));
    await Promise.all(five.map((c) => c.ready));
    await alice.waitForSelector('.msg.presence:has-text("and 3 others joined")');
    assert.equal(await alice.locator(".msg.presence", { hasText: /c\d.*joined/ }).count(), 1, "batched in one line");
    five.forEach((c) => c.ws.close(1000));
    await alice.waitForSelector('.msg.presence:has-text("and 3 others left")');
    await bob.close();
    await alice.waitForSelector('.msg.presence:has-text("bob left")');

    // Notifications: off until asked; then private messages and mentions while hidden.
    await alice.click("#notify");
    assert.equal(await alice.getAttribute("#notify", "aria-pressed"), "true");
    const carol = await openPage(browser, url, "carol");
    await waitForKey(carol, "alice");
    await waitForKey(alice, "carol");
    await sendTo(carol, null, "seen while visible, alice");
    await alice.waitForSelector('.msg.live:has-text("seen while visible")');
    await alice.evaluate(() => { window.hiddenTab = true; });
    await sendTo(carol, null, "no mention here");
    await sendTo(carol, null, "hey Alice, look");
    await sendTo(carol, "alice", "psst");
    await alice.waitForSelector('.msg.private:has-text("psst")');
    const shown = await alice.evaluate(() => window.shown);
    assert.deepEqual(shown.map((n) => n.title), ["carol mentioned you", "Private message from carol"], JSON.stringify(shown));
    assert.equal(shown[1].body, "psst");
    await shot(alice, "polish-chat-desktop.png");
  } finally {
    await browser.close();
    server.kill();
  }
});
