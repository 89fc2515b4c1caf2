"""The mpi start method beside mpi4py.futures.MPIPoolExecutor, on 4 ranks of this machine.

    benchmarks/mpi_compare.py BUILD_DIR      (a build with -DMULTIPROC_MPI=ON)

benchmarks/run.py --mpi runs the same comparison as a section of its table (and builds what it
needs); this script is that section alone, on a build you already have.

Runs tests/mpi/mpi_bench.cpp (multiproc_mpi_bench) and benchmarks/mpi4py_bench.py, each as
`mpiexec --oversubscribe -n 4` (rank 0 dispatches, ranks 1-3 work), REPS times each, and
prints the medians side by side with the ratio (MPI_COMPARE_REPS=1 for one run: mpi4py's
map of 1 M items alone takes minutes). These are whole MPI jobs, not Google Benchmark rows.
Needs openmpi-bin and python3-mpi4py (scripts/install-deps.sh mpi)."""
import os
import re
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RANKS = 4
# Debian's python3-mpi4py is installed for the system interpreter, which need not be the
# python3 first on PATH (a pyenv one, say).
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
# (label, pattern in multiproc's output, pattern in mpi4py's output, unit, target speed-up)
ROWS = [
    ("apply round trip", r"apply round trip: ([\d.]+) us", r"submit round trip: ([\d.]+) us",
     "us", None),
    ("apply_async x20000 + get", r"apply_async x20000: ([\d.]+) s",
     r"submit x20000: ([\d.]+) s", "s", 10.0),
    ("map 1M, default chunking", r"map 1M \(default chunks\): ([\d.]+) s",
     r"map 1M \(default chunks\): ([\d.]+) s", "s", 10.0),
]


def job(command):
    """Runs `command` as one MPI job of RANKS ranks; returns rank 0's stdout."""
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    full = ["mpiexec", "--oversubscribe", "--mca", "btl_vader_backing_directory", "/tmp",
            "-n", str(RANKS)] + command
    done = subprocess.run(full, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(full)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def medians(outputs, column):
    """The median of each row's number found in `outputs` (column 1: ours, 2: mpi4py)."""
    values = []
    for row in ROWS:
        found = [float(m.group(1)) for out in outputs
                 for m in [re.search(row[column], out)] if m]
        values.append(statistics.median(found) if found else None)
    return values


def bench_binary(build_dir):
    return os.path.join(build_dir, "tests", "mpi", "multiproc_mpi_bench")


def compare(build_dir, reps, log=lambda line: None):
    """Runs both sides `reps` times; returns [(label, ours, theirs, unit, target)]."""
    log(f"== mpi: multiproc_mpi_bench x{reps} ({RANKS} ranks)")
    ours = medians([job([bench_binary(build_dir)]) for _ in range(reps)], 1)
    log(f"== mpi: mpi4py.futures x{reps} ({RANKS} ranks; its map of 1M takes minutes)")
    theirs = medians([job([PYTHON, "-m", "mpi4py.futures",
                           os.path.join(HERE, "mpi4py_bench.py")]) for _ in range(reps)], 2)
    return [(row[0], a, b, row[3], row[4]) for row, a, b in zip(ROWS, ours, theirs)]


def table_lines(results):
    """Rows as text: label, ours, mpi4py's, speed-up, target and whether it is met."""
    lines = [f"{f'{RANKS} ranks (rank 0 dispatches)':<30}{'multiproc mpi':>15}"
             f"{'mpi4py.futures':>17}{'speed-up':>10}  target"]
    for label, a, b, unit, target in results:
        speedup = b / a if a and b else None
        shown = f"{speedup:.1f}x" if speedup else "-"
        verdict = "-"
        if target:
            verdict = f">= {target:g}x " + ("met" if speedup and speedup >= target else "MISSED")
        a_text = f"{a:.3f} {unit}" if a is not None else "-"
        b_text = f"{b:.3f} {unit}" if b is not None else "-"
        lines.append(f"{label:<30}{a_text:>15}{b_text:>17}{shown:>10}  {verdict}")
    return lines


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    try:
        results = compare(sys.argv[1], int(os.environ.get("MPI_COMPARE_REPS", "3")))
    except RuntimeError as failure:
        sys.exit(str(failure))
    print("\n".join(table_lines(results)))


if __name__ == "__main__":
    main()
