#!/usr/bin/env bash
# The cost of TLS on the RESP port, side by side in one run: `strata serve` and
# `redis-server` (Debian's is built with TLS), each once in plaintext and once with TLS on the
# same certificate (made here with the openssl command-line tool; Strata itself links no
# OpenSSL), then the same redis-benchmark against all four, alternating. Prints ops/s and p50
# per case, the TLS/plaintext ratio of each server, and Strata/Redis under TLS.
#
#   scripts/bench-tls.sh                      # GET and SET, -c 50, -P 1 and 16, -d 100
#   N=200000 ROUNDS=3 scripts/bench-tls.sh
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-100000}
CLIENTS=${CLIENTS:-50}
ROUNDS=${ROUNDS:-2}
TESTS=${TESTS:-get,set}
BASE=${BASE:-16420}

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-benchmark >/dev/null || need+=(redis-tools)
command -v openssl >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo build --release --quiet -p strata-server
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# A CA and a server certificate for localhost / 127.0.0.1 (P-256).
(
  cd "$work"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -keyout ca.key -out ca.pem -subj "/CN=bench CA" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout srv.key -out srv.csr -subj "/CN=localhost" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >ext.cnf
  openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
    -out srv.pem -extfile ext.cnf 2>/dev/null
)

sp=$BASE; stp=$((BASE + 1)); rp=$((BASE + 2)); rtp=$((BASE + 3))
RUST_LOG=warn target/release/strata serve --data-dir "$work/plain-data" \
  --resp-listen "127.0.0.1:$sp" --admin-listen "127.0.0.1:$((BASE + 10))" >"$work/s1.log" 2>&1 &
pids+=($!)
cat >"$work/tls.toml" <<EOF
[server.tls]
cert_file = "$work/srv.pem"
key_file = "$work/srv.key"
admin = false
EOF
RUST_LOG=warn target/release/strata serve --config "$work/tls.toml" --data-dir "$work/tls-data" \
  --resp-listen "127.0.0.1:$stp" --admin-listen "127.0.0.1:$((BASE + 11))" >"$work/s2.log" 2>&1 &
pids+=($!)
redis-server --port "$rp" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
  >"$work/r1.log" 2>&1 &
pids+=($!)
redis-server --port 0 --tls-port "$rtp" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$work" --tls-cert-file "$work/srv.pem" --tls-key-file "$work/srv.key" \
  --tls-ca-cert-file "$work/ca.pem" --tls-auth-clients no >"$work/r2.log" 2>&1 &
pids+=($!)

tls_args=(--tls --cacert "$work/ca.pem")
cli() { # port tls?
  if [ "$2" = 1 ]; then redis-cli "${tls_args[@]}" -p "$1" "${@:3}"; else redis-cli -p "$1" "${@:3}"; fi
}
for spec in "$sp 0" "$stp 1" "$rp 0" "$rtp 1"; do
  set -- $spec
  for _ in $(seq 100); do cli "$1" "$2" ping >/dev/null 2>&1 && break; sleep 0.1; done
  cli "$1" "$2" ping >/dev/null || { echo "server on $1 did not start" >&2; cat "$work"/*.log >&2; exit 1; }
done

echo "redis-server $(redis-server --version | grep -o 'v=[0-9.]*' | cut -d= -f2), $(nproc) cores, -c $CLIENTS, -n $N, best of $ROUNDS"
results="$work/results.csv"
for round in $(seq "$ROUNDS"); do
  for pipeline in 1 16; do
    n=$N; [ "$pipeline" -gt 1 ] && n=$((N * 5))
    for spec in "strata plain $sp 0" "strata tls $stp 1" "redis plain $rp 0" "redis tls $rtp 1"; do
      set -- $spec
      extra=(); [ "$4" = 1 ] && extra=("${tls_args[@]}")
      redis-benchmark "${extra[@]}" -p "$3" -c "$CLIENTS" -n "$n" -P "$pipeline" -d 100 \
        -r 100000 -t "$TESTS" --csv 2>/dev/null | sed "s/^/$1,$2,$pipeline,/" >>"$results"
    done
  done
done

python3 - "$results" <<'EOF'
import csv, sys
best = {}
for row in csv.reader(open(sys.argv[1])):
    server, mode, pipeline, test = row[0], row[1], int(row[2]), row[3]
    if test == "test":
        continue
    rps, p50 = float(row[4]), float(row[7])
    key = (test, pipeline, server, mode)
    if key not in best or rps > best[key][0]:
        best[key] = (rps, p50)
print(f"{'test':<5} {'-P':>3} {'strata plain':>14} {'strata tls':>12} {'tls/plain':>9} {'redis plain':>12} {'redis tls':>11} {'tls/plain':>9} {'strata/redis (tls)':>19}")
for test in sorted({k[0] for k in best}):
    for p in (1, 16):
        g = lambda s, m: best.get((test, p, s, m), (0.0, 0.0))
        sp, st, rp, rt = g("strata", "plain"), g("strata", "tls"), g("redis", "plain"), g("redis", "tls")
        r = lambda a, b: a / b if b else 0.0
        print(f"{test:<5} {p:>3} {sp[0]:>14,.0f} {st[0]:>12,.0f} {r(st[0], sp[0]):>9.2f} {rp[0]:>12,.0f} {rt[0]:>11,.0f} {r(rt[0], rp[0]):>9.2f} {r(st[0], rt[0]):>19.2f}")
        print(f"{'':<5} {'p50':>3} {sp[1]:>11.3f} ms {st[1]:>9.3f} ms {'':>9} {rp[1]:>9.3f} ms {rt[1]:>8.3f} ms")
EOF
