#!/usr/bin/env python3
"""scripts/bench --crosscheck: puts scripts/bench's figures beside the independent peers
harness's (peers.sh, run on the same paths in the same session) and says which agree.

Each figure is the median over repetitions; a figure is "reproduced" when the two medians
differ by at most --tolerance (10 %). Ratios to the ssh path are shown from both harnesses,
since those are what the README publishes.

Usage: crosscheck.py --ours RAW.tsv --peers RAW.tsv [--peer ssh-gcm] [--tolerance 0.10]
                     [--out DIR]  (writes DIR/crosscheck.md and DIR/crosscheck.json)
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

from raw_tsv import read_rows

# scripts/bench path -> peers.sh path (tether-tls comes from peers.sh's tether plugin)
PATH_NAMES = {
    "direct": "direct",
    "socat": "socat-b64k",  # ours runs socat -b 65536
    "ssh-gcm": "ssh-aesgcm",
    "stunnel": "stunnel",
    "tether-tls": "tether-tls",
}

# (scripts/bench metric, peers.sh metric, what it is, higher is better)
METRICS = [
    ("bulk1_gbps", "bulk1_gbps", "1-stream Gbit/s", True),
    ("bulk8_gbps", "bulk8_gbps", "8-stream Gbit/s", True),
    ("rr_pinned_per_s", "rr1cpu_per_s", "round trips/s, 1 CPU", True),
    ("rr_free_per_s", "rr_per_s", "round trips/s, unpinned", True),
    ("crr_per_s", "crr_per_s", "new conn/s", True),
    ("rrload_idle_p99_us", "rrload_idle_p99_us", "idle p99 µs (rrload)", False),
    ("rrload_p50_us", "rrload_p50_us", "loaded p50 µs (rrload)", False),
    ("rrload_p99_us", "rrload_p99_us", "loaded p99 µs (rrload)", False),
    ("rrload_bulk_gbps", "rrload_bulk_gbps", "bulk alongside Gbit/s (rrload)", True),
]


def read_raw(path):
    """{(path, metric): [values by rep]}."""
    values = {}
    for _, path_name, metric, value in read_rows(path):
        values.setdefault((path_name, metric), []).append(value)
    return values


def median(values):
    return statistics.median(values) if values else None


def fmt(v):
    if v is None:
        return "–"
    if v >= 1000:
        return f"{v:,.0f}"
    return f"{v:.2f}" if v < 100 else f"{v:.0f}"


def compare(ours, peers, peer_path, tolerance):
    rows = []
    for our_metric, peer_metric, label, _ in METRICS:
        for our_path, peer_path_name in PATH_NAMES.items():
            a = median(ours.get((our_path, our_metric), []))
            b = median(peers.get((peer_path_name, peer_metric), []))
            if a is None or b is None:
                continue
            diff = (a - b) / b if b else None
            ratio_a = ratio_b = None
            if our_path not in ("direct", peer_path):
                pa = median(ours.get((peer_path, our_metric), []))
                pb = median(peers.get((PATH_NAMES[peer_path], peer_metric), []))
                ratio_a = a / pa if pa else None
                ratio_b = b / pb if pb else None
            rows.append({
                "figure": label, "metric": our_metric, "path": our_path, "bench": a, "peers": b, "diff": diff,
                "reproduced": diff is not None and abs(diff) <= tolerance,
                "ratio_bench": ratio_a, "ratio_peers": ratio_b,
            })
    return rows


def markdown(rows, peer_path, tolerance):
    lines = [
        f"| figure | path | scripts/bench | peers.sh | difference | × {peer_path}: bench / peers | |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        ratio = "–"
        if r["ratio_bench"] is not None and r["ratio_peers"] is not None:
            ratio = f"{r['ratio_bench']:.2f} / {r['ratio_peers']:.2f}"
        diff = "–" if r["diff"] is None else f"{r['diff'] * 100:+.0f} %"
        verdict = "reproduced" if r["reproduced"] else f"**off by more than {tolerance:.0%}**"
        lines.append(f"| {r['figure']} | {r['path']} | {fmt(r['bench'])} | {fmt(r['peers'])} "
                     f"| {diff} | {ratio} | {verdict} |")
    off = sum(not r["reproduced"] for r in rows)
    lines.append("")
    lines.append(f"{len(rows) - off} of {len(rows)} figures reproduced within {tolerance:.0%} "
                 "by the independent harness (medians of both runs).")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ours", required=True)
    ap.add_argument("--peers", required=True)
    ap.add_argument("--peer", default="ssh-gcm")
    ap.add_argument("--tolerance", type=float, default=0.10)
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.peer not in PATH_NAMES:
        sys.exit(f"crosscheck: --peer {args.peer} has no counterpart in peers.sh")
    rows = compare(read_raw(args.ours), read_raw(args.peers), args.peer, args.tolerance)
    if not rows:
        sys.exit("crosscheck: no figure was measured by both harnesses")
    text = markdown(rows, args.peer, args.tolerance)
    print(text, end="")
    if args.out:
        Path(args.out, "crosscheck.md").write_text(text, encoding="utf-8")
        Path(args.out, "crosscheck.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
