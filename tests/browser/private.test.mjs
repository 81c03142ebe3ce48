// The private channel you can trust (issue 20, docs/PROTOCOL.md "e2e2"): the
// page in Chromium against the real server, with a hostile server played by
// page.routeWebSocket (frames injected, dropped or changed on their way to
// the page) where that is the point, one test per finding of the issue; and
// two real pages that keep their identity across a reload.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createECDH } from "node:crypto";
import {
  newPage, login, openPage, waitForKey, openConversation, sendTo, shot, rawClient, hostile,
  logText, sleep, until, withRoom, e2e2Party, parseKey, pairKeys, seal, sealRaw, open, fingerprint, safetyNumber,
} from "./harness.mjs";

const count = (page, sel) => page.locator(sel).count();
const occurrences = (text, part) => text.split(part).length - 1;


/// A real page "bob", and "alice" behind a hostile server (`route`), logged
/// in and holding bob's key.
async function aliceBesideBob(browser, url) {
  await openPage(browser, url, "bob");
  const alice = await newPage(browser);
  const route = await hostile(alice);
  await login(alice, url, "alice");
  await waitForKey(alice, "bob");
  return { alice, route };
}

test("finding 1: a private conversation never falls back to a Broadcast (fake UsersLeft, no key)", { timeout: 60000 }, () =>
  withRoom(async ({ browser, port, url }) => {
    const bob = await openPage(browser, url, "bob");
    const eve = rawClient(port, false, "eve");
    await eve.ready;
    const alice = await newPage(browser);
    const route = await hostile(alice);
    await login(alice, url, "alice");
    await waitForKey(alice, "bob");
    await openConversation(alice, "bob");

    // The server says bob left (he did not); the user, who had the
    // conversation with bob open, presses Enter.
    route.inject({ msgType: "UsersLeft", Users: ["bob"] });
    await alice.waitForSelector('#users li[data-user="bob"]', { state: "detached" });
    const pin = "my PIN is 4711";
    await alice.fill("#text", pin);
    await alice.press("#text", "Enter");
    await sleep(500);
    assert.deepEqual(route.sent((m) => JSON.stringify(m).includes("4711")), [], "nothing with the text left the page");
    assert.deepEqual(route.sent((m) => m.msgType === "Broadcast"), [], "no Broadcast at all");
    await alice.waitForSelector('.msg.error:has-text("not sent")');
    assert.match(await alice.textContent('#log .msg.error:has-text("not sent")'), /bob.*(left|not online)/);
    assert.equal(await alice.inputValue("#text"), pin, "the text is kept");
    assert.equal(await alice.isVisible('#target:has-text("to bob")'), true, "still the conversation with bob");

    // Nobody got it: not eve, not a later joiner from the room's history.
    const late = rawClient(port, false, "late");
    await late.next((m) => m.msgType === "PublicKey" && m.SrcUser === "late", "its own key");
    await sleep(200);
    assert.ok(![...eve.all, ...late.all].some((m) => JSON.stringify(m).includes("4711")));
    assert.equal(await bob.locator(':text("4711")').count(), 0);

    // A user who never published a key: nothing goes to them either.
    const ned = rawClient(port, false, "ned", { key: null });
    await ned.ready;
    await alice.fill("#text", "");
    await alice.click("#target");
    await alice.waitForSelector('#users li[data-user="ned"][data-key="none"]');
    await openConversation(alice, "ned");
    await alice.fill("#text", "for ned");
    await alice.press("#text", "Enter");
    await alice.waitForSelector('.msg.error:has-text("ned has not published a key")');
    await sleep(200);
    assert.deepEqual(route.sent((m) => JSON.stringify(m).includes("for ned")), []);
    assert.equal(await alice.inputValue("#text"), "for ned");
    await shot(alice, "private-target-left.png");
    assert.deepEqual(alice.cspViolations, [], "nothing blocked by the CSP");
  }));

