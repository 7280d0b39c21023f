#!/usr/bin/env python3
"""The long-link table of scripts/bench --longlink: one iperf3 stream over the emulated
links (bench.d/linkemu.sh), per path, as the median of the repetitions, with the ratios of
tether-tls to plain TCP and to ssh -L taken within each repetition (the machine is shared:
only figures of one repetition are compared), and the issue's goals checked.

    linkemu-report.py --raw raw.tsv [--out DIR]   (Markdown on stdout, and DIR/longlink.md)
"""

import argparse
import os
import statistics

from raw_tsv import read_rows

LINKS = [  # metric name, words, goals: (peer path, least ratio of tether-tls to it)
    # what bounds the unlimited 100 ms row: the relay with no delay (no goal; the ceiling
    # of each path through the emulator), then the same link with a larger window cap
    ("rtt0", "no delay, no rate limit (the relay alone)", []),
    ("rtt100", "100 ms round trip, no rate limit", [("direct", 0.8), ("ssh-gcm", 3.0)]),
    ("rtt100-cap128", "100 ms round trip, no rate limit, tether's window cap 128 MiB "
     "(`--max-stream-window 128M`; download, every path)", [("direct", 0.8), ("ssh-gcm", 3.0)]),
    ("rtt100-1gbit", "100 ms round trip, 1 Gbit/s", [("direct", 0.8), ("ssh-gcm", 3.0)]),
    ("rtt300-20mbit", "300 ms round trip, 20 Mbit/s", [("direct", 0.9)]),
]
PATHS = [("direct", "plain TCP"), ("ssh-gcm", "ssh -L"), ("tether-tls", "tether-tls")]
OURS = "tether-tls"


def load(raw):
    """{(rep, path, metric): float}; rows without a path are left out."""
    return {(rep, path, metric): value for rep, path, metric, value in read_rows(raw) if path}


def median_or_none(xs):
    return statistics.median(xs) if xs else None


def table(values):
    reps = sorted({k[0] for k in values}, key=int)
    lines = ["| link | " + " | ".join(w + " Mbit/s" for _, w in PATHS) +
             " | tether ÷ plain TCP | tether ÷ ssh -L | goal |",
             "|---|" + "---:|" * (len(PATHS) + 2) + "---|"]
    for name, words, goals in LINKS:
        metric = "longlink_%s_mbps" % name
        cells = []
        for path, _ in PATHS:
            m = median_or_none([values[(r, path, metric)] for r in reps
                                if (r, path, metric) in values])
            cells.append("%.0f" % m if m is not None else "—")
        ratios = {}
        for peer in ("direct", "ssh-gcm"):
            per_rep = [values[(r, OURS, metric)] / values[(r, peer, metric)] for r in reps
                       if (r, OURS, metric) in values and values.get((r, peer, metric))]
            ratios[peer] = median_or_none(per_rep)
        verdicts = []
        for peer, least in goals:
            got = ratios[peer]
            label = dict(PATHS)[peer]
            if got is None:
                verdicts.append("≥ %.1f× %s: not measured" % (least, label))
            else:
                verdicts.append("≥ %.1f× %s: %s" % (least, label, "met" if got >= least else "not met"))
        ratio_text = ["%.2f×" % ratios[p] if ratios[p] is not None else "—"
                      for p in ("direct", "ssh-gcm")]
        lines.append("| %s | %s | %s | %s |" % (words, " | ".join(cells), " | ".join(ratio_text),
                                              "; ".join(verdicts) or "–"))
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--raw", required=True)
    p.add_argument("--out")
    a = p.parse_args()
    values = load(a.raw)
    text = ("\n### Long links (linkemu between the two ends; 1 iperf3 stream)\n\n" +
            table(values) + "\n")
    print(text)
    if a.out:
        with open(os.path.join(a.out, "longlink.md"), "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
