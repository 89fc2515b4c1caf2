#!/usr/bin/env python3
"""Runs the multiproc benchmarks, Python's multiprocessing and the machine's limits in one go
and prints them side by side, with the ratios and the targets of issue 5.

    python3 benchmarks/run.py                  # builds into build-bench/ if needed, then runs
    python3 benchmarks/run.py --build-dir DIR  # use (or build) that CMake build directory
    python3 benchmarks/run.py --bench PATH --limits PATH   # use these binaries as they are
    python3 benchmarks/run.py --mpi            # and the MPI section (about 5 more minutes)
    python3 benchmarks/run.py --mpi-only       # the MPI section alone, to RESULTS-mpi.md
    python3 benchmarks/run.py --scaling        # scaling tables alone, to RESULTS-scaling.md
    python3 benchmarks/run.py --portable       # and the portable POSIX build beside (~1 min)
    python3 benchmarks/run.py --portable-only  # that section alone, to RESULTS-portable.md

Steps: multiproc_limits (fork, posix_spawn, pipe ping-pong, memcpy), multiproc_bench (fork
and spawn; forkserver for the start rows), python_bench.py (fork, spawn, forkserver). Each Google Benchmark runs
--repetitions times; every number shown is the median of the repetitions, with the spread
(max - min) / (2 * median) as +-%. The table goes to stdout and to benchmarks/RESULTS.md,
the speed-ups as a picture to benchmarks/speed.png (chart.py; needs matplotlib).
About two to three minutes on a 2-core machine (plus the build, the first time).

The MPI section (--mpi, issue 12) runs the mpi start method beside mpi4py.futures'
MPIPoolExecutor, each as a whole `mpiexec -n 4` job (benchmarks/mpi_compare.py), in a build
with -DMULTIPROC_MPI=ON (--mpi-build-dir, built if needed). Needs openmpi-bin and
python3-mpi4py (scripts/install-deps.sh mpi). mpi4py's map of 1 M items (its default chunk is
one item) takes about 5 minutes alone, hence one repetition by default (--mpi-repetitions).

The scaling tables (--scaling, issue 15) come from benchmarks/scaling.cpp, one program's run:
8 consecutive batches of apply_async on one pool (with Python's same batches beside them, from
benchmarks/scaling.py), throughput on pools of 1, 2, 4 and 8 workers, and process start cost
as the parent holds 0, 100 MB and 1 GB of touched memory. About half a minute.

The portable section (--portable, issue 16) runs the same multiproc_bench rows
(--portable-filter) on the Linux-native build and on a build with
-DMULTIPROC_POSIX_PORTABLE=ON (--portable-build-dir, built if needed: the POSIX backend from
portable POSIX calls only, as on macOS), one repetition of each in turn, --portable-repetitions
times, with the ratio and what the Linux extras (pidfd, memfd through /proc/<pid>/fd, futex and
robust mutexes, PR_SET_PDEATHSIG, the fork server) buy on each row. About a minute.
"""
import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import mpi_compare

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

TIME_UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}

LIMIT_LABELS = {
    "BM_fork_exit_wait": "fork + child _exit + waitpid",
    "BM_posix_spawn_self": "posix_spawn of the program itself + ready byte + wait",
    "BM_pipe_pingpong/0": "pipe ping-pong, 1 byte each way (scheduler places the processes)",
    "BM_pipe_pingpong/1": "pipe ping-pong, both processes pinned to one CPU",
    "BM_pipe_pingpong/2": "pipe ping-pong, processes pinned to different CPUs",
    "BM_memcpy/67108864": "memcpy 64 MiB",
    "BM_memcpy/268435456": "memcpy 256 MiB",
    "BM_memcpy_fresh_x4/268435456": "memcpy 256 MiB into fresh pages, four times",
}

