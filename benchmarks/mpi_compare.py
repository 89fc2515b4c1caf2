"""The mpi start method beside mpi4py.futures.MPIPoolExecutor, on 4 ranks of this machine.

    benchmarks/mpi_compare.py BUILD_DIR      (a build with -DMULTIPROC_MPI=ON)

Runs tests/mpi/mpi_bench.cpp (multiproc_mpi_bench) and benchmarks/mpi4py_bench.py, each as
`mpiexec --oversubscribe -n 4` (rank 0 dispatches, ranks 1-3 work), REPS times each, and
prints the medians side by side with the ratio (MPI_COMPARE_REPS=1 for one run: mpi4py's
map of 1 M items alone takes minutes). Kept apart from run.py (Google Benchmark
rows): these are whole MPI jobs. Needs openmpi-bin and python3-mpi4py
(scripts/install-deps.sh mpi)."""
import os
import re
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPS = int(os.environ.get("MPI_COMPARE_REPS", "3"))
# (label, pattern in multiproc's output, pattern in mpi4py's output, unit)
ROWS = [
    ("apply round trip", r"apply round trip: ([\d.]+) us", r"submit round trip: ([\d.]+) us",
     "us"),
    ("apply_async x20000", r"apply_async x20000: ([\d.]+) s", r"submit x20000: ([\d.]+) s", "s"),
    ("map 1M, default chunking", r"map 1M \(default chunks\): ([\d.]+) s",
     r"map 1M \(default chunks\): ([\d.]+) s", "s"),
]


def job(command):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    full = ["mpiexec", "--oversubscribe", "-n", "4"] + command
    done = subprocess.run(full, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        sys.exit(f"{' '.join(full)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def medians(outputs, column):
    values = []
    for row in ROWS:
        found = [float(m.group(1)) for out in outputs
                 for m in [re.search(row[column], out)] if m]
        values.append(statistics.median(found) if found else None)
    return values


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    bench = os.path.join(sys.argv[1], "tests", "mpi", "multiproc_mpi_bench")
    ours = medians([job([bench]) for _ in range(REPS)], 1)
    theirs = medians([job(["/usr/bin/python3", "-m", "mpi4py.futures",
                           os.path.join(HERE, "mpi4py_bench.py")]) for _ in range(REPS)], 2)
    print(f"{'4 ranks (rank 0 dispatches)':<28}{'multiproc mpi':>16}{'mpi4py.futures':>18}"
          f"{'ratio':>10}")
    for row, a, b in zip(ROWS, ours, theirs):
        ratio = f"{b / a:.1f}x" if a and b else "-"
        print(f"{row[0]:<28}{a:>13.3f} {row[3]:<2}{b:>15.3f} {row[3]:<2}{ratio:>10}")


if __name__ == "__main__":
    main()
