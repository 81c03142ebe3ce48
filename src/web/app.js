"use strict";
// Ragnarok web client. The end-to-end scheme is documented in docs/PROTOCOL.md:
// ECDH P-256, HKDF-SHA-256, AES-256-GCM, text = "e2e1:" + b64(nonce) + ":" + b64(ciphertext).
// Served as /app.js so that the page's Content-Security-Policy needs no 'unsafe-inline'.
const $ = (id) => document.getElementById(id);
const E2E = !!(window.isSecureContext && window.crypto && crypto.subtle);
const enc = new TextEncoder(), dec = new TextDecoder();
const b64 = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes)));
const unb64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
let ws, me = null, target = null, myKeys = null, myRaw = null;
const online = new Set(); // names; OnlineUsers replaces it, UsersJoined / UsersLeft add and remove
// name -> {raw: Uint8Array, b64, fp, pub: CryptoKey, aes: Promise<CryptoKey>|null}, or for a key that
// is not a P-256 public key in the documented format: {b64, bad: true} (that user only gets no messages).
const peers = new Map();

if (!E2E) {
  $("insecure").hidden = false;
  $("myfp").textContent = "none: encryption needs HTTPS or localhost";
}
$("insecure-close").onclick = () => { $("insecure").hidden = true; };

const pad2 = (n) => String(n).padStart(2, "0");

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
  const log = $("log");
  const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  log.append(div);
  if (atEnd) log.scrollTop = log.scrollHeight;
  return div;
}

async function fingerprint(raw) {
  const h = new Uint8Array(await crypto.subtle.digest("SHA-256", raw)).slice(0, 16);
  return [...h].map((b) => b.toString(16).padStart(2, "0")).join("").match(/.{4}/g).join(" ");
}

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
  ul.replaceChildren(...names.map(userItem));
  $("count").textContent = String(online.size);
}

function userItem(name) {
  const li = document.createElement("li");
  li.dataset.user = name;
  li.append(name);
  const fp = document.createElement("span");
  fp.className = "fp";
  const peer = peers.get(name);
  fp.textContent = peer ? (peer.bad ? "unusable key: no encrypted messages" : peer.fp) : (E2E ? "no key published" : "");
  if (peer && peer.bad) fp.classList.add("bad");
  if (name === me) {
    // Yourself: shown with your fingerprint, but not a private-message target.
    li.className = "me";
    const you = document.createElement("span");
    you.className = "you";
    you.textContent = " (you)";
    li.append(you, fp);
    return li;
  }
  li.append(fp);
  if (name === target) li.className = "selected";
  li.tabIndex = 0;
  li.setAttribute("role", "button");
  li.title = name === target ? "Back to the room" : "Send " + name + " an encrypted private message";
  li.onclick = () => selectTarget(name === target ? null : name);
  li.onkeydown = (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); li.click(); } };
  return li;
}

/// A click on a name (or on the "to …" chip): private messages to `name`,
/// or back to the room for null. Closes the drawer and goes to the composer.
function selectTarget(name) {
  if (name === me) return; // never a private message to yourself
  if (name && !E2E) { line("error", null, "Encrypted private messages need HTTPS or localhost."); return; }
  setTarget(name);
  showPeople(false);
  $("text").focus();
}

function setTarget(name) {
  target = name;
  $("target").hidden = !name;
  $("target-name").textContent = name || "";
  $("text").placeholder = name ? "Encrypted message to " + name : "Message the room";
  renderUsers();
}

/// Opens or closes the people drawer (narrow screens; on wide ones the list
/// is always shown and this only changes a class nothing looks at).
function showPeople(open) {
  $("chat").classList.toggle("people-open", open);
  $("scrim").hidden = !open;
  $("people").setAttribute("aria-expanded", String(open));
}