test("finding 2: another identity key for the same name warns and blocks sending until the user trusts it", { timeout: 60000 }, () =>
  withRoom(async ({ browser, url }) => {
    const { alice, route } = await aliceBesideBob(browser, url);
    const aliceKey = route.sent((m) => m.msgType === "PublicKey")[0].key;
    const privateTo = (name) => route.sent((m) => m.msgType === "PrivateMessage" && m.TgtUser === name);

    // (a) bob "leaves" and "comes back" with an identity key of the server's.
    const mallory = e2e2Party();
    route.inject({ msgType: "UsersLeft", Users: ["bob"] });
    route.inject({ msgType: "UsersJoined", Users: ["bob"] });
    route.inject({ msgType: "PublicKey", SrcUser: "bob", key: mallory.key });
    await alice.waitForSelector('#users li[data-user="bob"][data-key="changed"]');
    await alice.waitForSelector('.msg.warning:has-text("bob")');
    await openConversation(alice, "bob");
    await alice.waitForSelector("#peer-trust", { state: "visible" }); // the warning, in the open panel
    assert.match(await alice.textContent("#peer-changed"), new RegExp(fingerprint(mallory.ikRaw)));
    await shot(alice, "private-key-changed.png");
    await alice.fill("#text", "for the real bob");
    await alice.press("#text", "Enter");
    await alice.waitForSelector('.msg.error:has-text("not sent")');
    await sleep(300);
    assert.deepEqual(privateTo("bob"), [], "nothing sent to the new key before the user trusts it");
    assert.equal(await alice.inputValue("#text"), "for the real bob", "the text is kept");

    // The user trusts the new key: the next message goes, to that key.
    await alice.click("#peer-trust");
    await alice.waitForSelector('#users li[data-user="bob"][data-key="known"]');
    await alice.press("#text", "Enter");
    const [pm] = await until(() => privateTo("bob").length === 1 && privateTo("bob"), "the private message");
    assert.equal(open(pairKeys(mallory, aliceKey).recv, "alice", "bob", pm.text), "for the real bob");

    // (b) Another identity again, this time without a leave.
    const other = e2e2Party();
    route.inject({ msgType: "PublicKey", SrcUser: "bob", key: other.key });
    await alice.waitForSelector('#users li[data-user="bob"][data-key="changed"]');
    await alice.waitForSelector("#peer-trust", { state: "visible" });
    await alice.fill("#text", "second try");
    await alice.press("#text", "Enter");
    await until(async () => (await count(alice, '.msg.error:has-text("not sent")')) === 2, "a second refusal");
    await sleep(300);
    assert.equal(privateTo("bob").length, 1, "still only the one message");

    // (c) A new session key under a trusted identity is a new session, no warning.
    await alice.click("#peer-trust");
    await alice.waitForSelector('#users li[data-user="bob"][data-key="known"]');
    const warnings = await count(alice, ".msg.warning");
    const ek = createECDH("prime256v1");
    ek.generateKeys();
    route.inject({ msgType: "PublicKey", SrcUser: "bob", key: `e2e2:${other.ikRaw.toString("base64")}:${ek.getPublicKey("base64")}` });
    await sleep(300);
    assert.equal(await alice.getAttribute('#users li[data-user="bob"]', "data-key"), "known");
    assert.equal(await count(alice, ".msg.warning"), warnings, "no new warning");
    assert.deepEqual(alice.cspViolations, [], "nothing blocked by the CSP");
  }));

test("finding 3: a ciphertext relayed three times is shown once; replays and old counters are marked, never shown", { timeout: 60000 }, () =>
  withRoom(async ({ browser, port, url }) => {
    const alice = await openPage(browser, url, "alice");
    const bob = await newPage(browser);
    const route = await hostile(bob);
    // The server relays each private message from alice three times. (The
    // copies carry no `seq`: a repeated seq is dropped before anything is
    // decrypted, resume.test.mjs; the encryption must stand on its own.)
    const copy = ({ seq, ...m }) => m;
    route.filter = (m, raw) => (m && m.msgType === "PrivateMessage" && m.SrcUser === "alice" ? [raw, copy(m), copy(m)] : [raw]);
    await login(bob, url, "bob");
    await waitForKey(alice, "bob");
    await sendTo(alice, "bob", "only once, please");
    await bob.waitForSelector('.msg.private:has-text("only once, please")');
    await sleep(500);
    assert.equal(occurrences(await logText(bob), "only once, please"), 1, "shown once");
    assert.equal(await count(bob, ".msg.replayed"), 2, "the two copies are marked as replayed");

    // The window, with valid messages of a client written from the spec:
    // 64 or more below the highest is refused, inside it once only.
    const nora = rawClient(port, false, "nora");
    await nora.next((m) => m.msgType === "PublicKey" && m.SrcUser === "nora", "its own key");
    await waitForKey(bob, "nora");
    const k = pairKeys(nora.party, nora.keyOf("bob")).send;
    for (const n of [100, 36, 37, 37, 102, 101, 100]) {
      nora.send({ msgType: "PrivateMessage", TgtUser: "bob", text: seal(k, "nora", "bob", n, `number ${n}.`) });
    }
    await until(async () => (await count(bob, ".msg.replayed")) === 5, "five replays marked");
    const log = await logText(bob);
    for (const [n, times] of [[100, 1], [36, 0], [37, 1], [101, 1], [102, 1]]) {
      assert.equal(occurrences(log, `number ${n}.`), times, `message ${n}: ${log}`);
    }
    assert.match(log, /99 messages from nora never arrived/);
    await shot(bob, "private-replayed.png");
  }));

