// The end-to-end encrypted room (issue 20, docs/PROTOCOL.md "The end-to-end
// encrypted room"): two pages and the Rust client (examples/e2e_peer) chat
// in an `e2e_room` while a raw client of the seed's protocol beside them sees
// only ciphertext; a joiner cannot read what came before it and is shown to
// the others with its key; a leaver gets no key of what follows; and behind
// a hostile server (page.routeWebSocket) tampered, replayed, forged and
// plaintext room messages are shown as refused, never as text, and a
// substituted key blocks sending to the room until it is trusted.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  newPage, login, openPage, waitForKey, openConversation, sendTo, shot, rawClient, startPeer,
  hostile, logText, sleep, e2e2Party, until, withRoom as withServer,
} from "./harness.mjs";

const withRoom = (body) => withServer(body, { e2e_room: true });

/// The line `who: text` shown as read (decrypted or our own), in `page`'s log.
const shown = (page, who, text) => page.waitForSelector(`.msg.live:has(.who:text-is("${who}")):has-text("${text}")`);

const SECRETS = ["first secret of alice", "bob says the launch code is 0000", "carol's one line", "after carol left"];

test("e2e_room: pages and the Rust client chat; a raw observer, history and a joiner see only ciphertext", { timeout: 120000 }, () =>
  withRoom(async ({ browser, port, url }) => {
    // The seed's protocol: no key, can log in and read, cannot post in the clear.
    const eve = rawClient(port, false, "eve", { key: null });
    await eve.ready;
    const alice = await newPage(browser);
    await alice.goto(url);
    assert.match(await alice.textContent("#lobby-kind"), /end-to-end encrypted/, "the login form says which room");
    const route = await hostile(alice); // only watches: every frame goes through
    await login(alice, url, "alice");
    assert.match(await alice.textContent("#roomkind"), /end-to-end encrypted room/);
    const bob = await openPage(browser, url, "bob");
    const rusty = startPeer(port, false, "rusty");
    await rusty.next("ready");
    for (const [page, others] of [[alice, ["bob", "rusty"]], [bob, ["alice", "rusty"]]]) {
      for (const u of others) await waitForKey(page, u);
    }
    await alice.waitForSelector('#users li[data-user="eve"] .mark:text("no key: cannot read the room")');

    await sendTo(alice, null, SECRETS[0]);
    await shown(alice, "alice", SECRETS[0]);
    await shown(bob, "alice", SECRETS[0]);
    const heard = await rusty.next((o) => o.room_from === "alice");
    assert.equal(heard.plaintext, SECRETS[0], "the Rust client reads the page's room message");
    await shown(alice, "rusty", "echo: " + SECRETS[0]);
    await shown(bob, "rusty", "echo: " + SECRETS[0]);
    await sendTo(bob, null, SECRETS[1]);
    await shown(alice, "bob", SECRETS[1]);
    assert.equal((await rusty.next((o) => o.room_from === "bob")).plaintext, SECRETS[1]);

    // alice gave her first epoch to bob and rusty only (eve has no key), by key messages.
    const keys = route.sent((m) => m.msgType === "PrivateMessage" && /^e2e2k:/.test(m.text));
    assert.deepEqual(keys.map((m) => m.TgtUser).sort(), ["bob", "rusty"]);
    assert.ok(route.sent((m) => m.msgType === "Broadcast").every((m) => /^e2er1:1:\d+:/.test(m.text)));

    // The observer: every broadcast is sealed, no secret anywhere; plaintext is refused.
    await eve.next((m) => m.msgType === "Broadcast" && m.SrcUser === "bob");
    eve.send({ msgType: "Broadcast", text: "eve in the clear" });
    const refused = await eve.next((m) => m.msgType === "Error");
    assert.equal(refused.code, "encryption_required");

    // A joiner: the history is ciphertext it cannot read, counted, never shown as text.
    const carol = await openPage(browser, url, "carol");
    await carol.waitForSelector('.msg.history:has-text("sent before you joined")');
    // ...and the others are shown who can read the room from now on, with which key.
    await alice.waitForSelector('.msg.notice:has-text("carol can read the room from now on: key")');
    await waitForKey(alice, "carol");
    await waitForKey(carol, "alice");
    await sendTo(alice, null, SECRETS[2]);
    await shown(carol, "alice", SECRETS[2]);
    await shown(bob, "alice", SECRETS[2]);
    await shot(carol, "room-joiner.png");
    const carolLog = await logText(carol);
    for (const s of SECRETS.slice(0, 2)) assert.ok(!carolLog.includes(s), `the joiner cannot read "${s}"`);
    assert.ok(carolLog.includes(SECRETS[2]));
    // alice made a new epoch when carol joined, and gave it to carol too.
    const epoch2 = route.sent((m) => m.msgType === "Broadcast").at(-1).text.split(":")[1];
    assert.equal(epoch2, "2", "a new epoch after the join");

    // carol leaves: alice's next message is under an epoch carol was never given.
    await carol.close();
    await alice.waitForSelector('#users li[data-user="carol"]', { state: "detached" });
    const before = route.toServer.length;
    await sendTo(alice, null, SECRETS[3]);
    await shown(bob, "alice", SECRETS[3]);
    const after = route.toServer.slice(before).filter(Boolean);
    const given = after.filter((m) => m.msgType === "PrivateMessage" && /^e2e2k:/.test(m.text)).map((m) => m.TgtUser);
    assert.deepEqual(given.sort(), ["bob", "rusty"], "the new epoch goes to those still here, not to carol");
    assert.equal(after.find((m) => m.msgType === "Broadcast").text.split(":")[1], "3");

    const everything = JSON.stringify(eve.all);
    for (const s of [...SECRETS, "echo:"]) assert.ok(!everything.includes(s), `the observer never sees "${s}"`);
    assert.ok(eve.all.filter((m) => m.msgType === "Broadcast").length >= 6);
    assert.ok(eve.all.filter((m) => m.msgType === "Broadcast").every((m) => /^e2er1:\d+:\d+:[A-Za-z0-9+/=]+$/.test(m.text)));
    await shot(alice, "room-alice.png");
  }));

