"use strict";
// Ragnarok web client: the login, the room, end-to-end encrypted private
// messages (scheme "e2e2" of docs/PROTOCOL.md: a kept identity key, a session
// key per connection, counters, safety numbers) and, in an e2e_room, the
// room's messages under sender keys (ratchet, signatures, a new epoch on
// every change of readers); the link itself heals: it resumes the session
// after a drop (the connection module near the end: "The connection"), and
// queues what is typed meanwhile. Served as /app.js so that the page's
// Content-Security-Policy needs no 'unsafe-inline'.
const $ = (id) => document.getElementById(id);
const E2E = !!(window.isSecureContext && window.crypto && crypto.subtle);
const EC = { name: "ECDH", namedCurve: "P-256" };
const enc = new TextEncoder();
const utf8 = new TextDecoder("utf-8", { fatal: true }); // invalid UTF-8 is "could not be decrypted", as in the Rust client

let ws, me = null, target = null;
let moderator = false; // the welcome said "role": "moderator"
let menuFor = null;    // the name whose moderation menu is open
let welcomed = false; // this connection had its ServerName
let identity = null; // {priv, raw, fp}: this browser's identity key IK, kept in IndexedDB
let session = null;  // {priv, raw, key, name}: this connection's session key EK, what we published, our name once relayed
const online = new Set(); // names; OnlineUsers replaces it, UsersJoined / UsersLeft add and remove
// name -> a usable key {key, ik, ek, ikPub, ekPub, ikB64, fp, safety, pair, sent, window}
// or {key, bad: true} (not the documented format, not on the curve): that user only gets nothing.
const peers = new Map();
// Published key -> the state of the pair with it, for the whole connection:
// a key that leaves and comes back (or turns up under another name) goes on
// with its counters, replay window and epochs, never from 1 again (that would
// reuse AES-GCM nonces, and take old messages again as new).
const byKey = new Map();
const records = new Map(); // name -> {name, ik (base64), verified}: the identity accepted for each name (IndexedDB)
const newThisVisit = new Set(); // names whose first key this page load recorded (trust on first use)
let db = null;
let panelOpen = false; // the key panel of the open conversation

// The room: end-to-end encrypted or not (the page is told before login, the
// welcome decides), its title (bound into every room message), and our
// sender key: {epoch, ck, index, sign, readers} (docs/PROTOCOL.md, "The
// end-to-end encrypted room"). All of it lives as long as the connection.
let e2eRoom = document.querySelector('meta[name="e2e-room"]')?.content === "true";
let roomTitle = "";
let sender = null;
let epochs = 0; // epochs made on this connection
const ownSent = new Map(); // "epoch:index" -> {text, sealed, shown}: our room messages (the 256 newest)
let earlier = null; // {div, n}: the line counting history we cannot read
const SIGN = { name: "ECDSA", namedCurve: "P-256" };
const ECDSA = { name: "ECDSA", hash: "SHA-256" };

if (!E2E) {
  $("insecure").hidden = false;
  $("myfp").textContent = "none: encryption needs HTTPS or localhost";
}
$("insecure-close").onclick = () => { $("insecure").hidden = true; };
if (e2eRoom) {
  $("lobby-kind").hidden = false;
  $("lobby-kind").textContent = "\u{1F512} This room is end-to-end encrypted: the server relays what it cannot read.";
}

const pad2 = (n) => String(n).padStart(2, "0");
const shownLines = new Set(); // "who\ntext" of every line shown with a sender
// The room's name, told to the page before login (the login screen names it).
const roomName = document.querySelector('meta[name="room-name"]')?.content || "";
if (roomName) {
  $("lobby-room").hidden = false;
  $("lobby-room").textContent = roomName;
  document.title = roomName + " · Ragnarok";
}
// Your own fingerprint: on demand, not filling the sidebar.
$("myfp-show").onclick = () => {
  const show = $("myfp").hidden;
  $("myfp").hidden = !show;
  $("myfp-show").setAttribute("aria-expanded", String(show));
  $("myfp-show").textContent = show ? "Hide my fingerprint" : "Show my fingerprint";
};

/// Appends a line to the log: a time stamp (local HH:MM of when this page
/// received it, or "earlier" for a broadcast replayed from the room's
/// history), then `who: text`, then a small note under it.
function line(cls, who, text, extra, icon) {
  const div = document.createElement("div");
  div.className = "msg " + cls;
  const ts = document.createElement("time");
  ts.className = "ts";
  const now = new Date();
  ts.dateTime = now.toISOString();
  if (cls === "history") {
    ts.textContent = "earlier";
    ts.title = "Sent before you joined: replayed from the room's recent history";
  } else {
    ts.textContent = pad2(now.getHours()) + ":" + pad2(now.getMinutes());
    ts.title = now.toLocaleString();
  }
  const body = document.createElement("span");
  body.className = "body";
  if (who) {
    const b = document.createElement("span");
    b.className = "who" + (icon ? " " + icon : "");
    b.textContent = who;
    body.append(b, ": ");
  }
  body.append(text);
  if (extra) { const s = document.createElement("span"); s.className = "fp"; s.textContent = extra; body.append(s); }
  div.append(ts, body);
  if (who) shownLines.add(who + "\n" + text); // what a reset's history must not repeat
  const log = $("log");
  const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  log.append(div);
  if (atEnd) log.scrollTop = log.scrollHeight;
  return div;
}

// --- Bytes -------------------------------------------------------------

function b64(bytes) {
  const u = new Uint8Array(bytes);
  let s = "";
  for (let i = 0; i < u.length; i += 0x8000) s += String.fromCharCode(...u.subarray(i, i + 0x8000));
  return btoa(s);
}

/// Strict base64 (standard alphabet, padded, canonical: encoding the bytes
/// again gives the same text), or null. atob alone takes much more.
function fromB64(s) {
  if (!/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/.test(s)) return null;
  const bytes = Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
  return b64(bytes) === s ? bytes : null;
}

