"""mpi4py.futures beside multiproc's mpi start method (tests/mpi/mpi_bench.cpp), 4 ranks:
    mpiexec --oversubscribe -n 4 python3 -m mpi4py.futures benchmarks/mpi4py_bench.py
Rank 0 runs this; the other ranks serve as MPIPoolExecutor's workers."""
import time

from mpi4py.futures import MPIPoolExecutor


def square(x):
    return x * x


def main():
    with MPIPoolExecutor() as pool:
        pool.submit(square, 1).result()  # warm
        rounds = 2000
        start = time.perf_counter()
        for i in range(rounds):
            pool.submit(square, i).result()
        print(f"submit round trip: {(time.perf_counter() - start) / rounds * 1e6:.1f} us")
        count = 20000
        start = time.perf_counter()
        futures = [pool.submit(square, i) for i in range(count)]
        total = sum(f.result() for f in futures)
        took = time.perf_counter() - start
        print(f"submit x{count}: {took:.3f} s ({count / took:.0f} tasks/s) [{total}]")
        xs = range(1_000_000)
        start = time.perf_counter()
        ys = list(pool.map(square, xs))  # mpi4py's default chunksize is 1
        print(f"map 1M (default chunks): {time.perf_counter() - start:.3f} s [{ys[1000]}]")


if __name__ == "__main__":
    main()
