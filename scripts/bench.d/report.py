#!/usr/bin/env python3
"""Turns scripts/bench's raw figures into its report.

report.py --raw RAW.tsv --meta META.tsv --out DIR --peer PATH [--readme README.md
          --chart-dest docs/bench.png] PATH...

RAW.tsv rows are (rep, path, metric, value); META.tsv rows are (key, value). Writes
DIR/results.json (every raw figure, medians, ratios, targets), DIR/report.md and
DIR/chart.png, and prints the report. With --readme it also replaces the "## Performance"
section of that file (appending one when there is none) and copies the chart.

A figure is the median over repetitions. A ratio is the median of the per-repetition
ratios to a peer measured in the same repetition, so a slow moment of the machine moves
both sides of a ratio together.
"""
import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import textwrap
from collections import defaultdict

# metric -> (column title, format, higher is better)
FIGURES = {
    "bulk1_gbps": ("1-stream Gbit/s", ".2f", True),
    "bulk8_gbps": ("8-stream Gbit/s", ".2f", True),
    "rr_pinned_per_s": ("round trips/s, 1 CPU", ".0f", True),
    "rr_free_per_s": ("round trips/s, unpinned", ".0f", True),
    "crr_per_s": ("new conn/s", ".0f", True),
    "cpu_s_per_gb": ("CPU s/GB", ".2f", False),
    "mem_kib_per_conn": ("KiB per idle conn", ".1f", False),
}
ENCRYPTED = ["ssh-gcm", "ssh-ctr", "stunnel", "tether-tls", "tether-ssh"]


def load(raw_path):
    data = defaultdict(dict)  # (path, metric) -> {rep: float or None}
    with open(raw_path) as f:
        for row in csv.DictReader(f, delimiter="\t"):
            try:
                v = float(row["value"])
            except ValueError:
                v = None  # FAIL or empty
            data[(row["path"], row["metric"])][int(row["rep"])] = v
    return data


def derive(data):
    """Adds the figures computed from several raw ones, per repetition."""
    paths = {p for p, _ in data}
    for p in paths:
        reps = set(data.get((p, "bulk1_gbps"), {})) | set(data.get((p, "mem_rss_kb"), {})) \
            | set(data.get((p, "rrload_p99_us"), {})) \
            | {r for (q, m), v in list(data.items()) if q == p and m.startswith("udp") for r in v}
        for r in reps:
            cpu = [data.get((p, f"bulk{n}_path_cpu_s"), {}).get(r) for n in (1, 8)]
            gb = [data.get((p, f"bulk{n}_bytes"), {}).get(r) for n in (1, 8)]
            if all(v is not None for v in cpu + gb) and sum(gb) > 0:
                data[(p, "cpu_s_per_gb")][r] = sum(cpu) / (sum(gb) / 1e9)
            for m in [m for q, m in list(data) if q == p and m.startswith("udp")
                      and m.endswith("_path_cpu_s")]:
                size = m[3:-len("_path_cpu_s")]
                cpu = data[(p, m)].get(r)
                got = data.get((p, f"udp{size}_received"), {}).get(r)
                if cpu is not None and got:
                    data[(p, f"udp{size}_cpu_us_per_dgram")][r] = cpu / got * 1e6
            idle = data.get((p, "rrload_idle_p99_us"), {}).get(r)
            loaded = data.get((p, "rrload_p99_us"), {}).get(r)
            if idle and loaded is not None:
                data[(p, "rrload_p99_vs_idle")][r] = loaded / idle
            # What the connections add: the processes' size before them (the program, its
            # libraries, its pools) is not a cost of each connection. Runs that did not
            # record it fall back to the whole size.
            rss = data.get((p, "mem_rss_kb"), {}).get(r)
            base = data.get((p, "mem_base_rss_kb"), {}).get(r) or 0
            held = data.get((p, "mem_held"), {}).get(r)
            if rss is not None and held:
                data[(p, "mem_kib_per_conn")][r] = (rss - base) / held

    for p in paths:
        for n in workers_counts(data, [p]):
            for r, gb in list(data.get((p, f"workers{n}_bytes"), {}).items()):
                cpu = data.get((p, f"workers{n}_server_cpu_s"), {}).get(r)
                wall = data.get((p, f"workers{n}_wall_s"), {}).get(r)
                ccpu = data.get((p, f"workers{n}_clients_cpu_s"), {}).get(r)
                if cpu is not None and gb:
                    data[(p, f"workers{n}_server_cpu_s_per_gb")][r] = cpu / (gb / 1e9)
                if wall:
                    if cpu is not None:
                        data[(p, f"workers{n}_server_core_pct")][r] = 100 * cpu / wall
                    if ccpu is not None:
                        data[(p, f"workers{n}_clients_core_pct")][r] = 100 * ccpu / wall


