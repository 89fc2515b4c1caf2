#!/usr/bin/env python3
"""The multiproc_bench workloads in Python 3's multiprocessing, for side-by-side comparison.

Each workload runs under the fork, spawn and forkserver start methods. Every workload is
sampled several times; the result is the median of the samples with their min and max (the
spread). Each sample averages as many runs as fit in about 50 ms; a workload takes at least
--min-reps samples and then more only while its --budget lasts, so slow workloads (spawn,
map with chunksize 1) get few samples and the whole script stays bounded (under a minute on
a 2-core machine with the defaults).

Output: JSON on stdout (or --out FILE): per start method, per workload, seconds per run of
the workload (apply_roundtrip: per call). run.py turns it into the comparison table.

The names of the workloads are the same as in multiproc_bench.cpp so run.py can pair them.
"""
import argparse
import array
import concurrent.futures
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time

# Targets live at module level: spawn and forkserver workers import this module by name to
# find them, exactly like a user program would have to.


def noop():
    pass


def square(x):
    return x * x


def size_of(payload):
    return len(payload)


def same_bytes(payload):
    return payload


KIB = 1024
MIB = 1024 * KIB

APPLY_ASYNC_CALLS = 20_000
AS_COMPLETED_CALLS = 1_000
PAYLOAD_SIZES = [("1KiB", KIB), ("1MiB", MIB), ("64MiB", 64 * MIB), ("256MiB", 256 * MIB)]


def sample(once, min_reps, max_reps, budget_s, target_s=0.05):
    """Times once() (one run of the workload) repeatedly. A first, untimed call warms up (the
    first forkserver use starts the server; the first spawn reads the interpreter from disk)
    and tells how long one run takes; each sample then averages enough runs to last about
    target_s, as a Google Benchmark repetition averages its iterations, so that a single
    scheduler hiccup does not become the spread. Takes at least min_reps and at most
    max_reps samples, stopping early once budget_s of wall time has gone."""
    first = timed(once)
    inner = max(1, min(200, round(target_s / max(first, 1e-9))))
    samples = []
    if first > budget_s / 4:
        # Slow enough that the warm-up run is itself a fair sample: do not pay for it twice.
        samples.append(first)
    start = time.perf_counter()
    while len(samples) < max_reps:
        t0 = time.perf_counter()
        for _ in range(inner):
            once()
        samples.append((time.perf_counter() - t0) / inner)
        if len(samples) >= min_reps and time.perf_counter() - start > budget_s:
            break
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "reps": len(samples),
        "runs_per_rep": inner,
        "samples": samples,
    }


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def put_ints(q, n):
    for i in range(n):
        q.put(i)


def echo_ints(conn):
    # Ends on None: on fork the child holds a copy of the parent's end too, so the parent's
    # close() alone never gives it end of file (echo.join() would wait for ever).
    try:
        while True:
            value = conn.recv()
            if value is None:
                return
            conn.send(value)
    except EOFError:
        pass


def answer_sizes(q_in, q_out):
    while True:
        q_out.put(len(q_in.get()))