function compare(a, b) {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

const sha256 = async (...parts) => new Uint8Array(await crypto.subtle.digest("SHA-256", concat(...parts)));

/// First 16 bytes of SHA-256 of a raw identity key, in groups of four hex digits.
async function fingerprint(raw) {
  const h = (await sha256(raw)).slice(0, 16);
  return [...h].map((b) => b.toString(16).padStart(2, "0")).join("").match(/.{4}/g).join(" ");
}

/// Ten groups of five digits over both identity keys, the same on both sides
/// (the keys are sorted): what two people compare by phone or in person.
async function safetyNumber(a, b) {
  const [lo, hi] = compare(a, b) <= 0 ? [a, b] : [b, a];
  const h = await sha256(enc.encode("ragnarok-safety-v1"), lo, hi);
  const groups = [];
  for (let i = 0; i < 30; i += 3) groups.push(String(((h[i] << 16) | (h[i + 1] << 8) | h[i + 2]) % 100000).padStart(5, "0"));
  return groups.slice(0, 5).join(" ") + "\n" + groups.slice(5).join(" ");
}

// --- What this browser keeps: IndexedDB ---------------------------------

function request(r) {
  return new Promise((resolve, reject) => { r.onsuccess = () => resolve(r.result); r.onerror = () => reject(r.error); });
}

function openDb() {
  const r = indexedDB.open("ragnarok-e2e", 1);
  r.onupgradeneeded = () => {
    r.result.createObjectStore("identity");
    r.result.createObjectStore("records", { keyPath: "name" });
  };
  return request(r);
}

/// The identity key of this browser: the stored one, or `fresh` stored now.
/// Get and add happen in one transaction, so two tabs loading at once end
/// up with the same key (a fresh pair is cheap; most loads throw it away).
async function loadIdentity(fresh) {
  const tx = db.transaction("identity", "readwrite");
  const store = tx.objectStore("identity");
  const stored = await new Promise((resolve, reject) => {
    const get = store.get("self");
    get.onsuccess = () => {
      if (get.result) return resolve(get.result);
      store.add(fresh, "self");
      tx.oncomplete = () => resolve(fresh);
    };
    tx.onerror = () => reject(tx.error);
  });
  return stored;
}

function saveRecord(name) {
  if (!db) return;
  db.transaction("records", "readwrite").objectStore("records").put(records.get(name));
}

/// Loads (or makes, once) the identity key and the records. Without
/// IndexedDB the key lives as long as the page, and the page says so.
async function loadKeys() {
  const fresh = await crypto.subtle.generateKey(EC, false, ["deriveBits"]); // private half not extractable
  let pair = fresh;
  try {
    db = await openDb();
    pair = await loadIdentity({ privateKey: fresh.privateKey, publicKey: fresh.publicKey });
    for (const r of await request(db.transaction("records").objectStore("records").getAll())) records.set(r.name, r);
  } catch {
    db = null;
    pair = fresh;
    line("notice", null, "This browser does not let the page keep your identity key: it changes when you reload, and others will see a new key.");
  }
  const raw = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  identity = { priv: pair.privateKey, raw, fp: await fingerprint(raw) };
  $("myfp").textContent = identity.fp;
}
const keysLoaded = E2E ? loadKeys() : Promise.resolve();

// --- Keys of others ------------------------------------------------------

// A published key: "e2e2:" + base64(IK) + ":" + base64(EK), each a 65-byte
// uncompressed point (so "B", one of A-P, ..., a last character whose two
// unused bits are zero, "="): exactly 182 characters.
const POINT = "(B[A-P][A-Za-z0-9+/]{84}[AEIMQUYcgkosw048]=)";
const KEY_FORMAT = new RegExp(`^e2e2:${POINT}:${POINT}$`);

/// Checks one published key on its own: the exact format, and both points
/// import as P-256 public keys (on the curve). Anything else is unusable.
async function importPeer(key) {
  if (byKey.has(key)) return byKey.get(key);
  const peer = await importKey(key);
  if (!byKey.has(key)) byKey.set(key, peer); // (two imports of one key may race: the first one stays)
  return byKey.get(key);
}

async function importKey(key) {
  const m = typeof key === "string" && KEY_FORMAT.exec(key);
  if (!m) return { key, bad: true };
  const ik = fromB64(m[1]), ek = fromB64(m[2]);
  // Our own pair under another name: no key can be agreed with it.
  if (!ik || !ek || compare(concat(ik, ek), concat(identity.raw, session.raw)) === 0) return { key, bad: true };
  try {
    const [ikPub, ekPub] = await Promise.all([ik, ek].map((raw) => crypto.subtle.importKey("raw", raw, EC, false, [])));
    return {
      key, ik, ek, ikPub, ekPub, ikB64: m[1], fp: await fingerprint(ik), safety: await safetyNumber(identity.raw, ik),
      pair: null, sent: 0, window: { max: 0, seen: new Set() },
      rooms: new Map(), epochsSeen: new Set(), held: [], // their sender keys of the room, by epoch
    };
  } catch {
    return { key, bad: true };
  }
}

/// What the page knows of `name`'s key: none, bad (unusable), changed (not
/// the identity recorded for that name, not yet trusted), verified, new
/// (first seen on this visit) or known.
function keyState(name) {
  const peer = peers.get(name);
  if (!peer) return "none";
  if (peer.bad) return "bad";
  const rec = records.get(name);
  if (!rec || rec.ik !== peer.ikB64) return "changed";
  if (rec.verified) return "verified";
  return newThisVisit.has(name) ? "new" : "known";
}

/// Takes `name`'s published key (from PublicKeys or PublicKey). Our own key
/// relayed back tells us our name as the server has it.
async function setPeerKey(name, key, live) {
  if (!E2E || typeof name !== "string") return;
  await keysLoaded;
  if (!session) return;
  if (key === session.key) {
    if (!session.name) confirmName(name);
    else if (name !== session.name) peers.set(name, { key, bad: true }); // our key under another name
    renderUsers();
    return;
  }
  const old = peers.get(name);
  if (old && old.key === key) return;
  const peer = await importPeer(key);
  if (name === me) {
    // The server tells the room we have a key we never published.
    const what = peer.bad ? "an unusable key" : "a key with the fingerprint " + peer.fp;
    line("error", null, `The server announced ${what} for you (${name}): that key is not yours, and others may be encrypting to it. Yours is ${identity.fp}.`);
    return;
  }
  peers.set(name, peer);
  if (!peer.bad) {
    const rec = records.get(name);
    if (!rec) {
      records.set(name, { name, ik: peer.ikB64, verified: false }); // trust on first use
      newThisVisit.add(name);
      saveRecord(name);
    } else if (rec.ik !== peer.ikB64 && (!old || old.bad || old.ikB64 !== peer.ikB64)) {
      warnKeyChanged(name, rec, peer);
    }
    // A joiner of an encrypted room gets everyone's room keys: say who, with
    // which key (the list of who is online is the server's word).
    if (e2eRoom && live) {
      announceReader(name, peer);
    }
  }
  renderUsers();
}

async function warnKeyChanged(name, rec, peer) {
  const was = await fingerprint(fromB64(rec.ik));
  line("warning", null, `${name}'s identity key changed: it was ${was}${rec.verified ? " (verified)" : ""}, it is now ${peer.fp}. ` +
    `That happens when they use another browser or cleared its data, and also when the server substitutes a key. ` +
    `Nothing is sent to ${name}${e2eRoom ? " (nor to the room)" : ""} until you open the conversation and press "Trust the new key".`);
  if (name === target) { panelOpen = true; renderUsers(); }
}

/// The relay of our own key: from now on our name is the server's, and
/// private messages can be sent and read.
function confirmName(name) {
  session.name = me = name;
  $("status").textContent = "signed in as " + name;
}

/// Forgets the keys of those who left (a key is valid while its owner is
/// online). Their records stay: a changed key is noticed after a rejoin too.
function forgetAbsent() {
  for (const name of [...peers.keys()]) if (!online.has(name)) peers.delete(name);
}

/// Says when the person of the open conversation leaves or comes back. The
/// conversation stays open either way: a private message never goes to the room.
function notePresence(before) {
  if (!target || before === online.has(target)) return;
  line("notice", null, before
    ? `${target} left. Your conversation stays private: nothing is sent until they are back.`
    : `${target} is back.`);
}

// --- The pairwise keys and a message ---------------------------------------

/// The two AES-GCM keys with `peer` (3DH over both identity and session keys,
/// then HKDF): {send, recv}. Made once per pair of session keys.
function pairOf(peer) {
  return (peer.pair ||= derivePair(peer));
}

async function derivePair(peer) {
  const mine = concat(identity.raw, session.raw), theirs = concat(peer.ik, peer.ek);
  const low = compare(mine, theirs) < 0; // L, the lower party; equal pairs are refused on import
  const dh = (priv, pub) => crypto.subtle.deriveBits({ name: "ECDH", public: pub }, priv, 256);
  const s = await Promise.all(low
    ? [dh(identity.priv, peer.ekPub), dh(session.priv, peer.ikPub), dh(session.priv, peer.ekPub)]
    : [dh(session.priv, peer.ikPub), dh(identity.priv, peer.ekPub), dh(session.priv, peer.ekPub)]);
  const ikm = await crypto.subtle.importKey("raw", concat(...s.map((b) => new Uint8Array(b))), "HKDF", false, ["deriveBits"]);
  const info = concat(enc.encode("ragnarok-e2e-v2"), ...(low ? [mine, theirs] : [theirs, mine]));
  const okm = new Uint8Array(await crypto.subtle.deriveBits(
    { name: "HKDF", hash: "SHA-256", salt: new Uint8Array(32), info }, ikm, 512));
  const aes = (bytes) => crypto.subtle.importKey("raw", bytes, "AES-GCM", false, ["encrypt", "decrypt"]);
  const [lh, hl] = await Promise.all([aes(okm.slice(0, 32)), aes(okm.slice(32))]);
  return low ? { send: lh, recv: hl } : { send: hl, recv: lh };
}

/// 4 zero bytes, then the counter as 8 bytes big-endian: never twice per key.
function nonce(n) {
  const iv = new Uint8Array(12);
  new DataView(iv.buffer).setBigUint64(4, BigInt(n));
  return iv;
}
// A text ("e2e2") and a room key ("e2e2k") are told apart by the label: neither passes for the other.
const LABEL = { e2e2: "ragnarok-e2e-v2", e2e2k: "ragnarok-e2e-v2-key" };
const aad = (kind, from, to, n) => enc.encode(`${LABEL[kind]}\n${from}\n${to}\n${n}`);

/// Seals `bytes` for `name`: a private text (kind "e2e2") or a room key ("e2e2k"), one counter for both.
async function sealFor(name, peer, bytes, kind = "e2e2") {
  const n = ++peer.sent;
  const { send } = await pairOf(peer);
  const ct = await crypto.subtle.encrypt({ name: "AES-GCM", iv: nonce(n), additionalData: aad(kind, session.name, name, n) },
    send, bytes);
  return `${kind}:${n}:${b64(ct)}`;
}

// "e2e2:" or "e2e2k:" + counter (1 to 2^53-1, no leading zero) + ":" + base64 of at least the 16-byte tag.
const MESSAGE_FORMAT = /^(e2e2k?):([1-9][0-9]{0,15}):([A-Za-z0-9+/=]{24,})$/;

/// Reads a private message: {plain, missed} (a text), {key} (a room key's
/// 106 bytes) or {refused: "could not be decrypted…" | "replayed"}. Never
/// the text of what was refused.
async function openFrom(from, text) {
  const fail = (why) => ({ refused: "could not be decrypted" + (why ? ": " + why : "") });
  if (!E2E) return fail("this page has no encryption here (needs HTTPS)");
  if (!session || !session.name) return fail("the server has not relayed your own key yet");
  const peer = peers.get(from);
  if (!peer) return fail(`no key from ${from}`);
  if (peer.bad) return fail(`${from} has no usable key`);
  const m = typeof text === "string" && MESSAGE_FORMAT.exec(text);
  const kind = m ? m[1] : "", n = m ? Number(m[2]) : 0;
  const ct = m && Number.isSafeInteger(n) && fromB64(m[3]);
  if (!ct || ct.length < 16) return fail("not in the documented format");
  let bytes;
  try {
    const { recv } = await pairOf(peer);
    bytes = new Uint8Array(await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: nonce(n), additionalData: aad(kind, from, session.name, n) }, recv, ct));
    if (kind === "e2e2") bytes = utf8.decode(bytes);
  } catch {
    return fail("");
  }
  const before = peer.window.max;
  if (!acceptCounter(peer.window, n)) return { refused: "replayed" };
  if (kind === "e2e2k") return { key: bytes, peer };
  return { plain: bytes, missed: n > before + 1 ? n - before - 1 : 0, peer };
}

