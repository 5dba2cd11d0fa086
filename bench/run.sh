#!/usr/bin/env bash
# bench/run.sh — ft against its peers on loopback, all in one run.
#
#   bench/run.sh                      # as root: installs what is missing with apt-get
#   FTB_RUNS=7 bench/run.sh           # timed runs per command (default 5; slow peers 3;
#                                     #   the 64 MiB and tree cases 3 x FTB_RUNS)
#
# Starts ftserve, nginx (sendfile), an rsync daemon, sshd and a raw socat
# stream on 127.0.0.1, each with a throwaway config, and times with hyperfine:
#   big    1 GiB, warm server (digest cached)     curl, curl+sha256sum, rsync, scp, aria2c -x4, nc, ftget
#   cold   1 GiB, first download after ftserve starts             ftget (vs curl from "big")
#   mid    64 MiB                                                 curl, rsync, ftget
#   c100   100 concurrent downloads of a 16 MiB file              curl, ftget
#   tree   5,000 files of 4 KiB in 50 folders                     rsync -r, ftget -r
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

log "building ft (release)"
cargo build --release --locked --quiet --manifest-path "$REPO/Cargo.toml"
FTSERVE=$REPO/target/release/ftserve
FTGET=$REPO/target/release/ftget

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
$FTSERVE --listen 127.0.0.1:$P_FT $DATA >$WORK/ft.out 2>/dev/null &
echo \$! >$WORK/ft.pid
for _ in \$(seq 200); do grep -q "listening on" $WORK/ft.out 2>/dev/null && exit 0; sleep 0.02; done
exit 1
EOF
chmod +x "$WORK/restart-ft.sh"
"$WORK/restart-ft.sh"

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
}
EOF
  nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' &
  PIDS+=($!)
  wait_port "$P_HTTP" || skip nginx "did not start"
else
  skip nginx "not installed"
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
  SSH_OPTS="-F /dev/null -i $WORK/ssh/id_ed25519 -o IdentitiesOnly=yes -o BatchMode=yes"
  SSH_OPTS+=" -o UserKnownHostsFile=$WORK/ssh/known_hosts -o StrictHostKeyChecking=yes"
  SSH_OPTS+=" -o LogLevel=ERROR -o Compression=no -c aes128-gcm@openssh.com -P $P_SSH"
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

