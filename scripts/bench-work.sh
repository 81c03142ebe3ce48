# Sourced by scripts/bench-setup.sh and scripts/bench-compare.sh once `port`
# is set: a work folder (removed on exit, with the server left running), a
# certificate, Ragnarok's bench configs (`$work/ragnarok-{false,true}.json`:
# every per-address limit and rate off, for thousands of users from one
# address, and the per-user rates of messages and bytes off), `listening NAME` (waits until the server started as
# `$server_pid` listens on `$port`) and `stop`.
work=$(mktemp -d)
server_pid=
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$work/key.pem" \
    -out "$work/cert.pem" -days 2 -subj /CN=localhost -addext subjectAltName=DNS:localhost \
    -addext basicConstraints=critical,CA:FALSE 2>/dev/null
for tls in false true; do
    cat > "$work/ragnarok-$tls.json" <<JSON
{"SSL": $tls, "SSL_Cert": "cert.pem", "SSL_Key": "key.pem", "server_port": $port,
 "rate_limit_per_sec": 0, "max_connections": 20000,
 "rate_limit_bytes_per_sec": 0,
 "max_connections_per_ip": 0, "max_handshakes_per_ip": 0,
 "connections_per_minute_per_ip": 0, "logins_per_minute_per_ip": 0, "room_logins_per_sec": 0, "log_level": "warn"}
JSON
done

listening() {  # listening NAME: after starting a server as $server_pid
    for _ in $(seq 100); do
        (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && return 0
        sleep 0.05
    done
    echo "$1 did not start" >&2; cat "$work/server.log" >&2; exit 1
}
stop() { kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null || true; server_pid=; sleep 0.3; }
