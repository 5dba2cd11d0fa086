#!/usr/bin/env bash
# bench/run.sh — ft against its peers on loopback, all in one run.
#
#   bench/run.sh                      # as root: installs what is missing with apt-get
#   FTB_RUNS=7 bench/run.sh           # timed runs per command (default 5; slow peers 3;
#                                     #   the 64 MiB and both tree cases 3 x FTB_RUNS)
#   FTB_FT_PLAIN_BIN=DIR bench/run.sh # also times a plaintext (protocol v1) build:
#                                     #   DIR/ftserve and DIR/ftget, on another port
#   FTB_ONLY=put bench/run.sh         # only the upload cases (put, put-tree; 2-3 min);
#                                     #   FTB_ONLY=get only the downloads; default: all
#   FTB_FT_BIN=DIR bench/run.sh       # time DIR/ftserve, DIR/ftget and DIR/ftput as they
#                                     #   are; without it the script builds them (cargo
#                                     #   build --release) into ${CARGO_TARGET_DIR:-target}
#   FTB_RESULTS=DIR bench/run.sh      # write RESULTS.md and chart.svg there (default bench/results)
#   FTB_BIG_MIB=16 FTB_TREE_DIRS=2 FTB_RUNS=1 FTB_RUNS_SLOW=1 FTB_CPU_RUNS=1 \
#     FTB_RESULTS=/tmp/ftb-smoke bench/run.sh   # a smoke test: the "1 GiB" file 16 MiB, the
#                                     #   tree 2 folders of 100 files; timings mean nothing
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
#   put       1 GiB upload                        ftput, scp, rsync over ssh, rsync to the daemon
#   put-tree  the tree above, uploaded            ftput -r, scp -r, rsync -r over ssh,
#                                                 rsync -r to the daemon
# Uploads go from the data folder into the output folder (both on the tmpfs),
# each run into an empty folder: a second ftserve takes them (--allow-upload,
# its root the output folder, a --write token in FTPUT_TOKEN, pinned with
# ftput --pin), and the rsync daemon has a writable module "up" there.
# With FTB_FT_PLAIN_BIN, "ftget (plaintext v1)" rows in big, mid and tree give
# the cost of encryption in the same run. An ftserve that prints
# "fingerprint SHA256:..." before "listening on" is pinned with ftget --pin;
# ftserve keeps its key in $WORK/ft-state (FTSERVE_STATE_DIR), ftget its
# known servers under $WORK/xdg (XDG_CONFIG_HOME).
# plus peak RSS of each client (GNU time) and of ftserve, the CPU each run of
# ftget, ftput and curl costs on both sides (core-seconds), and the limits:
# iperf3 on loopback and single-core SHA-256 (openssl speed).
# Data and outputs live on a tmpfs (/dev/shm). A peer that cannot run is
# skipped with a message. Results: bench/results/RESULTS.md and chart.svg
# (FTB_RESULTS moves them).
set -euo pipefail

RUNS=${FTB_RUNS:-5}
RUNS_SLOW=${FTB_RUNS_SLOW:-3}
# Cases under a tenth of a second get three times the runs: they are cheap,
# and the noise of one run is a larger part of them.
RUNS_FAST=$((RUNS * 3))
# FTB_ONLY: which cases run. GET: the downloads; PUT: the uploads.
case ${FTB_ONLY:-all} in
  all) GET=1 PUT=1 ;;
  get) GET=1 PUT=0 ;;
  put) GET=0 PUT=1 ;;
  *) echo "bench/run.sh: FTB_ONLY must be all, get or put" >&2; exit 1 ;;
esac
# Sizes: the single file ("1 GiB") and the tree (FTB_TREE_DIRS folders of 100
# files of 4 KiB); smaller only for a smoke test of the script itself.
BIG_MIB=${FTB_BIG_MIB:-1024}
TREE_DIRS=${FTB_TREE_DIRS:-50}
TREE_FILES=$((TREE_DIRS * 100))
[[ $BIG_MIB =~ ^[1-9][0-9]*$ && $TREE_DIRS =~ ^[1-9][0-9]*$ ]] ||
  { echo "bench/run.sh: FTB_BIG_MIB and FTB_TREE_DIRS must be positive whole numbers" >&2; exit 1; }