# (workload key, label, limit key per start method or None). Keys are shared by
# multiproc_bench.cpp and python_bench.py.
WORKLOADS = [
    ("process_start_join", "process start+join",
     {"fork": "BM_fork_exit_wait", "spawn": "BM_posix_spawn_self",
      "forkserver": "BM_fork_exit_wait"}),
    ("pool_start_close_join/2", "pool(2) start+close+join", None),
    ("pool_start_close_join/cpu_count", "pool(cpu_count) start+close+join", None),
    ("apply_roundtrip", "apply round trip", {"fork": "BM_pipe_pingpong/0",
                                             "spawn": "BM_pipe_pingpong/0"}),
    ("apply_async/20000", "apply_async x20000 + get", None),
    ("as_completed/1000", "as_completed over 1000 results (Python: ProcessPoolExecutor)", None),
    ("map_chunksize1/100000", "map 100k, chunksize 1", None),
    ("map_default/100000", "map 100k, default chunksize", None),
    ("map_default/1000000", "map 1M, default chunksize", None),
    ("payload/1KiB", "1 KiB argument", None),
    ("payload/1MiB", "1 MiB argument", None),
    ("payload/64MiB", "64 MiB argument", {"fork": "BM_memcpy/67108864",
                                          "spawn": "BM_memcpy/67108864"}),
    ("payload/256MiB", "256 MiB argument", {"fork": "BM_memcpy/268435456",
                                            "spawn": "BM_memcpy/268435456"}),
    ("payload_round_trip/256MiB", "256 MiB by value, there and back",
     {"fork": "BM_memcpy_fresh_x4/268435456", "spawn": "BM_memcpy_fresh_x4/268435456"}),
    ("queue_transfer/100000", "queue: 100k items, producer process -> consumer", None),
    ("pipe_pingpong", "pipe ping-pong, one int each way", {"fork": "BM_pipe_pingpong/0",
                                                         "spawn": "BM_pipe_pingpong/0"}),
    ("queue_item/64MiB", "queue: one 64 MiB item, and its size back", None),
    ("mutex_uncontended", "mutex acquire+release, uncontended", None),
    ("mutex_pingpong", "mutex handed back and forth, two processes",
     {"fork": "BM_pipe_pingpong/0", "spawn": "BM_pipe_pingpong/0"}),
    ("shared_array_sum/256MiB", "256 MiB shared array to a pool task, summed", None),
    ("shared_array_handover/256MiB", "256 MiB shared array to a pool task, hand-over only",
     None),
]
METHODS = ["fork", "spawn", "forkserver"]
# multiproc's forkserver is measured only where starting is the workload (issue 13): a row for
# another workload on forkserver appears only if multiproc_bench measured it.
FORKSERVER_WORKLOADS = {"process_start_join", "pool_start_close_join/2",
                        "pool_start_close_join/cpu_count"}
PY_METHODS = ["fork", "spawn", "forkserver"]

# The portable POSIX section (issue 16): the same multiproc_bench rows from a build with
# -DMULTIPROC_POSIX_PORTABLE=ON (portable POSIX calls only, as macOS has) beside the Linux-native
# build, and what the Linux extras buy on each row. Keys as in WORKLOADS.
PORTABLE_OPTIONS = ["-DMULTIPROC_POSIX_PORTABLE=ON", "-DMULTIPROC_BENCHMARKS=ON",
                    "-DMULTIPROC_TESTS=OFF"]
PORTABLE_FILTER = ("^(process_start_join|pool_start_close_join/2|apply_roundtrip|"
                   "apply_async/20000|map_chunksize1/100000|payload/64MiB|queue_transfer/100000|"
                   "pipe_pingpong|mutex_uncontended|mutex_pingpong)/")
PORTABLE_BUYS = {
    "process_start_join": "pidfd: join sleeps until the exit (portable: polls waitid, sleeping "
                          "0.2 ms, doubling up to 20 ms)",
    "pool_start_close_join/2": "pidfd: each worker is reaped as it exits (portable: waitid "
                               "polled with backoff); PR_SET_PDEATHSIG (portable: a watcher "
                               "thread per worker)",
    "apply_roundtrip": "none on this path: the same channel messages in both builds",
    "apply_async/20000": "the claim ledger's block (a worker holds many tiny tasks): memfd "
                         "opened through /proc/<pid>/fd (portable: shm_open'd, sent once per "
                         "worker by SCM_RIGHTS)",
    "map_chunksize1/100000": "as apply_async: the claim ledger's block, memfd (portable: "
                             "shm_open'd, sent by SCM_RIGHTS)",
    "payload/64MiB": "memfd payload block, pwrite'd, opened through /proc/<pid>/fd (portable: "
                     "shm_open'd + unlinked, filled through the mapping, sent by SCM_RIGHTS)",
    "queue_transfer/100000": "futex wake-ups and a robust mutex (portable: a lock word and a "
                             "pthread mutex + condvar); the producer's join on a pidfd",
    "pipe_pingpong": "none: the same socket calls in both builds (a control row for the noise)",
    "mutex_uncontended": "a robust pthread mutex (portable: compare-and-swap of a pid + ticket "
                         "lock word)",
    "mutex_pingpong": "futex sleep and wake (portable: sleeping on a process-shared pthread "
                      "mutex + condvar, rung by the releaser)",
}
PORTABLE_FORKSERVER = ("the fork server itself (it needs pidfds and SO_PASSCRED): the "
                       "portable build has none")

