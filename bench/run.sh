#!/usr/bin/env bash
# bench/run.sh — ft against its peers on loopback, all in one run.
#
#   bench/run.sh                      # as root: installs what is missing with apt-get
#   FTB_RUNS=7 bench/run.sh           # timed runs per command (default 5; slow peers 3;
#                                     #   the 64 MiB and tree cases 3 x FTB_RUNS)
#   FTB_FT_PLAIN_BIN=DIR bench/run.sh # also times a plaintext (protocol v1) build:
#                                     #   DIR/ftserve and DIR/ftget, on another port
#
# Starts ftserve, nginx (sendfile; and HTTPS, TLS 1.3 only, with a throwaway
# self-signed certificate), an rsync daemon, sshd and a raw socat stream on
# 127.0.0.1, each with a throwaway config, and times with hyperfine:
#   big    1 GiB, warm server (digest cached)     curl, curl https, curl(+https) + sha256sum,
#                                                 rsync, rsync over ssh, scp, aria2c -x4, nc, ftget
#   cold   1 GiB, first download after ftserve starts             ftget (vs curl from "big")
#   mid    64 MiB                                                 curl, curl https, rsync, ftget
#   c100   100 concurrent downloads of a 16 MiB file              curl, ftget
#   tree   5,000 files of 4 KiB in 50 folders     rsync -r, rsync -r over ssh, scp -r,
#                                                 curl https (URL list; 1 and 8 at once), ftget -r
# With FTB_FT_PLAIN_BIN, "ftget (plaintext v1)" rows in big, mid and tree give
# the cost of encryption in the same run. An ftserve that prints
# "fingerprint SHA256:..." before "listening on" is pinned with ftget --pin;
# ftserve keeps its key in $WORK/ft-state (FTSERVE_STATE_DIR), ftget its
# known servers under $WORK/xdg (XDG_CONFIG_HOME).
# plus peak RSS of each client (GNU time) and of ftserve, the CPU each run of
# ftget and curl costs on both sides (core-seconds), and the limits: iperf3 on
# loopback and single-core SHA-256 (openssl speed).
# Data and outputs live on a tmpfs (/dev/shm). A peer that cannot run is
# skipped with a message. Results: bench/results/RESULTS.md and chart.svg.
set -euo pipefail

RUNS=${FTB_RUNS:-5}
RUNS_SLOW=${FTB_RUNS_SLOW:-3}
# Cases under a tenth of a second get three times the runs: they are cheap,
# and the noise of one run is a larger part of them.
RUNS_FAST=$((RUNS * 3))
REPO=$(cd "$(dirname "$0")/.." && pwd)
RESULTS=$REPO/bench/results
WORK=$(mktemp -d /dev/shm/ftbench.XXXXXX)
DATA=$WORK/data
OUT=$WORK/out
PIDS=()
SKIPPED=()
mkdir -p "$DATA" "$OUT" "$WORK/json" "$RESULTS"
# nginx workers run as an unprivileged user: they must be able to read the data.
chmod 755 "$WORK" "$DATA"

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  [[ -f $WORK/ft.pid ]] && kill "$(cat "$WORK/ft.pid")" 2>/dev/null || true
  [[ -f $WORK/nginx.pid ]] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  sleep 0.2
  rm -rf "$WORK"
}
trap cleanup EXIT

log() { echo "[$(date +%T)] $*" >&2; }
skip() { SKIPPED+=("$1: $2"); log "skipping $1: $2"; }
have() { command -v "$1" >/dev/null 2>&1; }