test("e2e_room behind a hostile server: tampered, replayed, forged and plaintext messages are refused; a substituted key blocks the room", { timeout: 90000 }, () =>
  withRoom(async ({ browser, url }) => {
    const bob = await openPage(browser, url, "bob");
    const alice = await newPage(browser);
    const route = await hostile(alice);
    const delivered = []; // room messages as the server handed them to alice
    const fromServer = [];
    route.filter = (m, raw) => {
      if (m) fromServer.push(m);
      // Kept without `seq`, to be injected again: a repeated seq is dropped
      // before anything is decrypted (resume.test.mjs); the signatures and
      // ratchets must stand on their own against a server that renumbers.
      if (m && m.msgType === "Broadcast") { const { seq, ...copy } = m; delivered.push(copy); }
      return [raw];
    };
    await login(alice, url, "alice");
    await waitForKey(alice, "bob");
    await waitForKey(bob, "alice");
    await sendTo(bob, null, "genuine from bob");
    await shown(alice, "bob", "genuine from bob");
    const genuine = delivered.find((m) => m.SrcUser === "bob");
    const refusals = () => alice.locator(".msg.undecrypted").count();

    // The same message again: its message key is used up.
    route.inject(genuine);
    await alice.waitForSelector('.msg.undecrypted:has-text("replayed")');
    // One character of the ciphertext changed: the signature no longer matches.
    const [head, body] = [genuine.text.slice(0, genuine.text.lastIndexOf(":") + 1), genuine.text.slice(genuine.text.lastIndexOf(":") + 1)];
    const flipped = body.slice(0, 20) + (body[20] === "A" ? "B" : "A") + body.slice(21);
    route.inject({ ...genuine, text: head + flipped });
    await alice.waitForSelector('.msg.undecrypted:has-text("forged: the signature does not match")');
    // A message in bob's name with the next index, signed by someone else.
    const fake = Buffer.alloc(12 + 20 + 16 + 64, 7).toString("base64");
    route.inject({ ...genuine, text: head.replace(/:\d+:$/, ":9:") + fake });
    await until(async () => (await refusals()) >= 3, "the forged message refused");
    // Plaintext in an encrypted room: never shown as text.
    route.inject({ msgType: "Broadcast", SrcUser: "bob", text: "plaintext from the server" });
    await until(async () => (await refusals()) >= 4, "the plaintext refused");
    const log = await logText(alice);
    assert.ok(!log.includes("plaintext from the server"));
    assert.equal((log.match(/genuine from bob/g) || []).length, 1, "the replay was not shown again");
    // And bob's real next message still reads: nothing above moved his chain.
    await sendTo(bob, null, "still genuine");
    await shown(alice, "bob", "still genuine");
    await sendTo(alice, null, "alice's epoch 1");
    await shown(bob, "alice", "alice's epoch 1");
    await shown(alice, "alice", "alice's epoch 1");
    // Her own message relayed again: shown once, the repeat refused.
    route.inject(delivered.find((m) => m.SrcUser === "alice"));
    await until(async () => (await alice.locator('.msg.undecrypted:has-text("replayed")').count()) >= 2, "her own replay refused");

    // The server says bob left and came back with the same key: nothing
    // starts again from 1 (no nonce reused), his old messages stay used up.
    const bobKey = fromServer.filter((m) => m.msgType === "PublicKey" && m.SrcUser === "bob").concat(
      fromServer.filter((m) => m.msgType === "PublicKeys").map((m) => ({ key: m.Keys.bob })).filter((m) => m.key)).at(-1).key;
    const keysBefore = route.sent((m) => m.msgType === "PrivateMessage" && m.TgtUser === "bob").map((m) => m.text.split(":")[1]);
    route.inject({ msgType: "UsersLeft", Users: ["bob"] });
    route.inject({ msgType: "UsersJoined", Users: ["bob"] });
    route.inject({ msgType: "PublicKey", SrcUser: "bob", key: bobKey });
    route.inject(genuine);
    await until(async () => (await alice.locator('.msg.undecrypted:has-text("replayed")').count()) >= 3, "the old message after a rejoin refused");
    await sendTo(alice, "bob", "private after bob's rejoin");
    await bob.waitForSelector('.msg.private:has-text("private after bob\'s rejoin")');
    const counters = route.sent((m) => m.msgType === "PrivateMessage" && m.TgtUser === "bob").map((m) => Number(m.text.split(":")[1]));
    assert.deepEqual(counters, [...keysBefore.map(Number), keysBefore.length + 1], "the pair's counter went on: " + counters);
    // A second welcome changes nothing: the room stays encrypted.
    route.inject({ ServerName: "Browser Room" });
    await alice.waitForSelector('.msg.error:has-text("second welcome")');
    await sendTo(alice, null, "still sealed");
    await shown(bob, "alice", "still sealed");
    assert.match(route.sent((m) => m.msgType === "Broadcast").at(-1).text, /^e2er1:/);
    // A ghost slipped in through a key list is named before it gets a key.
    const ghostParty = e2e2Party();
    route.inject({ msgType: "UsersJoined", Users: ["ghost"] });
    route.inject({ msgType: "PublicKeys", Keys: { ghost: ghostParty.key } });
    await sendTo(alice, null, "who reads this?");
    await alice.waitForSelector('.msg.notice:has-text("ghost can read the room from now on: key")');
    route.inject({ msgType: "UsersLeft", Users: ["ghost"] });

    // The server hands alice another key for bob: nothing goes to the room until she trusts it.
    const ghost = e2e2Party();
    route.inject({ msgType: "PublicKey", SrcUser: "bob", key: ghost.key });
    await alice.waitForSelector('#users li[data-user="bob"][data-key="changed"]');
    const broadcasts = () => route.sent((m) => m.msgType === "Broadcast").length;
    const sentBefore = broadcasts();
    await alice.fill("#text", "not while bob's key is in doubt");
    await alice.press("#text", "Enter");
    await alice.waitForSelector('.msg.error:has-text("Not sent to the room: the key of bob changed")');
    await sleep(300);
    assert.equal(broadcasts(), sentBefore, "nothing was sent to the room");
    assert.equal(await alice.inputValue("#text"), "not while bob's key is in doubt", "the text is kept");
    await shot(alice, "room-key-changed.png");
    const keyMessages = () => route.sent((m) => m.msgType === "PrivateMessage" && /^e2e2k:/.test(m.text));
    const [keysSoFar, epochSoFar] = [keyMessages().length, Number(route.sent((m) => m.msgType === "Broadcast").at(-1).text.split(":")[1])];
    await openConversation(alice, "bob");
    await alice.click("#peer-trust");
    await alice.click("#target"); // back to the room
    await alice.press("#text", "Enter");
    await until(() => broadcasts() > sentBefore, "the message sent once the key is trusted");
    // It went under a new epoch, given to the key alice now trusts (the real bob cannot read it).
    assert.deepEqual(keyMessages().slice(keysSoFar).map((m) => m.TgtUser), ["bob"], "one new epoch, to the trusted key");
    assert.equal(Number(route.sent((m) => m.msgType === "Broadcast").at(-1).text.split(":")[1]), epochSoFar + 1);
    await bob.waitForSelector('.msg.undecrypted:has-text("no key")', { timeout: 10000 });
  }));
