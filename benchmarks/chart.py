#!/usr/bin/env python3
"""Draws the benchmark results as one picture: per workload and start method, how many times
faster multiproc is than Python's multiprocessing with the same start method (a horizontal bar,
log scale), and, where the workload has a machine limit, the best speed-up any library could
reach (Python's time / the limit's time, a diamond).

    python3 benchmarks/chart.py RESULTS.json [--out benchmarks/speed.png]

RESULTS.json is what `python3 benchmarks/run.py --json FILE` writes; run.py also calls this
at the end of a run (its --chart option). Rows without a Python number (--skip-python, or a
Python run stopped early) are left out. Needs matplotlib (Debian: python3-matplotlib).
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run  # noqa: E402  (the rows and their labels, exactly as run.py's table has them)

METHOD_COLOURS = {"fork": "#3b6ea5", "spawn": "#e08a2c", "forkserver": "#7a7a7a"}
OTHER_COLOUR = "#7a7a7a"
LIMIT_COLOUR = "#c0392b"


def speedups(data):
    """[(label, method, speed-up over Python, best possible speed-up or None)], in table order."""
    rows = run.build_rows(data.get("multiproc", {}), data.get("python", {}).get("methods", {}),
                          data.get("limits", {}))
    out = []
    for r in rows:
        mp, py = r["mp"], r["py"].get(r["method"])
        if not mp or not py or mp["median"] <= 0 or py["median"] <= 0:
            continue  # no Python number (or no multiproc one): nothing to compare
        best = None
        if r["limit"] and r["limit"]["median"] > 0:
            best = py["median"] / r["limit"]["median"]
        out.append((r["label"], r["method"], py["median"] / mp["median"], best))
    return out


def times(x):
    return f"{x:.0f}x" if x >= 10 else f"{x:.1f}x"


def draw(data, path):
    """Writes the chart to `path` (PNG); returns the number of rows drawn (0: nothing written)."""
    bars = speedups(data)
    if not bars:
        return 0
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    n = len(bars)
    fig, ax = plt.subplots(figsize=(10, 1.8 + 0.34 * n), dpi=110)
    ys = list(range(n))[::-1]  # the table's first row on top
    values = [b[2] for b in bars]
    colours = [METHOD_COLOURS.get(b[1], OTHER_COLOUR) for b in bars]
    ax.barh(ys, values, height=0.7, color=colours, zorder=2)
    ax.set_xscale("log")
    limits = [(y, b[3]) for y, b in zip(ys, bars) if b[3] is not None]
    if limits:
        ax.scatter([v for _, v in limits], [y for y, _ in limits], marker="D", s=42,
                   color=LIMIT_COLOUR, edgecolor="white", linewidth=0.8, zorder=4)
    high = max(values + [v for _, v in limits])
    low = min(values + [v for _, v in limits])
    ax.set_xlim(min(0.5, low / 1.5), high * 2.2)
    for y, v in zip(ys, values):
        ax.text(v * 1.06, y, times(v), va="center", ha="left", fontsize=8, zorder=5)
    ax.axvline(1, color="black", linewidth=0.8, zorder=3)  # as fast as Python
    ax.set_yticks(ys)
    ax.set_yticklabels([f"{b[0]} [{b[1]}]" for b in bars], fontsize=8.5)
    ax.set_ylim(-0.7, n - 0.3)
    # A light band behind every other workload, so its start methods read as one group.
    group, previous = -1, None
    for y, b in zip(ys, bars):
        if b[0] != previous:
            group, previous = group + 1, b[0]
        if group % 2:
            ax.axhspan(y - 0.5, y + 0.5, color="#f2f2f2", zorder=0, linewidth=0)
    ax.grid(axis="x", which="both", color="#dddddd", linewidth=0.6, zorder=0)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}x"))
    ax.set_xlabel("speed-up over Python's multiprocessing with the same start method\n"
                  "(Python's time / multiproc's time, log scale; 1x: as fast as Python)",
                  fontsize=8.5)
    python = data.get("python", {}).get("python")
    ax.set_title("multiproc against Python" + (f" {python}" if python else "") +
                 ": how many times faster, per workload", fontsize=11, pad=34)
    handles = [Patch(color=c, label=f"multiproc, {m}") for m, c in METHOD_COLOURS.items()
               if any(b[1] == m for b in bars)]
    if limits:
        handles.append(Line2D([], [], marker="D", linestyle="none", color=LIMIT_COLOUR,
                              markeredgecolor="white", markersize=7,
                              label="machine limit (Python's time / the limit's)"))
    # Two rows at most, so the legend stays inside the figure's width.
    ax.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0),
              ncol=min(len(handles), 2), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="the JSON file run.py --json wrote")
    ap.add_argument("--out", default=os.path.join(HERE, "speed.png"),
                    help="the PNG to write (default: %(default)s)")
    args = ap.parse_args()
    with open(args.results) as f:
        data = json.load(f)
    drawn = draw(data, args.out)
    if not drawn:
        print(f"chart.py: no row has both a multiproc and a Python number: no chart written "
              f"({args.results})", file=sys.stderr)
        return 0
    print(f"== wrote {args.out} ({drawn} rows)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