# --- tools ---------------------------------------------------------------------
if [[ $(id -u) == 0 ]] && have apt-get; then
  missing=()
  for pair in hyperfine:hyperfine nginx:nginx-light rsync:rsync sshd:openssh-server \
              scp:openssh-client aria2c:aria2 nc:netcat-openbsd socat:socat iperf3:iperf3 \
              curl:curl openssl:openssl /usr/bin/time:time python3:python3; do
    cmd=${pair%%:*}; pkg=${pair#*:}
    [[ $cmd == sshd ]] && cmd=/usr/sbin/sshd
    have "$cmd" || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi
have hyperfine || { echo "bench/run.sh: hyperfine is required" >&2; exit 1; }

# The plaintext (protocol v1) build, when given: the cost of encryption, same run.
FT_PLAIN=""
if [[ -n ${FTB_FT_PLAIN_BIN:-} ]]; then
  if [[ -x $FTB_FT_PLAIN_BIN/ftserve && -x $FTB_FT_PLAIN_BIN/ftget ]]; then
    FT_PLAIN=$(cd "$FTB_FT_PLAIN_BIN" && pwd)
  else
    echo "bench/run.sh: FTB_FT_PLAIN_BIN=$FTB_FT_PLAIN_BIN has no executable ftserve and ftget" >&2
    exit 1
  fi
fi
log "building ft (release)"
cargo build --release --locked --quiet --manifest-path "$REPO/Cargo.toml" -p ft-server -p ft-client
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
FTSERVE=$TARGET/release/ftserve
FTGET=$TARGET/release/ftget
# ftget's trust store (known_servers) and ftserve's key live in this run's folder.
export XDG_CONFIG_HOME=$WORK/xdg
mkdir -p -m 700 "$XDG_CONFIG_HOME" "$WORK/ft-state" "$WORK/ft-plain-state"

# --- data ----------------------------------------------------------------------
log "writing test data to $DATA"
head -c $((1 << 30)) /dev/urandom >"$DATA/big.bin"
head -c $((64 << 20)) /dev/urandom >"$DATA/mid.bin"
head -c $((16 << 20)) /dev/urandom >"$DATA/c16.bin"
python3 - "$DATA/tree" <<'EOF'
import os, sys
for d in range(50):
    os.makedirs(f"{sys.argv[1]}/d{d:02}", exist_ok=True)
    for f in range(100):
        with open(f"{sys.argv[1]}/d{d:02}/f{f:03}.bin", "wb") as out:
            out.write(os.urandom(4096))
EOF
BIG_SHA=$(sha256sum "$DATA/big.bin" | cut -d' ' -f1)

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 200); do
    (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}

# --- servers -------------------------------------------------------------------
P_FT=$(port)
cat >"$WORK/restart-ft.sh" <<EOF
#!/usr/bin/env bash
# Stops ftserve if running and starts a fresh one (a cold digest cache).
[[ -f $WORK/ft.pid ]] && kill \$(cat $WORK/ft.pid) 2>/dev/null && sleep 0.1
FTSERVE_STATE_DIR=$WORK/ft-state $FTSERVE --listen 127.0.0.1:$P_FT $DATA >$WORK/ft.out 2>$WORK/ft.err &
echo \$! >$WORK/ft.pid
for _ in \$(seq 200); do grep -q "listening on" $WORK/ft.out 2>/dev/null && exit 0; sleep 0.02; done
exit 1
EOF
chmod +x "$WORK/restart-ft.sh"
"$WORK/restart-ft.sh" || { echo "bench/run.sh: ftserve did not start" >&2; exit 1; }
# A TLS ftserve prints "fingerprint SHA256:..." before "listening on": ftget pins
# it. Without that line (a plaintext build) ftget runs as it is. FTG is ftget as
# every command below runs it.
FT_FP=$(cat "$WORK/ft.out" "$WORK/ft.err" | sed -n 's|.*fingerprint \(SHA256:[A-Za-z0-9+/=_-]*\).*|\1|p' | head -n1)
FTG=$FTGET${FT_FP:+ --pin $FT_FP}
[[ -n $FT_FP ]] && log "ftserve's fingerprint: $FT_FP (ftget --pin)"

# The plaintext (v1) ftserve, for the cost of encryption.
if [[ -n $FT_PLAIN ]]; then
  P_FTP=$(port)
  FTSERVE_STATE_DIR=$WORK/ft-plain-state "$FT_PLAIN/ftserve" --listen "127.0.0.1:$P_FTP" "$DATA" >"$WORK/ft-plain.out" 2>/dev/null &
  echo $! >"$WORK/ft-plain.pid"
  PIDS+=($!)
  for _ in $(seq 200); do grep -q "listening on" "$WORK/ft-plain.out" 2>/dev/null && break; sleep 0.02; done
  grep -q "listening on" "$WORK/ft-plain.out" || { echo "bench/run.sh: $FT_PLAIN/ftserve did not start" >&2; exit 1; }
  FTGP="$FT_PLAIN/ftget"
fi

if have rsync; then
  P_RSYNC=$(port)
  printf 'use chroot = no\npid file = %s/rsyncd.pid\n[data]\n  path = %s\n  read only = yes\n' \
    "$WORK" "$DATA" >"$WORK/rsyncd.conf"
  rsync --daemon --no-detach --address=127.0.0.1 --port="$P_RSYNC" --config="$WORK/rsyncd.conf" &
  PIDS+=($!)
  wait_port "$P_RSYNC" || skip rsync "daemon did not start"
else
  skip rsync "not installed"
fi

if have nginx; then
  P_HTTP=$(port)
  mkdir -p "$WORK/nginx"
  # HTTPS on another port: TLS 1.3 only, a throwaway self-signed certificate.
  HTTPS_SERVER=""
  if have openssl && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
       -days 2 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
       -keyout "$WORK/nginx/key.pem" -out "$WORK/nginx/cert.pem" 2>/dev/null; then
    P_HTTPS=$(port)
    HTTPS_SERVER="server { listen 127.0.0.1:$P_HTTPS ssl; root $DATA;
    ssl_certificate $WORK/nginx/cert.pem; ssl_certificate_key $WORK/nginx/key.pem;
    ssl_protocols TLSv1.3; }"
  else
    skip https "openssl could not make a certificate"
  fi
  cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes auto;