def bench_method(method, args, log, res, save):
    """Fills `res` workload by workload, calling save() after each, so a caller that has to
    stop this script early still gets every workload measured so far."""
    ctx = mp.get_context(method)
    ncpu = os.cpu_count() or 1
    lo, hi, budget = args.min_reps, args.max_reps, args.budget

    def record(name, r, unit_note=""):
        res[name] = r
        save()
        log(f"  {method:10s} {name:28s} median {r['median'] * 1e3:10.3f} ms "
            f"[{r['min'] * 1e3:.3f} .. {r['max'] * 1e3:.3f}] n={r['reps']}{unit_note}")

    def process_start_join():
        p = ctx.Process(target=noop)
        p.start()
        p.join()

    record("process_start_join", sample(process_start_join, lo, hi, budget))

    def pool_start(n):
        def once():
            pool = ctx.Pool(n)
            pool.close()
            pool.join()
        return once

    record("pool_start_close_join/2", sample(pool_start(2), lo, hi, budget))
    record("pool_start_close_join/cpu_count", sample(pool_start(ncpu), lo, hi, budget))
    if args.start_only:
        return

    # Throughput workloads share one pool, as multiproc_bench does: they measure the pool at
    # work, not its start-up. Pool() with no argument is Python's own default: cpu_count().
    with ctx.Pool(ncpu) as pool:
        pool.map(square, range(1000))  # every worker has started and imported this module

        counter = iter(range(1 << 62))

        def apply_roundtrip():
            pool.apply(square, (next(counter) % 30000,))
        record("apply_roundtrip", sample(apply_roundtrip, lo, hi, budget))

        def apply_async():
            rs = [pool.apply_async(square, (i,)) for i in range(APPLY_ASYNC_CALLS)]
            for r in rs:
                r.get()
        record(f"apply_async/{APPLY_ASYNC_CALLS}", sample(apply_async, lo, hi, budget))

        def map_run(n, chunksize):
            xs = [i % 30000 for i in range(n)]  # built before timing, like the C++ vector

            def once():
                pool.map(square, xs, chunksize)
            return once

        # chunksize 1 is the slow one (one message per item): it gets the fewest samples.
        record("map_chunksize1/100000", sample(map_run(100_000, 1), lo, hi, budget))
        record("map_default/100000", sample(map_run(100_000, None), lo, hi, budget))
        record("map_default/1000000", sample(map_run(1_000_000, None), lo, hi, budget))

        for label, size in PAYLOAD_SIZES:
            payload = bytes(size)

            def payload_run(payload=payload):
                pool.apply(size_of, (payload,))
            r = sample(payload_run, lo, hi, budget)
            r["bytes"] = size
            record(f"payload/{label}", r,
                   f"  {size / r['median'] / 1e6:.0f} MB/s")
            del payload

        # The by-value round trip: 256 MiB to a worker and the same bytes back.
        payload = bytes(256 * MIB)

        def round_trip_run(payload=payload):
            pool.apply(same_bytes, (payload,))
        r = sample(round_trip_run, lo, hi, budget)
        r["bytes"] = 2 * len(payload)
        record("payload_round_trip/256MiB", r,
               f"  {len(payload) / r['median'] / 1e6:.0f} MB/s each way")
        del payload

    # concurrent.futures: what mp::wait / mp::as_completed stand for.
    with concurrent.futures.ProcessPoolExecutor(ncpu, mp_context=ctx) as ex:
        list(ex.map(square, range(1000)))  # every worker has started

        def as_completed():
            fs = [ex.submit(square, i) for i in range(AS_COMPLETED_CALLS)]
            for f in concurrent.futures.as_completed(fs):
                f.result()
        record(f"as_completed/{AS_COMPLETED_CALLS}", sample(as_completed, lo, hi, budget))

    # Communication: Queue and Pipe between two processes.
    def queue_transfer(n):
        def once():
            q = ctx.Queue()
            p = ctx.Process(target=put_ints, args=(q, n))
            p.start()
            total = 0
            for _ in range(n):
                total += q.get()
            p.join()
        return once
    record("queue_transfer/100000", sample(queue_transfer(100_000), lo, hi, budget))

    mine, theirs = ctx.Pipe()
    echo = ctx.Process(target=echo_ints, args=(theirs,))
    echo.start()
    theirs.close()
    mine.send(0)
    mine.recv()
    counter = iter(range(1 << 62))

    def pipe_pingpong():
        mine.send(next(counter))
        mine.recv()
    record("pipe_pingpong", sample(pipe_pingpong, lo, hi, budget))
    mine.send(None)
    mine.close()
    echo.join()

    q_in, q_out = ctx.Queue(), ctx.Queue()
    consumer = ctx.Process(target=answer_sizes, args=(q_in, q_out))
    consumer.start()
    item = bytes(64 << 20)

    def queue_item():
        q_in.put(item)
        q_out.get()
    r = sample(queue_item, lo, hi, budget)
    r["bytes"] = len(item)
    record("queue_item/64MiB", r)
    consumer.terminate()
    consumer.join()

    # Shared state: Lock, and SharedMemory passed by name to a pool task.
    lock = ctx.Lock()

    def mutex_uncontended():
        for _ in range(1000):
            lock.acquire()
            lock.release()
    r = sample(mutex_uncontended, lo, hi, budget)
    for key in ("median", "min", "max"):
        r[key] /= 1000
    r["samples"] = [x / 1000 for x in r["samples"]]
    record("mutex_uncontended", r)

    ping, pong, stop = ctx.Lock(), ctx.Lock(), ctx.Event()
    ping.acquire()
    pong.acquire()
    echo = ctx.Process(target=mutex_echo, args=(ping, pong, stop))
    echo.start()
    ping.release()
    pong.acquire()

    def mutex_pingpong():
        ping.release()
        pong.acquire()
    record("mutex_pingpong", sample(mutex_pingpong, lo, hi, budget))
    stop.set()
    echo.join()

    from multiprocessing import shared_memory
    size = 256 << 20
    shm = shared_memory.SharedMemory(create=True, size=size)
    try:
        view = shm.buf.cast("d")
        for i in range(0, len(view), 1 << 20):
            view[i:i + (1 << 20)] = array.array("d", [1.0]) * min(1 << 20, len(view) - i)
        del view
        with ctx.Pool(1) as pool:
            pool.apply(shm_size, (shm.name,))

            def shm_sum():
                pool.apply(shm_sum_task, (shm.name,))
            r = sample(shm_sum, lo, hi, budget)
            r["bytes"] = size
            record("shared_array_sum/256MiB", r)

            def shm_handover():
                pool.apply(shm_size, (shm.name,))
            record("shared_array_handover/256MiB", sample(shm_handover, lo, hi, budget))
    finally:
        shm.close()
        shm.unlink()


