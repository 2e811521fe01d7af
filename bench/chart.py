"""Draws p50 and p99 latency against offered load for direct, nginx and gateway (scenario 1)
from faceswap-bench's results: chart.py RESULTS_JSON OUT_PNG"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLOURS = {"direct": "#4c72b0", "nginx": "#55a868", "gateway": "#c44e52"}


def main(results_path, out_path):
    with open(results_path) as f:
        results = json.load(f)
    scenario = results.get("detect_small")
    if not scenario:
        print("chart: scenario 1 was not measured; no chart", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for target, colour in COLOURS.items():
        runs = sorted(
            (m for m in scenario["sweep"] if m["target"] == target),
            key=lambda m: m["offered_rps"],
        )
        if not runs:
            continue
        x = [m["offered_rps"] for m in runs]
        ax.plot(x, [m["p50_ms"] for m in runs], "-o", color=colour, label=f"{target} p50")
        ax.plot(x, [m["p99_ms"] for m in runs], "--s", color=colour, label=f"{target} p99")
    ax.set_xlabel("offered load (requests/s)")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.set_title(
        f"POST /detect (image_url): latency against offered load\n"
        f"{results['cores']} cores, {results['date']}, revision {results['revision']}"
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(ncol=3, fontsize="small")
    fig.tight_layout()
    fig.savefig(out_path)
    print(f"chart: wrote {out_path}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