/// Takes `name`'s published key. Each key on its own: one that is not a
/// P-256 public key (not base64, not 65 bytes, not a point on the curve)
/// marks only its owner as having no usable key.
async function setPeerKey(name, key) {
  if (!E2E) return;
  const old = peers.get(name);
  if (old && old.b64 === key) return;
  let peer;
  try {
    if (typeof key !== "string" || !/^[A-Za-z0-9+/]{87}=$/.test(key)) throw new Error("format");
    const raw = unb64(key);
    const pub = await crypto.subtle.importKey("raw", raw, { name: "ECDH", namedCurve: "P-256" }, false, []);
    peer = { raw, b64: key, fp: await fingerprint(raw), pub, aes: null };
  } catch {
    peer = { b64: key, bad: true };
  }
  peers.set(name, peer);
  if (old && !peer.bad) line("notice", null, `${name}'s key changed: new fingerprint ${peer.fp}. Check it with them.`);
  renderUsers();
}

function forgetAbsent() {
  for (const name of [...peers.keys()]) if (!online.has(name)) peers.delete(name);
  if (target && !online.has(target)) {
    line("notice", null, `${target} left: your next message goes to the whole room.`);
    setTarget(null);
  }
}

function sharedKey(peer) {
  if (!peer.aes) {
    peer.aes = (async () => {
      const bits = await crypto.subtle.deriveBits({ name: "ECDH", public: peer.pub }, myKeys.privateKey, 256);
      const [lo, hi] = compare(myRaw, peer.raw) <= 0 ? [myRaw, peer.raw] : [peer.raw, myRaw];
      const info = concat(enc.encode("ragnarok-e2e-v1"), lo, hi);
      const ikm = await crypto.subtle.importKey("raw", bits, "HKDF", false, ["deriveKey"]);
      return crypto.subtle.deriveKey({ name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0), info },
        ikm, { name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]);
    })();
  }
  return peer.aes;
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

async function encryptFor(name, text) {
  const peer = peers.get(name);
  if (!peer) throw new Error(name + " has not published a key: their client cannot receive encrypted messages");
  if (peer.bad) throw new Error(name + " published something that is not a usable key: not sent (their client cannot receive encrypted messages)");
  const nonce = crypto.getRandomValues(new Uint8Array(12));
  const sealed = await crypto.subtle.encrypt(
    { name: "AES-GCM", iv: nonce, additionalData: enc.encode(me + "\n" + name) }, await sharedKey(peer), enc.encode(text));
  return "e2e1:" + b64(nonce) + ":" + b64(sealed);
}

async function decryptFrom(name, text) {
  const m = /^e2e1:([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)$/.exec(text);
  const peer = peers.get(name);
  if (!m || !peer || peer.bad || !E2E) return null;
  try {
    const plain = await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: unb64(m[1]), additionalData: enc.encode(name + "\n" + me) }, await sharedKey(peer), unb64(m[2]));
    return dec.decode(plain);
  } catch { return null; }
}

async function publishKey() {
  if (!E2E) return;
  myKeys = await crypto.subtle.generateKey({ name: "ECDH", namedCurve: "P-256" }, false, ["deriveBits"]);
  myRaw = new Uint8Array(await crypto.subtle.exportKey("raw", myKeys.publicKey));
  $("myfp").textContent = await fingerprint(myRaw);
  ws.send(JSON.stringify({ msgType: "PublicKey", key: b64(myRaw) }));
}

// Messages are handled strictly in arrival order, even when decrypting takes a while.
let queue = Promise.resolve();
function onMessage(data) { queue = queue.then(() => handle(data)).catch((e) => line("error", null, String(e))); }