def values(data, path, metric):
    return [v for _, v in sorted(data.get((path, metric), {}).items()) if v is not None]


def median(data, path, metric):
    v = values(data, path, metric)
    return statistics.median(v) if v else None


def ratio(data, path, metric, peer):
    """Median over repetitions of path/peer, peer measured in the same repetition."""
    mine, theirs = data.get((path, metric), {}), data.get((peer, metric), {})
    r = [mine[k] / theirs[k] for k in mine if mine[k] is not None and theirs.get(k)]
    return statistics.median(r) if r else None


def ratio_to_best_other(data, path, metric, others):
    """Median over repetitions of path / min(others) (lower-is-better figures)."""
    mine = data.get((path, metric), {})
    r = []
    for k, v in mine.items():
        theirs = [data.get((o, metric), {}).get(k) for o in others]
        theirs = [t for t in theirs if t]
        if v is not None and theirs:
            r.append(v / min(theirs))
    return statistics.median(r) if r else None


def fmt(x, spec, missing="–"):
    return missing if x is None else format(x, spec)


def targets(data, paths, conns):
    """The issue's goals, each as the figure that decides it."""
    def vs(path, metric, peer, goal, what):
        ok_paths = path in paths and peer in paths
        r = ratio(data, path, metric, peer) if ok_paths else None
        return {"target": what, "path": path, "metric": metric, "peer": peer,
                "goal": f"≥ {goal}×", "value": r,
                "shown": fmt(r, ".2f", "n/a") + "×" if r is not None else "n/a",
                "met": None if r is None else r >= goal}

    out = [
        vs("tether-tls", "bulk1_gbps", "ssh-gcm", 1.5, "tether-tls 1-stream bulk vs ssh-gcm"),
        vs("tether-tls", "bulk1_gbps", "socat", 0.8, "tether-tls 1-stream bulk vs socat"),
        vs("tether-tls", "bulk8_gbps", "stunnel", 2.0, "tether-tls 8-stream bulk vs stunnel"),
        vs("tether-tls", "rr_pinned_per_s", "ssh-gcm", 1.3,
           "tether-tls round trips/s (1 CPU) vs ssh-gcm"),
        vs("tether-tls", "crr_per_s", "ssh-gcm", 1.5, "tether-tls new connections/s vs ssh-gcm"),
    ]
    others = [p for p in ENCRYPTED if p != "tether-tls" and p in paths]
    r = ratio_to_best_other(data, "tether-tls", "cpu_s_per_gb", others) \
        if "tether-tls" in paths and others else None
    out.append({"target": "tether-tls CPU s/GB below every other encrypted path",
                "path": "tether-tls", "metric": "cpu_s_per_gb", "peer": " ".join(others),
                "goal": "< 1.00× the lowest of " + ", ".join(others), "value": r,
                "shown": fmt(r, ".2f", "n/a") + "×" if r is not None else "n/a",
                "met": None if r is None else r < 1.0})
    m = median(data, "tether-tls", "mem_kib_per_conn") if "tether-tls" in paths else None
    held = median(data, "tether-tls", "mem_held")
    note = "" if held is None or held >= conns else f" (only {held:.0f} held)"
    out.append({"target": f"tether-tls memory per idle connection at {conns} connections",
                "path": "tether-tls", "metric": "mem_kib_per_conn", "peer": None,
                "goal": "≤ 8 KiB", "value": m,
                "shown": (fmt(m, ".1f") + " KiB" + note) if m is not None else "n/a",
                "met": None if m is None or note else m <= 8.0})
    out.append(vs("tether-ssh", "bulk1_gbps", "ssh-ctr", 0.9,
                  "tether-ssh 1-stream bulk vs ssh-ctr"))
    # Latency under load: lower is better.
    loaded = "tether-tls" in rrload_paths(META)
    r = median(data, "tether-tls", "rrload_p99_vs_idle") if loaded else None
    out.append({"target": "tether-tls loaded p99 vs its idle p99 (latency under load)",
                "path": "tether-tls", "metric": "rrload_p99_vs_idle", "peer": None,
                "goal": "≤ 3×", "value": r,
                "shown": fmt(r, ".1f", "n/a") + "×" if r is not None else "n/a",
                "met": None if r is None else r <= 3.0})
    r = ratio(data, "tether-tls", "rrload_p99_us", "ssh-gcm") \
        if loaded and "ssh-gcm" in rrload_paths(META) else None
    out.append({"target": "tether-tls loaded p99 vs ssh-gcm's loaded p99", "path": "tether-tls",
                "metric": "rrload_p99_us", "peer": "ssh-gcm", "goal": "≤ 0.25×", "value": r,
                "shown": fmt(r, ".2f", "n/a") + "×" if r is not None else "n/a",
                "met": None if r is None else r <= 0.25})
    return out