# The targets of issues 5 and 11, as time ratios (lower is better) or an absolute time, per
# (workload, start method):
# ("py", x): multiproc time <= Python time (same start method) / x, i.e. at least x times faster;
# ("limit", x): multiproc time <= x * the limit's time. For bandwidth, ">= 0.5x memcpy" is a
# time at most 2x memcpy's for the same bytes.
# ("under", s): multiproc time itself <= s seconds (issue 11: the 256 MiB hand-over < 1 ms).
# ("copies", x): at least x times the speed of the four-copy limit, i.e. multiproc time <=
# the limit's time / x (issue 11: a by-value round trip against four copies into fresh pages).
TARGETS = {
    ("process_start_join", "fork"): [("py", 8), ("limit", 1.5)],
    ("process_start_join", "spawn"): [("py", 20), ("limit", 1.3)],
    ("pool_start_close_join/2", "fork"): [("py", 4)],
    ("pool_start_close_join/2", "spawn"): [("py", 15)],
    ("apply_roundtrip", "fork"): [("limit", 1.3)],
    ("apply_roundtrip", "spawn"): [("limit", 1.3)],
    ("apply_async/20000", "fork"): [("py", 10)],
    ("apply_async/20000", "spawn"): [("py", 10)],
    ("map_chunksize1/100000", "fork"): [("py", 10)],
    ("map_chunksize1/100000", "spawn"): [("py", 10)],
    ("map_default/1000000", "fork"): [("py", 5)],
    ("map_default/1000000", "spawn"): [("py", 5)],
    ("payload/256MiB", "fork"): [("limit", 2.0)],
    ("payload/256MiB", "spawn"): [("limit", 2.0)],
    ("payload_round_trip/256MiB", "fork"): [("copies", 0.8)],
    ("payload_round_trip/256MiB", "spawn"): [("copies", 0.8)],
    ("queue_transfer/100000", "fork"): [("py", 20)],
    ("queue_transfer/100000", "spawn"): [("py", 20)],
    ("pipe_pingpong", "fork"): [("limit", 1.3)],
    ("pipe_pingpong", "spawn"): [("limit", 1.3)],
    ("queue_item/64MiB", "fork"): [("py", 3)],
    ("queue_item/64MiB", "spawn"): [("py", 3)],
    # Issue 13: the fork server starts a child about as fast as fork does, and a pool far
    # faster than Python's forkserver (which starts each worker through a Python server).
    ("process_start_join", "forkserver"): [("limit", 1.5)],
    ("pool_start_close_join/2", "forkserver"): [("py", 20)],
    ("mutex_uncontended", "fork"): [("py", 10)],
    ("mutex_uncontended", "spawn"): [("py", 10)],
    ("mutex_pingpong", "fork"): [("limit", 1.3)],
    ("mutex_pingpong", "spawn"): [("limit", 1.3)],
    ("shared_array_sum/256MiB", "fork"): [("py", 5)],
    ("shared_array_sum/256MiB", "spawn"): [("py", 5)],
    ("shared_array_handover/256MiB", "fork"): [("under", 1e-3)],
    ("shared_array_handover/256MiB", "spawn"): [("under", 1e-3)],
}


def target_text(kind, x):
    if kind == "under":
        return f"under {fmt_time(x)}"
    if kind == "py":
        return f">={x:g}x faster than Py"
    if kind == "copies":
        return f">={x:g}x the four-copy limit"
    if x == 2.0:
        return ">=0.5x memcpy bandwidth"
    return f"<={x:g}x limit"


# ---------------------------------------------------------------------------------------------
# Finding and building the binaries


def find_binary(build_dir, name):
    for root, _dirs, files in os.walk(build_dir):
        if name in files:
            path = os.path.join(root, name)
            if os.access(path, os.X_OK):
                return path
    return None


def build(build_dir, log):
    log(f"== building into {build_dir} (Release, MULTIPROC_BENCHMARKS=ON)")
    subprocess.run(["cmake", "-S", REPO, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Release",
                    "-DMULTIPROC_BENCHMARKS=ON", "-DMULTIPROC_TESTS=OFF",
                    "-DMULTIPROC_EXAMPLES=OFF"], check=True, stdout=sys.stderr)
    subprocess.run(["cmake", "--build", build_dir, "--target", "multiproc_bench",
                    "multiproc_limits", "-j", str(os.cpu_count() or 2)],
                   check=True, stdout=sys.stderr)


def native_binaries(args, log):
    """multiproc_bench and multiproc_limits of the Linux-native build: --bench and --limits as
    given, else those of --build-dir, built (or brought up to date) unless --no-build."""
    bench, limits = args.bench, args.limits
    if not bench or not limits:
        build_dir = os.path.abspath(args.build_dir)
        found_b = find_binary(build_dir, "multiproc_bench") if os.path.isdir(build_dir) else None
        found_l = find_binary(build_dir, "multiproc_limits") if os.path.isdir(build_dir) else None
        if (not bench and not found_b) or (not limits and not found_l):
            if args.no_build:
                sys.exit(f"run.py: multiproc_bench / multiproc_limits not found in {build_dir}")
            if not shutil.which("cmake"):
                sys.exit("run.py: cmake not found; pass --bench and --limits")
            build(build_dir, log)
        else:
            # Found: still bring them up to date with the sources (a no-op when they are).
            if not args.no_build and os.path.exists(os.path.join(build_dir, "CMakeCache.txt")):
                subprocess.run(["cmake", "--build", build_dir, "--target", "multiproc_bench",
                                "multiproc_limits", "-j", str(os.cpu_count() or 2)],
                               check=True, stdout=sys.stderr)
        bench = bench or find_binary(build_dir, "multiproc_bench")
        limits = limits or find_binary(build_dir, "multiproc_limits")
    return bench, limits