REPO=$(cd "$(dirname "$0")/.." && pwd)
RESULTS=${FTB_RESULTS:-$REPO/bench/results}
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
  [[ -f $WORK/ft-up.pid ]] && kill "$(cat "$WORK/ft-up.pid")" 2>/dev/null || true
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
if ((GET)) && [[ -n ${FTB_FT_PLAIN_BIN:-} ]]; then
  if [[ -x $FTB_FT_PLAIN_BIN/ftserve && -x $FTB_FT_PLAIN_BIN/ftget ]]; then
    FT_PLAIN=$(cd "$FTB_FT_PLAIN_BIN" && pwd)
  else
    echo "bench/run.sh: FTB_FT_PLAIN_BIN=$FTB_FT_PLAIN_BIN has no executable ftserve and ftget" >&2
    exit 1
  fi
fi
# ft itself: the binaries in FTB_FT_BIN as they are, or a release build.
if [[ -n ${FTB_FT_BIN:-} ]]; then
  FT_BIN=$(cd "$FTB_FT_BIN" && pwd)
else
  log "building ft (release)"
  cargo build --release --locked --quiet --manifest-path "$REPO/Cargo.toml" -p ft-server -p ft-client
  FT_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release
fi
FTSERVE=$FT_BIN/ftserve
FTGET=$FT_BIN/ftget
FTPUT=$FT_BIN/ftput
bins=("$FTSERVE")
((GET)) && bins+=("$FTGET")
((PUT)) && bins+=("$FTPUT")
for bin in "${bins[@]}"; do
  [[ -x $bin ]] || { echo "bench/run.sh: $bin is not an executable" >&2; exit 1; }
done
# ftget's trust store (known_servers) and ftserve's key live in this run's folder.
export XDG_CONFIG_HOME=$WORK/xdg
mkdir -p -m 700 "$XDG_CONFIG_HOME" "$WORK/ft-state" "$WORK/ft-plain-state" "$WORK/ft-up-state"

# --- data ----------------------------------------------------------------------
log "writing test data to $DATA"
head -c $((BIG_MIB << 20)) /dev/urandom >"$DATA/big.bin"
if ((GET)); then
  head -c $((64 << 20)) /dev/urandom >"$DATA/mid.bin"
  head -c $((16 << 20)) /dev/urandom >"$DATA/c16.bin"
fi
python3 - "$DATA/tree" "$TREE_DIRS" <<'EOF'
import os, sys
for d in range(int(sys.argv[2])):
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
fingerprint() { cat "$@" | sed -n 's|.*fingerprint \(SHA256:[A-Za-z0-9+/=_-]*\).*|\1|p' | head -n1; }
if ((GET)); then
  "$WORK/restart-ft.sh" || { echo "bench/run.sh: ftserve did not start" >&2; exit 1; }
  # A TLS ftserve prints "fingerprint SHA256:..." before "listening on": ftget pins
  # it. Without that line (a plaintext build) ftget runs as it is. FTG is ftget as
  # every command below runs it.
  FT_FP=$(fingerprint "$WORK/ft.out" "$WORK/ft.err")
  FTG=$FTGET${FT_FP:+ --pin $FT_FP}
  [[ -n $FT_FP ]] && log "ftserve's fingerprint: $FT_FP (ftget --pin)"
fi

# The ftserve that takes the uploads: its root is the output folder, so an
# upload lands where the downloads do ($OUT/x, emptied before every run). A
# write token (not one that may overwrite: every run starts from an empty
# folder) goes to ftput in FTPUT_TOKEN, never on its command line. FTP is
# ftput as every command below runs it, pinned.
if ((PUT)); then
  P_FTU=$(port)
  FTPUT_TOKEN=$("$FTSERVE" token add bench --token-file "$WORK/ft-up-tokens" --write 2>/dev/null | tail -n1)
  [[ $FTPUT_TOKEN == ?* ]] || { echo "bench/run.sh: ftserve token add printed no token" >&2; exit 1; }
  export FTPUT_TOKEN
  "$FTSERVE" --listen "127.0.0.1:$P_FTU" --state-dir "$WORK/ft-up-state" --token-file "$WORK/ft-up-tokens" \
    --allow-upload "$OUT" >"$WORK/ft-up.out" 2>"$WORK/ft-up.err" &
  echo $! >"$WORK/ft-up.pid"
  for _ in $(seq 200); do grep -q "listening on" "$WORK/ft-up.out" 2>/dev/null && break; sleep 0.02; done
  grep -q "listening on" "$WORK/ft-up.out" || { echo "bench/run.sh: ftserve --allow-upload did not start (see below)" >&2; cat "$WORK/ft-up.err" >&2; exit 1; }
  FTU_FP=$(fingerprint "$WORK/ft-up.out" "$WORK/ft-up.err")
  [[ -n $FTU_FP ]] || { echo "bench/run.sh: ftserve --allow-upload printed no fingerprint" >&2; exit 1; }
  FTP="$FTPUT --pin $FTU_FP"
  log "uploads: ftserve on 127.0.0.1:$P_FTU into $OUT, fingerprint $FTU_FP (ftput --pin)"