test("finding 4: bad keys among the good ones in PublicKeys: each is refused on its own, the later ones work", { timeout: 60000 }, () =>
  withRoom(async ({ browser, url }) => {
    const bob = await openPage(browser, url, "bob");
    const zed = await openPage(browser, url, "zed");
    await waitForKey(bob, "zed");
    const good = e2e2Party();
    const g1 = good.ikRaw.toString("base64"), g2 = good.ekRaw.toString("base64");
    const zero = "B" + "A".repeat(86) + "="; // the right format, not a point of P-256
    const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unusedBitsSet = g1.slice(0, 86) + B64[B64.indexOf(g1[86]) + 1] + "=";
    const compressed = createECDH("prime256v1");
    compressed.generateKeys();
    const bad = {
      "!": "not*base64",
      "a-e2e1": g1, // the old format: one bare point
      "a-zero-ik": `e2e2:${zero}:${g2}`,
      "a-zero-ek": `e2e2:${g1}:${zero}`,
      "a-unpadded": `e2e2:${g1.slice(0, -1)}:${g2}`,
      "a-noncanonical": `e2e2:${unusedBitsSet}:${g2}`,
      "a-compressed": `e2e2:${compressed.getPublicKey("base64", "compressed")}:${g2}`,
      "a-trailing": `e2e2:${g1}:${g2} `,
      "a-upper": `E2E2:${g1}:${g2}`,
      "a-third": `e2e2:${g1}:${g2}:${g2}`,
    };
    const carol = await newPage(browser);
    const route = await hostile(carol);
    // Whatever a server (or a man in the middle) sends: the joiner's
    // PublicKeys has the bad keys first, then the real ones.
    route.filter = (m, raw) => {
      if (m && m.msgType === "OnlineUsers") return [{ ...m, Users: [...Object.keys(bad), ...m.Users].sort() }];
      if (m && m.msgType === "PublicKeys") return [{ ...m, Keys: { ...bad, ...m.Keys } }];
      return [raw];
    };
    await login(carol, url, "carol");
    await waitForKey(carol, "bob");
    await waitForKey(carol, "zed");
    for (const user of Object.keys(bad)) {
      await carol.waitForSelector(`#users li[data-user="${user}"][data-key="bad"]:has-text("unusable key")`);
    }
    await sendTo(carol, "bob", "to bob despite the bad keys");
    await bob.waitForSelector('.msg.private:has-text("to bob despite the bad keys")');
    await sendTo(carol, "zed", "and to zed");
    await zed.waitForSelector('.msg.private:has-text("and to zed")');
    // To a user with an unusable key: a plain error, nothing sent.
    await openConversation(carol, "a-zero-ik");
    await carol.fill("#text", "cannot go");
    await carol.press("#text", "Enter");
    await carol.waitForSelector('.msg.error:has-text("not a usable key")');
    await sleep(200);
    assert.deepEqual(route.sent((m) => JSON.stringify(m).includes("cannot go") || m.TgtUser === "a-zero-ik"), []);
    await shot(carol, "unusable-key.png");
  }));

test("finding 5: a name typed decomposed (\"A\\u030asa\") is bound as the server has it (\"Åsa\"), both ways", { timeout: 60000 }, () =>
  withRoom(async ({ browser, url }) => {
    const alice = await openPage(browser, url, "alice");
    const asa = await newPage(browser);
    await login(asa, url, "A\u030asa", "\u00c5sa");
    await waitForKey(alice, "\u00c5sa");
    await sendTo(alice, "\u00c5sa", "hej \u00c5sa");
    const got = await asa.waitForSelector('.msg.private:has-text("hej \u00c5sa")');
    assert.match(await got.textContent(), /from alice.*decrypted/s);
    await waitForKey(asa, "alice");
    await sendTo(asa, "alice", "hej alice");
    const back = await alice.waitForSelector('.msg.private:has-text("hej alice")');
    assert.match(await back.textContent(), /from \u00c5sa.*decrypted/s);
    assert.equal(await count(asa, ".msg.undecrypted") + await count(alice, ".msg.undecrypted"), 0);
  }));

