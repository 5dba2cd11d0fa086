#!/usr/bin/env bash
# bench/bucket.sh — ftserve serving a bucket of a real 3-node Garage (S3) cluster,
# against ftserve serving a local folder, on loopback, all in one run.
#
#   bench/bucket.sh                   # the full run (about 5 min on 2 cores, after the build)
#   FTB_FT_BIN=DIR bench/bucket.sh    # DIR/ftserve and DIR/ftget, release builds, used
#                                     #   as they are; without it the script builds them
#                                     #   (cargo build --release) into ${CARGO_TARGET_DIR:-target}
#   FTB_RUNS=5                        # timed warm downloads of the 1 GiB object per kind
#                                     #   (bucket, local folder, curl from Garage); default 5
#   FTB_COLD_RUNS=3                   # cold rounds, each on a fresh object cold-N.bin; default 3
#   FTB_CLIENTS=100                   # clients at once in the concurrent case; default 100
#   FTB_CLIENT_RUNS=3                 # rounds of the concurrent case per setup; default 3
#   FTB_BIG_MIB=1024                  # size of the "1 GiB" object in MiB (the 16 MiB one stays)
#   FTB_PORT_BASE=26900               # Garage's ports: N..N+23 (ftserve and HAProxy: free ones)
#   FTB_RESULTS=DIR                   # write RESULTS.md there (default bench/results/bucket)
#   FTB_BIG_MIB=64 FTB_RUNS=1 FTB_COLD_RUNS=1 FTB_CLIENTS=10 \
#     FTB_RESULTS=/tmp/ftbb-smoke bench/bucket.sh   # a smoke test (~1 min); timings mean nothing
#
# Starts a 3-node Garage cluster (scripts/garage-cluster, replication factor 3),
# uploads the objects with curl (SigV4), and times ftget against ftserve
# s3://ft-bucket/bench and ftserve on a local folder holding the same files:
#   warm   1 GiB, digests known (2nd and later downloads)   bucket, local, curl from
#                                                           Garage's S3 port (the ceiling)
#   cold   1 GiB, first download of a fresh object (hashed in the same pass, digests
#          written back to the bucket), then a second instance's first download of
#          it (digests read from the bucket), then warm; local: first download after
#          ftserve starts, then warm
#   c100   FTB_CLIENTS ftget at once, 16 MiB each, warm: one bucket instance, two
#          behind HAProxy (TCP, roundrobin), one behind HAProxy (the proxy's own
#          cost), one local-folder instance
# Every instance uses one state folder (one identity, one --pin). Data, Garage's
# folders and downloads live on a tmpfs, /dev/shm/ftbb, removed at the end with
# the cluster. Results: ${FTB_RESULTS:-bench/results/bucket}/RESULTS.md.
set -euo pipefail

RUNS=${FTB_RUNS:-5}
COLD_RUNS=${FTB_COLD_RUNS:-3}
CLIENTS=${FTB_CLIENTS:-100}
CLIENT_RUNS=${FTB_CLIENT_RUNS:-3}
BIG_MIB=${FTB_BIG_MIB:-1024}
PORT_BASE=${FTB_PORT_BASE:-26900}
C_MIB=16
WARM_PER_COLD=2   # warm downloads timed after each cold one
for v in RUNS COLD_RUNS CLIENTS CLIENT_RUNS BIG_MIB PORT_BASE; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "bench/bucket.sh: FTB_$v must be a positive whole number" >&2; exit 1; }
done
REPO=$(cd "$(dirname "$0")/.." && pwd)
RESULTS=${FTB_RESULTS:-$REPO/bench/results/bucket}
# ft itself: the binaries in FTB_FT_BIN as they are, or a release build.
if [[ -n ${FTB_FT_BIN:-} ]]; then
  FT_BIN=$(cd "$FTB_FT_BIN" && pwd)
else
  echo "bench/bucket.sh: building ft (release)" >&2
  cargo build --release --locked --quiet --manifest-path "$REPO/Cargo.toml" -p ft-server -p ft-client
  FT_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release
fi
FTSERVE=$FT_BIN/ftserve
FTGET=$FT_BIN/ftget
CLUSTER=$REPO/scripts/garage-cluster
GARAGE=$(command -v garage 2>/dev/null || echo "$HOME/.cargo/bin/garage")
export GARAGE
WORK=/dev/shm/ftbb
GDIR=$WORK/garage     # the cluster's nodes
DATA=$WORK/data       # the local folder ftserve serves, and the upload source
DL=$WORK/dl           # downloads
TIMEOUT=600           # bound of any single download, in seconds