fi

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
  # Uploads: a writable module on the output folder. A daemon started as
  # root would write as nobody; the folders the runs make are root's.
  printf '[up]\n  path = %s\n  read only = no\n  uid = root\n  gid = root\n' "$OUT" >>"$WORK/rsyncd.conf"
  rsync --daemon --no-detach --address=127.0.0.1 --port="$P_RSYNC" --config="$WORK/rsyncd.conf" &
  PIDS+=($!)
  wait_port "$P_RSYNC" || skip rsync "daemon did not start"
else
  skip rsync "not installed"
fi

if ((GET)) && have nginx; then
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
elif ((GET)); then
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

if ((!GET)); then
  :  # the raw stream serves downloads only
elif have socat && have nc; then
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

# The commands of each case, as name/command pairs; empty when not run.
big=() slow=() mid=() c100=() tree=() tree_slow=() put=() put_slow=() put_tree=() put_tree_slow=()
tree_ok() {  # name: the TREE_FILES files of 4 KiB are under $OUT/x
  local n
  n=$(find "$OUT/x" -type f -size 4096c | wc -l)
  ((n == TREE_FILES)) || { echo "bench/run.sh: $1 left $n files of the tree, not $TREE_FILES" >&2; exit 1; }
}
big_ok() {  # name: $OUT/x/big.bin is the source's
  [[ -f $OUT/x/big.bin && $(sha256sum "$OUT/x/big.bin" | cut -d' ' -f1) == "$BIG_SHA" ]] ||
    { echo "bench/run.sh: $1 left a wrong or no $OUT/x/big.bin" >&2; exit 1; }
}

# --- downloads -------------------------------------------------------------------
if ((GET)); then
  if up https; then
    # The tree as a URL list for one curl: one connection in turn, or 8 at once.
    (cd "$DATA" && find tree -type f | sort) |
      awk -v u="$HTTPS/" -v o="$OUT/x/" '{print "url = \"" u $0 "\""; print "output = \"" o $0 "\""}' \
      >"$WORK/curl-tree.list"
    TLS_SEEN=$($CURL_TLS -v -o /dev/null "$HTTPS/c16.bin" 2>&1 | sed -n 's/.*SSL connection using //p' | head -n1)
  fi

  up nginx && big+=("curl" "curl -s -o $OUT/x/big.bin $URL/big.bin")
  up https && big+=("curl https" "$CURL_TLS -o $OUT/x/big.bin $HTTPS/big.bin")
  up rsync && big+=("rsync" "rsync -q rsync://127.0.0.1:$P_RSYNC/data/big.bin $OUT/x/")
  up nginx && big+=("aria2c -x4" "aria2c -q -x4 -s4 --allow-overwrite=true -d $OUT/x -o big.bin $URL/big.bin")
  up nc && big+=("nc (raw, the floor)" "nc -d 127.0.0.1 $P_RAW >$OUT/x/big.bin")
  big+=("ftget" "$FTG -q 127.0.0.1:$P_FT big.bin -o $OUT/x/big.bin")
  [[ -n $FT_PLAIN ]] && big+=("ftget (plaintext v1)" "$FTGP -q 127.0.0.1:$P_FTP big.bin -o $OUT/x/big.bin")
  bench big "$RUNS" "${big[@]}"
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

  up nginx && mid+=("curl" "curl -s -o $OUT/x/mid.bin $URL/mid.bin")
  up https && mid+=("curl https" "$CURL_TLS -o $OUT/x/mid.bin $HTTPS/mid.bin")
  up rsync && mid+=("rsync" "rsync -q rsync://127.0.0.1:$P_RSYNC/data/mid.bin $OUT/x/")
  mid+=("ftget" "$FTG -q 127.0.0.1:$P_FT mid.bin -o $OUT/x/mid.bin")
  [[ -n $FT_PLAIN ]] && mid+=("ftget (plaintext v1)" "$FTGP -q 127.0.0.1:$P_FTP mid.bin -o $OUT/x/mid.bin")
  bench mid "$RUNS_FAST" "${mid[@]}"

  up nginx && c100+=("curl x100" "seq 100 | xargs -P100 -I{} curl -s -o $OUT/x/{}.bin $URL/c16.bin")
  c100+=("ftget x100" "seq 100 | xargs -P100 -I{} $FTG -q 127.0.0.1:$P_FT c16.bin -o $OUT/x/{}.bin")
  bench c100 "$RUNS_SLOW" "${c100[@]}"

  up rsync && tree+=("rsync -r" "rsync -r -q rsync://127.0.0.1:$P_RSYNC/data/tree/ $OUT/x/")
  tree+=("ftget -r" "$FTG -q -r 127.0.0.1:$P_FT tree -o $OUT/x")
  [[ -n $FT_PLAIN ]] && tree+=("ftget -r (plaintext v1)" "$FTGP -q -r 127.0.0.1:$P_FTP tree -o $OUT/x")
  bench tree "$RUNS_FAST" "${tree[@]}"
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
fi