def build_variant(build_dir, options, target, log):
    """Brings `target` in `build_dir` up to date, configuring the directory the first time as a
    Release build with the CMake `options` (the MPI build, the portable POSIX build)."""
    if not os.path.exists(os.path.join(build_dir, "CMakeCache.txt")):
        log(f"== building into {build_dir} (Release, "
            f"{', '.join(o.removeprefix('-D') for o in options)})")
        subprocess.run(["cmake", "-S", REPO, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Release",
                        *options, "-DMULTIPROC_EXAMPLES=OFF"], check=True, stdout=sys.stderr)
    subprocess.run(["cmake", "--build", build_dir, "--target", target,
                    "-j", str(os.cpu_count() or 2)], check=True, stdout=sys.stderr)


def scaling_section(args, log):
    """The scaling tables (multiproc_scaling) and the batches beside Python's, as Markdown."""
    build_dir = os.path.abspath(args.build_dir)
    if not args.no_build:
        if not os.path.exists(os.path.join(build_dir, "CMakeCache.txt")):
            build(build_dir, log)
        subprocess.run(["cmake", "--build", build_dir, "--target", "multiproc_scaling",
                        "-j", str(os.cpu_count() or 2)], check=True, stdout=sys.stderr)
    binary = find_binary(build_dir, "multiproc_scaling")
    if not binary:
        sys.exit(f"run.py: multiproc_scaling not found in {build_dir}")
    # Each part in a process of its own: what one part leaves in the heap (a pool's threads'
    # arenas, a million results) would make the next part's forks copy more.
    text = ""
    for part in ("batches", "pools", "memory"):
        log(f"== {binary} {part}")
        text += subprocess.run([binary, part], check=True, capture_output=True, text=True,
                               timeout=900).stdout
    log("== python3 benchmarks/scaling.py")
    py = json.loads(subprocess.run([sys.executable, os.path.join(HERE, "scaling.py")],
                                   check=True, capture_output=True, text=True,
                                   timeout=900).stdout)["fork"]
    mine = [float(m.group(1)) for m in re.finditer(r"^\| \d+ \| [0-9.]+ \| (\d+) \|$",
                                                     text, re.M)][:len(py)]
    lines = [text.rstrip(), "", "### The batches beside Python's (Pool(2), fork, the same 8 "
             "batches in one program)", "",
             "| batch | multiproc tasks/s | Python tasks/s | speed-up |", "|---|---|---|---|"]
    for i, (m, p) in enumerate(zip(mine, py), 1):
        lines.append(f"| {i} | {m:.0f} | {p:.0f} | {m / p:.1f}x |")
    if mine:
        spread = (max(mine) - min(mine)) / statistics.median(mine) * 100
        worst = min(m / p for m, p in zip(mine, py))
        lines += ["", f"Targets (issue 15): spread between batches <= 25 %: "
                  f"{spread:.0f} % -- {'met' if spread <= 25 else 'MISSED'}; every batch "
                  f">= 25x Python's: the slowest is {worst:.1f}x -- "
                  f"{'met' if worst >= 25 else 'MISSED'}."]
    return lines


def mpi_section(args, log):
    """The MPI rows as lines of text (also valid Markdown inside a code block)."""
    build_dir = os.path.abspath(args.mpi_build_dir)
    if not args.no_build:
        build_variant(build_dir, ["-DMULTIPROC_MPI=ON"], "multiproc_mpi_bench", log)
    t0 = time.perf_counter()
    try:
        results = mpi_compare.compare(build_dir, args.mpi_repetitions, log)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as failure:
        sys.exit(f"run.py: the MPI section failed: {failure}")
    return [f"mpi start method beside mpi4py.futures.MPIPoolExecutor, "
            f"{mpi_compare.RANKS} ranks of this machine, median of {args.mpi_repetitions} "
            f"job(s) each ({time.perf_counter() - t0:.0f} s):", "",
            *mpi_compare.table_lines(results)]


