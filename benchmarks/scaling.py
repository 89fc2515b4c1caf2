"""Python's side of multiproc_scaling's "batches" table (issue 15): 8 consecutive batches of
20 000 apply_async + get on one Pool(2), per start method given (default fork). Prints one JSON
object: {"method": [tasks/s of batch 1, ..., batch 8]}. run.py --scaling pairs it with the C++
program's table."""
import argparse
import json
import multiprocessing
import time


def square(x):
    return x * x


def batches(method, calls=20000, count=8):
    ctx = multiprocessing.get_context(method)
    rates = []
    with ctx.Pool(2) as pool:
        for i in range(200):
            pool.apply(square, (i,))
        for _ in range(count):
            start = time.perf_counter()
            results = [pool.apply_async(square, (i,)) for i in range(calls)]
            for r in results:
                r.get()
            rates.append(calls / (time.perf_counter() - start))
    return rates


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--methods", default="fork")
    args = ap.parse_args()
    print(json.dumps({m: batches(m) for m in args.methods.split(",")}))


if __name__ == "__main__":
    main()