# --- uploads ---------------------------------------------------------------------
# From $DATA to $OUT/x (emptied before every run, as for the downloads): ftput to
# the uploads' ftserve, scp and rsync over ssh to the bench's sshd, rsync to the
# daemon's writable module "up" (its path is $OUT). The remote folder is x, so
# each lands in $OUT/x; -r puts the folder under its own name (x/tree) for ftput
# and scp, and its contents (tree/) for rsync, like the download case.
if ((PUT)); then
  put+=("ftput" "$FTP -q 127.0.0.1:$P_FTU $DATA/big.bin --to x")
  up rsync && put+=("rsync" "rsync -q $DATA/big.bin rsync://127.0.0.1:$P_RSYNC/up/x/")
  bench put "$RUNS" "${put[@]}"
  up scp && put_slow+=("scp" "scp -q $SSH_OPTS $DATA/big.bin root@127.0.0.1:$OUT/x/")
  up scp && have rsync && put_slow+=("rsync over ssh" "rsync -q -e '$RSH' $DATA/big.bin root@127.0.0.1:$OUT/x/")
  ((${#put_slow[@]})) && bench put-slow "$RUNS_SLOW" "${put_slow[@]}"
  put_tree+=("ftput -r" "$FTP -q -r 127.0.0.1:$P_FTU $DATA/tree --to x")
  up rsync && put_tree+=("rsync -r" "rsync -r -q $DATA/tree/ rsync://127.0.0.1:$P_RSYNC/up/x/")
  bench put-tree "$RUNS_FAST" "${put_tree[@]}"
  up scp && have rsync && put_tree_slow+=("rsync -r over ssh" "rsync -r -q -e '$RSH' $DATA/tree/ root@127.0.0.1:$OUT/x/")
  up scp && put_tree_slow+=("scp -r" "scp -q -r $SSH_OPTS $DATA/tree root@127.0.0.1:$OUT/x/")
  ((${#put_tree_slow[@]})) && bench put-tree-slow "$RUNS_SLOW" "${put_tree_slow[@]}"
  # The uploads' ftserve now holds what the runs cost it.
  FTU_HWM=$(awk '/VmHWM/ {print $2}' "/proc/$(cat "$WORK/ft-up.pid")/status")

  # Checks: one more run of every upload, each into an empty folder; the
  # result must be the source, and ftserve must keep no partial behind.
  for ((i = 0; i < ${#put[@]}; i += 2)); do
    rm -rf "$OUT/x" && mkdir -p "$OUT/x"
    bash -c "${put[i+1]}" || { echo "bench/run.sh: ${put[i]} failed" >&2; exit 1; }
    big_ok "${put[i]}"
  done
  for ((i = 0; i < ${#put_slow[@]}; i += 2)); do
    rm -rf "$OUT/x" && mkdir -p "$OUT/x"
    bash -c "${put_slow[i+1]}" || { echo "bench/run.sh: ${put_slow[i]} failed" >&2; exit 1; }
    big_ok "${put_slow[i]}"
  done
  for ((i = 0; i < ${#put_tree[@]}; i += 2)); do
    rm -rf "$OUT/x" && mkdir -p "$OUT/x"
    bash -c "${put_tree[i+1]}" || { echo "bench/run.sh: ${put_tree[i]} failed" >&2; exit 1; }
    tree_ok "${put_tree[i]}"
  done
  for ((i = 0; i < ${#put_tree_slow[@]}; i += 2)); do
    rm -rf "$OUT/x" && mkdir -p "$OUT/x"
    bash -c "${put_tree_slow[i+1]}" || { echo "bench/run.sh: ${put_tree_slow[i]} failed" >&2; exit 1; }
    tree_ok "${put_tree_slow[i]}"
  done
  left=$(find "$OUT/.ftserve-partial" -mindepth 1 2>/dev/null | wc -l)
  ((left == 0)) || { echo "bench/run.sh: ftserve kept $left entries in $OUT/.ftserve-partial after the uploads" >&2; exit 1; }
  # ftput --json says the server verified the file.
  rm -rf "$OUT/x" && mkdir -p "$OUT/x"
  $FTP --json -q "127.0.0.1:$P_FTU" "$DATA/big.bin" --to x | grep -q '"verified":true' ||
    { echo "bench/run.sh: ftput --json did not report verified:true" >&2; exit 1; }
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
  for list in put:put put_slow:put put_tree:put-tree put_tree_slow:put-tree; do  # array:case
    declare -n cmds=${list%%:*}
    for ((i = 0; i < ${#cmds[@]}; i += 2)); do rss_client "${list#*:}" "${cmds[i]}" "${cmds[i+1]}"; done
  done
fi
FT_IDLE="" FT_ONE="" FT_HUNDRED=""
if ((GET)); then
  ft_hwm() { awk '/VmHWM/ {print $2}' "/proc/$(cat "$WORK/ft.pid")/status"; }
  "$WORK/restart-ft.sh"
  FT_IDLE=$(ft_hwm)
  $FTG -q "127.0.0.1:$P_FT" big.bin -o "$OUT/x/big.bin"
  FT_ONE=$(ft_hwm)
  rm -rf "$OUT/x" && mkdir -p "$OUT/x"
  seq 100 | xargs -P100 -I{} $FTG -q "127.0.0.1:$P_FT" c16.bin -o "$OUT/x/{}.bin"
  FT_HUNDRED=$(ft_hwm)
fi

# --- CPU -----------------------------------------------------------------------
# Core-seconds per run, client and server, for ftget, ftput and curl. On one machine
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
cpu_case() {  # case name server(ft|ftplain|ftup|nginx) command [prepare]
  local case=$1 name=$2 server=$3 cmd=$4 prepare=${5:-} i pids before after
  for ((i = 0; i < ${FTB_CPU_RUNS:-3}; i++)); do
    rm -rf "$OUT/x" && mkdir -p "$OUT/x"
    [[ -z $prepare ]] || $prepare
    case $server in
      ft) pids=$(cat "$WORK/ft.pid") ;;
      ftplain) pids=$(cat "$WORK/ft-plain.pid") ;;
      ftup) pids=$(cat "$WORK/ft-up.pid") ;;
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
  if ((GET)); then
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
  if ((PUT)); then
    cpu_case put ftput ftup "${put[1]}"
    cpu_case put-tree "ftput -r" ftup "${put_tree[1]}"
  fi
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
  "${FT_FP:-}" "${TLS_SEEN:-}" "${FT_PLAIN:-}" \
  "$((BIG_MIB << 20))" "$TREE_FILES" "${FTU_HWM:-}" "${FTU_FP:-}" "${FTB_FT_BIN:+$FT_BIN}" <<'EOF'
import json, os, sys, datetime, statistics
jdir, rss_file, out, ft_idle, ft_one, ft_hundred, iperf, sha, commit, cores, skipped, cpu_file = sys.argv[1:13]
fingerprint, tls_seen, ft_plain = sys.argv[13:16]
big, tree_files, ftu_hwm, put_fingerprint, ft_bin = sys.argv[16:21]
big, tree_files = int(big), int(tree_files)
def human(n):
    return f"{n >> 30} GiB" if n % (1 << 30) == 0 else f"{n >> 20} MiB" if n % (1 << 20) == 0 else f"{n} B"
BIG, TREE = human(big), f"{tree_files:,} x 4 KiB"
sizes = {"big": big, "big-slow": big, "cold": big, "mid": 64 << 20,
         "c100": 100 * (16 << 20), "tree": tree_files * 4096, "tree-slow": tree_files * 4096,
         "put": big, "put-slow": big, "put-tree": tree_files * 4096, "put-tree-slow": tree_files * 4096}
titles = {"big": f"{BIG}, warm", "cold": f"{BIG}, cold server", "mid": "64 MiB",
          "c100": "100 x 16 MiB at once", "tree": TREE,
          "put": f"{BIG} upload", "put-tree": f"{TREE} upload"}
CASES = ["big", "cold", "mid", "c100", "tree", "put", "put-tree"]
rows = {}
for case in ["big", "big-slow", "cold", "mid", "c100", "tree", "tree-slow", "put", "put-slow", "put-tree", "put-tree-slow"]:
    path = os.path.join(jdir, case + ".json")
    if not os.path.exists(path):
        continue
    shown = {"big-slow": "big", "tree-slow": "tree", "put-slow": "put", "put-tree-slow": "put-tree"}.get(case, case)
    for r in json.load(open(path))["results"]:
        rows.setdefault(shown, []).append((r["command"], r["median"], len(r["times"])))
rss = {}
for line in open(rss_file):
    parts = line.rstrip("\n").split("\t")
    if len(parts) == 3:
        rss[(parts[0], parts[1])] = parts[2]
median = {(c, n): m for c, rs in rows.items() for n, m, _ in rs}
def ft_name(case):
    return {"big": "ftget", "cold": "ftget, cold server", "mid": "ftget", "c100": "ftget x100", "tree": "ftget -r",
            "put": "ftput", "put-tree": "ftput -r"}[case]
lines = []
built = f"binaries from `{ft_bin}`" if ft_bin else f"commit {commit}"
lines.append(f"Run of `bench/run.sh` on {datetime.date.today()}, {built}, {cores} cores; tmpfs, loopback, medians.\n")
for case in CASES:
    if case not in rows:
        continue
    lines.append(f"\n### {titles[case]}\n")
    lines.append(f"| tool | runs | median s | MB/s | client peak RSS | {ft_name(case).split()[0]}'s time / this tool's |")
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
FILES = f"{tree_files:,} files"
targets = [
    (f"ftget / curl https, {BIG} warm", ratio(("big", "ftget"), ("big", "curl https")), 1.0, "≤ 1.00"),
    (f"ftget / scp, {BIG} warm", ratio(("big", "ftget"), ("big", "scp")), 0.5, "≤ 0.50 (2x faster)"),
    (f"ftget -r / rsync -r over ssh, {FILES}", ratio(("tree", "ftget -r"), ("tree", "rsync -r over ssh")), 1.0, "< 1.00"),
    (f"ftget / curl https + sha256sum, {BIG} warm", ratio(("big", "ftget"), ("big", "curl https + sha256sum")), None, "(both verified)"),
    ("ftget / " + PLAIN + f", {BIG} warm", ratio(("big", "ftget"), ("big", PLAIN)), None, "cost of encryption"),
    ("ftget / " + PLAIN + ", 64 MiB", ratio(("mid", "ftget"), ("mid", PLAIN)), None, "cost of encryption"),
    (f"ftget -r / ftget -r (plaintext v1), {FILES}", ratio(("tree", "ftget -r"), ("tree", "ftget -r (plaintext v1)")), None, "cost of encryption"),
]
# Uploads: no goal set yet, the ratios only.
for other in ["scp", "rsync over ssh", "rsync"]:
    targets.append((f"ftput / {other}, {BIG} upload", ratio(("put", "ftput"), ("put", other)), None, "(upload)"))
for other in ["scp -r", "rsync -r over ssh", "rsync -r"]:
    targets.append((f"ftput -r / {other}, {FILES} upload", ratio(("put-tree", "ftput -r"), ("put-tree", other)), None, "(upload)"))
lines.append("\n### Targets (ft's median time / the other's, this run)\n")
if any(c in rows for c in ["big", "cold", "mid", "c100", "tree"]):
    if fingerprint:
        lines.append(f"ftget ran with `--pin {fingerprint}` (the fingerprint ftserve printed).")
    else:
        lines.append("ftserve printed no `fingerprint` line: this ftget is the plaintext build, so the rows below "
                     "compare it, unencrypted, with the encrypted peers.")
if put_fingerprint and any(c in rows for c in ["put", "put-tree"]):
    lines.append(f"ftput ran with `--pin {put_fingerprint}` and a write token in `FTPUT_TOKEN`, to an ftserve with "
                 "`--allow-upload` whose root is the tmpfs output folder; rsync's upload rows go to a writable "
                 "daemon module there. Every run starts from an empty folder. ftserve syncs each file and its "
                 "folder before the rename, scp and rsync do not; on a tmpfs a sync costs nothing.")
if tls_seen:
    lines.append(f"curl https: nginx, TLS 1.3 only, `{tls_seen}`; ssh (scp, rsync over ssh): aes128-gcm@openssh.com.")
elif any(c in rows for c in ["put", "put-tree"]):
    lines.append("ssh (scp, rsync over ssh): aes128-gcm@openssh.com.")
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
        lines.append(f"\nHashing {BIG} once at this machine's single-core SHA-256 speed ({sha} MB/s) "
                     f"takes {big / (float(sha) * 1e6):.3f} core-seconds; curl hashes nothing.")
lines.append("\n### Memory and limits\n")
if ft_idle and ft_one and ft_hundred:
    lines.append(f"- ftserve peak RSS: {int(ft_idle)/1024:.1f} MiB idle, {int(ft_one)/1024:.1f} MiB after one {BIG} download, "
                 f"{int(ft_hundred)/1024:.1f} MiB after 100 concurrent 16 MiB downloads "
                 f"(about {(int(ft_hundred)-int(ft_idle))/1024/100:.2f} MiB per active download).")
if ftu_hwm:
    lines.append(f"- ftserve taking uploads, peak RSS after the timed upload runs ({BIG} and {TREE}): {int(ftu_hwm)/1024:.1f} MiB.")
if iperf: lines.append(f"- Loopback TCP (iperf3, one stream, 3 s): {iperf} MB/s.")
if sha: lines.append(f"- SHA-256 on one core (`openssl speed -evp sha256`, 16 KiB blocks): {sha} MB/s.")
if skipped.strip(" ;"): lines.append(f"- Skipped: {skipped.strip(' ;')}")
open(os.path.join(out, "RESULTS.md"), "w").write("\n".join(lines) + "\n")
# The chart: MB/s per tool, one group per case.
groups = [(titles[c], [(n, sizes[c] / m / 1e6) for n, m, _ in rows[c]]) for c in CASES if c in rows]
bar_h, gap, left, width = 16, 22, 190, 520
height = sum(len(g) * bar_h + gap + 18 for _, g in groups) + 40
top = max(v for _, g in groups for _, v in g)
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 90}" height="{height}" font-family="sans-serif" font-size="11">',
       f'<text x="10" y="18" font-size="14" font-weight="bold">Throughput, MB/s (higher is better) — bench/run.sh, {built.replace("`", "")}</text>']
y = 36
for title, bars in groups:
    svg.append(f'<text x="10" y="{y + 12}" font-weight="bold">{title}</text>')
    y += 18
    for name, v in bars:
        w = max(1, v / top * width)
        colour = ("#9cc3e0" if "plaintext" in name else "#2b7bb9") if name.startswith(("ftget", "ftput")) else "#999"
        svg.append(f'<text x="{left - 6}" y="{y + 12}" text-anchor="end">{name}</text>')
        svg.append(f'<rect x="{left}" y="{y + 2}" width="{w:.1f}" height="{bar_h - 4}" fill="{colour}"/>')
        svg.append(f'<text x="{left + w + 4:.1f}" y="{y + 12}">{v:.0f}</text>')
        y += bar_h
    y += gap
svg.append("</svg>")
open(os.path.join(out, "chart.svg"), "w").write("\n".join(svg) + "\n")
EOF
cat "$RESULTS/RESULTS.md"