/// The replay window: the highest counter accepted and which of the 63
/// below it were. A counter is taken once; 64 or more below the highest, never.
function acceptCounter(w, n) {
  if (n > w.max) {
    for (const s of w.seen) if (s <= n - 64) w.seen.delete(s);
    w.seen.add(n);
    w.max = n;
    return true;
  }
  if (w.max - n >= 64 || w.seen.has(n)) return false;
  w.seen.add(n);
  return true;
}

const TRUST_NOTE = { verified: "verified key", known: "key not verified", new: "new key, not verified", changed: "CHANGED key, not trusted yet" };

async function showPrivate(from, text) {
  const r = await openFrom(from, text);
  if (r.key) return takeRoomKey(from, r.peer, r.key);
  if (r.refused) {
    const cls = r.refused === "replayed" ? "undecrypted replayed" : "undecrypted";
    const what = r.refused === "replayed" ? "replayed: already received, or 64 or more behind the newest; not shown" : r.refused;
    line(cls, "from " + from, "(" + what + ")", "", "unlock");
    return;
  }
  if (r.missed) line("notice", null, `${r.missed} message${r.missed === 1 ? "" : "s"} from ${from} never arrived.`);
  line("private", "from " + from, r.plain, "decrypted · " + TRUST_NOTE[keyState(from)], "lock");
  notify(`Private message from ${from}`, r.plain);
}

async function publishKey() {
  if (!E2E) return;
  await keysLoaded;
  const ek = await crypto.subtle.generateKey(EC, false, ["deriveBits"]); // this connection's only
  const raw = new Uint8Array(await crypto.subtle.exportKey("raw", ek.publicKey));
  session = { priv: ek.privateKey, raw, key: "e2e2:" + b64(identity.raw) + ":" + b64(raw), name: null };
  put(JSON.stringify({ msgType: "PublicKey", key: session.key }));
}

// --- The encrypted room: sender keys ---------------------------------------

/// One step of HMAC-SHA-256 with `key` over the single byte `byte`: 1 gives
/// a message key, 2 the next chain key.
async function hmac(key, byte) {
  const k = await crypto.subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await crypto.subtle.sign("HMAC", k, new Uint8Array([byte])));
}

const roomAad = (from, e, i) => enc.encode(`ragnarok-room-v1\n${roomTitle}\n${from}\n${e}\n${i}`);

/// A room key from `from` (the 106 bytes of a key message, already
/// authenticated by the pairwise channel): kept for its epoch, the 4 newest.
async function takeRoomKey(from, peer, p) {
  const bad = (why) => line("undecrypted", "from " + from, `(a room key, refused: ${why})`, "", "unlock");
  if (p.length !== 106 || p[0] !== 1) return bad("not in the documented format");
  const epoch = new DataView(p.buffer, p.byteOffset).getBigUint64(1);
  if (epoch < 1n || epoch > BigInt(Number.MAX_SAFE_INTEGER)) return bad("its epoch is out of range");
  const e = Number(epoch);
  if (peer.epochsSeen.has(e)) return bad(`a second key for epoch ${e}`);
  let spk;
  try { spk = await crypto.subtle.importKey("raw", p.slice(41), SIGN, false, ["verify"]); } catch { return bad("its signing key is not a P-256 point"); }
  peer.epochsSeen.add(e);
  peer.rooms.set(e, { ck: p.slice(9, 41), next: 1, spk, skipped: new Map() });
  if (peer.rooms.size > 4) peer.rooms.delete(Math.min(...peer.rooms.keys()));
  // Room messages that came before their key (a cluster may reorder them), in order.
  for (const h of peer.held.splice(0)) { clearTimeout(h.timer); queue = queue.then(() => showRoom(from, h.text)); }
}

// "e2er1:" + epoch + ":" + index (each 1 to 2^53-1, no leading zero) + ":" + base64(iv ‖ ct ‖ sig).
const ROOM_FORMAT = /^e2er1:([1-9][0-9]{0,15}):([1-9][0-9]{0,15}):([A-Za-z0-9+/=]+)$/;

/// Reads a room message of `from`, in the documented order of checks:
/// {plain, missed}, {wait: peer} (no key for its epoch yet) or {refused}.
async function openRoom(from, text) {
  const fail = (why) => ({ refused: why });
  const m = typeof text === "string" && ROOM_FORMAT.exec(text);
  const e = m ? Number(m[1]) : 0, i = m ? Number(m[2]) : 0;
  const bytes = m && Number.isSafeInteger(e) && Number.isSafeInteger(i) && fromB64(m[3]);
  if (!bytes || bytes.length < 92) return fail("could not be decrypted: not in the documented format");
  if (!E2E) return fail("could not be decrypted: this page has no encryption here (needs HTTPS)");
  const peer = peers.get(from);
  if (!peer || peer.bad) return fail(`no key: ${from} has no usable key`);
  const st = peer.rooms.get(e);
  if (!st) return { wait: peer };
  const iv = bytes.slice(0, 12), ct = bytes.slice(12, -64), sig = bytes.slice(-64), ad = roomAad(from, e, i);
  if (!(await crypto.subtle.verify(ECDSA, st.spk, sig, concat(ad, iv, ct)))) return fail("forged: the signature does not match");
  let mk, ck = st.ck;
  const skipped = [];
  if (i < st.next) {
    mk = st.skipped.get(i);
    if (!mk) return fail("replayed");
  } else if (i - st.next > 1000) {
    return fail("too far ahead");
  } else {
    for (let j = st.next; j <= i; j++) {
      const k = await hmac(ck, 1);
      if (j < i) skipped.push([j, k]); else mk = k;
      ck = await hmac(ck, 2);
    }
  }
  let plain;
  try {
    const key = await crypto.subtle.importKey("raw", mk, "AES-GCM", false, ["decrypt"]);
    plain = utf8.decode(await crypto.subtle.decrypt({ name: "AES-GCM", iv, additionalData: ad }, key, ct));
  } catch {
    return fail("could not be decrypted");
  }
  // Read: only now does the chain move, and the message key is used up.
  if (i < st.next) { st.skipped.delete(i); return { plain, missed: 0 }; }
  const missed = i - st.next;
  st.ck = ck;
  st.next = i + 1;
  for (const [j, k] of skipped) st.skipped.set(j, k);
  while (st.skipped.size > 64) st.skipped.delete(st.skipped.keys().next().value);
  return { plain, missed };
}

/// A Broadcast of an encrypted room: ours (shown from what we kept), one
/// from before we joined (counted), or another member's (read, held for its
/// key, or refused without its text).
async function showRoom(from, text, history) {
  if (history) {
    if (!earlier || !earlier.div.isConnected) earlier = { n: 0, div: line("history", null, "") };
    const n = ++earlier.n;
    earlier.div.querySelector(".body").textContent = `${n} earlier message${n === 1 ? " was" : "s were"} sent ` +
      "before you joined: encrypted for those who were there, not for you.";
    return;
  }
  if (session && from === session.name) {
    // Ours: shown from what we kept, never decrypted (its message key is gone).
    const m = typeof text === "string" && ROOM_FORMAT.exec(text);
    const mine = m && ownSent.get(m[1] + ":" + m[2]);
    if (!mine) return roomRefused(from, "no key: not sent by this page (an earlier session, or another tab of yours)");
    if (mine.sealed !== text) return roomRefused(from, "forged: not what this page sent");
    if (mine.shown) return roomRefused(from, "replayed");
    mine.shown = true;
    if (mine.pending && mine.pending.state === "awaiting") return mark(mine.pending, "sent"); // its line is there
    return line("live own", from, mine.text, "encrypted for the room", "lock");
  }
  const r = await openRoom(from, text);
  if (r.wait) {
    if (r.wait.held.length >= 32) return roomRefused(from, "no key for it");
    const h = { text };
    h.timer = setTimeout(() => {
      r.wait.held.splice(r.wait.held.indexOf(h), 1);
      queue = queue.then(() => roomRefused(from, "no key: sent before you joined, or its key never reached you"));
    }, 5000);
    r.wait.held.push(h);
    return;
  }
  if (r.refused) return roomRefused(from, r.refused);
  if (r.missed) line("notice", null, `${r.missed} room message${r.missed === 1 ? "" : "s"} from ${from} never arrived.`);
  const mention = mentions(r.plain);
  line("live" + (mention ? " mention" : ""), from, r.plain, "decrypted · " + TRUST_NOTE[keyState(from)], "lock");
  if (mention) notify(`${from} mentioned you`, r.plain);
}

