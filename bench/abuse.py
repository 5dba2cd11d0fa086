#!/usr/bin/env python3
"""bench/abuse.py — the server abuses of issue 12, measured against one ftserve.

    bench/abuse.py --server PATH/ftserve [--only NAME] [--json] [--quick]
                   [--connections N] [--max-connections N] [--clients N]
                   [--leave-gib G] [--rss-limit GIB] [--dir DIR]

Writes test data in a temporary folder on /dev/shm (or under --dir), starts
PATH/ftserve over it on 127.0.0.1 (a free port) afresh for every
measurement, so that no file has been hashed yet, does to it what an
attacker would, and prints one line of figures per scenario (--json: one
JSON object per line). Run it on the build before a change and on the one
after, the same way, and compare. Server figures come from /proc/PID: VmHWM
(peak RSS), VmRSS, Threads (status), utime + stime (stat, CPU seconds).
"tcp_kernel_mib" is the kernel's TCP buffer memory on the whole machine
(/proc/net/sockstat): where replies wait when a server applies
back-pressure instead of buffering them itself.

Scenarios (--only takes any part of a name):
  cold-get-offset           --connections clients (512) each send a Get near
                            the end of a 1 TiB sparse file, then reset; for
                            20 s a fresh client tries each second: when is
                            it served, threads then, CPU in the 10 s after
                            the clients left
  checkpoints-after-leave   4 clients ask the checkpoints of a cold 1 GiB
                            file (--leave-gib) and reset after 1 s; CPU in
                            the next 10 s
  checkpoints-shared        1, 4, 8 clients ask them of a cold 1 GiB file at
                            once and wait for the answers; CPU for each
  list-digests-after-leave  a client lists 64 files of 16 MiB (--leave-gib in
                            all) with digests and resets after 0.5 s; CPU in
                            the next 10 s
  pipelined-gets            --clients (40) connections each send 32 Gets of
                            a 1 MiB file in one write and never read
  list-no-read              --clients connections each list 200,000 files
                            recursively and never read
  worst-all                 --max-connections (512) connections, none
                            reading: a quarter each of pipelined Gets and
                            listings (opened first), then of cold Gets at an
                            offset and Checkpoints of a cold file

The last three report RSS once the server has stopped growing (after 3, 5, 5
s at least, 60 s at most), and threads. --quick shrinks the data and counts
(64 connections, 16 clients, 256 MiB, 20,000 files) for a run of about a
minute. The server may not grow past --rss-limit (8 GiB): worst-all stops
opening connections once it passes 3/4 of it, and any scenario kills the
server past it; either is reported, with the connections opened. Needs
python3 and 2.5 GiB of /dev/shm (plus twice --leave-gib when it is given).
"""

import argparse
import json
import os
import resource
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 1 << 20
GIB = 1 << 30
CHUNK = 4 * MIB  # CHUNK_SIZE: Get offsets are multiples of it
STEP = 0.1  # seconds between looks at the server in every wait

# ---- the wire (PROTOCOL.md): a u32 big-endian length, then a bincode body
# with u32 LE variant indices, u64 LE integers and string lengths.

RESPONSES = ["Error", "Welcome", "Meta", "Checkpoints", "Data", "Checkpoint",
             "End", "Entries", "ListEnd", "KeepAlive"]
ERRORS = ["NotFound", "NotAFile", "PermissionDenied", "InvalidPath",
          "UnsupportedVersion", "Busy", "Internal", "BadRequest", "FileChanged",
          "NotADirectory"]


def frame(variant, fields=b""):
    body = struct.pack("<I", variant) + fields
    return struct.pack(">I", len(body)) + body


def text(value):
    raw = value.encode()
    return struct.pack("<Q", len(raw)) + raw


def hello():
    return frame(0, b"FTXF" + struct.pack("<I", 1))


def stat(path):
    return frame(1, text(path))


def get(path, offset):
    return frame(2, text(path) + struct.pack("<Q", offset))


def checkpoints(path, first, count):
    return frame(3, text(path) + struct.pack("<QI", first, count))


def listing(path, recursive, digests):
    return frame(4, text(path) + bytes([recursive, digests]))


def kind(body):
    """A reply's name, with the error code for an Error."""
    if len(body) < 4:
        return "malformed"
    (variant,) = struct.unpack_from("<I", body)
    name = RESPONSES[variant] if variant < len(RESPONSES) else f"variant {variant}"
    if variant == 0 and len(body) >= 8:
        (code,) = struct.unpack_from("<I", body, 4)
        name = f"Error({ERRORS[code] if code < len(ERRORS) else code})"
    return name