for bin in "$FTSERVE" "$FTGET" "$GARAGE" "$CLUSTER"; do
  [[ -x $bin ]] || { echo "bench/bucket.sh: $bin is not an executable" >&2; exit 1; }
done
for cmd in haproxy curl sha256sum timeout python3; do
  command -v "$cmd" >/dev/null || { echo "bench/bucket.sh: $cmd is required" >&2; exit 1; }
done

log() { echo "[$(date +%T)] $*" >&2; }

# Every process started here has a pid file in $WORK/pids; one is signalled
# only while its command line still names $WORK (no pid reuse hits a stranger).
ours() { tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" | grep -qF "$WORK"; }
stop_pid() {  # pidfile: TERM, wait up to 5 s, then KILL
  local f=$1 pid
  [[ -f $f ]] || return 0
  pid=$(<"$f")
  if [[ $pid =~ ^[0-9]+$ ]] && ours "$pid"; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do ours "$pid" || break; sleep 0.1; done
    ours "$pid" && kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}
stop_all() {
  local f
  for f in "$WORK"/pids/*.pid; do [[ -e $f ]] && stop_pid "$f"; done
  [[ -d $GDIR ]] && { "$CLUSTER" stop "$GDIR" >/dev/null 2>&1 || true; }
  return 0
}
cleanup() {
  stop_all
  rm -rf "$WORK"
}

# What an earlier run left (one killed before its trap ran).
if [[ -d $WORK ]]; then
  log "removing what an earlier run left in $WORK"
  stop_all
  rm -rf "$WORK"
fi
trap cleanup EXIT
mkdir -p "$WORK/pids" "$WORK/log" "$WORK/t" "$DATA" "$DL" "$RESULTS"
export XDG_CONFIG_HOME=$WORK/xdg   # ftget's known_servers
mkdir -m 700 "$XDG_CONFIG_HOME" "$WORK/state"

# --- data and the cluster --------------------------------------------------------
log "writing test data to $DATA (${BIG_MIB} MiB and ${C_MIB} MiB)"
head -c $((BIG_MIB << 20)) /dev/urandom >"$DATA/big.bin"
head -c $((C_MIB << 20)) /dev/urandom >"$DATA/c16.bin"
BIG_SHA=$(sha256sum "$DATA/big.bin" | cut -d' ' -f1)
C_SHA=$(sha256sum "$DATA/c16.bin" | cut -d' ' -f1)
BIG_BYTES=$((BIG_MIB << 20))

log "starting Garage (3 nodes, ports $PORT_BASE..$((PORT_BASE + 23)))"
"$CLUSTER" start "$GDIR" --port-base "$PORT_BASE" >"$WORK/log/garage-start.log" 2>&1 ||
  { cat "$WORK/log/garage-start.log" >&2; exit 1; }
set -a
# shellcheck disable=SC1091
. "$GDIR/s3.env"
set +a
S3=${FT_S3_ENDPOINTS%%,*}          # node 1: curl's endpoint
BUCKET_URL=$S3/$FT_S3_BUCKET
# curl's credentials: in a config file, never in argv.
(umask 077; printf 'user = "%s:%s"\n' "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" >"$WORK/curl.cfg")
S3CURL=(curl -sS -K "$WORK/curl.cfg" --aws-sigv4 "aws:amz:$AWS_REGION:s3" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD")

upload() {  # file key
  local code
  code=$("${S3CURL[@]}" --max-time "$TIMEOUT" -o "$WORK/log/put.out" -w '%{http_code}' -T "$1" "$BUCKET_URL/$2")
  [[ $code == 200 ]] || { echo "bench/bucket.sh: PUT $2 got HTTP $code: $(head -c 300 "$WORK/log/put.out")" >&2; exit 1; }
}
digest_records() {  # the number of digest records under bench/.ftserve-digests/ ("?" if unknown)
  local xml
  # The prefix percent-encoded: SigV4 signs the query in its canonical form.
  xml=$("${S3CURL[@]}" -f --max-time 30 "$BUCKET_URL?list-type=2&prefix=bench%2F.ftserve-digests%2F") || { echo "?"; return 0; }
  grep -o '<Key>' <<<"$xml" | wc -l
}
t0=$EPOCHREALTIME
upload "$DATA/big.bin" bench/big.bin
UPLOAD_S=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b - a}')
log "uploaded bench/big.bin in ${UPLOAD_S} s"
upload "$DATA/c16.bin" bench/c16.bin

# --- ftserve and HAProxy ------------------------------------------------------------
declare -A ADDR
FP=""
start_ft() {  # name root [args...]: start an instance on a free port, set ADDR[name]
  local name=$1 root=$2 out=$WORK/log/$1.out fp
  shift 2
  "$FTSERVE" "$root" "$@" --listen 127.0.0.1:0 --state-dir "$WORK/state" \
    >"$out" 2>>"$WORK/log/$name.err" &
  echo $! >"$WORK/pids/$name.pid"
  for _ in $(seq 100); do grep -q 'listening on' "$out" 2>/dev/null && break; sleep 0.1; done
  grep -q 'listening on' "$out" ||
    { echo "bench/bucket.sh: ftserve $name did not start" >&2; tail -n 20 "$WORK/log/$name.err" >&2; exit 1; }
  ADDR[$name]=$(sed -n 's/.*listening on \([0-9.]*:[0-9]*\).*/\1/p' "$out" | head -n1)
  fp=$(sed -n 's|.*fingerprint \(SHA256:[A-Za-z0-9+/=_-]*\).*|\1|p' "$out" | head -n1)
  [[ -n ${ADDR[$name]} && -n $fp ]] || { echo "bench/bucket.sh: no address or fingerprint from ftserve $name" >&2; exit 1; }
  [[ -z $FP || $fp == "$FP" ]] || { echo "bench/bucket.sh: ftserve $name has another identity" >&2; exit 1; }
  FP=$fp
}
start_bucket() { start_ft "$1" "s3://$FT_S3_BUCKET/bench" --s3-endpoint "$FT_S3_ENDPOINTS"; }
stop_ft() { stop_pid "$WORK/pids/$1.pid"; }
wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- timing helpers ---------------------------------------------------------------
FAILS=()
# fetch case addr name: one ftget download into $DL/x/, its seconds appended to
# $WORK/t/case; a failed download is recorded in FAILS, not timed.
fetch() {
  local case=$1 addr=$2 name=$3 t0 t1 rc=0
  rm -rf "$DL/x" && mkdir -p "$DL/x"
  t0=$EPOCHREALTIME
  timeout "$TIMEOUT" "$FTGET" --pin "$FP" -q "$addr" "$name" -o "$DL/x/$name" 2>>"$WORK/log/ftget.err" || rc=$?
  t1=$EPOCHREALTIME
  if ((rc)); then
    FAILS+=("$case: ftget $name from $addr exited $rc")
    log "FAILED: $case ($name from $addr, exit $rc)"
    return 0
  fi
  awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f\n", b - a}' >>"$WORK/t/$case"
}
curl_get() {  # case key: curl from Garage's S3 port into /dev/null
  local case=$1 key=$2 t0 t1 code
  t0=$EPOCHREALTIME
  code=$("${S3CURL[@]}" --max-time "$TIMEOUT" -o /dev/null -w '%{http_code} %{size_download}' "$BUCKET_URL/$key") || code="curl failed"
  t1=$EPOCHREALTIME
  if [[ $code != "200 $BIG_BYTES" ]]; then
    FAILS+=("$case: curl $key: $code")
    log "FAILED: $case (curl $key: $code)"
    return 0
  fi
  awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f\n", b - a}' >>"$WORK/t/$case"
}
check_sha() {  # file sha what
  [[ $(sha256sum "$1" | cut -d' ' -f1) == "$2" ]] || { FAILS+=("$3: wrong sha256"); log "FAILED: $3: wrong sha256"; }
}
last() { tail -n1 "$WORK/t/$1" 2>/dev/null || echo "-"; }

# clients case addr round: CLIENTS ftget at once, each in its own folder; the
# aggregate MiB/s (bytes / first start to last end) appended to $WORK/t/case.
clients() {
  local case=$1 addr=$2 round=$3 dir=$DL/$1 i pids=() ok=0 bad=0
  rm -rf "$dir" && mkdir -p "$dir"
  for ((i = 1; i <= CLIENTS; i++)); do mkdir "$dir/c$i"; done
  for ((i = 1; i <= CLIENTS; i++)); do
    (
      cd "$dir/c$i"
      s=$EPOCHREALTIME rc=0
      timeout "$TIMEOUT" "$FTGET" --pin "$FP" -q "$addr" c16.bin 2>err || rc=$?
      echo "$s $EPOCHREALTIME $rc" >../t$i
    ) &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || true; done
  for ((i = 1; i <= CLIENTS; i++)); do
    if [[ $(cut -d' ' -f3 "$dir/t$i" 2>/dev/null) == 0 && $(stat -c %s "$dir/c$i/c16.bin" 2>/dev/null) == $((C_MIB << 20)) ]]; then
      ok=$((ok + 1))
    else
      bad=$((bad + 1))
      FAILS+=("$case round $round client $i: $(cat "$dir/t$i" 2>/dev/null) $(head -c 200 "$dir/c$i/err" 2>/dev/null)")
    fi
  done
  # Every file's sha256, once per setup (the first round; not timed).
  if ((round == 1)); then
    for ((i = 1; i <= CLIENTS; i++)); do
      [[ -f $dir/c$i/c16.bin ]] && check_sha "$dir/c$i/c16.bin" "$C_SHA" "$case client $i"
    done
    log "  $case: sha256 of the $ok files checked"
  fi
  ((bad)) && log "FAILED: $case round $round: $bad of $CLIENTS clients"
  cat "$dir"/t* | awk -v n="$ok" -v mib=$C_MIB '
    NR == 1 || $1 < s { s = $1 } NR == 1 || $2 > e { e = $2 }
    END { printf "%.1f %.3f\n", n * mib / (e - s), e - s }' >>"$WORK/t/$case.raw"
  tail -n1 "$WORK/t/$case.raw" | cut -d' ' -f1 >>"$WORK/t/$case"
  rm -rf "$dir"
}

# --- 1. one client, one instance, warm -------------------------------------------------
start_bucket bucket
start_ft local "$DATA"
log "ftserve: bucket on ${ADDR[bucket]}, local folder on ${ADDR[local]}, fingerprint $FP"
log "warm-up: first downloads (they hash big.bin)"
fetch warmup-bucket "${ADDR[bucket]}" big.bin
check_sha "$DL/x/big.bin" "$BIG_SHA" "bucket big.bin"
fetch warmup-local "${ADDR[local]}" big.bin
check_sha "$DL/x/big.bin" "$BIG_SHA" "local big.bin"
rm -rf "$DL/x"
log "case warm: $RUNS rounds of bucket / local / curl"
for ((r = 1; r <= RUNS; r++)); do
  fetch warm-bucket "${ADDR[bucket]}" big.bin
  fetch warm-local "${ADDR[local]}" big.bin
  rm -rf "$DL/x"
  curl_get warm-curl bench/big.bin
  log "  round $r: bucket $(last warm-bucket) s, local $(last warm-local) s, curl $(last warm-curl) s"
done
rm -rf "$DL/x"

# --- 2. cold against warm -----------------------------------------------------------------
log "case cold: $COLD_RUNS rounds"
for ((r = 1; r <= COLD_RUNS; r++)); do
  upload "$DATA/big.bin" "bench/cold-$r.bin"
  before=$(digest_records)
  fetch cold-bucket "${ADDR[bucket]}" "cold-$r.bin"
  # ftserve writes the record once the object has been sent, maybe just after
  # ftget is done: wait for it (bounded), so the new instance can find it.
  t0=$EPOCHREALTIME
  for _ in $(seq 100); do
    after=$(digest_records)
    [[ $before != "?" && $after != "?" ]] && ((after > before)) && break
    sleep 0.1
  done
  rec_wait=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.2f", b - a}')
  if [[ $before == "?" || $after == "?" ]] || ((after <= before)); then
    FAILS+=("cold round $r: no digest record written within 10 s ($before -> $after)")
    log "FAILED: no digest record written"
  else
    echo "$rec_wait" >>"$WORK/t/record-wait"
  fi
  ((r == 1)) && check_sha "$DL/x/cold-$r.bin" "$BIG_SHA" "bucket cold-$r.bin"
  start_bucket second
  fetch cold-new-instance "${ADDR[second]}" "cold-$r.bin"
  stop_ft second
  for ((w = 0; w < WARM_PER_COLD; w++)); do fetch cold-warm-bucket "${ADDR[bucket]}" "cold-$r.bin"; done
  log "  bucket round $r: cold $(last cold-bucket) s, new instance $(last cold-new-instance) s, warm $(last cold-warm-bucket) s; digest records $before -> $after (seen ${rec_wait} s after ftget ended)"
  stop_ft local
  start_ft local "$DATA"
  fetch cold-local "${ADDR[local]}" big.bin
  for ((w = 0; w < WARM_PER_COLD; w++)); do fetch cold-warm-local "${ADDR[local]}" big.bin; done
  log "  local round $r: cold $(last cold-local) s, warm $(last cold-warm-local) s"
done
rm -rf "$DL/x"

# --- 3. many clients at once --------------------------------------------------------------
# Where each ftserve log stands: lines before this are parts 1-2, after it part 3.
declare -A LOG_AT
for n in bucket second local; do LOG_AT[$n]=$(wc -l <"$WORK/log/$n.err" 2>/dev/null || echo 0); done
start_bucket second
P_HA=$(free_port)
P_HA1=$(free_port)   # the first instance alone behind HAProxy: the proxy's own cost
[[ $P_HA1 != "$P_HA" ]] || P_HA1=$(free_port)
cat >"$WORK/haproxy.cfg" <<EOF
global
  maxconn 4000
defaults
  mode tcp
  timeout connect 1s
  timeout client 60s
  timeout server 60s
frontend ft
  bind 127.0.0.1:$P_HA
  default_backend s
backend s
  balance roundrobin
  server a ${ADDR[bucket]}
  server b ${ADDR[second]}
frontend ft1
  bind 127.0.0.1:$P_HA1
  default_backend s1
backend s1
  server a ${ADDR[bucket]}
EOF
haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/log/haproxy.log" 2>&1 &
echo $! >"$WORK/pids/haproxy.pid"
{ wait_port "$P_HA" && wait_port "$P_HA1"; } || { echo "bench/bucket.sh: HAProxy did not start" >&2; cat "$WORK/log/haproxy.log" >&2; exit 1; }
HA=127.0.0.1:$P_HA
HA1=127.0.0.1:$P_HA1
# Warm: each instance has served c16.bin once (the second reads the digests back).
for a in "${ADDR[bucket]}" "${ADDR[second]}" "${ADDR[local]}"; do fetch warmup-c16 "$a" c16.bin; done
rm -rf "$DL/x"
log "case c$CLIENTS: $CLIENT_RUNS rounds of one instance / two behind HAProxy / one behind HAProxy / local"
for ((r = 1; r <= CLIENT_RUNS; r++)); do
  clients c-one "${ADDR[bucket]}" "$r"
  clients c-two "$HA" "$r"
  clients c-ha1 "$HA1" "$r"
  clients c-local "${ADDR[local]}" "$r"
  log "  round $r: one $(last c-one), two behind HAProxy $(last c-two), one behind HAProxy $(last c-ha1), local $(last c-local) MiB/s"
done

# --- results ---------------------------------------------------------------------------------
stats() {  # case -> "median min max n" (or "- - - 0")
  [[ -s $WORK/t/$1 ]] || { echo "- - - 0"; return; }
  sort -g "$WORK/t/$1" | awk '{ v[NR] = $1 } END {
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%.2f %.2f %.2f %d\n", m, v[1], v[NR], NR }'
}
med() { stats "$1" | cut -d' ' -f1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'; }
mibs() { awk -v s="$1" -v m="$2" 'BEGIN { if (s == "-" || s == 0) print "-"; else printf "%.0f", m / s }'; }
row_t() {  # label case: time row (median, range, MiB/s at the median, runs)
  local m lo hi n
  read -r m lo hi n <<<"$(stats "$2")"
  echo "| $1 | $m | $lo–$hi | $(mibs "$m" "$BIG_MIB") | $n |"
}
row_c() {
  local m lo hi n
  read -r m lo hi n <<<"$(stats "$2")"
  echo "| $1 | $m | $lo–$hi | $n |"
}
GARAGE_V=$("$GARAGE" --version 2>/dev/null | head -n1)
HAPROXY_V=$(haproxy -v 2>/dev/null | head -n1)
COMMIT=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
SIZE_L=$([[ $BIG_MIB == 1024 ]] && echo "1 GiB" || echo "$BIG_MIB MiB")
# What the ftserve logs say besides the ordinary " ok " lines, by instance and
# part, counted by kind (time, client, offsets and byte counts left out).
# Routine lines (start, the congestion control, a stop asked for) left out.
log_kinds() {  # instance part(12|3)
  local f=$WORK/log/$1.err at=${LOG_AT[$1]:-0}
  [[ -f $f ]] || return 0
  if [[ $2 == 12 ]]; then head -n "$at" "$f"; else tail -n +"$((at + 1))" "$f"; fi |
    grep -v ' ok \|^$\|sending with congestion control\|shutdown requested\|ft_server::listener: stopped' |
    cut -d' ' -f2- | sed 's/ client=[^ ]*//; s/ offset=[0-9]*//; s/ bytes=[0-9]*//' |
    sort | uniq -c | sort -rn | cut -c1-240 || true
}
LOGNOTES=$(for n in bucket second local; do for part in 12 3; do
  k=$(log_kinds "$n" "$part")
  [[ -z $k ]] || printf '%s, part%s:\n%s\n' "$n" "$([[ $part == 12 ]] && echo "s 1-2" || echo " 3")" "$k"
done; done)
FTGET_ERR=$(grep -v '^$' "$WORK/log/ftget.err" 2>/dev/null || true)
{
  echo "# ftserve on a Garage bucket against ftserve on a local folder"
  echo
  echo "Made by \`bench/bucket.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'), commit \`$COMMIT\`."
  echo
  echo "- machine: $(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n1)), kernel $(uname -r), $(free -g | awk '/^Mem:/ {print $2}') GiB RAM"
  echo "- store: \`$GARAGE_V\`, 3 nodes on 127.0.0.1, replication factor 3, data and metadata on tmpfs"
  echo "- proxy: \`$HAPROXY_V\`, TCP mode, roundrobin"
  echo "- ft: \`$FTSERVE\`, \`$FTGET\` (release builds); every instance with one state folder (one identity)"
  echo "- object: $SIZE_L of random bytes (uploaded with curl in ${UPLOAD_S} s); concurrent case: $C_MIB MiB, $CLIENTS clients"
  echo
  echo "## What limits each case"
  echo
  echo "Everything runs on one machine of $(nproc) cores: Garage's three nodes, the"
  echo "ftserve instance(s), every ftget (which also hashes what it receives) and"
  echo "HAProxy share them, so these figures measure CPU on loopback, not a network."
  echo "All bytes live on tmpfs (Garage's data, the local folder, the downloads), so"
  echo "no disk is involved. A bucket download goes Garage -> ftserve (plain HTTP,"
  echo "SigV4) -> ftget (TLS 1.3): every byte crosses loopback twice and Garage's"
  echo "node reads its blocks and checks them, on the same cores ftserve and ftget"
  echo "use. The local folder has no second hop. curl from Garage's S3 port into"
  echo "/dev/null (no TLS, no hashing, no write) is the store's own ceiling here."
  echo "With $CLIENTS clients the cores are the limit; a second ftserve behind"
  echo "HAProxy adds a process and a proxy hop (HAProxy copies every byte once more"
  echo "through user space), not cores: the row with one instance behind HAProxy"
  echo "separates the proxy's cost from the second instance's."
  echo
  echo "## 1. One client, one instance, warm ($SIZE_L, seconds)"
  echo
  echo "Rounds interleaved bucket / local / curl; medians of $RUNS."
  echo
  echo "| download | median s | min–max s | MiB/s (median) | runs |"
  echo "|---|---:|---:|---:|---:|"
  row_t "ftget ← ftserve s3://bucket" warm-bucket
  row_t "ftget ← ftserve local folder" warm-local
  row_t "curl ← Garage S3 (plain HTTP, to /dev/null)" warm-curl
  echo
  echo "- bucket / local: **$(ratio "$(med warm-bucket)" "$(med warm-local)")×** the time"
  echo "- bucket / curl from Garage: **$(ratio "$(med warm-bucket)" "$(med warm-curl)")×** the time"
  echo
  echo "## 2. Cold against warm ($SIZE_L, seconds)"
  echo
  echo "Bucket: each of $COLD_RUNS rounds uploads the same data under a fresh key"
  echo "\`cold-N.bin\`; cold = the first download (hashed while sent, digests written"
  echo "to the bucket); new instance = the first download through a second ftserve"
  echo "started after it (it finds the digests in the bucket); warm = $WARM_PER_COLD later"
  echo "downloads per round through the first instance. Local: cold = the first"
  echo "download after ftserve starts, warm = $WARM_PER_COLD later ones."
  echo
  echo "| download | median s | min–max s | MiB/s (median) | runs |"
  echo "|---|---:|---:|---:|---:|"
  row_t "bucket, cold (fresh object)" cold-bucket
  row_t "bucket, cold on a new instance" cold-new-instance
  row_t "bucket, warm" cold-warm-bucket
  row_t "local, cold (fresh ftserve)" cold-local
  row_t "local, warm" cold-warm-local
  echo
  echo "- bucket cold / bucket warm: **$(ratio "$(med cold-bucket)" "$(med cold-warm-bucket)")×**; new instance / warm: **$(ratio "$(med cold-new-instance)" "$(med cold-warm-bucket)")×**"
  echo "- the digest record was listed in the bucket $(stats record-wait | awk '{print $1 " s (median; " $2 "–" $3 " s)"}') after the cold ftget ended; the new instance started only then"
  echo "- local cold / local warm: **$(ratio "$(med cold-local)" "$(med cold-warm-local)")×**"
  echo "- bucket / local: cold **$(ratio "$(med cold-bucket)" "$(med cold-local)")×**, warm **$(ratio "$(med cold-warm-bucket)" "$(med cold-warm-local)")×**"
  echo
  echo "## 3. $CLIENTS clients at once ($C_MIB MiB each, warm; aggregate MiB/s)"
  echo
  echo "Aggregate = $CLIENTS × $C_MIB MiB / (first client's start to last client's end);"
  echo "each client in its own folder; every file's sha256 checked once per setup."
  echo "Rounds interleaved; medians of $CLIENT_RUNS."
  echo
  echo "| setup | median MiB/s | min–max MiB/s | rounds |"
  echo "|---|---:|---:|---:|"
  row_c "one ftserve on the bucket" c-one
  row_c "two ftserve on the bucket behind HAProxy" c-two
  row_c "one ftserve on the bucket behind HAProxy (reference: the proxy's cost)" c-ha1
  row_c "one ftserve on the local folder" c-local
  echo
  echo "- two instances / one instance: **$(ratio "$(med c-two)" "$(med c-one)")×**"
  echo "- one instance behind HAProxy / one direct: **$(ratio "$(med c-ha1)" "$(med c-one)")×** (the proxy's copy of every byte, on the same cores)"
  echo "- two behind HAProxy / one behind HAProxy: **$(ratio "$(med c-two)" "$(med c-ha1)")×**"
  echo "- one bucket instance / local: **$(ratio "$(med c-one)" "$(med c-local)")×**"
  echo
  echo "## Checks"
  echo
  if ((${#FAILS[@]})); then
    echo "Failures (not in the timings):"
    echo
    for f in "${FAILS[@]}"; do echo "- $f"; done
  else
    echo "Every download exited 0; every sha256 checked matched; every cold download wrote a digest record."
  fi
  echo
  echo "ftserve's log lines other than \` ok \` ones and routine start/stop lines,"
  echo "counted by kind, per instance (bucket: the first instance; second: the"
  echo "second, in part 2 one per cold round, in part 3 behind HAProxy; local)."
  echo "A \"refused: not a TLS client\" comes from the script's own wait for"
  echo "HAProxy's ports (a TCP connect that HAProxy passes on)."
  echo
  echo '```'
  if [[ -n $LOGNOTES ]]; then echo "$LOGNOTES"; else echo "(none)"; fi
  echo '```'
  if [[ -n $FTGET_ERR ]]; then
    echo
    echo "ftget's stderr (single downloads):"
    echo
    echo '```'
    head -n 10 <<<"$FTGET_ERR" | cut -c1-300
    echo '```'
  fi
  echo
  echo "<details><summary>Every timing</summary>"
  echo
  echo '```'
  for f in warm-bucket warm-local warm-curl cold-bucket cold-new-instance cold-warm-bucket cold-local cold-warm-local; do
    [[ -s $WORK/t/$f ]] && echo "$f (s): $(tr '\n' ' ' <"$WORK/t/$f")"
  done
  for f in c-one c-two c-ha1 c-local; do
    [[ -s $WORK/t/$f.raw ]] && echo "$f (MiB/s wall_s): $(tr '\n' ';' <"$WORK/t/$f.raw")"
  done
  echo '```'
  echo
  echo "</details>"
} >"$RESULTS/RESULTS.md"
log "results in $RESULTS/RESULTS.md"
((${#FAILS[@]} == 0)) || log "${#FAILS[@]} failure(s): see RESULTS.md"
