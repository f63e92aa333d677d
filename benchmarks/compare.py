"""Run benchmarks/train_step.py for several settings, interleaved and repeated; print medians and ratios.

Each ``--case`` is a string of extra train_step.py flags; every case runs ``--repeats`` times in turn (A B
A B …) so that machine noise hits all cases alike. Prints one JSON line per case with the median
images/s over repeats and its ratio to the first case.

Example:
    python benchmarks/compare.py --repeats 3 --common "--steps 30" \\
        --case "--dtype float32" --case "--dtype bfloat16"
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("train_step.py")


def run_once(flags: list[str]) -> dict:
    cmd = [sys.executable, str(SCRIPT), "--json", *flags]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", action="append", required=True, help="extra flags of one case (repeatable)")
    p.add_argument("--common", default="", help="flags shared by every case")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    common = shlex.split(args.common)
    runs: dict[str, list[dict]] = {case: [] for case in args.case}
    for _ in range(args.repeats):
        for case in args.case:
            runs[case].append(run_once([*common, *shlex.split(case)]))
    base = None
    for case, results in runs.items():
        ips = [r["images_per_s"] for r in results]
        median = statistics.median(ips)
        base = base or median
        print(
            json.dumps(
                {
                    "case": case,
                    "images_per_s_median": round(median, 1),
                    "images_per_s_runs": ips,
                    "ratio_to_first": round(median / base, 2),
                    "model_tflop_per_s_median": round(
                        statistics.median(r["model_tflop_per_s"] for r in results), 4
                    ),
                    "gflop_per_step": results[0]["gflop_per_step"],
                }
            )
        )


if __name__ == "__main__":
    main()