def read_exact(sock, size, deadline):
    data = b""
    while len(data) < size:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no reply in time")
        sock.settimeout(left)
        more = sock.recv(size - len(data))
        if not more:
            raise ConnectionError("closed by the server")
        data += more
    return data


def reply(sock, deadline):
    """The next frame other than a KeepAlive, by name."""
    while True:
        (size,) = struct.unpack(">I", read_exact(sock, 4, deadline))
        body = read_exact(sock, size, deadline)
        if kind(body) != "KeepAlive":
            return kind(body)


def arrived(sock):
    """The names of the whole frames already waiting on sock, read nothing."""
    try:
        data = sock.recv(1 << 16, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, OSError):
        return []
    names = []
    while len(data) >= 8:
        (size,) = struct.unpack_from(">I", data)
        if len(data) < 4 + size:
            break
        names.append(kind(data[4:4 + size]))
        data = data[4 + size:]
    return names


def connect(addr, request=b"", timeout=5):
    host, port = addr.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    if request:
        sock.sendall(request)
    return sock


def reset(sock):
    """Closes with SO_LINGER 0: the server sees a reset, as from a killed client."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def probe(addr, path):
    """What a fresh client gets: "served" (Welcome, then Meta for a Stat), or the reply."""
    try:
        with connect(addr, hello() + stat(path)) as sock:
            deadline = time.monotonic() + 3
            first = reply(sock, deadline)
            if first != "Welcome":
                return first
            second = reply(sock, deadline)
            return "served" if second == "Meta" else second
    except (OSError, TimeoutError) as err:
        return f"no answer ({err})"


# ---- the server under test


class RssLimit(Exception):
    """The server grew past what this machine can spare: it was killed."""


class Server:
    """One ftserve on a free loopback port, with its figures from /proc."""

    def __init__(self, binary, root, work, max_connections, rss_limit):
        self.rss_limit = rss_limit
        self.log = open(os.path.join(work, "ftserve.log"), "ab")
        self.proc = subprocess.Popen(
            [binary, "--listen", "127.0.0.1:0", "--max-connections", str(max_connections), root],
            stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL)
        self.addr = self.listening(time.monotonic() + 20)

    def listening(self, deadline):
        """The address from the start-up line ("… listening on IP:PORT")."""
        out = b""
        while b"\n" not in out and time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], deadline - time.monotonic())
            more = os.read(self.proc.stdout.fileno(), 4096) if ready else b""
            if ready and not more:
                break
            out += more
        words = out.decode(errors="replace").split("listening on ")
        if len(words) < 2:
            self.stop()
            sys.exit(f"abuse.py: ftserve did not start: {out!r}")
        return words[1].split()[0]

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc.stdout.close()
        self.log.close()

    def status(self):
        """VmHWM and VmRSS in bytes, and Threads."""
        figures = {}
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS"):
                    figures[key] = int(value.split()[0]) * 1024
                elif key == "Threads":
                    figures[key] = int(value)
        return figures

    def cpu(self):
        with open(f"/proc/{self.proc.pid}/stat") as stat_file:
            fields = stat_file.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def guard(self):
        """Kills the server if it has grown past the limit; its RSS."""
        rss = self.status().get("VmRSS", 0)
        if rss > self.rss_limit:
            self.stop()
            raise RssLimit(f"server killed at RSS {rss / MIB:.0f} MiB, over --rss-limit")
        return rss

    def wait(self, seconds):
        """Sleeps, watching the server's size the while."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.guard()
            time.sleep(max(0.0, min(STEP, end - time.monotonic())))

    def settle(self, least, most=60):
        """Waits `least` seconds, then until the server's RSS has grown by less
        than 1% (and 4 MiB) in the last 2 s, at most `most` seconds in all;
        the seconds waited."""
        start = time.monotonic()
        history = []
        while True:
            now = time.monotonic()
            history.append((now, self.guard()))
            past = [rss for at, rss in history if at <= now - 2]
            if now - start >= least and past and history[-1][1] - past[-1] < max(past[-1] / 100, 4 * MIB):
                return round(now - start, 1)
            if now - start >= most:
                return round(now - start, 1)
            time.sleep(STEP)

    def figures(self):
        status = self.status()
        return {"peak_rss_mib": round(status["VmHWM"] / MIB), "rss_mib": round(status["VmRSS"] / MIB),
                "threads": status["Threads"], "tcp_kernel_mib": tcp_kernel_mib()}