async function handle(data) {
  let m;
  try { m = JSON.parse(data); } catch { return line("error", null, "unreadable message from the server"); }
  if ("ServerName" in m) {
    me = $("name").value.trim();
    $("title").textContent = m.ServerName;
    document.title = m.ServerName + " · Ragnarok";
    $("status").textContent = "signed in as " + me;
    $("lobby").hidden = true;
    $("chat").hidden = false;
    $("people").hidden = false;
    $("text").focus();
    await publishKey();
    return;
  }
  switch (m.msgType) {
    case "OnlineUsers": online.clear(); for (const u of m.Users) online.add(u); forgetAbsent(); renderUsers(); break;
    case "UsersJoined": for (const u of m.Users) online.add(u); renderUsers(); break;
    case "UsersLeft": for (const u of m.Users) online.delete(u); forgetAbsent(); renderUsers(); break;
    case "PublicKeys": await Promise.all(Object.entries(m.Keys).map(([u, k]) => setPeerKey(u, k))); break;
    case "PublicKey": await setPeerKey(m.SrcUser, m.key); break;
    case "Broadcast": line(m.history ? "history" : "live", m.SrcUser, m.text); break;
    case "PrivateMessage": {
      const plain = await decryptFrom(m.SrcUser, m.text);
      const peer = peers.get(m.SrcUser);
      if (plain === null) line("undecrypted", "from " + m.SrcUser, "(could not decrypt) " + m.text, "", "unlock");
      else line("private", "from " + m.SrcUser, plain, "decrypted · key " + (peer ? peer.fp : "?"), "lock");
      break;
    }
    case "Error":
      // Before login an error is about the login: shown on its form, never in the chat.
      if (me) line("error", null, "Error (" + m.code + "): " + m.text);
      else $("login-error").textContent = m.text;
      break;
  }
}

$("login").onsubmit = (e) => {
  e.preventDefault();
  $("login-error").textContent = "";
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  if (ws) { ws.onmessage = ws.onclose = null; ws.close(); } // a refused attempt: nothing more from it
  const sock = ws = new WebSocket(`${scheme}://${location.host}/`);
  $("status").textContent = "connecting…";
  sock.onopen = () => { sock.send($("password").value); sock.send($("name").value.trim()); };
  sock.onmessage = (e) => { if (sock === ws) onMessage(e.data); };
  sock.onclose = (e) => {
    if (sock !== ws) return;
    $("status").textContent = "disconnected" + (e.reason ? ": " + e.reason : "");
    if (me) line("notice", null, "Disconnected" + (e.reason ? " (" + e.reason + ")" : "") + ". Reload to join again.");
    else if (!$("login-error").textContent) $("login-error").textContent = "Could not connect.";
  };
};

// The largest message the server takes (it closes the connection past it):
// the page refuses to send more and says so, keeping the text.
const MAX_BYTES = Number(document.querySelector('meta[name="max-message-bytes"]')?.content) || 16384;
function fits(json) {
  const n = enc.encode(json).length;
  if (n <= MAX_BYTES) return true;
  line("error", null, `Too long to send: ${n} bytes, and the room takes at most ${MAX_BYTES} per message. Nothing was sent; shorten it or split it.`);
  return false;
}

$("send").onsubmit = async (e) => {
  e.preventDefault();
  const input = $("text"), text = input.value;
  if (!text || !ws || ws.readyState !== WebSocket.OPEN) return;
  const sent = () => { if (input.value === text) input.value = ""; };
  const to = target;
  if (!to || to === me) {
    const json = JSON.stringify({ msgType: "Broadcast", text });
    if (fits(json)) { sent(); ws.send(json); }
    return;
  }
  try {
    const json = JSON.stringify({ msgType: "PrivateMessage", TgtUser: to, text: await encryptFor(to, text) });
    if (!fits(json)) return;
    sent();
    ws.send(json);
    line("private", "to " + to, text, "encrypted · key " + peers.get(to).fp, "lock");
  } catch (err) { line("error", null, String(err.message || err)); }
};

$("target").onclick = () => selectTarget(null);
$("people").onclick = () => showPeople(!$("chat").classList.contains("people-open"));
$("scrim").onclick = () => showPeople(false);
document.addEventListener("keydown", (e) => { if (e.key === "Escape") showPeople(false); });