def portable_section(args, log, bench):
    """multiproc_bench's --portable-filter rows from `bench` (Linux-native) and from the portable
    POSIX build, run in turn, as Markdown lines (issue 16)."""
    build_dir = os.path.abspath(args.portable_build_dir)
    cache = os.path.join(build_dir, "CMakeCache.txt")
    if os.path.exists(cache):
        with open(cache) as f:
            if not re.search(r"^MULTIPROC_POSIX_PORTABLE:BOOL=(ON|1|TRUE|YES)$", f.read(),
                             re.M | re.I):
                sys.exit(f"run.py: {build_dir} is not configured with "
                         "-DMULTIPROC_POSIX_PORTABLE=ON; name another --portable-build-dir")
    if not args.no_build:
        build_variant(build_dir, PORTABLE_OPTIONS, "multiproc_bench", log)
    portable = find_binary(build_dir, "multiproc_bench") if os.path.isdir(build_dir) else None
    if not portable:
        sys.exit(f"run.py: multiproc_bench not found in {build_dir}")
    # The same rows on both builds, one repetition of each in turn, so that the machine's load
    # changing during the run (another program, a build) falls on both alike instead of
    # reading as a difference between them.
    samples, times = ({}, {}), [0.0, 0.0]
    for _round in range(args.portable_repetitions):
        for side, binary in enumerate((bench, portable)):
            res, _ctx, elapsed = run_gbench(binary,
                                            [f"--benchmark_filter={args.portable_filter}"], 1,
                                            args.min_time, log, 300)
            times[side] += elapsed
            for name, r in res.items():
                samples[side].setdefault(name, []).append(r["median"])
    results = [{name: stats(v) for name, v in side.items()} for side in samples]
    return [f"multiproc_bench of the Linux-native build ({os.path.relpath(bench, REPO)}) and of "
            f"the portable POSIX build ({os.path.relpath(portable, REPO)}: "
            "-DMULTIPROC_POSIX_PORTABLE=ON, portable POSIX calls only, as on macOS), the same "
            f"rows (`--benchmark_filter='{args.portable_filter}'`), {args.portable_repetitions} "
            f"repetition(s) x >= {args.min_time:g} s of each, the two builds in turn; times: "
            f"native {times[0]:.0f} s, portable {times[1]:.0f} s.",
            "Each cell: median of the repetitions ±(max-min)/(2*median). portable/native is a "
            "time ratio: above 1 the portable build is slower, by what the Linux extras buy "
            "there. The control rows (apply round trip, pipe ping-pong: the same code in both "
            "builds) show how far the ratio moves by noise alone.", "",
            *portable_table(*results)]


# ---------------------------------------------------------------------------------------------
# Running