def tcp_kernel_mib():
    with open("/proc/net/sockstat") as sockstat:
        for line in sockstat:
            if line.startswith("TCP:"):
                words = line.split()
                return round(int(words[words.index("mem") + 1]) * PAGE / MIB)
    return None


# ---- test data, written once per run for the scenarios that need it


class Data:
    """The served folder; each part is written the first time it is asked for."""

    def __init__(self, root, sizes):
        self.root, self.sizes, self.made = root, sizes, set()
        os.makedirs(root)

    def need(self, part):
        if part not in self.made:
            print(f"abuse.py: writing {part}", file=sys.stderr)
            getattr(self, "make_" + part)(os.path.join(self.root, part))
            self.made.add(part)
        return part

    def make_sparse(self, folder):
        os.makedirs(folder)
        with open(os.path.join(folder, "huge.bin"), "wb") as out:
            out.truncate(1 << 40)
        with open(os.path.join(folder, "small.txt"), "wb") as out:
            out.write(b"hello from ft\n")

    def make_rand(self, folder):
        os.makedirs(folder)
        write_random(os.path.join(folder, "r.bin"), self.sizes["rand_mib"])

    def make_leave(self, folder):
        os.makedirs(folder)
        write_random(os.path.join(folder, "r.bin"), self.sizes["leave_mib"])

    def left(self):
        """The file the after-leave scenarios ask the checkpoints of: the
        shared 1 GiB one unless --leave-gib asks for another size."""
        same = self.sizes["leave_mib"] == self.sizes["rand_mib"]
        return self.need("rand" if same else "leave") + "/r.bin"

    def make_tree(self, folder):
        os.makedirs(folder)
        for index in range(self.sizes["tree_files"]):
            write_random(os.path.join(folder, f"f{index:03}.bin"), 16)

    def make_one(self, folder):
        os.makedirs(folder)
        write_random(os.path.join(folder, "one.bin"), 1)

    def make_many(self, folder):
        os.makedirs(folder)
        flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY
        for index in range(self.sizes["many_files"]):
            os.close(os.open(os.path.join(folder, f"f{index:06}"), flags, 0o644))


def write_random(path, mib):
    with open(path, "wb") as out:
        for _ in range(mib):
            out.write(os.urandom(MIB))


# ---- the scenarios: each starts its own server and returns its figures


def near_end(size):
    return (size - 1) // CHUNK * CHUNK


def wait_answering(socks, seconds):
    """Waits until the server has begun to answer the request on every
    socket (a Welcome, then any frame: Meta, or a KeepAlive while it works);
    on how many it has."""
    end = time.monotonic() + seconds
    while True:
        done = sum(1 for sock in socks if arrived(sock)[:1] == ["Welcome"] and len(arrived(sock)) > 1)
        if done == len(socks) or time.monotonic() >= end:
            return done
        time.sleep(STEP)


def cpu_after_leave(server, socks, seconds=10):
    """Resets every client and returns the server's CPU seconds in the next `seconds`."""
    for sock in socks:
        reset(sock)
    before = server.cpu()
    server.wait(seconds)
    return round(server.cpu() - before, 2)


def cold_get_offset(run):
    data = run.data.need("sparse")
    huge = 1 << 40
    with run.server() as server:
        start = time.monotonic()
        socks = []
        for _ in range(run.args.connections):
            socks.append(connect(server.addr, hello() + get(f"{data}/huge.bin", near_end(huge))))
        sent = time.monotonic() - start
        started = wait_answering(socks, 30)
        for sock in socks:
            reset(sock)
        left = time.monotonic()
        # Sampled on time whatever a probe of a starved server takes.
        cpu, cpu_10s = server.cpu(), []
        timer = threading.Timer(10, lambda: cpu_10s.append(round(server.cpu() - cpu, 2)))
        timer.daemon = True
        timer.start()
        try:
            served_after, answer = None, "not probed"
            while time.monotonic() < left + 20 and served_after is None:
                tried = time.monotonic()
                answer = probe(server.addr, f"{data}/small.txt")
                if answer == "served":
                    served_after = round(time.monotonic() - left, 1)
                server.wait(min(tried + 1, left + 20) - time.monotonic())
            probed = round(time.monotonic() - left, 1)
            server.wait(left + 10.5 - time.monotonic())
            timer.join(timeout=5)
        finally:
            timer.cancel()
        figures = server.figures()
        return {"connections": run.args.connections, "sent_s": round(sent, 2), "started": started,
                "fresh_client": answer, "served_after_s": served_after,
                "probed_for_s": probed, "threads": figures["threads"],
                "cpu_10s_after_leave": cpu_10s[0] if cpu_10s else None, "peak_rss_mib": figures["peak_rss_mib"]}