big=()
up nginx && big+=("curl" "curl -s -o $OUT/x/big.bin $URL/big.bin")
up rsync && big+=("rsync" "rsync -q rsync://127.0.0.1:$P_RSYNC/data/big.bin $OUT/x/")
up nginx && big+=("aria2c -x4" "aria2c -q -x4 -s4 --allow-overwrite=true -d $OUT/x -o big.bin $URL/big.bin")
up nc && big+=("nc (raw, the floor)" "nc -d 127.0.0.1 $P_RAW >$OUT/x/big.bin")
big+=("ftget" "$FTGET -q 127.0.0.1:$P_FT big.bin -o $OUT/x/big.bin")
bench big "$RUNS" "${big[@]}"
slow=()
up nginx && slow+=("curl + sha256sum" "curl -s -o $OUT/x/big.bin $URL/big.bin && sha256sum $OUT/x/big.bin >/dev/null")
up scp && slow+=("scp" "scp -q $SSH_OPTS root@127.0.0.1:$DATA/big.bin $OUT/x/")
((${#slow[@]})) && bench big-slow "$RUNS_SLOW" "${slow[@]}"

log "case cold: ftserve restarted before every run"
hyperfine --style none --runs "$RUNS" --export-json "$WORK/json/cold.json" \
  --command-name "ftget, cold server" \
  --prepare "rm -rf $OUT/x && mkdir -p $OUT/x && $WORK/restart-ft.sh" \
  "$FTGET -q 127.0.0.1:$P_FT big.bin -o $OUT/x/big.bin" >/dev/null
"$WORK/restart-ft.sh"

mid=()
up nginx && mid+=("curl" "curl -s -o $OUT/x/mid.bin $URL/mid.bin")
up rsync && mid+=("rsync" "rsync -q rsync://127.0.0.1:$P_RSYNC/data/mid.bin $OUT/x/")
mid+=("ftget" "$FTGET -q 127.0.0.1:$P_FT mid.bin -o $OUT/x/mid.bin")
bench mid "$RUNS_FAST" "${mid[@]}"

c100=()
up nginx && c100+=("curl x100" "seq 100 | xargs -P100 -I{} curl -s -o $OUT/x/{}.bin $URL/c16.bin")
c100+=("ftget x100" "seq 100 | xargs -P100 -I{} $FTGET -q 127.0.0.1:$P_FT c16.bin -o $OUT/x/{}.bin")
bench c100 "$RUNS_SLOW" "${c100[@]}"

tree=()
up rsync && tree+=("rsync -r" "rsync -r -q rsync://127.0.0.1:$P_RSYNC/data/tree/ $OUT/x/")
tree+=("ftget -r" "$FTGET -q -r 127.0.0.1:$P_FT tree -o $OUT/x")
bench tree "$RUNS_FAST" "${tree[@]}"

# Checks: ftget's outputs are right.
rm -rf "$OUT/x" && mkdir -p "$OUT/x"
"$FTGET" -q "127.0.0.1:$P_FT" big.bin -o "$OUT/x/big.bin"
[[ $(sha256sum "$OUT/x/big.bin" | cut -d' ' -f1) == "$BIG_SHA" ]] || { echo "ftget's big.bin is wrong" >&2; exit 1; }

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
  up scp && rss_client big "scp" "scp -q $SSH_OPTS root@127.0.0.1:$DATA/big.bin $OUT/x/"
  # For 100 at once, GNU time reports the largest single process.
  for case in mid c100 tree; do
    declare -n cmds=$case
    for ((i = 0; i < ${#cmds[@]}; i += 2)); do rss_client "$case" "${cmds[i]}" "${cmds[i+1]}"; done
  done
fi
ft_hwm() { awk '/VmHWM/ {print $2}' "/proc/$(cat "$WORK/ft.pid")/status"; }
"$WORK/restart-ft.sh"
FT_IDLE=$(ft_hwm)
"$FTGET" -q "127.0.0.1:$P_FT" big.bin -o "$OUT/x/big.bin"
FT_ONE=$(ft_hwm)
rm -rf "$OUT/x" && mkdir -p "$OUT/x"
seq 100 | xargs -P100 -I{} "$FTGET" -q "127.0.0.1:$P_FT" c16.bin -o "$OUT/x/{}.bin"
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
cpu_case() {  # case name server(ft|nginx) command [prepare]
  local case=$1 name=$2 server=$3 cmd=$4 prepare=${5:-} i pids before after
  for ((i = 0; i < ${FTB_CPU_RUNS:-3}; i++)); do
    rm -rf "$OUT/x" && mkdir -p "$OUT/x"
    [[ -z $prepare ]] || $prepare
    if [[ $server == ft ]]; then pids=$(cat "$WORK/ft.pid"); else pids=$(pgrep -d' ' -P "$(cat "$WORK/nginx.pid")"); fi
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
    rm -rf "$OUT/x" && mkdir -p "$OUT/x" && "$FTGET" -q "127.0.0.1:$P_FT" $f.bin -o "$OUT/x/$f.bin"
  done
  up nginx && cpu_case big curl nginx "curl -s -o $OUT/x/big.bin $URL/big.bin"
  cpu_case big ftget ft "$FTGET -q 127.0.0.1:$P_FT big.bin -o $OUT/x/big.bin"
  up nginx && cpu_case mid curl nginx "curl -s -o $OUT/x/mid.bin $URL/mid.bin"
  cpu_case mid ftget ft "$FTGET -q 127.0.0.1:$P_FT mid.bin -o $OUT/x/mid.bin"
  up nginx && cpu_case c100 "curl x100" nginx "seq 100 | xargs -P100 -I{} curl -s -o $OUT/x/{}.bin $URL/c16.bin"
  cpu_case c100 "ftget x100" ft "seq 100 | xargs -P100 -I{} $FTGET -q 127.0.0.1:$P_FT c16.bin -o $OUT/x/{}.bin"
  cpu_case cold "ftget, cold server" ft "$FTGET -q 127.0.0.1:$P_FT big.bin -o $OUT/x/big.bin" "$WORK/restart-ft.sh"
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
  "$(printf '%s; ' "${SKIPPED[@]+"${SKIPPED[@]}"}")" "$WORK/cpu.tsv" <<'EOF'
import json, os, sys, datetime, statistics
jdir, rss_file, out, ft_idle, ft_one, ft_hundred, iperf, sha, commit, cores, skipped, cpu_file = sys.argv[1:13]
sizes = {"big": 1 << 30, "big-slow": 1 << 30, "cold": 1 << 30, "mid": 64 << 20,
         "c100": 100 * (16 << 20), "tree": 5000 * 4096}
titles = {"big": "1 GiB, warm", "cold": "1 GiB, cold server", "mid": "64 MiB",
          "c100": "100 x 16 MiB at once", "tree": "5,000 x 4 KiB"}
rows = {}
for case in ["big", "big-slow", "cold", "mid", "c100", "tree"]:
    path = os.path.join(jdir, case + ".json")
    if not os.path.exists(path):
        continue
    shown = "big" if case in ("big-slow",) else case
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
        if name.startswith("ftget"):
            ratio = "—"
        kib = rss.get((case, name))
        mem = f"{int(kib) / 1024:.1f} MiB" if kib else "-"
        lines.append(f"| {name} | {n} | {m:.3f} | {mbps:.0f} | {mem} | {ratio} |")
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
        colour = "#2b7bb9" if name.startswith("ftget") else "#999"
        svg.append(f'<text x="{left - 6}" y="{y + 12}" text-anchor="end">{name}</text>')
        svg.append(f'<rect x="{left}" y="{y + 2}" width="{w:.1f}" height="{bar_h - 4}" fill="{colour}"/>')
        svg.append(f'<text x="{left + w + 4:.1f}" y="{y + 12}">{v:.0f}</text>')
        y += bar_h
    y += gap
svg.append("</svg>")
open(os.path.join(out, "chart.svg"), "w").write("\n".join(svg) + "\n")
EOF
cat "$RESULTS/RESULTS.md"