test("finding 6a: what cannot be decrypted is never shown as text", { timeout: 60000 }, () =>
  withRoom(async ({ browser, url }) => {
    const { alice, route } = await aliceBesideBob(browser, url);
    const texts = [
      "e2e2:1:" + Buffer.from("LEAK-A, the server's own text, 32+ bytes").toString("base64"),
      "LEAK-B in the clear",
      "e2e1:AAAAAAAAAAAAAAAA:" + Buffer.from("LEAK-C, the old format").toString("base64"),
    ];
    for (const text of texts) route.inject({ msgType: "PrivateMessage", SrcUser: "bob", text });
    route.inject({ msgType: "PrivateMessage", SrcUser: "ghost", text: "LEAK-D from a user without a key" });
    await until(async () => (await count(alice, ".msg.undecrypted")) === 4, "four undecrypted lines");
    const log = await logText(alice);
    assert.equal(occurrences(log, "could not be decrypted"), 4, log);
    for (const t of [...texts, "LEAK"]) assert.ok(!log.includes(t), `${t} is not shown: ${log}`);
  }));

test("finding 6b: the page parses private messages strictly (counter, base64) like the Rust client", { timeout: 60000 }, () =>
  withRoom(async ({ browser, port, url }) => {
    const alice = await openPage(browser, url, "alice");
    const nora = rawClient(port, false, "nora");
    await nora.next((m) => m.msgType === "PublicKey" && m.SrcUser === "nora", "its own key");
    await waitForKey(alice, "nora");
    const k = pairKeys(nora.party, nora.keyOf("alice")).send;
    const b64 = (n, text) => sealRaw(k, "nora", "alice", n, text).toString("base64");
    // Each of these would decrypt with a lenient parser (Number("02"), atob).
    const unpadded = b64(3, "LEAK-3 unpadded");
    assert.ok(unpadded.endsWith("="));
    const noncanonical = b64(4, "LEAK-4 unused bits set");
    const i = noncanonical.indexOf("=") - 1;
    const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const bad = [
      `e2e2:02:${b64(2, "LEAK-2 leading zero")}`,
      `e2e2:3:${unpadded.replace(/=+$/, "")}`,
      `e2e2:4:${noncanonical.slice(0, i)}${B64[B64.indexOf(noncanonical[i]) + 1]}${noncanonical.slice(i + 1)}`,
      `e2e2:9007199254740992:${b64(2n ** 53n, "LEAK-5 counter too large")}`,
      `e2e2:0:${b64(0, "LEAK-6 counter zero")}`,
      `e2e2:+7:${b64(7, "LEAK-7 plus sign")}`,
      `e2e2:8:${b64(8, "LEAK-8 trailing space")} `,
      seal(k, "mallory", "alice", 9, "LEAK-9 another sender"),
      seal(k, "nora", "bob", 10, "LEAK-10 another recipient"),
    ];
    for (const text of bad) nora.send({ msgType: "PrivateMessage", TgtUser: "alice", text });
    nora.send({ msgType: "PrivateMessage", TgtUser: "alice", text: seal(k, "nora", "alice", 11, "the good one") });
    await alice.waitForSelector('.msg.private:has-text("the good one")');
    const log = await logText(alice);
    assert.equal(await count(alice, ".msg.undecrypted"), bad.length, log);
    assert.ok(!log.includes("LEAK"), log);
  }));

test("finding 6c: the \"(you)\" fingerprint is the page's own identity key, not the server's echo", { timeout: 60000 }, () =>
  withRoom(async ({ browser, url }) => {
    const fake = e2e2Party();
    const alice = await newPage(browser);
    const route = await hostile(alice);
    // The server relays a key of its own instead of alice's.
    route.filter = (m, raw) => {
      const [mine] = route.sent((x) => x.msgType === "PublicKey");
      return m && m.msgType === "PublicKey" && mine && m.key === mine.key ? [{ ...m, key: fake.key }] : [raw];
    };
    await login(alice, url, "alice");
    await alice.waitForSelector('.msg.error:has-text("not yours")');
    const [mine] = route.sent((x) => x.msgType === "PublicKey");
    const own = parseKey(mine.key);
    assert.ok(own, "the page publishes an e2e2 key: " + mine.key);
    assert.equal(await alice.textContent("#myfp"), fingerprint(own.ik));
    const you = await alice.textContent("#users li.me");
    assert.ok(!you.includes(fingerprint(fake.ikRaw)), you);
    assert.match(you, /\(you\)/);
  }));