function roomRefused(from, why) {
  line("undecrypted", from, "(" + why + "; not shown)", "", "unlock");
}

/// Why nothing can be sent to the encrypted room now ("" if it can).
function whyRoomNotSendable() {
  if (!E2E) return "this room takes only encrypted messages, and this page has no encryption here (it needs HTTPS or localhost)";
  if (!session || !session.name) return "the server has not relayed your own key yet";
  const changed = [...online].filter((n) => n !== session.name && keyState(n) === "changed");
  if (changed.length) return `the key of ${changed.join(", ")} changed: open their conversation, compare the safety number, then press "Trust the new key"`;
  return "";
}

/// The readers of the room now: every other online user with a usable key,
/// as [name, the key's state] (the state checked is the one sealed to).
function roomReaders() {
  const usable = (n) => n !== session.name && peers.get(n) && !peers.get(n).bad;
  return [...online].filter(usable).sort().map((n) => [n, peers.get(n)]);
}
const readersTag = (readers) => JSON.stringify(readers.map(([n, p]) => [n, p.key]));

/// Makes a new epoch and gives it to every reader, each sealed to the key
/// that was checked (never to one that replaced it meanwhile), as fast as
/// the server's rate limit lets them through.
async function rotate(readers) {
  const pair = await crypto.subtle.generateKey(SIGN, false, ["sign", "verify"]); // private half not extractable
  const spk = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  const ck = crypto.getRandomValues(new Uint8Array(32));
  const epoch = ++epochs;
  const payload = new Uint8Array(106);
  payload[0] = 1;
  new DataView(payload.buffer).setBigUint64(1, BigInt(epoch));
  payload.set(ck, 9);
  payload.set(spk, 41);
  sender = { epoch, ck, index: 0, sign: pair.privateKey, readers: readersTag(readers) };
  for (const [name, peer] of readers) {
    announceReader(name, peer);
    const sealed = await sealFor(name, peer, payload, "e2e2k");
    await token();
    put(JSON.stringify({ msgType: "PrivateMessage", TgtUser: name, text: sealed }));
  }
}

/// Says in the log who can read the room from now on, once per key: the
/// list of who is online is the server's word (it could add a ghost).
const announced = new Set();
function announceReader(name, peer) {
  if (announced.has(name + "\n" + peer.key)) return;
  announced.add(name + "\n" + peer.key);
  line("notice", null, `${name} can read the room from now on: key ${peer.fp} (${TRUST_NOTE[keyState(name)]}).`);
}

// The server's rate limit, kept here as well, so that a burst of key
// messages waits for tokens instead of being refused (docs/PROTOCOL.md).
const RATE = Number(document.querySelector('meta[name="rate-limit"]')?.content.split(" ")[0]) || 0;
const BURST = Number(document.querySelector('meta[name="rate-limit"]')?.content.split(" ")[1]) || 0;
const bucket = { tokens: BURST, last: 0 };
function refill() {
  const now = performance.now();
  bucket.tokens = Math.min(BURST, bucket.tokens + ((now - bucket.last) / 1000) * RATE);
  bucket.last = now;
}
/// Sends a frame on the socket, counting it against the rate limit.
/// False when there is no open socket (the link dropped): nothing was sent.
function put(data) {
  if (!ws || ws.readyState !== WebSocket.OPEN) return false;
  refill();
  bucket.tokens -= 1;
  ws.send(data);
  return true;
}
/// Waits until a frame can go without passing the rate limit (keeping a
/// few tokens for pongs and what the user types meanwhile).
async function token() {
  if (!RATE) return;
  const keep = Math.min(3, BURST); // a burst of 1 or 2 keeps nothing in hand
  for (refill(); bucket.tokens < keep; refill()) await new Promise((r) => setTimeout(r, ((keep - bucket.tokens) / RATE) * 1000));
}

/// Seals `text` for the room: a new epoch first if the readers changed,
/// then the next index of the ratchet, encrypted once and signed.
async function sendRoom(text, sent, pending) {
  const refused = (why) => (pending ? mark(pending, "failed", why) : line("error", null, `Not sent to the room: ${why}. Your text is kept.`));
  const why = whyRoomNotSendable();
  if (why) return refused(why);
  // The size is known before sealing (an upper bound for the epoch and index).
  const length = 4 * Math.ceil((enc.encode(text).length + 92) / 3);
  const worst = `e2er1:${epochs + 1}:${(sender ? sender.index : 0) + 1}:` + "A".repeat(length);
  if (!fits(JSON.stringify({ msgType: "Broadcast", text: worst }))) return pending && mark(pending, "failed", "too long");
  const readers = roomReaders();
  if (!sender || sender.readers !== readersTag(readers)) {
    await rotate(readers);
    // Anything may have happened while the keys went out: a key changed, a
    // reader left. Then this message does not go under that epoch.
    const whyNow = whyRoomNotSendable() || (readers.every(([n, p]) => peers.get(n) === p) ? "" : "someone left or changed keys meanwhile");
    if (whyNow) {
      sender = null;
      return refused(whyNow);
    }
  }
  const i = ++sender.index;
  const mk = await hmac(sender.ck, 1);
  sender.ck = await hmac(sender.ck, 2);
  const iv = crypto.getRandomValues(new Uint8Array(12)), ad = roomAad(session.name, sender.epoch, i);
  const key = await crypto.subtle.importKey("raw", mk, "AES-GCM", false, ["encrypt"]);
  const ct = new Uint8Array(await crypto.subtle.encrypt({ name: "AES-GCM", iv, additionalData: ad }, key, enc.encode(text)));
  const sig = new Uint8Array(await crypto.subtle.sign(ECDSA, sender.sign, concat(ad, iv, ct)));
  const sealed = `e2er1:${sender.epoch}:${i}:${b64(concat(iv, ct, sig))}`;
  ownSent.set(sender.epoch + ":" + i, { text, sealed, shown: false, pending });
  if (ownSent.size > 256) ownSent.delete(ownSent.keys().next().value);
  if (!put(JSON.stringify({ msgType: "Broadcast", text: sealed }))) {
    if (!pending) line("error", null, "Not sent to the room: the link dropped. Your text is kept.");
    return;
  }
  sent();
  if (pending) mark(pending, "awaiting");
}

/// Says which kind of room this is, and warns when a room that was
/// encrypted on an earlier visit no longer is (the server decides it).
function showRoomKind() {
  $("roomkind").hidden = false;
  $("roomkind").className = "roomkind " + (e2eRoom ? "e2e" : "plain");
  $("roomkind").textContent = e2eRoom ? "\u{1F512} end-to-end encrypted room" : "room messages are not encrypted";
  $("text").placeholder = target ? "Encrypted message to " + target : e2eRoom ? "Encrypted message to the room" : "Message the room";
  try {
    if (e2eRoom) localStorage.setItem("ragnarok-e2e-room", "1");
    else if (localStorage.getItem("ragnarok-e2e-room")) {
      line("warning", null, "This room was end-to-end encrypted when you were here before; the server now says it is not. " +
        "What you send to the room can be read by the server.");
    }
  } catch { /* no storage: nothing to compare with */ }
}

// --- The people list, the conversation, the key panel ------------------------

// The list is redrawn at most once per turn of the event loop, however many
// presence and key messages arrive together (a big room sends many).
let renderPending = false;
function renderUsers() {
  if (renderPending) return;
  renderPending = true;
  setTimeout(drawUsers, 0);
}

function drawUsers() {
  renderPending = false;
  const ul = $("users").querySelector("ul");
  const names = [...online].sort();
  if (me && online.has(me)) { names.splice(names.indexOf(me), 1); names.unshift(me); } // yourself first
  if (menuFor && !online.has(menuFor)) closeModMenu(false); // they left
  ul.replaceChildren(...names.map(userItem));
  $("count").textContent = String(online.size);
  drawConversation();
}

// What the list says of each key: a mark, not a wall of fingerprints
// (those are in the panel of a conversation).
const MARKS = { none: "no key", bad: "unusable key", new: "new", known: "", verified: "\u2713 verified", changed: "key changed!" };

