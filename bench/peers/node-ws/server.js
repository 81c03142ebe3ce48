// Benchmark peer: the Ragnarok protocol (login, Broadcast, PrivateMessage,
// OnlineUsers to everyone on join and leave, as the original) on Node's ws.
// Usage: node server.js PORT [PASSWORD] [CERT KEY]
"use strict";
const fs = require("fs");
const { WebSocketServer } = require("ws");
const [port, password = "", cert, key] = process.argv.slice(2);
let server;
if (cert) {
  server = require("https").createServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) });
} else {
  server = require("http").createServer();
}
const wss = new WebSocketServer({ server, perMessageDeflate: false });
const users = new Map(); // name -> ws
const strip = (s) => s.replace(/\r?\n$/, "");
function everyone(json) { for (const ws of users.values()) ws.send(json); }
function list() { return JSON.stringify({ msgType: "OnlineUsers", Users: [...users.keys()] }); }
wss.on("connection", (ws) => {
  let step = 0, name = null;
  ws.on("message", (data, isBinary) => {
    const text = data.toString();
    if (step === 0) {
      if (password && strip(text) !== password) return ws.close(1008);
      step = 1;
    } else if (step === 1) {
      name = strip(text);
      if (!name || users.has(name)) return ws.close(1008);
      users.set(name, ws);
      step = 2;
      ws.send(JSON.stringify({ ServerName: "node-ws" }));
      everyone(list());
    } else {
      let m;
      try { m = JSON.parse(text); } catch { return; }
      if (m.msgType === "Broadcast") everyone(JSON.stringify({ msgType: "Broadcast", SrcUser: name, text: m.text }));
      else if (m.msgType === "PrivateMessage") {
        const to = users.get(m.TgtUser);
        if (to) to.send(JSON.stringify({ msgType: "PrivateMessage", SrcUser: name, text: m.text }));
      }
    }
  });
  ws.on("close", () => { if (name && users.get(name) === ws) { users.delete(name); everyone(list()); } });
});
server.listen(Number(port), "127.0.0.1", () => console.error(`node-ws peer listening on ${cert ? "wss" : "ws"}://127.0.0.1:${port}`));