pid $WORK/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off; sendfile on; tcp_nopush on; tcp_nodelay on;
  default_type application/octet-stream;
  client_body_temp_path $WORK/nginx/cb; proxy_temp_path $WORK/nginx/px;
  fastcgi_temp_path $WORK/nginx/fc; uwsgi_temp_path $WORK/nginx/uw; scgi_temp_path $WORK/nginx/sc;
  server { listen 127.0.0.1:$P_HTTP; root $DATA; }
  $HTTPS_SERVER
}
EOF
  nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' &
  PIDS+=($!)
  if ! wait_port "$P_HTTP"; then
    skip nginx "did not start"
    skip https "nginx did not start"
  elif [[ -n $HTTPS_SERVER ]] && ! wait_port "$P_HTTPS"; then
    skip https "nginx did not listen on the HTTPS port"
  fi
else
  skip nginx "not installed"
  skip https "nginx not installed"
fi

SSH_OPTS=""
if [[ -x /usr/sbin/sshd ]] && have scp && [[ $(id -u) == 0 ]]; then
  P_SSH=$(port)
  mkdir -p "$WORK/ssh" && chmod 700 "$WORK/ssh"
  ssh-keygen -q -t ed25519 -N '' -f "$WORK/ssh/host_key"
  ssh-keygen -q -t ed25519 -N '' -f "$WORK/ssh/id_ed25519"
  echo "from=\"127.0.0.1\",restrict $(cat "$WORK/ssh/id_ed25519.pub")" >"$WORK/ssh/authorized_keys"
  echo "[127.0.0.1]:$P_SSH $(cut -d' ' -f1,2 "$WORK/ssh/host_key.pub")" >"$WORK/ssh/known_hosts"
  cat >"$WORK/ssh/sshd_config" <<EOF
ListenAddress 127.0.0.1:$P_SSH
HostKey $WORK/ssh/host_key
PidFile $WORK/ssh/sshd.pid
AuthorizedKeysFile $WORK/ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
LogLevel ERROR
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
  mkdir -p /run/sshd
  /usr/sbin/sshd -D -f "$WORK/ssh/sshd_config" &
  PIDS+=($!)
  SSH_BASE="-F /dev/null -i $WORK/ssh/id_ed25519 -o IdentitiesOnly=yes -o BatchMode=yes"
  SSH_BASE+=" -o UserKnownHostsFile=$WORK/ssh/known_hosts -o StrictHostKeyChecking=yes"
  SSH_BASE+=" -o LogLevel=ERROR -o Compression=no -c aes128-gcm@openssh.com"
  SSH_OPTS="$SSH_BASE -P $P_SSH"  # scp's
  # rsync over ssh: the same ssh, as rsync -e runs it.
  RSH="ssh $SSH_BASE -p $P_SSH"
  wait_port "$P_SSH" || skip scp "sshd did not start"
else
  skip scp "needs root and openssh-server"
fi

if have socat && have nc; then
  P_RAW=$(port)
  socat "TCP-LISTEN:$P_RAW,bind=127.0.0.1,reuseaddr,fork" "OPEN:$DATA/big.bin,rdonly" &
  PIDS+=($!)
  wait_port "$P_RAW" || skip nc "socat did not start"
else
  skip nc "socat or nc missing"
fi

URL=http://127.0.0.1:${P_HTTP:-0}
HTTPS=https://127.0.0.1:${P_HTTPS:-0}
# curl over HTTPS: TLS 1.3 only, the self-signed certificate not checked (-k).
CURL_TLS="curl -sSfk --tlsv1.3"