function userItem(name) {
  const li = document.createElement("li");
  li.dataset.user = name;
  li.append(name);
  if (name === me) {
    // Yourself: not a private-message target; your fingerprint is under "Your key".
    li.className = "me";
    const you = document.createElement("span");
    you.className = "you";
    you.textContent = " (you)";
    li.append(you);
    return li;
  }
  if (E2E) {
    const state = keyState(name);
    li.dataset.key = state;
    const mark = document.createElement("span");
    mark.className = "mark " + state;
    mark.textContent = e2eRoom && (state === "none" || state === "bad") ? MARKS[state] + ": cannot read the room" : MARKS[state];
    li.append(mark);
  }
  if (name === target) li.className = "selected";
  li.title = name === target ? "Back to the room" : "Send " + name + " an encrypted private message";
  li.onclick = (e) => { if (!e.target.closest(".modbtn")) selectTarget(name === target ? null : name); };
  const pick = (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); selectTarget(name === target ? null : name); } };
  if (!moderator) {
    li.tabIndex = 0;
    li.setAttribute("role", "button");
    li.onkeydown = pick;
    return li;
  }
  // A moderator's row: the name (a button of its own) and the menu button
  // beside it, never one inside the other.
  const who = document.createElement("span");
  who.className = "pick";
  who.tabIndex = 0;
  who.setAttribute("role", "button");
  who.append(...li.childNodes);
  who.onkeydown = pick;
  const menu = document.createElement("button");
  menu.type = "button";
  menu.className = "modbtn";
  menu.textContent = "\u22EF";
  menu.title = "Moderate " + name;
  menu.setAttribute("aria-label", "Moderate " + name);
  menu.setAttribute("aria-haspopup", "menu");
  menu.setAttribute("aria-expanded", String(menuFor === name));
  menu.onclick = () => (menuFor === name ? closeModMenu(true) : openModMenu(name, menu));
  menu.onkeydown = (e) => { if (e.key === "ArrowDown") { e.preventDefault(); openModMenu(name, menu); } };
  li.classList.add("mod");
  li.append(who, menu);
  return li;
}

// --- A moderator's tools: the menu on a name, the form asking for a reason, the lock ---

// What each item of the menu sends (`Moderate`, docs/PROTOCOL.md); a mute
// carries no reason in the protocol, so it asks none.
const MOD_ACTIONS = {
  kick: { cmd: "kick", verb: "Kick", what: (n) => `Kick ${n}: they can come back at once`, reason: true },
  kick10: { cmd: "kick", verb: "Kick", what: (n) => `Kick ${n} for 10 minutes`, for_secs: 600, reason: true },
  mute10: { cmd: "mute", verb: "Mute", what: (n) => `Mute ${n} for 10 minutes: what they send reaches no one`, for_secs: 600 },
  unmute: { cmd: "unmute", verb: "Unmute", what: (n) => `Unmute ${n}` },
  ban: { cmd: "ban", verb: "Ban", what: (n) => `Ban ${n} (and look-alikes of the name) until the ban is lifted`, reason: true },
};
const menuItems = () => [...$("modmenu").querySelectorAll('[role="menuitem"]')];
const menuButton = (name) => $("users").querySelector(`li[data-user="${CSS.escape(name)}"] .modbtn`);

/// Opens the menu of `name` under its button, the first item focused.
function openModMenu(name, button) {
  menuFor = name;
  const menu = $("modmenu");
  menu.setAttribute("aria-label", "Moderate " + name);
  menu.hidden = false;
  const at = button.getBoundingClientRect();
  const width = menu.offsetWidth, height = menu.offsetHeight;
  menu.style.left = Math.max(4, Math.min(at.right - width, window.innerWidth - width - 4)) + "px";
  menu.style.top = (at.bottom + height + 4 <= window.innerHeight ? at.bottom + 2 : Math.max(4, at.top - height - 2)) + "px";
  button.setAttribute("aria-expanded", "true");
  menuItems()[0].focus();
}

/// Closes the menu; `refocus`: back to the button it opened from.
function closeModMenu(refocus) {
  const name = menuFor;
  menuFor = null;
  $("modmenu").hidden = true;
  const button = name && menuButton(name);
  if (button) {
    button.setAttribute("aria-expanded", "false");
    if (refocus) button.focus();
  }
}

$("modmenu").onkeydown = (e) => {
  const items = menuItems(), at = items.indexOf(document.activeElement);
  const move = { ArrowDown: at + 1, ArrowUp: at - 1, Home: 0, End: items.length - 1 }[e.key];
  if (move !== undefined) {
    e.preventDefault();
    items[(move + items.length) % items.length].focus();
  } else if (e.key === "Escape") {
    e.preventDefault();
    e.stopPropagation();
    closeModMenu(true);
  } else if (e.key === "Tab") {
    closeModMenu(false);
  }
};
$("modmenu").onclick = (e) => {
  const item = e.target.closest('[role="menuitem"]');
  if (!item || !menuFor) return;
  const name = menuFor;
  closeModMenu(false);
  openModForm(name, item.dataset.act);
};
document.addEventListener("mousedown", (e) => {
  if (menuFor && !e.target.closest("#modmenu, .modbtn")) closeModMenu(false);
});

/// The inline form of one action on `name`: what will be done, a reason
/// where the action takes one, and the button that does it.
let modAction = null; // {name, act}
function openModForm(name, act) {
  const a = MOD_ACTIONS[act];
  modAction = { name, act };
  $("modform-what").textContent = a.what(name);
  $("modform-reason").value = "";
  $("modform-reason-row").hidden = !a.reason;
  $("modform-go").textContent = a.verb;
  $("modform").hidden = false;
  showPeople(false);
  (a.reason ? $("modform-reason") : $("modform-go")).focus();
}

function closeModForm() {
  modAction = null;
  $("modform").hidden = true;
  $("text").focus();
}

function moderate(request) {
  if (!ws || ws.readyState !== WebSocket.OPEN) return;
  ws.send(JSON.stringify({ msgType: "Moderate", ...request }));
}

$("modform").onsubmit = (e) => {
  e.preventDefault();
  if (!modAction) return;
  const a = MOD_ACTIONS[modAction.act];
  const request = { cmd: a.cmd, target: modAction.name };
  if (a.for_secs) request.for_secs = a.for_secs;
  const reason = $("modform-reason").value.trim();
  if (a.reason && reason) request.reason = reason;
  moderate(request);
  closeModForm();
};
$("modform-cancel").onclick = closeModForm;
$("modform").onkeydown = (e) => { if (e.key === "Escape") { e.preventDefault(); closeModForm(); } };
$("lock").onclick = () => moderate({ cmd: "lock" });
$("unlock").onclick = () => moderate({ cmd: "unlock" });

/// The page as a moderator's or a member's, as the welcome says.
function showRole() {
  $("role").hidden = !moderator;
  $("modtools").hidden = !moderator;
  if (!moderator) { $("modform").hidden = true; $("modmenu").hidden = true; menuFor = null; }
}

/// A click on a name (or on the "to …" chip): private messages to `name`,
/// or back to the room for null. Closes the drawer and goes to the composer.
function selectTarget(name) {
  if (name === me) return; // never a private message to yourself
  if (name && !E2E) { line("error", null, "Encrypted private messages need HTTPS or localhost."); return; }
  target = name;
  panelOpen = !!name && keyState(name) === "changed"; // a changed key needs the user before anything is sent
  $("text").placeholder = name ? "Encrypted message to " + name : e2eRoom ? "Encrypted message to the room" : "Message the room";
  renderUsers();
  showPeople(false);
  $("text").focus();
}

const KEYS_LABEL = { none: "no key", bad: "unusable key", new: "Safety number", known: "Safety number", verified: "\u2713 verified", changed: "Key changed!" };

/// The "to …" chip, its key button and the key panel, for the open conversation.
function drawConversation() {
  const state = target ? keyState(target) : "none";
  $("chips").hidden = !target;
  $("target-name").textContent = target || "";
  $("target-away").textContent = target && !online.has(target) ? " (offline)" : "";
  $("keys").textContent = KEYS_LABEL[state];
  $("keys").className = "chip keys " + state;
  $("keys").setAttribute("aria-expanded", String(panelOpen));
  $("peer").hidden = !target || !panelOpen;
  if ($("peer").hidden) return;
  const peer = peers.get(target);
  const usable = !!peer && !peer.bad;
  $("peer-name").textContent = target;
  $("peer-none").hidden = usable;
  $("peer-none").textContent = !online.has(target) ? `${target} is not online.`
    : peer ? `${target} published something that is not a usable key.` : `${target} has not published a key.`;
  $("peer-keys").hidden = !usable;
  $("peer-changed").hidden = state !== "changed";
  if (!usable) return;
  $("peer-fp").textContent = peer.fp;
  $("peer-safety").textContent = peer.safety;
  $("peer-changed-text").textContent = state === "changed"
    ? `${target}'s identity key is not the one you accepted before; it is now ${peer.fp}. A new browser, cleared data, ` +
      `or the server substituting a key: compare the safety number with ${target} first.`
    : "";
  $("peer-verified").checked = state === "verified";
  $("peer-verified").disabled = state === "changed";
}

/// "Trust the new key": it replaces the record (not verified) and unblocks sending.
$("peer-trust").onclick = () => {
  const peer = peers.get(target);
  if (!peer || peer.bad) return;
  records.set(target, { name: target, ik: peer.ikB64, verified: false });
  newThisVisit.delete(target);
  saveRecord(target);
  line("notice", null, `You trusted ${target}'s new key (${peer.fp}). It is not verified until you compare the safety number.`);
  renderUsers();
};