def mutex_echo(ping, pong, stop):
    while not stop.is_set():
        if not ping.acquire(timeout=0.1):
            continue
        pong.release()


def shm_sum_task(name):
    from multiprocessing import shared_memory
    shm = shared_memory.SharedMemory(name=name)
    try:
        view = shm.buf.cast("d")
        total = sum(view)
        del view
        return total
    finally:
        shm.close()


def shm_size(name):
    from multiprocessing import shared_memory
    shm = shared_memory.SharedMemory(name=name)
    size = shm.size
    shm.close()
    return size


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="fork,spawn,forkserver",
                    help="comma-separated start methods (default: %(default)s)")
    ap.add_argument("--min-reps", type=int, default=3, help="samples per workload at least")
    ap.add_argument("--max-reps", type=int, default=7, help="samples per workload at most")
    ap.add_argument("--budget", type=float, default=1.0,
                    help="seconds after which a workload stops taking samples once it has "
                         "--min-reps of them")
    ap.add_argument("--start-only", action="store_true",
                    help="only the start workloads (process start+join, pool start+close+join)")
    ap.add_argument("--out", help="write the JSON here instead of stdout")
    ap.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = ap.parse_args()

    def log(line):
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    available = mp.get_all_start_methods()
    out = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "cpu_count": os.cpu_count(),
        "min_reps": args.min_reps,
        "max_reps": args.max_reps,
        "budget_s": args.budget,
        "unit": "seconds per workload run (median over samples; each sample averages "
                "runs_per_rep runs)",
        "methods": {},
    }
    def save():
        if not args.out:
            return
        # Replaced whole (write, then rename): a reader never sees half a file.
        with open(args.out + ".part", "w") as f:
            f.write(json.dumps(out, indent=1) + "\n")
        os.replace(args.out + ".part", args.out)

    t0 = time.perf_counter()
    for method in args.methods.split(","):
        method = method.strip()
        if method not in available:
            log(f"  {method}: not available on this platform, skipped")
            continue
        out["methods"][method] = {}
        bench_method(method, args, log, out["methods"][method], save)
    out["elapsed_s"] = time.perf_counter() - t0
    save()
    if not args.out:
        print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
