"""Plot a soak's memory record: RSS of tritonserver and of each Python backend stub over time,
and the total PSS (what the machine really spends), the load's end marked.

  python -m loadtest.plot build/loadtest/soak_memory.csv docs/soak-memory.png

Needs matplotlib (`requirements/bench.txt`, installed by `make bench`)."""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def plot(memory_csv: Path, output: Path, title: str = "") -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(memory_csv.open()))
    minutes = [float(r["elapsed_s"]) / 60 for r in rows]
    processes = sorted(k[: -len("_rss_kib")] for k in rows[0] if k.endswith("_rss_kib") and k != "rss_kib")
    figure, axes = plt.subplots(figsize=(10, 5))
    for name in processes:
        axes.plot(minutes, [int(r[f"{name}_rss_kib"]) / 1024 for r in rows], label=f"{name} RSS", linewidth=1)
    axes.plot(minutes, [int(r["pss_kib"]) / 1024 for r in rows], label="all processes, PSS", color="black", linewidth=2)
    loaded = [m for m, r in zip(minutes, rows) if r["loaded"] == "True"]
    if loaded:
        axes.axvline(loaded[-1], color="grey", linestyle="--", label="load stops")
    axes.set_xlabel("minutes")
    axes.set_ylabel("MiB")
    axes.set_title(title or f"Server memory during the soak ({memory_csv.name})")
    axes.legend(fontsize=8, loc="upper left", ncol=2)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=100)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.plot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("memory_csv", type=Path, help="the soak's <name>_memory.csv")
    parser.add_argument("output", type=Path, help="PNG to write")
    parser.add_argument("--title", default="", help="plot title")
    args = parser.parse_args(argv)
    print(plot(args.memory_csv, args.output, args.title))
    return 0


if __name__ == "__main__":
    sys.exit(main())