/// "Verified": the user compared the safety number; kept with the record.
$("peer-verified").onchange = () => {
  const rec = records.get(target), peer = peers.get(target);
  if (!rec || !peer || peer.bad || rec.ik !== peer.ikB64) return renderUsers();
  rec.verified = $("peer-verified").checked;
  saveRecord(target);
  renderUsers();
};

$("keys").onclick = () => { panelOpen = !panelOpen; drawConversation(); };
$("peer-close").onclick = () => { panelOpen = false; drawConversation(); };

/// Opens or closes the people drawer (narrow screens; on wide ones the list
/// is always shown and this only changes a class nothing looks at).
function showPeople(open) {
  $("chat").classList.toggle("people-open", open);
  $("scrim").hidden = !open;
  $("people").setAttribute("aria-expanded", String(open));
}

// --- From the server -------------------------------------------------------

// Messages are handled strictly in arrival order, even when decrypting takes a while.
let queue = Promise.resolve();
function onMessage(data) { queue = queue.then(() => handle(data)).catch((e) => line("error", null, String(e))); }

const stringsOf = (list) => (Array.isArray(list) ? list.filter((u) => typeof u === "string") : []);
// What changes the people list, the keys, or who is online.
const ROSTER = new Set(["OnlineUsers", "UsersJoined", "UsersLeft", "PublicKeys", "PublicKey"]);

async function handle(data) {
  let m;
  try { m = JSON.parse(data); } catch { return line("error", null, "unreadable message from the server"); }
  if (!m || typeof m !== "object") return;
  if (!takeSeq(m)) return; // a repeat (docs/PROTOCOL.md: at or below the highest seq seen)
  if (m.msgType === "Resumed") return onResumed(m);
  if ("ServerName" in m) {
    // One welcome per connection: a second one (never sent by a real server)
    // must not change the room's kind or our keys mid-session.
    if (welcomed) return line("error", null, "The server sent a second welcome: ignored.");
    welcomed = true;
    return onWelcome(m);
  }
  const before = !!target && online.has(target);
  const was = m.msgType === "OnlineUsers" ? new Set(online) : null;
  switch (m.msgType) {
    case "OnlineUsers": online.clear(); for (const u of stringsOf(m.Users)) online.add(u); forgetAbsent(); break;
    case "UsersJoined": notePeople(m, stringsOf(m.Users).filter((u) => !online.has(u)), []); for (const u of stringsOf(m.Users)) online.add(u); break;
    case "UsersLeft": notePeople(m, [], stringsOf(m.Users).filter((u) => online.has(u))); for (const u of stringsOf(m.Users)) online.delete(u); forgetAbsent(); break;
    case "PublicKeys":
      if (m.Keys && typeof m.Keys === "object") await Promise.all(Object.entries(m.Keys).map(([u, k]) => setPeerKey(u, k)));
      break;
    case "PublicKey": await setPeerKey(m.SrcUser, m.key, true); break;
    case "Broadcast":
      if (m.history && !e2eRoom && link.dedupe && link.dedupe.has(m.SrcUser + "\n" + m.text)) break; // on screen already (a reset)
      if (e2eRoom) await showRoom(String(m.SrcUser), m.text, m.history);
      else if (!m.history && m.SrcUser === me && echoed(m.text)) break; // a queued message of ours, now sent
      else {
        const own = m.SrcUser === me, mention = !m.history && !own && mentions(m.text);
        line((m.history ? "history" : "live") + (own ? " own" : "") + (mention ? " mention" : ""), m.SrcUser, String(m.text));
        if (mention) notify(`${m.SrcUser} mentioned you`, String(m.text));
      }
      break;
    case "PrivateMessage": await showPrivate(String(m.SrcUser), m.text); break;
    case "Announcement": line("announcement", "server", String(m.text)); break;
    case "Error":
      if (loginRefused(m)) break;
      // A passing refusal of a reconnection (too many logins, the cluster
      // away): said by the indicator, not once per attempt in the log.
      if (me && !link.live) { $("link").textContent = "reconnecting… (" + m.text + ")"; break; }
      // Before login an error is about the login: shown on its form, never in the chat.
      if (me) line("error", null, "Error (" + m.code + "): " + m.text);
      else $("login-error").textContent = m.text;
      refusedQueued(m);
      break;
  }
  if (m.msgType === "OnlineUsers") afterList(was, m);
  if (!ROSTER.has(m.msgType)) return;
  notePresence(before);
  renderUsers();
}

/// The welcome of a new login (or a drop, then a login again where the
/// server keeps no session: it does not resume): a new session.
async function onWelcome(m) {
  const again = link.had; // we were in before: what happened meanwhile is lost
  const before = again && me ? new Set(online) : null;
  linkUp(m.resume, true);
  if (again) {
    resetLine(m);
    failOutbox("your session could not be resumed: it is not known whether it was sent");
  }
  link.dedupe = again ? new Set(shownLines) : null;
  link.away = { before };
  await startSession(m);
}

/// A new session on this page: the room's kind, our name, fresh keys
/// published (docs/PROTOCOL.md: after any login, and after a reset).
async function startSession(m) {
  // Our name as typed, in the form the server keeps (NFC) until the relay of our key confirms it.
  me = link.name.normalize("NFC");
  $("title").textContent = m.ServerName;
  document.title = m.ServerName + " · Ragnarok";
  $("status").textContent = "signed in as " + me;
  moderator = m.role === "moderator";
  showRole();
  $("lobby").hidden = true;
  $("chat").hidden = false;
  $("people").hidden = false;
  $("text").focus();
  peers.clear();
  byKey.clear(); // a new session key: new pairs
  e2eRoom = m.e2e_room === true;
  roomTitle = String(m.ServerName);
  sender = null;
  epochs = 0;
  ownSent.clear();
  announced.clear();
  Object.assign(bucket, { tokens: BURST, last: performance.now() }); // chatting starts with a whole burst
  earlier = null;
  showRoomKind();
  showNotify();
  await publishKey();
}

// --- The connection: login, resume, reconnect --------------------------------
//
// The page opts in to resuming (docs/PROTOCOL.md, "Resuming after a dropped
// connection"): it logs in with {"msgType":"Login"}, keeps the welcome's
// token and epoch and the highest `seq` it has seen, and drops any message at
// or below it (never shown twice). When the socket closes without a goodbye
// it connects again by itself (backoff with jitter; at once when the browser
// says it is online again or the tab is shown) and sends {"msgType":"Resume"}.
// A resumed session is the same session: the keys, the pairs, the room's
// sender keys and everything on screen stay; what was missed arrives once.
// A reset (away too long, the server restarted) is a new session: new keys,
// the history shown without what is on screen already.
//
// sessionStorage keeps {name, password, token, epoch, seq} for this tab so
// that a reload of the tab signs in again by itself. The room password is
// kept there on purpose: sessionStorage belongs to this tab and this origin
// only and ends with the tab, and without it a reload (or a phone restoring
// the tab) would ask for it again. It is removed when the session ends for
// good (kicked, banned, refused, taken over elsewhere).
const STORE = "ragnarok-session";
const link = {
  name: "", password: "", // what we log in with
  resume: null,   // {token, epoch} of the session (the welcome's `resume`)
  seq: 0,         // the highest seq seen in that epoch
  live: false,    // the current socket is signed in
  had: false,     // we were signed in: a drop is healed, not the end
  attempt: 0,     // attempts in a row that did not get in (the backoff)
  timer: null,    // the next attempt
  deadline: null, // an attempt that does not get in within 8 s is given up (a link that hangs)
  stopped: "",    // why the page no longer reconnects ("": it does)
  away: null,     // after a (re)login, until its OnlineUsers: {before: names online before, or null}
  dedupe: null,   // after a reset: "who\ntext" of the lines on screen, which its history must not repeat
};
const DEDUPED = new Set(["Broadcast", "PrivateMessage", "PublicKey", "Announcement"]);

// The codes after which coming back is pointless: said, and reconnecting stops.
const STOP = {
  resume_refused: "The server refused to resume your session (the name is held by a session that is not this one).",
  resumed_elsewhere: "Your session was taken over by another tab or device.",
  kicked: "You were removed from the room.",
  banned: "You are banned from the room.",
  wrong_password: "The room's password changed: sign in again.",
  name_taken: "Someone else took your name while you were away: sign in again.",
  invalid_name: "The server no longer accepts your name: sign in again.",
  room_locked: "The room was locked while you were away: you cannot come back in for now.",
};

function save() {
  try {
    if (!link.resume) return sessionStorage.removeItem(STORE);
    sessionStorage.setItem(STORE, JSON.stringify({ name: link.name, password: link.password, ...link.resume, seq: link.seq }));
  } catch { /* no storage: a reload asks for the password again */ }
}

/// Keeps the highest seq; false for a repeat (dropped, never shown twice).
function takeSeq(m) {
  if (typeof m.seq !== "number" || !Number.isSafeInteger(m.seq)) return true;
  if (DEDUPED.has(m.msgType) && m.seq <= link.seq) return false;
  if (m.seq > link.seq) { link.seq = m.seq; save(); }
  return true;
}

