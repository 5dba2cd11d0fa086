#!/usr/bin/env bash
# Many small files: ftget -r against an rsync daemon, first run and unchanged
# re-run, in one run on loopback. Prints a Markdown table (medians, hyperfine).
#
#   bench/tree.sh                    # 5,000 x 4 KiB in 50 folders, 10 runs each
#   FTB_RUNS=20 bench/tree.sh
#
# Needs: cargo, rsync, hyperfine (installed with apt-get when missing and root).
# Data and outputs live on a tmpfs (/dev/shm), so the disk does not decide.
set -euo pipefail

RUNS=${FTB_RUNS:-10}
DIRS=${FTB_DIRS:-50}
PER_DIR=${FTB_PER_DIR:-100}
SIZE=${FTB_SIZE:-4096}
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /dev/shm/ft-tree-bench.XXXXXX)
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

need() {
  command -v "$1" >/dev/null && return
  if [[ $(id -u) == 0 ]]; then
    apt-get update -qq && apt-get install -y -qq "$2" >/dev/null
  else
    echo "bench/tree.sh: $1 is missing (apt-get install $2)" >&2
    exit 1
  fi
}
need rsync rsync
need hyperfine hyperfine

cargo build --release --locked --quiet --manifest-path "$REPO/Cargo.toml"
FTSERVE=$REPO/target/release/ftserve
FTGET=$REPO/target/release/ftget

# The tree: DIRS folders of PER_DIR random files of SIZE bytes.
python3 - "$WORK/data/tree" "$DIRS" "$PER_DIR" "$SIZE" <<'EOF'
import os, sys
root, dirs, per, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
for d in range(dirs):
    os.makedirs(f"{root}/d{d:02}", exist_ok=True)
    for f in range(per):
        with open(f"{root}/d{d:02}/f{f:03}.bin", "wb") as out:
            out.write(os.urandom(size))
EOF

# Free loopback ports, chosen by the kernel.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P_RSYNC=$(port)
cat >"$WORK/rsyncd.conf" <<EOF
use chroot = no
pid file = $WORK/rsyncd.pid
log file = $WORK/rsyncd.log
[data]
path = $WORK/data
read only = yes
EOF
rsync --daemon --no-detach --address=127.0.0.1 --port="$P_RSYNC" --config="$WORK/rsyncd.conf" &
PIDS+=($!)
"$FTSERVE" --listen 127.0.0.1:0 "$WORK/data" >"$WORK/ftserve.out" 2>"$WORK/ftserve.log" &
PIDS+=($!)
for _ in $(seq 100); do
  grep -q "listening on" "$WORK/ftserve.out" 2>/dev/null && break
  sleep 0.05
done
FT=$(sed -n 's/.*listening on //p' "$WORK/ftserve.out")
for _ in $(seq 100); do
  rsync "rsync://127.0.0.1:$P_RSYNC/" >/dev/null 2>&1 && break
  sleep 0.05
done

RSYNC="rsync://127.0.0.1:$P_RSYNC/data/tree/"
OUT=$WORK/out
mkdir -p "$OUT"
# Outputs for the unchanged re-runs, made once.
rsync -r -q "$RSYNC" "$OUT/rsync-r/"
rsync -a -q "$RSYNC" "$OUT/rsync-a/"
"$FTGET" -q -r "$FT" tree -o "$OUT/ftget"

hyperfine --style basic --warmup 1 --runs "$RUNS" --export-json "$WORK/times.json" \
  --command-name "rsync -r, first run" --prepare "rm -rf $OUT/first" "rsync -r -q $RSYNC $OUT/first/" \
  --command-name "ftget -r, first run" --prepare "rm -rf $OUT/first" "$FTGET -q -r $FT tree -o $OUT/first" \
  --command-name "rsync -r, unchanged re-run" --prepare true "rsync -r -q $RSYNC $OUT/rsync-r/" \
  --command-name "rsync -a, unchanged re-run" --prepare true "rsync -a -q $RSYNC $OUT/rsync-a/" \
  --command-name "ftget -r, unchanged re-run" --prepare true "$FTGET -q -r $FT tree -o $OUT/ftget" \
  >"$WORK/hyperfine.txt"

# ftget's outputs must match the source, file for file.
(cd "$WORK/data/tree" && find . -type f -exec sha256sum {} + | sort -k2) >"$WORK/want.sum"
(cd "$OUT/ftget/tree" && find . -type f -exec sha256sum {} + | sort -k2) >"$WORK/got.sum"
cmp -s "$WORK/want.sum" "$WORK/got.sum" || { echo "ftget's tree differs from the source" >&2; exit 1; }

echo "Tree: $DIRS folders x $PER_DIR files x $SIZE B, on tmpfs, loopback; $RUNS runs each after 1 warm-up (hyperfine)."
echo
echo "| Command | Median s | Min-max s |"
echo "|---|--:|--:|"
python3 - "$WORK/times.json" <<'EOF'
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    print(f"| {r['command']} | {r['median']:.3f} | {r['min']:.3f}-{r['max']:.3f} |")
EOF