test("two real pages: e2e2 both ways, safety numbers, a reload keeps the identity, new site data is a changed key", { timeout: 120000 }, () =>
  withRoom(async ({ browser, port, url }) => {
    const eve = rawClient(port, false, "eve");
    await eve.ready;
    const alice = await openPage(browser, url, "alice");
    let bob = await openPage(browser, url, "bob");
    await waitForKey(alice, "bob");
    await waitForKey(bob, "alice");
    assert.equal(await alice.getAttribute('#users li[data-user="bob"]', "data-key"), "new", "first seen: new");
    await sendTo(alice, "bob", "one for bob");
    await bob.waitForSelector('.msg.private:has-text("one for bob")');
    await sendTo(bob, "alice", "one for alice");
    await alice.waitForSelector('.msg.private:has-text("one for alice")');
    await sendTo(alice, "bob", "two for bob");
    await bob.waitForSelector('.msg.private:has-text("two for bob")');

    // The same safety number on both sides, the one the spec gives.
    const ik = (user) => parseKey(eve.keyOf(user)).ik;
    const expected = safetyNumber(ik("alice"), ik("bob"));
    await openConversation(alice, "bob");
    await alice.click("#keys");
    assert.equal((await alice.textContent("#peer-safety")).replace(/\s+/g, " ").trim(), expected);
    assert.equal(await alice.textContent("#peer-fp"), await bob.textContent("#myfp"));
    assert.equal(await bob.textContent("#myfp"), fingerprint(ik("bob")));
    await openConversation(bob, "alice");
    await bob.click("#keys");
    assert.equal((await bob.textContent("#peer-safety")).replace(/\s+/g, " ").trim(), expected);
    await shot(alice, "private-safety-number.png");
    // Alice compared it with bob: verified, and it stays so.
    await alice.check("#peer-verified");
    await alice.waitForSelector('#users li[data-user="bob"][data-key="verified"]');
    const bobFp = await bob.textContent("#myfp");

    // bob reloads: the same identity (IndexedDB), a new session, no warning.
    await bob.reload(); // signs in again by itself (sessionStorage)
    await bob.waitForSelector('#status:has-text("signed in as bob")');
    assert.equal(await bob.textContent("#myfp"), bobFp, "the same identity key after a reload");
    await waitForKey(bob, "alice");
    assert.equal(await bob.getAttribute('#users li[data-user="alice"]', "data-key"), "known", "alice is remembered");
    await until(() => eve.all.filter((m) => m.msgType === "PublicKey" && m.SrcUser === "bob").length === 2, "bob's new key");
    await alice.waitForSelector('#users li[data-user="bob"][data-key="verified"]');
    await alice.fill("#text", "after your reload");
    await alice.press("#text", "Enter");
    await bob.waitForSelector('.msg.private:has-text("after your reload")');
    await sendTo(bob, "alice", "reloaded and back");
    await alice.waitForSelector('.msg.private:has-text("reloaded and back")');
    assert.equal(await count(alice, ".msg.warning"), 0, "no warning for a reload");

    // alice reloads too: bob is still verified.
    await alice.reload();
    await alice.waitForSelector('#status:has-text("signed in as alice")');
    await alice.waitForSelector('#users li[data-user="bob"][data-key="verified"]');

    // bob clears his site data (a new browser context): a new identity key
    // under the same name is a changed key, and blocks sending.
    await bob.context().close();
    await alice.waitForSelector('#users li[data-user="bob"]', { state: "detached" });
    bob = await openPage(browser, url, "bob");
    await alice.waitForSelector('#users li[data-user="bob"][data-key="changed"]');
    await alice.waitForSelector('.msg.warning:has-text("bob")');
    await openConversation(alice, "bob");
    await alice.fill("#text", "are you really bob?");
    await alice.press("#text", "Enter");
    await alice.waitForSelector('.msg.error:has-text("not sent")');
    await alice.click("#peer-trust");
    await alice.waitForSelector('#users li[data-user="bob"][data-key="known"]', { timeout: 5000 });
    assert.equal(await alice.isChecked("#peer-verified"), false, "a trusted new key is not verified");
    await alice.press("#text", "Enter");
    await bob.waitForSelector('.msg.private:has-text("are you really bob?")');
    assert.ok(!eve.all.some((m) => /for bob|for alice|reload|really/.test(JSON.stringify(m))), "eve saw none of it");
    assert.deepEqual([...alice.cspViolations, ...bob.cspViolations], [], "nothing blocked by the CSP");
  }));