/// Signed in on this socket: keeps the session's `resume` (the token, the
/// epoch; `fresh`: its seq is where we start) and hides the indicator.
function linkUp(resume, fresh) {
  clearTimeout(link.deadline);
  link.live = link.had = true;
  link.attempt = 0;
  link.stopped = "";
  if (resume && typeof resume.token === "string" && typeof resume.epoch === "string") {
    link.resume = { token: resume.token, epoch: resume.epoch };
    if (fresh && Number.isSafeInteger(resume.seq)) link.seq = resume.seq;
  } else if (fresh) {
    link.resume = null; // the server does not resume (resume_grace_secs 0)
  }
  save();
  $("link").hidden = true;
  Object.assign(bucket, { tokens: BURST, last: performance.now() }); // chatting starts with a whole burst
}

/// The answer to a Resume: the same session (what was missed follows, then
/// the list), or a reset (a new session: new keys, the history).
async function onResumed(m) {
  if (welcomed) return line("error", null, "The server sent a second welcome: ignored.");
  welcomed = true;
  const reset = m.reset === true;
  const fresh = !session; // a reload: this page has no keys of the session, so it publishes new ones
  const before = me ? new Set(online) : null;
  linkUp(m.resume, reset);
  if (reset) {
    if (!fresh) resetLine(m); // (a reloaded page has nothing on screen that could be out of date)
    failOutbox("your session could not be resumed: it is not known whether it was sent");
    link.dedupe = new Set(shownLines);
  }
  if (!reset) link.dedupe = null;
  link.away = { before };
  if (reset || fresh) return startSession(m);
  $("status").textContent = "signed in as " + me;
  // Our key never came back relayed before the drop: publish it again (the same key).
  if (session && !session.name) put(JSON.stringify({ msgType: "PublicKey", key: session.key }));
}

/// Says that what was missed cannot be told exactly (the server's reason, if any, on hover).
function resetLine(m) {
  const div = line("reset", null, "You were away too long, or the server restarted: some messages may be missing.");
  if (typeof m.why === "string" && m.why) div.title = "The server says: " + m.why;
}

/// After the first OnlineUsers of a (re)login: who came and went while we
/// were away, then what was typed meanwhile goes out (the replay is over).
function afterList(was, m) {
  if (!link.away) {
    if (was && (m.seq !== undefined || !link.resume)) {
      notePeople(m, [...online].filter((u) => !was.has(u)), [...was].filter((u) => !online.has(u)));
    }
    return;
  }
  const { before } = link.away;
  link.away = null;
  if (before && before.size) {
    const came = [...online].filter((u) => !before.has(u)), went = [...before].filter((u) => !online.has(u));
    const parts = [came.length && namesOf(came) + " joined", went.length && namesOf(went) + " left"].filter(Boolean);
    if (parts.length) line("presence", null, "While you were away: " + parts.join("; ") + ".");
  }
  queue = queue.then(flushOutbox);
}

/// "alice", "alice and bob", "alice, bob and carol", "alice, bob and 3 others".
function namesOf(names) {
  if (names.length <= 3) return names.length === 1 ? names[0] : names.slice(0, -1).join(", ") + " and " + names.at(-1);
  return `${names.slice(0, 2).join(", ")} and ${names.length - 2} others`;
}

// Joins and leaves in the log, batched: what arrives within half a second is one line.
const batch = { joined: [], left: [], timer: null };
function notePeople(m, joined, left) {
  if (link.away) return; // the snapshot of a login: nobody came, we did
  if (m.msgType !== "OnlineUsers" && m.seq === undefined && link.resume) return; // a part of a snapshot, not news
  for (const u of joined) if (u !== me) { const i = batch.left.indexOf(u); if (i >= 0) batch.left.splice(i, 1); else batch.joined.push(u); }
  for (const u of left) if (u !== me) { const i = batch.joined.indexOf(u); if (i >= 0) batch.joined.splice(i, 1); else batch.left.push(u); }
  if (!batch.timer && (batch.joined.length || batch.left.length)) {
    batch.timer = setTimeout(() => {
      batch.timer = null;
      if (batch.joined.length) line("presence", null, namesOf(batch.joined.splice(0)) + " joined");
      if (batch.left.length) line("presence", null, namesOf(batch.left.splice(0)) + " left");
    }, 500);
  }
}

/// A login's refusal that ends the session for good: said, and no more
/// reconnecting. True when it was one.
function loginRefused(m) {
  const why = STOP[m.code];
  // kicked, banned, taken over: at any time; the others only answer a login.
  if (!why || (link.live && !["kicked", "banned", "resumed_elsewhere"].includes(m.code))) return false;
  stop(why);
  if (me) line("error", null, "Error (" + m.code + "): " + m.text);
  else $("login-error").textContent = m.text;
  return true;
}

/// No more reconnecting: says why, and what was queued is not sent.
function stop(why) {
  link.stopped = why;
  link.live = false;
  link.resume = null;
  clearTimeout(link.timer);
  clearTimeout(link.deadline);
  save();
  failOutbox(why);
  if (!me) return;
  $("link").hidden = false;
  $("link").className = "link stopped";
  $("link").textContent = "disconnected";
  $("status").textContent = "disconnected";
  line("notice", null, "Disconnected: " + why + " Reload the page to sign in again.");
}

/// Opens a socket and signs in: Resume when there is a session to resume, Login otherwise.
function connect() {
  clearTimeout(link.timer);
  clearTimeout(link.deadline);
  if (ws) {
    // The old socket says nothing more; closed with a code that is not a goodbye.
    const old = ws;
    old.onopen = old.onmessage = old.onclose = null;
    if (old.readyState <= WebSocket.OPEN) old.close(4000, "reconnecting");
  }
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const sock = ws = new WebSocket(`${scheme}://${location.host}/`);
  welcomed = false;
  link.live = false;
  sock.onopen = () => {
    sock.send(link.password);
    sock.send(JSON.stringify(link.resume
      ? { msgType: "Resume", name: link.name, token: link.resume.token, epoch: link.resume.epoch, seq: link.seq }
      : { msgType: "Login", name: link.name }));
  };
  sock.onmessage = (e) => { if (sock === ws) onMessage(e.data); };
  sock.onclose = (e) => { if (sock === ws) linkDown(e); };
  if (link.had) {
    link.deadline = setTimeout(() => {
      if (sock !== ws || link.live) return;
      sock.onclose = null;
      sock.close();
      linkDown({});
    }, 8000);
  }
}

/// The socket closed. Before any sign-in the login form says so; after one,
/// unless stopped, the page reconnects: 0.5 s doubling up to 5 s, each
/// delay taken at random between half of it and all of it (many phones
/// dropped at once do not come back at the same instant).
function linkDown(e) {
  link.live = false;
  clearTimeout(link.deadline);
  if (link.stopped) return;
  if (!link.had) {
    $("status").textContent = "disconnected" + (e.reason ? ": " + e.reason : "");
    if (!$("login-error").textContent) $("login-error").textContent = "Could not connect.";
    return;
  }
  $("link").hidden = false;
  $("link").className = "link";
  $("link").textContent = "reconnecting…";
  const delay = Math.min(5000, 500 * 2 ** Math.min(link.attempt++, 4));
  clearTimeout(link.timer);
  link.timer = setTimeout(connect, delay * (0.5 + Math.random() / 2));
}

/// The browser says the network is back, or the tab is shown again: try at
/// once. After `online` even an open socket may be dead (a new network):
/// a new one takes the session over.
function retryNow(always) {
  if (!link.had || link.stopped || (link.live && !always)) return;
  link.attempt = 0;
  connect();
}
window.addEventListener("online", () => retryNow(true));
document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible") retryNow(false); });
// Leaving the page is a goodbye (Close 1000): the others see us leave at
// once, not after the grace. (A reload cannot be told from a close here: the
// reloaded tab signs in again from sessionStorage, as a reset.)
window.addEventListener("pagehide", () => {
  if (!ws || ws.readyState !== WebSocket.OPEN) return;
  link.stopped = "goodbye";
  ws.close(1000, "goodbye");
});
// Back from the back-forward cache: the goodbye was said; sign in again.
window.addEventListener("pageshow", (e) => { if (e.persisted && link.stopped === "goodbye") { link.stopped = ""; retryNow(false); } });

$("login").onsubmit = (e) => {
  e.preventDefault();
  $("login-error").textContent = "";
  Object.assign(link, { name: $("name").value.trim(), password: $("password").value, resume: null, seq: 0, had: false, stopped: "", attempt: 0 });
  session = null;
  $("status").textContent = "connecting…";
  connect();
};

/// A reload of the tab: sign in again from what sessionStorage kept.
function restore() {
  let kept;
  try { kept = JSON.parse(sessionStorage.getItem(STORE)); } catch { kept = null; }
  if (!kept || typeof kept.name !== "string" || typeof kept.token !== "string" || typeof kept.epoch !== "string") return;
  Object.assign(link, { name: kept.name, password: String(kept.password ?? ""), resume: { token: kept.token, epoch: kept.epoch },
    seq: Number.isSafeInteger(kept.seq) ? kept.seq : 0, had: true });
  $("name").value = kept.name;
  $("password").value = link.password;
  $("status").textContent = "signing in again…";
  connect();
}