# (path, metric) of the figures the cross-check did not reproduce within its tolerance:
# marked in the tables so that none is shown as if it were confirmed.
UNREPRODUCED = set()
DAGGER = " †"


def marked(cell, path, metric):
    return cell + DAGGER if (path, metric) in UNREPRODUCED else cell


def main_table(data, paths, peer):
    cols = ["bulk1_gbps", "bulk8_gbps", "rr_pinned_per_s", "rr_free_per_s", "crr_per_s",
            "cpu_s_per_gb", "mem_kib_per_conn"]
    head = ["path"]
    for c in cols:
        head.append(FIGURES[c][0])
        if c != "mem_kib_per_conn":
            head.append(f"× {peer}")
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for p in paths:
        row = [p]
        for c in cols:
            spec = FIGURES[c][1]
            v = median(data, p, c)
            fails = sum(1 for x in data.get((p, c), {}).values() if x is None)
            cell = fmt(v, spec) + (f" ({fails} failed)" if fails else "")
            if c == "mem_kib_per_conn" and v is not None:
                held = median(data, p, "mem_held")
                if held is not None and held < int(META.get("conns", "0")):
                    cell += f" (held {held:.0f})"
            row.append(marked(cell, p, c))
            if c != "mem_kib_per_conn":
                row.append("1.00" if p == peer and v is not None else fmt(ratio(data, p, c, peer), ".2f"))
        lines.append("| " + " | ".join(row) + " |")
    return lines


def udp_paths(meta):
    return meta.get("udp_paths", "").split()


def udp_sizes(data, paths):
    """The datagram sizes measured, from the metric names (udp64_per_s, udp1400_per_s)."""
    sizes = {int(m[3:-6]) for p, m in data if p in paths and m.startswith("udp")
             and m.endswith("_per_s") and m[3:-6].isdigit()}
    return sorted(sizes)