def run_gbench(binary, args, reps, min_time, log, timeout):
    """Runs one Google Benchmark binary; returns {name: stats} from the raw repetitions."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out_path = f.name
    cmd = [binary, f"--benchmark_repetitions={reps}", f"--benchmark_min_time={min_time}",
           f"--benchmark_out={out_path}", "--benchmark_out_format=json",
           "--benchmark_display_aggregates_only=true"] + args
    log("== " + " ".join(cmd))
    t0 = time.perf_counter()
    try:
        # The console output goes to stderr as progress; the JSON comes from the out file so
        # nothing a child process prints can corrupt it.
        proc = subprocess.run(cmd, stdout=sys.stderr, timeout=timeout)
        if proc.returncode != 0:
            log(f"!! {os.path.basename(binary)} exited with {proc.returncode}")
    except subprocess.TimeoutExpired:
        log(f"!! {os.path.basename(binary)} killed after {timeout} s")
    elapsed = time.perf_counter() - t0
    try:
        with open(out_path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        log(f"!! no usable JSON from {binary}: {e}")
        data = {"benchmarks": [], "context": {}}
    finally:
        os.unlink(out_path)
    return collect(data), data.get("context", {}), elapsed


def collect(data):
    runs = {}
    for b in data.get("benchmarks", []):
        if b.get("run_type") != "iteration" or b.get("error_occurred"):
            continue
        name = b["run_name"]
        if name.endswith("/real_time"):
            name = name[: -len("/real_time")]
        seconds = b["real_time"] * TIME_UNITS[b.get("time_unit", "ns")]
        runs.setdefault(name, []).append((seconds, b.get("bytes_per_second")))
    return {name: stats([s for s, _ in v], [bps for _, bps in v if bps]) for name, v in
            runs.items()}


def stats(samples, bps=()):
    r = {"median": statistics.median(samples), "min": min(samples), "max": max(samples),
         "reps": len(samples)}
    if bps:
        r["bytes_per_second"] = statistics.median(bps)
    return r


def run_python(script_args, log, timeout):
    """Runs python_bench.py; past `timeout` it is stopped, keeping every workload it had
    measured (it saves its JSON after each one)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out_path = f.name
    cmd = [sys.executable, os.path.join(HERE, "python_bench.py"), "--out", out_path] + script_args
    log("== " + " ".join(cmd))
    t0 = time.perf_counter()
    try:
        subprocess.run(cmd, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        log(f"!! python_bench.py stopped after {timeout} s: the workloads it had not reached "
            "show as '-'")
    try:
        with open(out_path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        log(f"!! python_bench.py gave no result: {e}")
        data = {"methods": {}}
    finally:
        for path in (out_path, out_path + ".part"):
            if os.path.exists(path):
                os.unlink(path)
    return data, time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------
# Formatting


def fmt_time(s):
    if s is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if s >= scale:
            v = s / scale
            return f"{v:.3g} {unit}" if v < 100 else f"{v:.0f} {unit}"
    return f"{s / 1e-9:.3g} ns"


def fmt_stat(r):
    if not r:
        return "-"
    spread = (r["max"] - r["min"]) / (2 * r["median"]) * 100 if r["median"] else 0
    return f"{fmt_time(r['median'])} ±{spread:.0f}%"


def fmt_ratio(x):
    if x is None:
        return "-"
    if x < 1:
        return f"{x:.3f} (1/{1 / x:.1f})"
    return f"{x:.2f}"


def build_rows(mp_res, py_res, lim_res):
    rows = []
    for key, label, limits in WORKLOADS:
        for method in METHODS:
            mp = mp_res.get(f"{key}/{method}")
            if method == "forkserver" and not mp and key not in FORKSERVER_WORKLOADS:
                continue
            py = {m: py_res.get(m, {}).get(key) for m in PY_METHODS}
            if not mp and not any(py.values()):
                continue  # not measured in this run (--start-only, --bench-filter)
            lim_key = limits.get(method) if limits else None
            lim = lim_res.get(lim_key) if lim_key else None
            py_same = py.get(method)
            r_py = mp["median"] / py_same["median"] if mp and py_same else None
            r_lim = mp["median"] / lim["median"] if mp and lim else None
            checks = []
            for kind, x in TARGETS.get((key, method), []):
                if kind == "under":
                    got, bound = (mp["median"] if mp else None), x
                else:
                    got = r_py if kind == "py" else r_lim
                    bound = 1 / x if kind in ("py", "copies") else x
                if got is None:
                    checks.append((target_text(kind, x), "n/a", None))
                    continue
                ok = got <= bound
                how = "met" if ok else f"MISSED by {got / bound:.2f}x"
                checks.append((target_text(kind, x), how, ok))
            rows.append({
                "key": key, "label": label, "method": method, "mp": mp, "py": py,
                "limit": lim, "limit_key": lim_key, "r_py": r_py, "r_lim": r_lim,
                "checks": checks,
            })
    return rows


# One row per (workload, backend). "Python" is Python with the same start method as the row;
# Python's forkserver also gets a column of its own, for reference on every row.
HEADER = ["workload", "backend", "multiproc", "Python", "Py forkserver", "limit", "mp/Py",
          "mp/limit", "target", "status"]


def row_cells(r):
    target = "; ".join(c[0] for c in r["checks"]) or "-"
    status = "; ".join(c[1] for c in r["checks"]) or "-"
    return [r["label"], r["method"], fmt_stat(r["mp"]), fmt_stat(r["py"][r["method"]]),
            fmt_stat(r["py"]["forkserver"]), fmt_stat(r["limit"]), fmt_ratio(r["r_py"]),
            fmt_ratio(r["r_lim"]), target, status]


def text_table(rows):
    cells = [HEADER] + [row_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    lines = []
    for n, c in enumerate(cells):
        lines.append("  ".join(v.ljust(w) for v, w in zip(c, widths)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def md_table(rows):
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in rows:
        cells = [c.replace("|", "\\|") for c in row_cells(r)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def portable_table(native, portable):
    """The portable section's table: a row per workload and start method either build measured,
    in WORKLOADS' order (rows WORKLOADS does not know last, by name)."""
    labels = {key: label for key, label, _limits in WORKLOADS}
    names = [f"{key}/{m}" for key in labels for m in METHODS]
    names += sorted((set(native) | set(portable)) - set(names))
    lines = ["| workload | start method | Linux-native | portable | portable/native | "
             "what the Linux extras buy |", "|---|---|---|---|---|---|"]
    for name in names:
        nat, por = native.get(name), portable.get(name)
        if not nat and not por:
            continue
        key, _, method = name.rpartition("/")
        if method == "forkserver":
            buys = PORTABLE_FORKSERVER
        else:
            buys = PORTABLE_BUYS.get(key, "-")
        ratio = por["median"] / nat["median"] if nat and por else None
        cells = [labels.get(key, key), method, fmt_stat(nat),
                 fmt_stat(por) if por or method != "forkserver" else "absent",
                 f"{ratio:.2f}" if ratio else "-", buys]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return lines


def bandwidth_lines(mp_res, py_res, lim_res):
    out = []
    for label, size in (("64MiB", 64 << 20), ("256MiB", 256 << 20)):
        parts = []
        for m in METHODS:
            r = mp_res.get(f"payload/{label}/{m}")
            if r:
                parts.append(f"multiproc {m} {size / r['median'] / 1e9:.2f}")
        for m in PY_METHODS:
            r = py_res.get(m, {}).get(f"payload/{label}")
            if r:
                parts.append(f"Py {m} {size / r['median'] / 1e9:.2f}")
        lim = lim_res.get(f"BM_memcpy/{size}")
        if lim:
            parts.append(f"memcpy {size / lim['median'] / 1e9:.2f}")
        out.append(f"- {label} argument, GB/s: " + ", ".join(parts))
    return out


def limits_lines(lim_res):
    out = []
    for key, label in LIMIT_LABELS.items():
        r = lim_res.get(key)
        if r:
            extra = ""
            if key.startswith("BM_memcpy"):
                size = int(key.split("/")[1])
                extra = f" ({size / r['median'] / 1e9:.1f} GB/s)"
            out.append(f"- {label}: {fmt_stat(r)}{extra}")
    return out


def summary_lines(rows):
    met, missed, na = [], [], []
    for r in rows:
        for text, how, ok in r["checks"]:
            item = f"{r['label']} [{r['method']}]: {text}"
            if ok is None:
                na.append(item)
            elif ok:
                met.append(item)
            else:
                missed.append(f"{item} -- {how}")
    out = [f"Targets: {len(met)} met, {len(missed)} missed, {len(na)} not measured."]
    out += [f"- missed: {m}" for m in missed]
    out += [f"- not measured: {m}" for m in na]
    return out


def machine_line():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}"


def library_revision():
    """The commit the library was built from, with "+ uncommitted changes" if the tree differs."""
    try:
        rev = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], check=True,
                             capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "include",
                                "src", "CMakeLists.txt"], check=True, capture_output=True,
                               text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return rev + (" + uncommitted changes to include/ or src/" if dirty else "")


def draw_chart(path, data, log):
    """benchmarks/chart.py, run by this Python or by Debian's (python3-matplotlib), whichever
    can import matplotlib; without one, no chart."""
    for python in dict.fromkeys([sys.executable, "/usr/bin/python3"]):
        if os.path.exists(python) and subprocess.run(
                [python, "-c", "import matplotlib"], capture_output=True).returncode == 0:
            break
    else:
        log("== no chart: no Python here imports matplotlib (Debian: python3-matplotlib)")
        return
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(data, f)
    try:
        subprocess.run([python, os.path.join(HERE, "chart.py"), f.name, "--out", path])
    finally:
        os.unlink(f.name)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=os.path.join(REPO, "build-bench"),
                    help="CMake build directory holding (or to receive) the binaries "
                         "(default: %(default)s)")
    ap.add_argument("--no-build", action="store_true",
                    help="never configure or build; fail if the binaries are missing")
    ap.add_argument("--bench", help="path of multiproc_bench (overrides --build-dir)")
    ap.add_argument("--limits", help="path of multiproc_limits (overrides --build-dir)")
    ap.add_argument("--repetitions", type=int, default=5,
                    help="Google Benchmark repetitions (default: %(default)s)")
    ap.add_argument("--min-time", type=float, default=0.2,
                    help="Google Benchmark minimum seconds per repetition (default: %(default)s)")
    ap.add_argument("--bench-filter", help="--benchmark_filter for multiproc_bench")
    ap.add_argument("--skip-python", action="store_true", help="do not run python_bench.py")
    ap.add_argument("--python-methods", default=",".join(PY_METHODS))
    ap.add_argument("--start-only", action="store_true",
                    help="only the start rows (process start+join, pool start+close+join), "
                         "multiproc and Python; with --bench-filter unset, sets it to them")
    ap.add_argument("--out",
                    help="Markdown file to write (default: benchmarks/RESULTS.md for a whole "
                         "run; benchmarks/RESULTS-partial.md for a partial one: --start-only, "
                         "--bench-filter, --skip-python or fewer --python-methods)")
    ap.add_argument("--json", help="also write every raw number here, as JSON")
    ap.add_argument("--chart",
                    help="draw the speed-ups here (chart.py) when matplotlib is available "
                         "(default: benchmarks/speed.png for a whole run; none for a partial "
                         "one, so that it does not replace the whole run's picture)")
    ap.add_argument("--mpi", action="store_true",
                    help="also run the MPI section (mpi start method beside mpi4py.futures)")
    ap.add_argument("--mpi-only", action="store_true",
                    help="run only the MPI section; it goes to stdout and to --mpi-out")
    ap.add_argument("--mpi-build-dir", default=os.path.join(REPO, "build-bench-mpi"),
                    help="CMake build directory with -DMULTIPROC_MPI=ON (default: %(default)s)")
    ap.add_argument("--mpi-repetitions", type=int, default=1,
                    help="MPI jobs per side; the median is shown (default: %(default)s)")
    ap.add_argument("--mpi-out", default=os.path.join(HERE, "RESULTS-mpi.md"),
                    help="Markdown file --mpi-only writes (default: %(default)s)")
    ap.add_argument("--portable", action="store_true",
                    help="also run the portable section (the portable POSIX build's rows beside "
                         "the Linux-native ones)")
    ap.add_argument("--portable-only", action="store_true",
                    help="run only the portable section; it goes to stdout and to "
                         "--portable-out")
    ap.add_argument("--portable-build-dir", default=os.path.join(REPO, "build-bench-portable"),
                    help="CMake build directory with -DMULTIPROC_POSIX_PORTABLE=ON (default: "
                         "%(default)s)")
    ap.add_argument("--portable-repetitions", type=int, default=3,
                    help="Google Benchmark repetitions for both builds in the portable section "
                         "(default: %(default)s)")
    ap.add_argument("--portable-filter", default=PORTABLE_FILTER,
                    help="--benchmark_filter for both builds in the portable section (default: "
                         "%(default)s)")
    ap.add_argument("--portable-out", default=os.path.join(HERE, "RESULTS-portable.md"),
                    help="Markdown file --portable-only writes (default: %(default)s)")
    ap.add_argument("--scaling", action="store_true",
                    help="run only the scaling tables (multiproc_scaling: consecutive batches, "
                         "pool sizes, start cost against memory held) with Python's batches "
                         "beside them; they go to stdout and to --scaling-out")
    ap.add_argument("--scaling-out", default=os.path.join(HERE, "RESULTS-scaling.md"),
                    help="Markdown file --scaling writes (default: %(default)s)")
    args = ap.parse_args()
    # A partial run must not replace the whole run's table and picture, which the README quotes.
    partial = (args.start_only or bool(args.bench_filter) or args.skip_python or
               set(args.python_methods.split(",")) != set(PY_METHODS))
    if args.out is None:
        args.out = os.path.join(HERE, "RESULTS-partial.md" if partial else "RESULTS.md")
    if args.chart is None and not partial:
        args.chart = os.path.join(HERE, "speed.png")

    def log(line):
        print(line, file=sys.stderr, flush=True)

    def write_section(path, title, option, body):
        """Prints a section alone and writes it to `path` under a heading naming the run."""
        when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        print("\n".join(body))
        with open(path, "w") as f:
            f.write("\n".join([f"# {title}", "",
                               f"Produced by `python3 benchmarks/run.py {option}`, {when}, "
                               f"on {machine_line()}; library {library_revision()}.", "",
                               *body, ""]))
        log(f"== wrote {path}")

    if args.scaling:
        write_section(args.scaling_out, "How costs grow with work, and how steady throughput is",
                      "--scaling", scaling_section(args, log))
        return

    if args.mpi_only:
        write_section(args.mpi_out, "multiproc over MPI beside mpi4py.futures", "--mpi-only",
                      ["```", *mpi_section(args, log), "```"])
        return

    if args.portable_only:
        write_section(args.portable_out, "Portable POSIX build beside Linux-native",
                      "--portable-only",
                      portable_section(args, log, native_binaries(args, log)[0]))
        return

    t0 = time.perf_counter()
    bench, limits = native_binaries(args, log)
    t_build = time.perf_counter() - t0

    lim_res, lim_ctx, t_lim = run_gbench(limits, [], args.repetitions, args.min_time, log, 120)
    if args.start_only and not args.bench_filter:
        args.bench_filter = "^(process_start_join|pool_start_close_join)/"
    bench_args = [f"--benchmark_filter={args.bench_filter}"] if args.bench_filter else []
    mp_res, mp_ctx, t_mp = run_gbench(bench, bench_args, args.repetitions, args.min_time, log,
                                      300)
    if args.skip_python:
        py_data, t_py = {"methods": {}}, 0.0
    else:
        py_data, t_py = run_python(["--methods", args.python_methods] +
                                   (["--start-only"] if args.start_only else []), log, 600)
    py_res = py_data.get("methods", {})

    rows = build_rows(mp_res, py_res, lim_res)
    mpi_lines = mpi_section(args, log) if args.mpi else []
    portable_lines = portable_section(args, log, bench) if args.portable else []
    total = time.perf_counter() - t0
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    build_type = mp_ctx.get("library_build_type", "?")
    intro = [
        f"Run of {when} on {machine_line()}; library {library_revision()}; "
        f"Python {py_data.get('python', '-')}; "
        f"Google Benchmark {args.repetitions} repetitions x >= {args.min_time:g} s "
        f"(benchmark library built as {build_type}); "
        f"times: limits {t_lim:.0f} s, multiproc {t_mp:.0f} s, Python {t_py:.0f} s "
        f"(build {t_build:.0f} s).",
        "Each cell: median of the repetitions ±(max-min)/(2*median). Times are per workload run "
        "(apply round trip: per call). Ratios are time ratios, lower is better: "
        "mp/Py compares with Python's same start method; 1/N means N times faster.",
    ]

    text = "\n".join([*intro, "", text_table(rows), "", "Payload bandwidth:",
                      *bandwidth_lines(mp_res, py_res, lim_res), "", "Machine limits:",
                      *limits_lines(lim_res), "", *summary_lines(rows),
                      *(["", "MPI:", *mpi_lines] if mpi_lines else []),
                      *(["", "Portable POSIX build beside Linux-native:", *portable_lines]
                        if portable_lines else [])])
    print(text)

    md = ["# multiproc benchmark results", "",
          "Produced by `python3 benchmarks/run.py` (see benchmarks/README.md for what each "
          "number means).", "", *intro, "", md_table(rows), "", "## Payload bandwidth", "",
          *bandwidth_lines(mp_res, py_res, lim_res), "", "## Machine limits (multiproc_limits)",
          "", *limits_lines(lim_res), "", "## Targets (issue 5)", "", *summary_lines(rows), "",
          *(["## MPI (issue 12)", "", "```", *mpi_lines, "```", ""] if mpi_lines else []),
          *(["## Portable POSIX build beside Linux-native (issue 16)", "", *portable_lines, ""]
            if portable_lines else [])]
    with open(args.out, "w") as f:
        f.write("\n".join(md))
    log(f"== wrote {args.out}; total {total:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"multiproc": mp_res, "python": py_data, "limits": lim_res}, f, indent=1)
    if args.chart:
        draw_chart(args.chart, {"multiproc": mp_res, "python": py_data, "limits": lim_res}, log)


if __name__ == "__main__":
    main()
