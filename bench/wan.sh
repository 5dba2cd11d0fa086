#!/usr/bin/env bash
# bench/wan.sh - the entry point of the long-link benchmark: runs it
# (bench/wan/bench.sh), or with `link`, drives the emulated link by hand
# (bench/wan/link.sh).  Run as root; see bench/wan/README.md.
#
#   bench/wan.sh                                    # the whole benchmark (about 1 h 45 min)
#   WB_TOOLS='ftput scp-up rsync-up' bench/wan.sh   # the uploads alone (about 35 min)
#   WB_SCEN='^B$' WB_RUNS=1 WB_CHECK=0 WB_SIZE_MIB=16 bench/wan.sh   # a quick look
#   bench/wan.sh link up --rate 100 --rtt 40 --loss 0.5
#   bench/wan.sh link status | down | exec c|s CMD [ARGS...]
set -euo pipefail
HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
case ${1:-} in
link) shift; exec "$HERE/wan/link.sh" "$@" ;;
'') exec "$HERE/wan/bench.sh" ;;
*) sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