def checkpoints_after_leave(run):
    path = run.data.left()
    with run.server() as server:
        socks = [connect(server.addr, hello() + checkpoints(path, 1, 1)) for _ in range(4)]
        server.wait(1)
        answered = sum(1 for sock in socks if "Checkpoints" in arrived(sock))
        cpu_before = server.cpu()
        cpu = cpu_after_leave(server, socks)
        return {"clients": 4, "file_mib": run.sizes["leave_mib"], "answered_before_leaving": answered,
                "cpu_first_1s": round(cpu_before, 2), "cpu_10s_after_leave": cpu,
                "threads": server.figures()["threads"]}


def checkpoints_shared(run):
    data = run.data.need("rand")
    figures = {"file_mib": run.sizes["rand_mib"]}
    for clients in (1, 4, 8):
        with run.server() as server:
            before, start = server.cpu(), time.monotonic()
            socks = [connect(server.addr, hello() + checkpoints(f"{data}/r.bin", 1, 1))
                     for _ in range(clients)]
            deadline = start + 120
            answers = [(reply(sock, deadline), reply(sock, deadline)) for sock in socks]
            wall = time.monotonic() - start
            good = sum(1 for answer in answers if answer == ("Welcome", "Checkpoints"))
            figures[f"cpu_{clients}"] = round(server.cpu() - before, 2)
            figures[f"wall_{clients}"] = round(wall, 2)
            figures[f"answered_{clients}"] = good
            for sock in socks:
                sock.close()
    return figures


def list_digests_after_leave(run):
    data = run.data.need("tree")
    with run.server() as server:
        sock = connect(server.addr, hello() + listing(data, True, True))
        server.wait(0.5)
        cpu_before = server.cpu()
        cpu = cpu_after_leave(server, [sock])
        return {"files": run.sizes["tree_files"], "file_mib": 16, "cpu_first_0.5s": round(cpu_before, 2),
                "cpu_10s_after_leave": cpu, "threads": server.figures()["threads"]}


def pipelined(path):
    return hello() + get(path, 0) * 32


def never_reading(run, request, least):
    """--clients connections each send `request` and never read; figures once
    the server stops growing (after `least` s at least)."""
    with run.server() as server:
        socks = [connect(server.addr, request) for _ in range(run.args.clients)]
        waited = server.settle(least)
        welcomed = sum(1 for sock in socks if arrived(sock)[:1] == ["Welcome"])
        figures = {"clients": len(socks), "welcomed": welcomed, "settled_s": waited, **server.figures(),
                   "cpu": round(server.cpu(), 2)}
        for sock in socks:
            reset(sock)
        return figures


def pipelined_gets(run):
    data = run.data.need("one")
    return never_reading(run, pipelined(f"{data}/one.bin"), 3)


def list_no_read(run):
    data = run.data.need("many")
    figures = never_reading(run, hello() + listing(data, True, False), 5)
    return {"entries": run.sizes["many_files"], **figures}