def udp_table(data, meta):
    """Echoed datagrams/s and loss per UDP path and size, with ratios to the UDP peer."""
    paths = udp_paths(meta)
    peer = meta.get("udp_peer", "socat")
    sizes = udp_sizes(data, paths)
    if not paths or not sizes:
        return []
    head = ["path"]
    for n in sizes:
        head += [f"{n:,} B datagrams/s", "loss %", f"× {peer}", "path CPU µs/datagram"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for p in paths:
        row = [p]
        for n in sizes:
            rate = median(data, p, f"udp{n}_per_s")
            fails = sum(1 for x in data.get((p, f"udp{n}_per_s"), {}).values() if x is None)
            row.append(fmt(rate, ",.0f") + (f" ({fails} failed)" if fails else ""))
            row.append(fmt(median(data, p, f"udp{n}_loss_pct"), ".2f"))
            row.append("1.00" if p == peer and rate is not None
                       else fmt(ratio(data, p, f"udp{n}_per_s", peer), ".2f"))
            row.append(fmt(median(data, p, f"udp{n}_cpu_us_per_dgram"), ".1f"))
        lines.append("| " + " | ".join(row) + " |")
    return lines


def rrload_paths(meta):
    return meta.get("rrload_paths", "").split()


def rrload_table(data, meta):
    """Latency under load: idle and loaded ping-pong through one instance of each path."""
    paths = rrload_paths(meta)
    if not paths:
        return []
    peer = "ssh-gcm"
    head = ["path", "idle p50 µs", "idle p99 µs", "loaded p50 µs", "loaded p99 µs",
            "loaded/idle p99", f"loaded p99 × {peer}", "loaded round trips/s",
            "bulk Gbit/s alongside"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for p in paths:
        fails = sum(1 for x in data.get((p, "rrload_per_s"), {}).values() if x is None)
        loaded_p99 = median(data, p, "rrload_p99_us")
        lines.append("| " + " | ".join([
            p,
            fmt(median(data, p, "rrload_idle_p50_us"), ",.0f"),
            marked(fmt(median(data, p, "rrload_idle_p99_us"), ",.0f"), p, "rrload_idle_p99_us"),
            marked(fmt(median(data, p, "rrload_p50_us"), ",.0f"), p, "rrload_p50_us"),
            marked(fmt(loaded_p99, ",.0f") + (f" ({fails} failed)" if fails else ""), p,
                   "rrload_p99_us"),
            fmt(median(data, p, "rrload_p99_vs_idle"), ".1f"),
            "1.00" if p == peer and loaded_p99 is not None
            else fmt(ratio(data, p, "rrload_p99_us", peer), ".2f"),
            fmt(median(data, p, "rrload_per_s"), ",.0f"),
            marked(fmt(median(data, p, "rrload_bulk_gbps"), ".2f"), p, "rrload_bulk_gbps"),
        ]) + " |")
    return lines


def workers_paths(meta):
    return meta.get("workers_paths", "").split()


def workers_counts(data, paths):
    """The worker counts measured, from the metric names (workers1_gbps, workers2_gbps)."""
    return sorted({int(m[7:-5]) for p, m in list(data) if p in paths
                   and m.startswith("workers") and m.endswith("_gbps") and m[7:-5].isdigit()})


def ratio_within(data, path, metric, base):
    """Median over repetitions of metric/base, both of the same path and repetition."""
    mine, theirs = data.get((path, metric), {}), data.get((path, base), {})
    r = [mine[k] / theirs[k] for k in mine if mine[k] is not None and theirs.get(k)]
    return statistics.median(r) if r else None


def workers_table(data, meta):
    """Four sessions, one bulk stream each, through one server with 1 and 2 workers."""
    paths = workers_paths(meta)
    counts = workers_counts(data, paths)
    if not paths or not counts:
        return []
    base = counts[0]
    noun = "worker" if base == 1 else "workers"
    head = ["path", "server", "aggregate Gbit/s", f"× {base} {noun}", "server CPU s/GB",
            f"× {base} {noun}", "server % of a core", "busiest threads, % of a core",
            "tether clients % of a core", "machine busy %"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(["---", "---"] + ["---:"] * (len(head) - 2)) + "|"]
    for p in paths:
        for n in counts:
            g = median(data, p, f"workers{n}_gbps")
            fails = sum(1 for x in data.get((p, f"workers{n}_gbps"), {}).values() if x is None)
            cpu_gb = median(data, p, f"workers{n}_server_cpu_s_per_gb")
            t1 = median(data, p, f"workers{n}_thread1_pct")
            t2 = median(data, p, f"workers{n}_thread2_pct")
            threads = fmt(t1, ".0f") if n == 1 or t2 is None else \
                f"{fmt(t1, '.0f')} / {fmt(t2, '.0f')}"
            if n == base:
                x_gbps = "1.00" if g is not None else "–"
                x_cpu = "1.00" if cpu_gb is not None else "–"
            else:
                x_gbps = fmt(ratio_within(data, p, f"workers{n}_gbps", f"workers{base}_gbps"),
                             ".2f")
                x_cpu = fmt(ratio_within(data, p, f"workers{n}_server_cpu_s_per_gb",
                                         f"workers{base}_server_cpu_s_per_gb"), ".2f")
            lines.append("| " + " | ".join([
                p, f"--workers {n}",
                fmt(g, ".2f") + (f" ({fails} failed)" if fails else ""), x_gbps,
                fmt(cpu_gb, ".2f"), x_cpu,
                fmt(median(data, p, f"workers{n}_server_core_pct"), ".0f"),
                threads,
                fmt(median(data, p, f"workers{n}_clients_core_pct"), ".0f"),
                fmt(median(data, p, f"workers{n}_busy_pct"), ".0f"),
            ]) + " |")
    return lines


def workers_lines(data, meta):
    """The workers table with its title and what it measures."""
    table = workers_table(data, meta)
    if not table:
        return []
    foreign = [v for p in workers_paths(meta) for v in values(data, p, "workers_max_foreign_pct")]
    noise = (f" Other processes used up to {max(foreign):.0f}% of the machine during these "
             "tests." if foreign else "")
    load = meta.get("workers_load", "")
    return ["", "Server workers: 4 sessions × 1 stream", ""] + wrap(
        f"{load[:1].upper() + load[1:]}. The `×` columns are medians of the per-repetition "
        "ratios to the first row. Server CPU counts the server process (all its threads) over "
        "the transfer, per GB received; a share of a core is CPU time over the transfer's "
        "time (100 = one core)." + noise) + [""] + table


def targets_table(ts):
    lines = ["| target | goal | measured | |", "|---|---|---:|---|"]
    for t in ts:
        verdict = "n/a" if t["met"] is None else ("met" if t["met"] else "**not met**")
        lines.append(f"| {t['target']} | {t['goal']} | {t['shown']} | {verdict} |")
    return lines


def diagnostics(data, paths):
    lines = ["| path | others' CPU % (max) | redos | RR p50 µs, 1 CPU / unpinned | "
             "new conn p50 µs, errors | machine busy % 1-/8-stream | idle conns held, RSS MiB "
             "(before) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for p in paths:
        fo = values(data, p, "path_max_foreign_pct")
        rd = values(data, p, "path_redos")
        held = median(data, p, "mem_held")
        rss, base = median(data, p, "mem_rss_kb"), median(data, p, "mem_base_rss_kb")
        mem = "–" if held is None else (
            f"{held:.0f}, {fmt(rss and rss / 1024, '.1f')} ({fmt(base and base / 1024, '.1f')})")
        lines.append("| " + " | ".join([
            p,
            fmt(max(fo) if fo else None, ".0f"),
            fmt(sum(rd) if rd else None, ".0f"),
            f"{fmt(median(data, p, 'rr_pinned_p50_us'), '.0f')} / "
            f"{fmt(median(data, p, 'rr_free_p50_us'), '.0f')}",
            f"{fmt(median(data, p, 'crr_p50_us'), '.0f')}, "
            f"{fmt(sum(values(data, p, 'crr_errors')) if values(data, p, 'crr_errors') else None, '.0f')}",
            f"{fmt(median(data, p, 'bulk1_busy_pct'), '.0f')} / "
            f"{fmt(median(data, p, 'bulk8_busy_pct'), '.0f')}",
            mem,
        ]) + " |")
    return lines


def write_chart_data(data, paths, metrics, file_name):
    """gnuplot's input: a row per path, its metrics' medians (NaN where not measured)."""
    with open(file_name, "w") as f:
        f.write("# path " + " ".join(metrics) + "\n")
        for p in paths:
            row = [median(data, p, m) for m in metrics]
            f.write(p + " " + " ".join("NaN" if v is None else f"{v:.3f}" for v in row) + "\n")


def chart(data, paths, out_dir, meta):
    """Throughput and round-trip latency per path, as one PNG (gnuplot)."""
    dat = os.path.join(out_dir, "chart.dat")
    write_chart_data(data, paths,
                     ("bulk1_gbps", "bulk8_gbps", "rr_pinned_p50_us", "rr_free_p50_us"), dat)
    loaded_dat = os.path.join(out_dir, "chart-rrload.dat")
    if rrload_paths(meta):
        write_chart_data(data, rrload_paths(meta), ("rrload_idle_p99_us", "rrload_p99_us"),
                         loaded_dat)
    # Latency under load, where it was measured: p99 idle and loaded, on a log scale (the
    # two differ by one to two orders of magnitude).
    loaded_panel = "" if not rrload_paths(meta) else f"""
set title "1-byte round trip while bulk shares the path, p99, lower is better"
set ylabel "µs (log scale)"
set logscale y
set yrange [10:*]
plot "{loaded_dat}" using 2:xtic(1) title "idle" lc rgb "#8c8c8c", \\
     "" using 3 title "under load (iperf3 -P 4 alongside)" lc rgb "#7b4ea3"
"""
    png = os.path.join(out_dir, "chart.png")
    reps = meta.get("reps", "?")
    title = (f"loopback, {meta.get('machine', '').split(',')[0]}, {meta.get('date', '')[:10]}; "
             f"median{'' if reps == '1' else 's'} of {reps} repetition{'' if reps == '1' else 's'}")
    script = f"""
set terminal pngcairo size {1500 if loaded_panel else 1100},460 font "sans,10"
set output "{png}"
set datafile missing "NaN"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set key below
set xtics rotate by 25 right nomirror
set yrange [0:*]
set multiplot layout 1,{3 if loaded_panel else 2} title "tether and its peers ({title})"
set title "bulk throughput (iperf3 -l 1M), higher is better"
set ylabel "Gbit/s"
plot "{dat}" using 2:xtic(1) title "1 stream" lc rgb "#3b75af", \\
     "" using 3 title "8 streams" lc rgb "#ef8636"
set title "1-byte round trip, median latency, lower is better"
set ylabel "µs"
plot "{dat}" using 4:xtic(1) title "all on 1 CPU" lc rgb "#519e3e", \\
     "" using 5 title "unpinned" lc rgb "#c53a32"
{loaded_panel}unset multiplot
"""
    gp = os.path.join(out_dir, "chart.gp")
    with open(gp, "w") as f:
        f.write(script)
    try:
        r = subprocess.run(["gnuplot", gp], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        print(f"chart: gnuplot did not run: {e}", file=sys.stderr)
        return None
    if r.returncode != 0 or not os.path.exists(png):
        print(f"chart: gnuplot failed: {r.stderr.strip()}", file=sys.stderr)
        return None
    return png


def wrap(text, bullet=False):
    """Prose wrapped like the rest of the README; tables and images stay on one line."""
    return textwrap.wrap(text, width=95, initial_indent="- " if bullet else "",
                         subsequent_indent="  " if bullet else "", break_on_hyphens=False,
                         break_long_words=False)


def webhook_lines(data):
    """The HTTP API's messages/s through one webhook beside nginx serving a static file."""
    hooks = values(data, "webhook", "webhook_msgs_s")
    static = values(data, "webhook", "nginx_static_req_s")
    if not hooks:
        return []
    text = (f"Messages through `POST /webhooks/{{token}}` (wrk, 32 connections, each message "
            f"stored with a synchronous SQLite commit before its answer): "
            f"{statistics.median(hooks):,.0f} messages/s")
    if static:
        text += (f"; nginx serving a static file in the same run: "
                 f"{statistics.median(static):,.0f} requests/s")
    return [""] + wrap(text + ".")


def read_section(path):
    """A Markdown part written by another step (long links, cross-check), without its own
    heading and surrounding blank lines."""
    with open(path) as f:
        lines = [l.rstrip("\n") for l in f if not l.startswith("#")]
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def report(data, paths, peer, meta, skipped, ts, extra_sections=()):
    reps = meta.get("reps", "?")
    lines = ["## Performance", ""]
    lines += wrap(
        "`scripts/bench` runs tether beside its peers over loopback in one run, every path "
        "from a local port to a target on 127.0.0.1 (`--quick` for a short run). Figures are "
        f"medians of {reps} repetition{'' if reps == '1' else 's'}; `× {peer}` is the median "
        f"of the per-repetition ratios to {peer} measured in the same repetition. Everything, "
        "load generators included, shares the machine's CPUs, so compare ratios within one "
        "run, not absolute figures across runs.")
    foreign = [v for p in paths for v in values(data, p, "path_max_foreign_pct")]
    noise = (f" In a path's bulk and connection tests, other processes used a median of "
             f"{statistics.median(foreign):.0f}% of the machine ({max(foreign):.0f}% at worst)"
             if foreign else "")
    nice = meta.get("nice", "0")
    if nice not in ("", "0"):
        noise += (f"{';' if noise else ''} the measured processes ran at nice {nice} "
                  "so that others got mostly the CPU time they left idle")
    noise += "." if noise else ""
    lines += [""] + wrap(
        f"Machine: {meta.get('machine', '?')}. Run {meta.get('date', '?')}, commit "
        f"{meta.get('commit', '?')}, {meta.get('runtime_s', '?')} s of measuring.{noise}") + [""]
    lines += main_table(data, paths, peer)
    if UNREPRODUCED:
        lines += [""] + wrap("† not reproduced within 10 % by the independent harness in the "
                             "cross-check below (its medians differ more than that).")
    lines += ["", "Targets (ratios in the same run):", ""]
    lines += targets_table(ts)
    udp = udp_table(data, meta)
    if udp:
        lines += [""] + wrap(
            f"UDP: datagrams echoed per second and datagrams lost, through each UDP path "
            f"({meta.get('udp_load', '')}); `× {meta.get('udp_peer', 'socat')}` as above. "
            "Path CPU counts the relay's own processes per datagram echoed.") + [""]
        lines += udp
    rrload = rrload_table(data, meta)
    if rrload:
        lines += [""] + wrap(
            "Latency under load: a 1-byte ping-pong on one connection, idle and then while "
            "bulk runs through a second mapping of the same path instance (one ssh "
            "connection; one `tether connect`, whose bulk streams move to its bulk lane; one "
            "stunnel pair). `loaded/idle p99` and "
            "`× ssh-gcm` are medians of per-repetition ratios; lower is better.") + [""]
        lines += rrload
    lines += workers_lines(data, meta)
    lines += webhook_lines(data)
    for title, path in extra_sections:
        if path and os.path.exists(path):
            lines += ["", f"{title}:", ""] + read_section(path)
    lines += [""] + wrap("What limits each figure, and what an idle connection holds: "
                         "[docs/PERFORMANCE.md](docs/PERFORMANCE.md).")
    lines += ["", "![throughput and latency per path](docs/bench.png)", "", "Paths and load:", ""]
    for p in paths:
        lines += wrap(f"`{p}`: {meta.get('path.' + p, '')}", bullet=True)
    for p, why in skipped.items():
        lines += wrap(f"`{p}`: skipped: {why}", bullet=True)
    for p in udp_paths(meta):
        lines += wrap(f"`{p}` (UDP): {meta.get('udp_path.' + p, '')}", bullet=True)
    for p in rrload_paths(meta):
        if p not in paths:
            lines += wrap(f"`{p}` (latency under load only): {meta.get('path.' + p, '')}",
                          bullet=True)
    if rrload_paths(meta):
        lines += wrap(f"latency under load: {meta.get('rrload_load', '')}", bullet=True)
    for k, why in meta.items():
        if k.startswith("udp_skip."):
            lines += wrap(f"`{k[9:]}` (UDP): skipped: {why}", bullet=True)
    lines += wrap(f"load: {meta.get('load', '')}. CPU s/GB counts only the path's own "
                  "processes (relays, sshd, tether) over both bulk tests. Memory is what the "
                  "RSS of the path's processes grew by while the idle connections were open, "
                  "divided by their number (their RSS before is in the details table)"
                  + (f"; {meta['mem_note']}" if meta.get("mem_note") else "."),
                  bullet=True)
    lines += wrap(f"packages: {meta.get('versions', '')}", bullet=True)
    return lines


def update_readme(readme, section, chart_png, chart_dest):
    text = open(readme).read() if os.path.exists(readme) else ""
    lines = text.splitlines()
    start = next((i for i, l in enumerate(lines) if l.strip() == "## Performance"), None)
    if start is None:
        new = lines + ([""] if lines and lines[-1].strip() else []) + section
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
                   len(lines))
        new = lines[:start] + section + ([""] + lines[end:] if end < len(lines) else [])
    with open(readme, "w") as f:
        f.write("\n".join(new).rstrip("\n") + "\n")
    if chart_png and chart_dest:
        os.makedirs(os.path.dirname(chart_dest), exist_ok=True)
        shutil.copyfile(chart_png, chart_dest)


META = {}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True)
    ap.add_argument("--meta", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--peer", default="ssh-gcm")
    ap.add_argument("--readme")
    ap.add_argument("--chart-dest")
    ap.add_argument("--longlink", help="longlink.md of bench.d/linkemu-report.py")
    ap.add_argument("--crosscheck", help="crosscheck.md of bench.d/crosscheck.py")
    ap.add_argument("--workers-only", action="store_true",
                    help="only the server workers table, to DIR/workers.md and results.json")
    ap.add_argument("paths", nargs="*")
    a = ap.parse_args()

    with open(a.meta) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("\t")
            META[k] = v
    skipped = {k[5:]: v for k, v in META.items() if k.startswith("skip.")}
    data = load(a.raw)
    derive(data)
    if a.workers_only:
        md = "\n".join(["# tether server workers"] + workers_lines(data, META)) + "\n"
        with open(os.path.join(a.out, "workers.md"), "w") as f:
            f.write(md)
        raw = defaultdict(dict)
        for (p, m), reps in data.items():
            raw[p][m] = {str(r): v for r, v in sorted(reps.items())}
        with open(os.path.join(a.out, "results.json"), "w") as f:
            json.dump({"meta": META, "raw": raw}, f, indent=1)
        sys.stdout.write(md)
        return
    paths = a.paths
    conns = int(META.get("conns", "10000"))
    ts = targets(data, paths, conns)

    png = chart(data, paths, a.out, META)
    if a.crosscheck and os.path.exists(a.crosscheck.replace(".md", ".json")):
        with open(a.crosscheck.replace(".md", ".json")) as f:
            UNREPRODUCED.update((r["path"], r["metric"]) for r in json.load(f)
                                if not r["reproduced"])
    sections = [("Long links: one iperf3 stream through bench.d/linkemu between the path's two "
              "ends", a.longlink),
             ("Cross-check: the same paths measured by the independent harness "
              "(peers.sh) right after", a.crosscheck)]
    section = report(data, paths, a.peer, META, skipped, ts, sections)
    full = ["# tether beside its peers", ""] + section[2:] + \
        ["", "### Diagnostics", "",
         ] + wrap("Others' CPU %: share of the whole machine (100 = all CPUs) used by processes "
                  "this run did not start, in the worst bulk or connection test of a path (the "
                  "tests that want both CPUs). A path is redone, within the time budget, when "
                  "that passes the limit and the machine is quiet again.") + [""] + \
        diagnostics(data, paths)
    report_md = "\n".join(full).replace("(docs/bench.png)", "(chart.png)") + "\n"
    with open(os.path.join(a.out, "report.md"), "w") as f:
        f.write(report_md)

    summary = {}
    extra = [u for u in udp_paths(META) + rrload_paths(META) + workers_paths(META)
             if u not in paths]
    for p in paths + list(dict.fromkeys(extra)):
        summary[p] = {}
        for m in sorted({m for q, m in data if q == p}):
            v = values(data, p, m)
            summary[p][m] = {"median": statistics.median(v) if v else None,
                             "values": [data[(p, m)][r] for r in sorted(data[(p, m)])],
                             f"ratio_to_{a.peer}": ratio(data, p, m, a.peer)}
    raw = defaultdict(dict)
    for (p, m), reps in data.items():
        raw[p][m] = {str(r): v for r, v in sorted(reps.items())}
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump({"meta": META, "paths": paths, "skipped": skipped, "peer": a.peer,
                   "summary": summary, "targets": ts, "raw": raw}, f, indent=1)

    if a.readme:
        update_readme(a.readme, section, png, a.chart_dest)
    sys.stdout.write(report_md)


if __name__ == "__main__":
    main()
