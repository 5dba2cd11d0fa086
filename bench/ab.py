#!/usr/bin/env python3
"""bench/ab.py — two builds of ft against each other, runs interleaved.

    bench/ab.py --before OLD_DIR --after NEW_DIR [--runs 10] [--no-huge] [--only NAME]

OLD_DIR and NEW_DIR each hold an `ftserve` and an `ftget` (for instance a
copy of target/release before a change, and target/release after it). Both
servers serve the same data on tmpfs (/dev/shm) at once; every case runs the
two builds in turn (before, after, after, before, …) so that drift in the
machine's speed falls on both, and each after/before ratio is taken pair by
pair. Per case it prints the median wall time, the client's CPU (from
wait4) and the server's (from /proc/PID/stat) for each build, and the
median, lowest and highest ratio of the pairs, as a Markdown table.

Cases: 1 GiB from a warm server; 1 GiB from a cold server (restarted before
each run, not timed); 64 MiB; 5,000 files of 4 KiB into an empty folder;
the same tree re-run unchanged; a 3 GiB file already present (`-r`, checked
against the checkpoints), unless --no-huge. Needs python3 and about 12 GiB
of /dev/shm (5 without the 3 GiB case).
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

TICKS = os.sysconf("SC_CLK_TCK")


class Server:
    """One ftserve of one build, on a free loopback port."""

    def __init__(self, build, data):
        self.build, self.data = build, data
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            [os.path.join(self.build, "ftserve"), "--listen", "127.0.0.1:0", self.data],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            found = re.search(r"listening on (\S+)", line)
            if found:
                self.addr = found.group(1)
                return
        self.stop()
        sys.exit(f"ab.py: {self.build}/ftserve did not start")

    def stop(self):
        self.proc.kill()
        self.proc.wait(timeout=10)

    def restart(self):
        self.stop()
        self.start()

    def cpu(self):
        fields = open(f"/proc/{self.proc.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS


def timed(argv):
    """Runs argv; wall seconds and the child's CPU seconds."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"ab.py: {' '.join(argv)} failed: {err}")
    return wall, usage.ru_utime + usage.ru_stime


def make_data(root, huge):
    os.makedirs(root)
    with open(os.path.join(root, "big.bin"), "wb") as out:
        for _ in range(1024):
            out.write(os.urandom(1 << 20))
    with open(os.path.join(root, "mid.bin"), "wb") as out:
        out.write(os.urandom(64 << 20))
    for d in range(50):
        os.makedirs(os.path.join(root, "tree", f"d{d:02}"))
        for f in range(100):
            with open(os.path.join(root, "tree", f"d{d:02}", f"f{f:03}.bin"), "wb") as out:
                out.write(os.urandom(4096))
    if huge:
        os.makedirs(os.path.join(root, "huge"))
        with open(os.path.join(root, "huge", "h.bin"), "wb") as out:
            for _ in range(3072):
                out.write(os.urandom(1 << 20))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", required=True)
    parser.add_argument("--after", required=True)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--no-huge", action="store_true")
    parser.add_argument("--only", default="", help="run only the cases whose name contains this")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="ftab.", dir="/dev/shm")
    builds = {"before": os.path.abspath(args.before), "after": os.path.abspath(args.after)}
    servers = {}
    try:
        data = os.path.join(work, "data")
        print(f"ab.py: writing test data to {data}", file=sys.stderr)
        make_data(data, not args.no_huge)
        servers = {name: Server(build, data) for name, build in builds.items()}

        def ftget(name, *rest):
            return [os.path.join(builds[name], "ftget"), "-q", *rest]

        def out(name, what):
            return os.path.join(work, f"out-{name}", what)

        for name in builds:
            os.makedirs(out(name, ""))

        def fresh_tree(name):
            shutil.rmtree(out(name, "tree"), ignore_errors=True)

        # name -> (argv for a build, untimed set-up before each run)
        cases = [
            ("1 GiB, warm server", lambda n: ftget(n, servers[n].addr, "big.bin", "-o", out(n, "big.bin")), None),
            ("1 GiB, cold server", lambda n: ftget(n, servers[n].addr, "big.bin", "-o", out(n, "big.bin")),
             lambda n: servers[n].restart()),
            ("64 MiB", lambda n: ftget(n, servers[n].addr, "mid.bin", "-o", out(n, "mid.bin")), None),
            ("5,000 × 4 KiB, first run", lambda n: ftget(n, "-r", servers[n].addr, "tree", "-o", out(n, "tree")),
             fresh_tree),
            ("5,000 × 4 KiB, unchanged re-run", lambda n: ftget(n, "-r", servers[n].addr, "tree", "-o", out(n, "tree")),
             None),
        ]
        if not args.no_huge:
            cases.append(("3 GiB already present (`-r`)",
                          lambda n: ftget(n, "-r", servers[n].addr, "huge", "-o", out(n, "huge")), None))
        cases = [case for case in cases if args.only in case[0]]
        # Warm both servers and fill the outputs the re-run cases need.
        for name in builds:
            for case, argv, _ in cases:
                timed(argv(name))
        rows = []
        for case, argv, setup in cases:
            print(f"ab.py: {case}", file=sys.stderr)
            figures = {name: {"wall": [], "client": [], "server": []} for name in builds}
            ratios = []
            for run in range(args.runs):
                order = ["before", "after"] if run % 2 == 0 else ["after", "before"]
                walls = {}
                for name in order:
                    if setup:
                        setup(name)
                    cpu_before = servers[name].cpu()
                    wall, client = timed(argv(name))
                    figures[name]["wall"].append(wall)
                    figures[name]["client"].append(client)
                    figures[name]["server"].append(servers[name].cpu() - cpu_before)
                    walls[name] = wall
                ratios.append(walls["after"] / walls["before"])
            med = {name: {k: statistics.median(v) for k, v in f.items()} for name, f in figures.items()}
            rows.append((case, med, statistics.median(ratios), min(ratios), max(ratios)))
        print(f"| case | runs | before: wall s (client + server CPU s) | after: wall s (client + server CPU s) "
              f"| after / before, median of pairs (lowest–highest) |")
        print("|---|--:|--:|--:|--:|")
        for case, med, ratio, low, high in rows:
            cell = lambda m: f"{m['wall']:.3f} ({m['client']:.2f} + {m['server']:.2f})"
            print(f"| {case} | {args.runs} | {cell(med['before'])} | {cell(med['after'])} "
                  f"| **{ratio:.3f}** ({low:.3f}–{high:.3f}) |")
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
