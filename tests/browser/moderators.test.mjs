// Moderators in the room (issue 18, docs/PROTOCOL.md "Moderators"): an
// admin logs in on the page with their own password and is shown as a
// moderator; the menu beside a name (a button, usable from the keyboard)
// kicks a user for 10 minutes with a reason typed in the inline form; the
// kicked user's page shows the reason and is disconnected; a third page sees
// the announcement naming the admin; a mute and the lock from the keyboard
// and the tools; and a member's page has no menu, and the server refuses a
// member's Moderate.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { BIN, PASSWORD, startServer, launch, newPage, openPage, openPeople, shot, logText, PHONE } from "./harness.mjs";

const ALICE_PASSWORD = "alice's own moderator password";
const ERIN_PASSWORD = "erin's own moderator password";

const hashOf = (password) => execFileSync(BIN, ["hash-password"], { input: password + "\n" }).toString().trim();

/// Logs in on the page as an admin, with their own password.
async function adminPage(browser, url, name, password, device) {
  const page = await newPage(browser, device);
  await page.goto(url);
  await page.fill("#name", name);
  await page.fill("#password", password);
  await page.click("#join");
  await page.waitForSelector(`#status:has-text("signed in as ${name}")`);
  return page;
}

test("a moderator kicks, mutes and locks from the page; everyone sees it; a member has no menu", { timeout: 90000 }, async () => {
  const admins = { alice: hashOf(ALICE_PASSWORD), erin: hashOf(ERIN_PASSWORD) };
  assert.match(admins.alice, /^\$argon2id\$v=19\$/);
  const { server, port } = await startServer(false, { admins });
  const browser = await launch();
  const url = `http://localhost:${port}/`;
  try {
    const alice = await adminPage(browser, url, "alice", ALICE_PASSWORD);
    assert.equal(await alice.isVisible("#role"), true, "the header says moderator");
    assert.equal(await alice.textContent("#role"), "moderator");
    assert.equal(await alice.isVisible("#modtools"), true);

    const bob = await openPage(browser, url, "bob");
    const carol = await openPage(browser, url, "carol");
    // A member's page: no role, no menu, no tools.
    await carol.waitForSelector('#users li[data-user="bob"]');
    assert.equal(await carol.isVisible("#role"), false);
    assert.equal(await carol.isVisible("#modtools"), false);
    assert.equal(await carol.locator(".modbtn").count(), 0, "no menu on a member's page");

    // The menu on bob's name: a button with a name of its own, not one on yourself.
    const menuButton = await alice.waitForSelector('#users li[data-user="bob"] .modbtn');
    assert.equal(await menuButton.getAttribute("aria-label"), "Moderate bob");
    assert.equal(await menuButton.getAttribute("aria-haspopup"), "menu");
    assert.equal(await alice.locator('#users li.me .modbtn').count(), 0, "none on yourself");
    await menuButton.click();
    await alice.waitForSelector("#modmenu", { state: "visible" });
    assert.equal(await alice.getAttribute('#users li[data-user="bob"] .modbtn', "aria-expanded"), "true");
    assert.deepEqual(await alice.$$eval('#modmenu [role="menuitem"]', (items) => items.map((i) => i.textContent)),
      ["Kick", "Kick for 10 minutes", "Mute for 10 minutes", "Unmute", "Ban"]);
    await shot(alice, "moderator-menu.png");
    await alice.click('#modmenu [role="menuitem"]:text-is("Kick for 10 minutes")');
    await alice.waitForSelector('#modform:has-text("Kick bob for 10 minutes")');
    assert.equal(await alice.evaluate(() => document.activeElement.id), "modform-reason", "the reason has the focus");
    await alice.fill("#modform-reason", "spamming links");
    await shot(alice, "moderator-form.png");
    await alice.click("#modform-go");
    await alice.waitForSelector("#modform", { state: "hidden" });

    // bob: the reason, then disconnected.
    await bob.waitForSelector('.msg.error:has-text("you were kicked by alice: spamming links")');
    await bob.waitForSelector('.msg.notice:has-text("Disconnected")');
    assert.match(await bob.textContent("#status"), /disconnected/);
    // Everyone else: the announcement naming the admin.
    const said = "bob was kicked by alice for 10 min: spamming links";
    await carol.waitForSelector(`.msg.announcement:has-text("${said}")`);
    await alice.waitForSelector(`.msg.announcement:has-text("${said}")`);
    await carol.waitForSelector('#users li[data-user="bob"]', { state: "detached" });

    // From the keyboard: the menu of carol, its third item (a mute: no reason asked).
    await alice.focus('#users li[data-user="carol"] .modbtn');
    await alice.keyboard.press("Enter");
    await alice.waitForSelector("#modmenu", { state: "visible" });
    assert.equal(await alice.evaluate(() => document.activeElement.textContent), "Kick");
    await alice.keyboard.press("Escape");
    await alice.waitForSelector("#modmenu", { state: "hidden" });
    assert.equal(await alice.evaluate(() => document.activeElement.getAttribute("aria-label")), "Moderate carol", "focus back on the button");
    await alice.keyboard.press("Enter");
    await alice.keyboard.press("ArrowDown");
    await alice.keyboard.press("ArrowDown");
    assert.equal(await alice.evaluate(() => document.activeElement.textContent), "Mute for 10 minutes");
    await alice.keyboard.press("Enter");
    await alice.waitForSelector('#modform:has-text("Mute carol for 10 minutes")');
    assert.equal(await alice.isVisible("#modform-reason"), false, "a mute takes no reason");
    await alice.keyboard.press("Enter");
    await carol.waitForSelector('.msg.announcement:has-text("carol was muted by alice for 10 min")');
    await carol.fill("#text", "can anyone hear me");
    await carol.press("#text", "Enter");
    await carol.waitForSelector('.msg.error:has-text("muted")');
    assert.ok(!(await logText(alice)).includes("can anyone hear me"));

    // A member's Moderate, sent by hand: refused, still connected.
    await carol.evaluate(() => ws.send(JSON.stringify({ msgType: "Moderate", cmd: "kick", target: "alice" })));
    await carol.waitForSelector('.msg.error:has-text("not_a_moderator")');
    // A refused action is shown to the moderator as an error line.
    await alice.evaluate(() => ws.send(JSON.stringify({ msgType: "Moderate", cmd: "unmute", target: "nobody" })));
    await alice.waitForSelector('.msg.error:has-text("moderation_refused")');

    // The lock, from the tools.
    await alice.click("#lock");
    await carol.waitForSelector('.msg.announcement:has-text("The room is locked by alice")');
    await alice.click("#unlock");
    await carol.waitForSelector('.msg.announcement:has-text("The room is open again by alice")');
    assert.match(await carol.textContent("#status"), /signed in as carol/, "carol is still here");

    // The room's password does not open an admin's name, nor a look-alike of it.
    const eve = await newPage(browser);
    await eve.goto(url);
    await eve.fill("#name", "Erin");
    await eve.fill("#password", PASSWORD);
    await eve.click("#join");
    await eve.waitForSelector('#login-error:has-text("wrong password")');

    // On a phone: the menu opens from the drawer, inside the screen; the
    // form comes up above the composer once the drawer is closed.
    const erin = await adminPage(browser, url, "erin", ERIN_PASSWORD, PHONE);
    await openPeople(erin);
    await erin.click('#users li[data-user="carol"] .modbtn');
    const box = await (await erin.waitForSelector("#modmenu", { state: "visible" })).boundingBox();
    assert.ok(box.x >= 0 && box.y >= 0 && box.x + box.width <= 390 && box.y + box.height <= 844, JSON.stringify(box));
    await shot(erin, "moderator-menu-phone.png");
    await erin.click('#modmenu [role="menuitem"]:text-is("Unmute")');
    await erin.waitForSelector('#modform:has-text("Unmute carol")');
    await erin.waitForSelector("#side", { state: "hidden" }); // the drawer closed
    await shot(erin, "moderator-form-phone.png");
    await erin.click("#modform-go");
    await carol.waitForSelector('.msg.announcement:has-text("carol was unmuted by erin")');

    for (const page of [alice, bob, carol, erin]) assert.deepEqual(page.cspViolations, [], "no CSP violation");
  } finally {
    await browser.close();
    server.kill();
  }
});
