"""Plot fan-out latency (p50 dashed, p99 solid) against offered deliveries/s, one colour per configuration.

python bench/plot.py bench/results/fanout.json bench/results/fanout.png
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(source, target):
    data = json.load(open(source))
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
    for index, (name, config) in enumerate(data["configs"].items()):
        steps = [s for s in config["steps"] if s["p99"] is not None]
        x = [s["offered_per_s"] for s in steps]
        colour = f"C{index}"
        ax.plot(
            x,
            [s["p99"] for s in steps],
            "-o",
            color=colour,
            markersize=3,
            label=f"{name} p99 (capacity {config['capacity_per_s']:.0f}/s)",
        )
        ax.plot(x, [s["p50"] for s in steps], "--", color=colour, linewidth=1)
        lost = [s for s in steps if s["delivered_pct"] < 100]
        ax.plot([s["offered_per_s"] for s in lost], [s["p99"] for s in lost], "x", color=colour, markersize=9)
    ax.axhline(data["p99_limit_ms"], color="grey", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"offered deliveries/s ({data['clients']} clients on one group)")
    ax.set_ylabel("push-to-receipt latency, ms (p99 solid, p50 dashed; x = messages lost)")
    ax.set_title("Websocket fan-out: latency against offered load")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(target)


if __name__ == "__main__":
    main(*sys.argv[1:3])