# --- measurements ----------------------------------------------------------------
# case name runs command: one hyperfine run per case, results in json/CASE.json.
bench() {  # case runs name command [name command ...]
  local case=$1 runs=$2; shift 2
  local args=()
  while (($#)); do
    args+=(--command-name "$1" --prepare "rm -rf $OUT/x && mkdir -p $OUT/x" "$2")
    shift 2
  done
  log "case $case: $(( ${#args[@]} / 5 )) commands x $runs runs"
  hyperfine --style none --warmup 1 --runs "$runs" --export-json "$WORK/json/$case.json" "${args[@]}" >/dev/null
}
up() { [[ " ${SKIPPED[*]} " != *" $1:"* ]]; }

if up https; then
  # The tree as a URL list for one curl: one connection in turn, or 8 at once.
  (cd "$DATA" && find tree -type f | sort) |
    awk -v u="$HTTPS/" -v o="$OUT/x/" '{print "url = \"" u $0 "\""; print "output = \"" o $0 "\""}' \
    >"$WORK/curl-tree.list"
  TLS_SEEN=$($CURL_TLS -v -o /dev/null "$HTTPS/c16.bin" 2>&1 | sed -n 's/.*SSL connection using //p' | head -n1)
fi

big=()
up nginx && big+=("curl" "curl -s -o $OUT/x/big.bin $URL/big.bin")
up https && big+=("curl https" "$CURL_TLS -o $OUT/x/big.bin $HTTPS/big.bin")
up rsync && big+=("rsync" "rsync -q rsync://127.0.0.1:$P_RSYNC/data/big.bin $OUT/x/")
up nginx && big+=("aria2c -x4" "aria2c -q -x4 -s4 --allow-overwrite=true -d $OUT/x -o big.bin $URL/big.bin")
up nc && big+=("nc (raw, the floor)" "nc -d 127.0.0.1 $P_RAW >$OUT/x/big.bin")
big+=("ftget" "$FTG -q 127.0.0.1:$P_FT big.bin -o $OUT/x/big.bin")
[[ -n $FT_PLAIN ]] && big+=("ftget (plaintext v1)" "$FTGP -q 127.0.0.1:$P_FTP big.bin -o $OUT/x/big.bin")
bench big "$RUNS" "${big[@]}"
slow=()
up nginx && slow+=("curl + sha256sum" "curl -s -o $OUT/x/big.bin $URL/big.bin && sha256sum $OUT/x/big.bin >/dev/null")
up https && slow+=("curl https + sha256sum" "$CURL_TLS -o $OUT/x/big.bin $HTTPS/big.bin && sha256sum $OUT/x/big.bin >/dev/null")
up scp && slow+=("scp" "scp -q $SSH_OPTS root@127.0.0.1:$DATA/big.bin $OUT/x/")
up scp && have rsync && slow+=("rsync over ssh" "rsync -q -e '$RSH' root@127.0.0.1:$DATA/big.bin $OUT/x/")
((${#slow[@]})) && bench big-slow "$RUNS_SLOW" "${slow[@]}"

log "case cold: ftserve restarted before every run"
hyperfine --style none --runs "$RUNS" --export-json "$WORK/json/cold.json" \
  --command-name "ftget, cold server" \
  --prepare "rm -rf $OUT/x && mkdir -p $OUT/x && $WORK/restart-ft.sh" \
  "$FTG -q 127.0.0.1:$P_FT big.bin -o $OUT/x/big.bin" >/dev/null
"$WORK/restart-ft.sh"

mid=()
up nginx && mid+=("curl" "curl -s -o $OUT/x/mid.bin $URL/mid.bin")
up https && mid+=("curl https" "$CURL_TLS -o $OUT/x/mid.bin $HTTPS/mid.bin")
up rsync && mid+=("rsync" "rsync -q rsync://127.0.0.1:$P_RSYNC/data/mid.bin $OUT/x/")
mid+=("ftget" "$FTG -q 127.0.0.1:$P_FT mid.bin -o $OUT/x/mid.bin")
[[ -n $FT_PLAIN ]] && mid+=("ftget (plaintext v1)" "$FTGP -q 127.0.0.1:$P_FTP mid.bin -o $OUT/x/mid.bin")
bench mid "$RUNS_FAST" "${mid[@]}"

c100=()
up nginx && c100+=("curl x100" "seq 100 | xargs -P100 -I{} curl -s -o $OUT/x/{}.bin $URL/c16.bin")
c100+=("ftget x100" "seq 100 | xargs -P100 -I{} $FTG -q 127.0.0.1:$P_FT c16.bin -o $OUT/x/{}.bin")
bench c100 "$RUNS_SLOW" "${c100[@]}"

tree=()
up rsync && tree+=("rsync -r" "rsync -r -q rsync://127.0.0.1:$P_RSYNC/data/tree/ $OUT/x/")
tree+=("ftget -r" "$FTG -q -r 127.0.0.1:$P_FT tree -o $OUT/x")
[[ -n $FT_PLAIN ]] && tree+=("ftget -r (plaintext v1)" "$FTGP -q -r 127.0.0.1:$P_FTP tree -o $OUT/x")
bench tree "$RUNS_FAST" "${tree[@]}"
tree_slow=()
up scp && have rsync && tree_slow+=("rsync -r over ssh" "rsync -r -q -e '$RSH' root@127.0.0.1:$DATA/tree/ $OUT/x/")
up scp && tree_slow+=("scp -r" "scp -q -r $SSH_OPTS root@127.0.0.1:$DATA/tree $OUT/x/")
up https && tree_slow+=("curl https (URL list)" "$CURL_TLS --create-dirs -K $WORK/curl-tree.list")
up https && tree_slow+=("curl https -Z (URL list, 8 at once)" "$CURL_TLS --no-progress-meter --create-dirs -Z --parallel-max 8 -K $WORK/curl-tree.list")
((${#tree_slow[@]})) && bench tree-slow "$RUNS_SLOW" "${tree_slow[@]}"

# Checks: ftget's outputs are right, and so are the new peers' (one run each).
rm -rf "$OUT/x" && mkdir -p "$OUT/x"
$FTG -q "127.0.0.1:$P_FT" big.bin -o "$OUT/x/big.bin"
[[ $(sha256sum "$OUT/x/big.bin" | cut -d' ' -f1) == "$BIG_SHA" ]] || { echo "ftget's big.bin is wrong" >&2; exit 1; }
if [[ -n $FT_PLAIN ]]; then
  rm -rf "$OUT/x" && mkdir -p "$OUT/x"
  $FTGP -q "127.0.0.1:$P_FTP" big.bin -o "$OUT/x/big.bin"
  [[ $(sha256sum "$OUT/x/big.bin" | cut -d' ' -f1) == "$BIG_SHA" ]] || { echo "plaintext ftget's big.bin is wrong" >&2; exit 1; }
fi
tree_ok() {  # name: the 5,000 files of 4 KiB are under $OUT/x
  local n
  n=$(find "$OUT/x" -type f -size 4096c | wc -l)
  ((n == 5000)) || { echo "bench/run.sh: $1 left $n files of the tree, not 5000" >&2; exit 1; }
}
for ((i = 0; i < ${#tree[@]}; i += 2)); do
  rm -rf "$OUT/x" && mkdir -p "$OUT/x"
  bash -c "${tree[i+1]}" || { echo "bench/run.sh: ${tree[i]} failed" >&2; exit 1; }
  tree_ok "${tree[i]}"
done
for ((i = 0; i < ${#tree_slow[@]}; i += 2)); do
  rm -rf "$OUT/x" && mkdir -p "$OUT/x"
  bash -c "${tree_slow[i+1]}" || { echo "bench/run.sh: ${tree_slow[i]} failed" >&2; exit 1; }
  tree_ok "${tree_slow[i]}"
done
if up https; then
  rm -rf "$OUT/x" && mkdir -p "$OUT/x"
  $CURL_TLS -o "$OUT/x/big.bin" "$HTTPS/big.bin"
  [[ $(sha256sum "$OUT/x/big.bin" | cut -d' ' -f1) == "$BIG_SHA" ]] || { echo "curl https's big.bin is wrong" >&2; exit 1; }
fi

# --- memory --------------------------------------------------------------------
log "peak RSS"
: >"$WORK/rss.tsv"
rss_client() {  # case name command
  rm -rf "$OUT/x" && mkdir -p "$OUT/x"
  # A run that fails would report the shell's own memory: none is recorded.
  if /usr/bin/time -f "%M" -o "$WORK/time.out" bash -c "$3" >/dev/null 2>&1; then
    printf '%s\t%s\t%s\n' "$1" "$2" "$(tail -n1 "$WORK/time.out")" >>"$WORK/rss.tsv"
  else
    log "peak RSS of $2 ($1): the run failed"
  fi
}
if [[ -x /usr/bin/time ]]; then
  for ((i = 0; i < ${#big[@]}; i += 2)); do rss_client big "${big[i]}" "${big[i+1]}"; done
  # (Not for "+ sha256sum": two programs, one after the other.)
  for ((i = 0; i < ${#slow[@]}; i += 2)); do
    [[ ${slow[i]} == *sha256sum* ]] || rss_client big "${slow[i]}" "${slow[i+1]}"
  done
  # For 100 at once, GNU time reports the largest single process.
  for case in mid c100 tree; do
    declare -n cmds=$case
    for ((i = 0; i < ${#cmds[@]}; i += 2)); do rss_client "$case" "${cmds[i]}" "${cmds[i+1]}"; done
  done
  for ((i = 0; i < ${#tree_slow[@]}; i += 2)); do rss_client tree "${tree_slow[i]}" "${tree_slow[i+1]}"; done
fi
ft_hwm() { awk '/VmHWM/ {print $2}' "/proc/$(cat "$WORK/ft.pid")/status"; }
"$WORK/restart-ft.sh"
FT_IDLE=$(ft_hwm)
$FTG -q "127.0.0.1:$P_FT" big.bin -o "$OUT/x/big.bin"
FT_ONE=$(ft_hwm)
rm -rf "$OUT/x" && mkdir -p "$OUT/x"
seq 100 | xargs -P100 -I{} $FTG -q "127.0.0.1:$P_FT" c16.bin -o "$OUT/x/{}.bin"
FT_HUNDRED=$(ft_hwm)

# --- CPU -----------------------------------------------------------------------
# Core-seconds per run, client and server, for ftget and curl. On one machine
# both sides share its cores, so (client + server) / cores is the shortest wall
# time that work allows here. Medians of FTB_CPU_RUNS runs (default 3).
log "CPU per run"
: >"$WORK/cpu.tsv"
ticks() {  # pid... -> CPU ticks so far, reaped children included
  local sum=0 pid
  for pid in "$@"; do
    sum=$((sum + $(awk '{print $14 + $15 + $16 + $17}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
  done
  echo "$sum"
}
cpu_case() {  # case name server(ft|ftplain|nginx) command [prepare]
  local case=$1 name=$2 server=$3 cmd=$4 prepare=${5:-} i pids before after
  for ((i = 0; i < ${FTB_CPU_RUNS:-3}; i++)); do
    rm -rf "$OUT/x" && mkdir -p "$OUT/x"
    [[ -z $prepare ]] || $prepare
    case $server in
      ft) pids=$(cat "$WORK/ft.pid") ;;
      ftplain) pids=$(cat "$WORK/ft-plain.pid") ;;
      *) pids=$(pgrep -d' ' -P "$(cat "$WORK/nginx.pid")") ;;
    esac
    before=$(ticks $pids)
    /usr/bin/time -f "%U %S" -o "$WORK/time.out" bash -c "$cmd" >/dev/null 2>&1
    after=$(ticks $pids)
    printf '%s\t%s\t%s\t%s\n' "$case" "$name" \
      "$(tail -n1 "$WORK/time.out" | awk '{print $1 + $2}')" \
      "$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" 'BEGIN {print t / hz}')" >>"$WORK/cpu.tsv"
  done
}
if [[ -x /usr/bin/time ]]; then
  "$WORK/restart-ft.sh"
  for f in big mid c16; do  # warm ftserve's digest cache
    rm -rf "$OUT/x" && mkdir -p "$OUT/x" && $FTG -q "127.0.0.1:$P_FT" $f.bin -o "$OUT/x/$f.bin"
  done
  up nginx && cpu_case big curl nginx "curl -s -o $OUT/x/big.bin $URL/big.bin"
  up https && cpu_case big "curl https" nginx "$CURL_TLS -o $OUT/x/big.bin $HTTPS/big.bin"
  cpu_case big ftget ft "$FTG -q 127.0.0.1:$P_FT big.bin -o $OUT/x/big.bin"
  [[ -z $FT_PLAIN ]] || cpu_case big "ftget (plaintext v1)" ftplain "$FTGP -q 127.0.0.1:$P_FTP big.bin -o $OUT/x/big.bin"
  up nginx && cpu_case mid curl nginx "curl -s -o $OUT/x/mid.bin $URL/mid.bin"
  up https && cpu_case mid "curl https" nginx "$CURL_TLS -o $OUT/x/mid.bin $HTTPS/mid.bin"
  cpu_case mid ftget ft "$FTG -q 127.0.0.1:$P_FT mid.bin -o $OUT/x/mid.bin"
  [[ -z $FT_PLAIN ]] || cpu_case mid "ftget (plaintext v1)" ftplain "$FTGP -q 127.0.0.1:$P_FTP mid.bin -o $OUT/x/mid.bin"
  up nginx && cpu_case c100 "curl x100" nginx "seq 100 | xargs -P100 -I{} curl -s -o $OUT/x/{}.bin $URL/c16.bin"
  cpu_case c100 "ftget x100" ft "seq 100 | xargs -P100 -I{} $FTG -q 127.0.0.1:$P_FT c16.bin -o $OUT/x/{}.bin"
  cpu_case cold "ftget, cold server" ft "$FTG -q 127.0.0.1:$P_FT big.bin -o $OUT/x/big.bin" "$WORK/restart-ft.sh"
fi

# --- limits --------------------------------------------------------------------
log "limits"
IPERF=""
if have iperf3; then
  P_IPERF=$(port)
  iperf3 -s -B 127.0.0.1 -p "$P_IPERF" >/dev/null 2>&1 &
  IPERF_PID=$!
  sleep 0.5  # (a probe connection would count as iperf3's test client)
  IPERF=$(iperf3 -c 127.0.0.1 -p "$P_IPERF" -t 3 -J 2>/dev/null |
    python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/8e6))' || true)
  kill "$IPERF_PID" 2>/dev/null || true
fi
SHA=""
if have openssl; then
  SHA=$(openssl speed -evp sha256 -seconds 2 2>/dev/null | awk '/^sha256/ {v=$NF} END {sub("k","",v); printf "%.0f", v*1000/1e6}')
fi

# --- report --------------------------------------------------------------------
log "writing $RESULTS"
python3 - "$WORK/json" "$WORK/rss.tsv" "$RESULTS" "$FT_IDLE" "$FT_ONE" "$FT_HUNDRED" \
  "${IPERF:-}" "${SHA:-}" "$(git -C "$REPO" rev-parse --short HEAD)" "$(nproc)" \
  "$(printf '%s; ' "${SKIPPED[@]+"${SKIPPED[@]}"}")" "$WORK/cpu.tsv" \
  "${FT_FP:-}" "${TLS_SEEN:-}" "${FT_PLAIN:-}" <<'EOF'
import json, os, sys, datetime, statistics
jdir, rss_file, out, ft_idle, ft_one, ft_hundred, iperf, sha, commit, cores, skipped, cpu_file = sys.argv[1:13]
fingerprint, tls_seen, ft_plain = sys.argv[13:16]
sizes = {"big": 1 << 30, "big-slow": 1 << 30, "cold": 1 << 30, "mid": 64 << 20,
         "c100": 100 * (16 << 20), "tree": 5000 * 4096, "tree-slow": 5000 * 4096}
titles = {"big": "1 GiB, warm", "cold": "1 GiB, cold server", "mid": "64 MiB",
          "c100": "100 x 16 MiB at once", "tree": "5,000 x 4 KiB"}
rows = {}
for case in ["big", "big-slow", "cold", "mid", "c100", "tree", "tree-slow"]:
    path = os.path.join(jdir, case + ".json")
    if not os.path.exists(path):
        continue
    shown = {"big-slow": "big", "tree-slow": "tree"}.get(case, case)
    for r in json.load(open(path))["results"]:
        rows.setdefault(shown, []).append((r["command"], r["median"], len(r["times"])))
rss = {}
for line in open(rss_file):
    parts = line.rstrip("\n").split("\t")
    if len(parts) == 3:
        rss[(parts[0], parts[1])] = parts[2]
median = {(c, n): m for c, rs in rows.items() for n, m, _ in rs}
def ft_name(case):
    return {"big": "ftget", "cold": "ftget, cold server", "mid": "ftget", "c100": "ftget x100", "tree": "ftget -r"}[case]
lines = []
lines.append(f"Run of `bench/run.sh` on {datetime.date.today()}, commit {commit}, {cores} cores; tmpfs, loopback, medians.\n")
for case in ["big", "cold", "mid", "c100", "tree"]:
    if case not in rows:
        continue
    lines.append(f"\n### {titles[case]}\n")
    lines.append("| tool | runs | median s | MB/s | client peak RSS | ftget's time / this tool's |")
    lines.append("|---|--:|--:|--:|--:|--:|")
    ref_case = "big" if case == "cold" else case
    ft = median.get((case, ft_name(case)))
    entries = rows[case] + ([r for r in rows["big"] if r[0] != "ftget"] if case == "cold" else [])
    for name, m, n in entries:
        mbps = sizes[case] / m / 1e6
        ratio = f"{ft / m:.2f}" if ft else "-"
        if name == ft_name(case):
            ratio = "—"
        kib = rss.get((case, name))
        mem = f"{int(kib) / 1024:.1f} MiB" if kib else "-"
        lines.append(f"| {name} | {n} | {m:.3f} | {mbps:.0f} | {mem} | {ratio} |")
# The targets for ft over TLS, as time ratios from this run (lower is better).
def ratio(a, b):
    return median[a] / median[b] if a in median and b in median else None
PLAIN = "ftget (plaintext v1)"
targets = [
    ("ftget / curl https, 1 GiB warm", ratio(("big", "ftget"), ("big", "curl https")), 1.0, "≤ 1.00"),
    ("ftget / scp, 1 GiB warm", ratio(("big", "ftget"), ("big", "scp")), 0.5, "≤ 0.50 (2x faster)"),
    ("ftget -r / rsync -r over ssh, 5,000 files", ratio(("tree", "ftget -r"), ("tree", "rsync -r over ssh")), 1.0, "< 1.00"),
    ("ftget / curl https + sha256sum, 1 GiB warm", ratio(("big", "ftget"), ("big", "curl https + sha256sum")), None, "(both verified)"),
    ("ftget / " + PLAIN + ", 1 GiB warm", ratio(("big", "ftget"), ("big", PLAIN)), None, "cost of encryption"),
    ("ftget / " + PLAIN + ", 64 MiB", ratio(("mid", "ftget"), ("mid", PLAIN)), None, "cost of encryption"),
    ("ftget -r / ftget -r (plaintext v1), 5,000 files", ratio(("tree", "ftget -r"), ("tree", "ftget -r (plaintext v1)")), None, "cost of encryption"),
]
lines.append("\n### Targets (ftget's median time / the other's, this run)\n")
if fingerprint:
    lines.append(f"ftget ran with `--pin {fingerprint}` (the fingerprint ftserve printed).")
else:
    lines.append("ftserve printed no `fingerprint` line: this ftget is the plaintext build, so the rows below "
                 "compare it, unencrypted, with the encrypted peers.")
if tls_seen:
    lines.append(f"curl https: nginx, TLS 1.3 only, `{tls_seen}`; ssh (scp, rsync over ssh): aes128-gcm@openssh.com.")
if ft_plain:
    lines.append(f"Plaintext v1 build: `{ft_plain}`.")
lines.append("")
lines.append("| ratio | value | goal | met |")
lines.append("|---|--:|---|---|")
for label, r, limit, goal in targets:
    if r is None:
        continue
    met = "-" if limit is None else ("yes" if (r < limit if goal.startswith("<") else r <= limit) else "no")
    lines.append(f"| {label} | {r:.2f} | {goal} | {met} |")
cpu = {}
for line in open(cpu_file):
    case, name, client, server = line.rstrip("\n").split("\t")
    cpu.setdefault((case, name), []).append((float(client), float(server)))
if cpu:
    n = int(cores)
    lines.append("\n### CPU per run (core-seconds, medians)\n")
    lines.append(f"Client and server share this machine's {n} cores, so (client + server) / {n} is the "
                 "shortest wall time the work allows here; the last column is the time measured above.\n")
    lines.append(f"| case | tool | client | server | total | total / {n} cores | measured |")
    lines.append("|---|---|--:|--:|--:|--:|--:|")
    for (case, name), runs in cpu.items():
        c = statistics.median(r[0] for r in runs)
        s_ = statistics.median(r[1] for r in runs)
        m = median.get((case, name))
        lines.append(f"| {titles[case]} | {name} | {c:.2f} | {s_:.2f} | {c + s_:.2f} | {(c + s_) / n:.3f} | "
                     + (f"{m:.3f} |" if m else "- |"))
    if sha:
        lines.append(f"\nHashing 1 GiB once at this machine's single-core SHA-256 speed ({sha} MB/s) "
                     f"takes {(1 << 30) / (float(sha) * 1e6):.3f} core-seconds; curl hashes nothing.")
lines.append("\n### Memory and limits\n")
lines.append(f"- ftserve peak RSS: {int(ft_idle)/1024:.1f} MiB idle, {int(ft_one)/1024:.1f} MiB after one 1 GiB download, "
             f"{int(ft_hundred)/1024:.1f} MiB after 100 concurrent 16 MiB downloads "
             f"(about {(int(ft_hundred)-int(ft_idle))/1024/100:.2f} MiB per active download).")
if iperf: lines.append(f"- Loopback TCP (iperf3, one stream, 3 s): {iperf} MB/s.")
if sha: lines.append(f"- SHA-256 on one core (`openssl speed -evp sha256`, 16 KiB blocks): {sha} MB/s.")
if skipped.strip(" ;"): lines.append(f"- Skipped: {skipped.strip(' ;')}")
open(os.path.join(out, "RESULTS.md"), "w").write("\n".join(lines) + "\n")
# The chart: MB/s per tool, one group per case.
groups = [(titles[c], [(n, sizes[c] / m / 1e6) for n, m, _ in rows[c]]) for c in ["big", "cold", "mid", "c100", "tree"] if c in rows]
bar_h, gap, left, width = 16, 22, 190, 520
height = sum(len(g) * bar_h + gap + 18 for _, g in groups) + 40
top = max(v for _, g in groups for _, v in g)
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 90}" height="{height}" font-family="sans-serif" font-size="11">',
       f'<text x="10" y="18" font-size="14" font-weight="bold">Throughput, MB/s (higher is better) — bench/run.sh, commit {commit}</text>']
y = 36
for title, bars in groups:
    svg.append(f'<text x="10" y="{y + 12}" font-weight="bold">{title}</text>')
    y += 18
    for name, v in bars:
        w = max(1, v / top * width)
        colour = ("#9cc3e0" if "plaintext" in name else "#2b7bb9") if name.startswith("ftget") else "#999"
        svg.append(f'<text x="{left - 6}" y="{y + 12}" text-anchor="end">{name}</text>')
        svg.append(f'<rect x="{left}" y="{y + 2}" width="{w:.1f}" height="{bar_h - 4}" fill="{colour}"/>')
        svg.append(f'<text x="{left + w + 4:.1f}" y="{y + 12}">{v:.0f}</text>')
        y += bar_h
    y += gap
svg.append("</svg>")
open(os.path.join(out, "chart.svg"), "w").write("\n".join(svg) + "\n")
EOF
cat "$RESULTS/RESULTS.md"