def worst_all(run):
    """Half the connections hold memory (pipelined Gets, listings): opened
    first, and given time to grow, while the server can still accept and
    serve them. Then the other half hold CPU (cold Gets at an offset,
    Checkpoints of a cold file), which on a server that does not bound its
    hashing starve everything else, accepting included."""
    sparse, rand, one, many = (run.data.need(part) for part in ("sparse", "rand", "one", "many"))
    memory = [pipelined(f"{one}/one.bin"), hello() + listing(many, True, False)]
    cpu = [hello() + get(f"{sparse}/huge.bin", near_end(1 << 40)),
           hello() + checkpoints(f"{rand}/r.bin", 1, 1)]
    wanted = run.args.max_connections
    with run.server() as server:
        socks, notes, figures = [], [], {"wanted": wanted}
        try:
            for requests, count in ((memory, wanted // 2), (cpu, wanted - wanted // 2)):
                stopped = open_watched(server, requests, count, socks)
                if stopped:
                    notes.append(stopped)
                figures["settled_s"] = figures.get("settled_s", 0) + server.settle(5)
            figures.update(server.figures(), cpu=round(server.cpu(), 2))
        except RssLimit as killed:
            notes.append(str(killed))
        figures["connections"] = len(socks)
        figures["welcomed"] = sum(1 for sock in socks if arrived(sock)[:1] == ["Welcome"])
        figures["capped"] = "; ".join(notes) or None
        for sock in socks:
            reset(sock)
        return figures


def open_watched(server, requests, count, socks):
    """Opens `count` connections onto `socks`, sending `requests` in turn, 16
    at a time; stops early, saying why, once the server's RSS passes 3/4 of
    its limit (what is under way still adds to it) or a connection cannot be
    made."""
    limit = server.rss_limit
    opened = 0
    while opened < count:
        for _ in range(min(16, count - opened)):
            try:
                socks.append(connect(server.addr, requests[opened % len(requests)], timeout=30))
            except OSError as err:
                return f"opened {opened} of {count}: connecting failed: {err}"
            opened += 1
        time.sleep(0.02)
        if server.guard() > limit * 3 / 4:
            return f"opened {opened} of {count}: server RSS over {limit * 3 / 4 / GIB:g} GiB"
    return None


SCENARIOS = [("cold-get-offset", cold_get_offset),
             ("checkpoints-after-leave", checkpoints_after_leave),
             ("checkpoints-shared", checkpoints_shared),
             ("list-digests-after-leave", list_digests_after_leave),
             ("pipelined-gets", pipelined_gets),
             ("list-no-read", list_no_read),
             ("worst-all", worst_all)]


class Run:
    """What every scenario needs: the options, the data, a way to start a server."""

    def __init__(self, args, work, sizes):
        self.args, self.work, self.sizes = args, work, sizes
        self.rss_limit = int(args.rss_limit * GIB)
        self.data = Data(os.path.join(work, "data"), sizes)
        self.running = None

    def server(self):
        self.running = Server(self.args.server, self.data.root, self.work,
                              self.args.max_connections, self.rss_limit)
        return self

    def __enter__(self):
        return self.running

    def __exit__(self, *_):
        self.running.stop()
        self.running = None


def show(name, figures, as_json):
    if as_json:
        print(json.dumps({"scenario": name, **figures}), flush=True)
    else:
        cells = ", ".join(f"{key}={value}" for key, value in figures.items())
        print(f"{name}: {cells}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", required=True, help="the ftserve binary to measure")
    parser.add_argument("--only", default="", help="run only the scenarios whose name contains this")
    parser.add_argument("--json", action="store_true", help="one JSON object per scenario")
    parser.add_argument("--quick", action="store_true", help="smaller data and counts")
    parser.add_argument("--connections", type=int, help="cold-get-offset clients (512; --quick 64)")
    parser.add_argument("--max-connections", type=int,
                        help="the server's --max-connections, and worst-all's clients (512; --quick 64)")
    parser.add_argument("--clients", type=int, help="pipelined-gets and list-no-read clients (40; --quick 16)")
    parser.add_argument("--leave-gib", type=float,
                        help="GiB hashed in the after-leave scenarios (1; --quick 0.25)")
    parser.add_argument("--rss-limit", type=float, default=8.0, help="GiB the server may reach (8)")
    parser.add_argument("--dir", default="/dev/shm", help="where the temporary folder goes (/dev/shm)")
    args = parser.parse_args()
    quick = args.quick
    args.server = os.path.abspath(args.server)
    args.connections = args.connections or (64 if quick else 512)
    args.max_connections = args.max_connections or (64 if quick else 512)
    args.clients = args.clients or (16 if quick else 40)
    rand_mib = 256 if quick else 1024
    leave_mib = round(args.leave_gib * 1024) if args.leave_gib else rand_mib
    sizes = {"rand_mib": rand_mib, "leave_mib": leave_mib, "tree_files": max(1, leave_mib // 16),
             "many_files": 20_000 if quick else 200_000}
    # The clients' sockets, as many as the server's limit allows and more.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = max(args.connections, args.max_connections, args.clients) + 256
    if hard != resource.RLIM_INFINITY and hard < need:
        sys.exit(f"abuse.py: needs {need} file descriptors, the hard limit is {hard}")
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else need, hard))
    chosen = [(name, scenario) for name, scenario in SCENARIOS if args.only in name]
    if not chosen:
        sys.exit(f"abuse.py: no scenario matches {args.only!r}")
    work = tempfile.mkdtemp(prefix="ftabuse.", dir=args.dir)
    run = Run(args, work, sizes)
    print(f"abuse.py: {args.server}, load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores",
          file=sys.stderr)
    try:
        for name, scenario in chosen:
            print(f"abuse.py: {name}", file=sys.stderr)
            try:
                figures = scenario(run)
            except RssLimit as limit:
                figures = {"stopped": str(limit)}
            except OSError as err:
                figures = {"failed": f"{type(err).__name__}: {err}"}
            show(name, figures, args.json)
    finally:
        if run.running:
            run.running.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