// --- What is typed while the link is down -------------------------------------
//
// Shown at once as "sending…", sent once the session is resumed (after the
// replay of what was missed, so in order with it), and marked sent: a room
// message when it comes back from the server with its seq, a private one
// when it went out. Marked "not sent" when it cannot go (refused, or the
// session could not be resumed). Each is written to a socket once, except
// a room message whose socket dropped before it came back and that the
// resume's replay shows the server never took (the replay is exact).
const outbox = []; // {text, to, div, state: "queued" | "awaiting" | "sent" | "failed"}

function enqueue(text, to) {
  const div = to ? line("private own pending", "to " + to, text, "", "lock") : line("live own pending", me, text, "", e2eRoom ? "lock" : "");
  const state = document.createElement("span");
  state.className = "state";
  state.textContent = "sending…";
  div.querySelector(".body").append(state);
  outbox.push({ text, to, div, state: "queued" });
}

function mark(entry, state, why) {
  entry.state = state;
  const label = entry.div.querySelector(".state");
  entry.div.classList.toggle("pending", state === "queued" || state === "awaiting");
  entry.div.classList.toggle("failed", state === "failed");
  label.textContent = { queued: "sending…", awaiting: "sending…", sent: "sent", failed: "not sent" }[state];
  label.title = why || "";
  if (state === "sent" || state === "failed") outbox.splice(outbox.indexOf(entry), 1);
}

/// Our own plain room message came back: the queued one it is, marked sent (true).
function echoed(text) {
  const entry = outbox.find((e) => e.state === "awaiting" && !e.to && e.text === text);
  if (entry) mark(entry, "sent");
  return !!entry;
}

/// An Error about what we sent: the oldest queued room message waiting for its echo was refused.
function refusedQueued(m) {
  if (!["rate_limited", "muted", "encryption_required", "message_too_big", "cluster_unavailable"].includes(m.code)) return;
  const entry = outbox.find((e) => e.state === "awaiting" && !e.to);
  if (entry) mark(entry, "failed", String(m.text));
}

function failOutbox(why) {
  for (const e of [...outbox]) mark(e, "failed", why);
}

/// The session is back: what waits goes out, in order, paced by the rate limit.
function flushOutbox() {
  for (const e of outbox) {
    if (e.state === "awaiting") e.state = "queued"; // the replay did not bring it back: the server never took it
    if (e.state !== "queued" || e.sending) continue;
    e.sending = true;
    sending = sending.then(async () => {
      e.sending = false;
      if (e.state !== "queued" || !link.live) return; // down again: waits for the next resume
      await token();
      await send(e.text, e.to, e);
    }).catch((err) => mark(e, "failed", String(err.message || err)));
  }
}

// --- Notifications (opt in) ------------------------------------------------------
//
// While the tab is hidden: private messages, and room messages that name you.
// Off until the user presses "Notify" and the browser grants it.
let notifyOn = false;
function showNotify() {
  if (!("Notification" in window)) return;
  $("notify").hidden = false;
  try { notifyOn = Notification.permission === "granted" && localStorage.getItem("ragnarok-notify") === "1"; } catch { notifyOn = false; }
  $("notify").setAttribute("aria-pressed", String(notifyOn));
  $("notify").textContent = notifyOn ? "Notifying: turn off" : "Notify me";
}
$("notify").onclick = async () => {
  if (!notifyOn && Notification.permission !== "granted") await Notification.requestPermission();
  if (Notification.permission !== "granted") {
    line("notice", null, "The browser does not allow this page to show notifications (see the site's settings).");
    notifyOn = false;
  } else {
    notifyOn = !notifyOn;
    line("notice", null, notifyOn ? "You will be notified of private messages and mentions of your name while this tab is hidden." : "Notifications off.");
  }
  try { localStorage.setItem("ragnarok-notify", notifyOn ? "1" : "0"); } catch { /* kept for this page only */ }
  $("notify").setAttribute("aria-pressed", String(notifyOn));
  $("notify").textContent = notifyOn ? "Notifying: turn off" : "Notify me";
};
function notify(title, body) {
  if (!notifyOn || document.visibilityState !== "hidden" || Notification.permission !== "granted") return;
  try { new Notification(title, { body: body.slice(0, 200), tag: "ragnarok" }); } catch { /* not on this platform */ }
}
/// The text names us (a whole word, any case).
function mentions(text) {
  if (!me || typeof text !== "string") return false;
  const esc = me.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  return new RegExp(`(^|[^\\p{L}\\p{N}_])@?${esc}($|[^\\p{L}\\p{N}_])`, "iu").test(text);
}

// --- Sending -----------------------------------------------------------------

// The largest message the server takes (it closes the connection past it):
// the page refuses to send more and says so, keeping the text.
const MAX_BYTES = Number(document.querySelector('meta[name="max-message-bytes"]')?.content) || 16384;
function fits(json) {
  const n = enc.encode(json).length;
  if (n <= MAX_BYTES) return true;
  line("error", null, `Too long to send: ${n} bytes, and the room takes at most ${MAX_BYTES} per message. Nothing was sent; shorten it or split it.`);
  return false;
}

/// Why a private message to `name` cannot go now ("" if it can).
function whyNotSendable(name) {
  if (!online.has(name)) return `${name} is not online (they left)`;
  if (!session || !session.name) return "the server has not relayed your own key yet";
  const state = keyState(name);
  if (state === "none") return `${name} has not published a key: their client cannot receive encrypted messages`;
  if (state === "bad") return `${name} published something that is not a usable key`;
  if (state === "changed") return `${name}'s key changed: compare the safety number, then press "Trust the new key"`;
  return "";
}

function refuseNow(name, why) {
  line("error", null, `Not sent: ${why}. Your text is kept.`);
  if (name === target && keyState(name) === "changed") { panelOpen = true; drawConversation(); }
}

/// Sends `text` to the room, or encrypted to `to`, never the one instead of
/// the other. The text leaves the composer only once it went out.
/// `pending`: a message typed while the link was down (its line is shown
/// already, and says whether it went).
async function send(text, to, pending) {
  const sent = () => { if (!pending && $("text").value === text) $("text").value = ""; };
  if (!link.live || ws.readyState !== WebSocket.OPEN) {
    if (pending || !link.had || link.stopped) return; // (not signed in, or for good: nothing to queue for)
    sent();
    return enqueue(text, to);
  }
  if (!to && e2eRoom) return sendRoom(text, sent, pending);
  if (!to) {
    const json = JSON.stringify({ msgType: "Broadcast", text });
    if (!fits(json)) return pending && mark(pending, "failed", "too long");
    sent();
    if (put(json) && pending) mark(pending, "awaiting");
    return;
  }
  const refuse = (name, why) => (pending ? mark(pending, "failed", why) : refuseNow(name, why));
  const why = whyNotSendable(to);
  if (why) return refuse(to, why);
  const peer = peers.get(to);
  // The size is known before encrypting: no counter is spent on a message that cannot go.
  const length = Math.ceil((enc.encode(text).length + 16) / 3) * 4;
  if (!fits(JSON.stringify({ msgType: "PrivateMessage", TgtUser: to, text: `e2e2:${peer.sent + 1}:` + "A".repeat(length) }))) {
    return pending && mark(pending, "failed", "too long");
  }
  const sealed = await sealFor(to, peer, enc.encode(text));
  // Anything may have happened while encrypting (they left, their key changed, the link dropped).
  const whyNow = peers.get(to) === peer ? whyNotSendable(to) : `${to}'s key changed while encrypting`;
  if (whyNow) return refuse(to, whyNow);
  if (!put(JSON.stringify({ msgType: "PrivateMessage", TgtUser: to, text: sealed }))) {
    if (pending) return; // the link dropped meanwhile: stays queued
    return line("error", null, "Not sent: the link dropped. Your text is kept.");
  }
  sent();
  if (!pending) return line("private own", "to " + to, text, "encrypted · " + TRUST_NOTE[keyState(to)], "lock");
  const note = document.createElement("span");
  note.className = "fp";
  note.textContent = "encrypted · " + TRUST_NOTE[keyState(to)];
  pending.div.querySelector(".body").append(note);
  mark(pending, "sent");
}

// One message after the other, in the order they were typed.
let sending = Promise.resolve();
$("send").onsubmit = (e) => {
  e.preventDefault();
  const text = $("text").value, to = target;
  if (!text) return;
  sending = sending.then(() => send(text, to)).catch((err) => line("error", null, String(err.message || err)));
};

$("target").onclick = () => selectTarget(null);
$("people").onclick = () => showPeople(!$("chat").classList.contains("people-open"));
$("scrim").onclick = () => showPeople(false);
document.addEventListener("keydown", (e) => { if (e.key === "Escape") showPeople(false); });

restore(); // last: everything above is defined
