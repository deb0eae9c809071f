#!/usr/bin/env python3
"""Turn a tools/bench-store.sh results directory into tables.

usage: bench-table.py RESULTS_DIR

Reads RESULTS_DIR/header.txt and RESULTS_DIR/results.tsv (lines of
dataset, run, tool, step, metric, value, load1), prints a plain-text table per
dataset (medians over runs, [min-max] beside them) followed by the same tables in
Markdown, and writes the Markdown alone to RESULTS_DIR/table.md.
Ratios are restic/bkfs and borg/bkfs: above 1 means bkfs is faster or smaller.
"""
import os
import statistics
import sys
from collections import defaultdict

TOOLS = ("bkfs", "restic", "borg")
BACKUP_STEPS = ("first", "nochange", "changed")
MIB = 1024 * 1024

# (label, kind, steps): kind says how the per-run value is taken.
ROWS = (
    ("first backup (s)", "time", ("first",)),
    ("no-change backup (s)", "time", ("nochange",)),
    ("backup after 10 changes + 50 MB (s)", "time", ("changed",)),
    ("full restore (s)", "time", ("restore",)),
    ("store size (MiB)", "size", ("size",)),
    ("peak RSS, backups (MiB)", "rss", BACKUP_STEPS),
    ("peak RSS, restore (MiB)", "rss", ("restore",)),
    ("CPU of first backup (s)", "cpu", ("first",)),
)


def load(path):
    # data[ds][tool][step][metric][run] = value
    data = defaultdict(lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(dict))))
    loads = defaultdict(list)
    others = defaultdict(list)
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 7:
                continue
            ds, run, tool, step, metric, value, l1 = parts
            if metric == "fail":
                data[ds][tool][step]["fail"][run] = value
                continue
            data[ds][tool][step][metric][run] = float(value)
            if metric == "time":
                loads[ds].append(float(l1))
            if metric == "others_pct":
                others[ds].append(float(value))
    return data, loads, others


def noise_text(loads, others):
    """One sentence on how busy the machine was with other work."""
    out = []
    if loads:
        out.append(f"load average (1 min) at the timed steps {min(loads):.2f}-{max(loads):.2f}")
    if others:
        out.append(f"CPU taken by other processes during the timed steps: median "
                   f"{statistics.median(others):.0f}%, max {max(others):.0f}% of the machine")
    return "; ".join(out)


def per_run(d, tool, kind, steps):
    """Values of one row for one tool, one per run that has them all."""
    t = d.get(tool)
    if t is None:
        return None, False
    failed = any(t[s]["fail"] for s in steps)
    if kind == "size":
        runs = t["size"]["repo_bytes"]
        return [v / MIB for v in runs.values()], failed
    metric = {"time": "time", "rss": "rss_kib", "cpu": "cpu"}[kind]
    runs = set.intersection(*(set(t[s][metric]) for s in steps))
    vals = []
    for r in sorted(runs):
        v = [t[s][metric][r] for s in steps]
        vals.append(max(v) / 1024 if kind == "rss" else max(v))
    return vals, failed


def fmt(v, kind):
    if kind == "time" or kind == "cpu":
        return f"{v:.2f}" if v < 10 else f"{v:.1f}"
    return f"{v:.0f}" if v >= 10 else f"{v:.1f}"


def summarise(d):
    """rows: (label, kind, {tool: (median, lo, hi) or 'fail' or None})."""
    out = []
    for label, kind, steps in ROWS:
        cells = {}
        for tool in TOOLS:
            vals, failed = per_run(d, tool, kind, steps)
            if vals:
                cells[tool] = (statistics.median(vals), min(vals), max(vals), len(vals))
            elif failed:
                cells[tool] = "fail"
            else:
                cells[tool] = None
        out.append((label, kind, cells))
    cp, _ = per_run(d, "cp", "time", ("restore",))
    cp = (statistics.median(cp), min(cp), max(cp), len(cp)) if cp else None
    return out, cp


def ratio(cells, tool):
    a, b = cells.get(tool), cells.get("bkfs")
    if isinstance(a, tuple) and isinstance(b, tuple) and b[0] > 0:
        return a[0] / b[0]
    return None


def cell_text(c, kind, spread):
    if c is None:
        return "-"
    if c == "fail":
        return "fail"
    med, lo, hi, n = c
    s = fmt(med, kind)
    if spread and n > 1 and kind != "size":
        s += f" [{fmt(lo, kind)}-{fmt(hi, kind)}]"
    return s


def ratio_text(r):
    return "-" if r is None else f"{r:.2f}x"


QUIET_PCT = 20  # "quiet" = other processes took at most this % of the machine


def quiet_rows(d):
    """Timed rows again, from the runs in which other processes took at most
    QUIET_PCT% of the machine during that very step: {label: {tool: (median, n)}}."""
    out = {}
    for label, kind, steps in ROWS:
        if kind != "time":
            continue
        step = steps[0]
        cells = {}
        for tool in (*TOOLS, "cp"):
            t = d.get(tool)
            if t is None:
                continue
            vals = [v for r, v in t[step]["time"].items()
                    if t[step]["others_pct"].get(r, 100) <= QUIET_PCT]
            if vals:
                cells[tool] = (statistics.median(vals), len(vals))
        out[label] = cells
    return out


def quiet_text(d, markdown):
    q = quiet_rows(d)
    if not any(q.values()):
        return ""
    def cell(c):
        return "-" if c is None else f"{fmt(c[0], 'time')} (n={c[1]})"
    def rat(cells, tool):
        a, b = cells.get(tool), cells.get("bkfs")
        return "-" if not (a and b and b[0] > 0) else f"{a[0] / b[0]:.2f}x"
    title = (f"Quiet steps only (other processes took <= {QUIET_PCT}% of the machine "
             f"during the step; median over those runs, n = how many):")
    head = ("step", "bkfs", "restic", "borg", "restic/bkfs", "borg/bkfs")
    body = []
    for label, cells in q.items():
        row = [label, *(cell(cells.get(t)) for t in TOOLS), rat(cells, "restic"), rat(cells, "borg")]
        body.append(row)
    cp = q.get("full restore (s)", {}).get("cp")
    if markdown:
        lines = [title, "", "| " + " | ".join(head) + " |", "|---|---:|---:|---:|---:|---:|"]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        if cp:
            lines += ["", f"`cp -a`, quiet: {cell(cp)} s."]
    else:
        w = [max(len(r[i]) for r in (head, *body)) for i in range(len(head))]
        lines = [title]
        for r in (head, *body):
            lines.append("  ".join(r[i].ljust(w[i]) if i == 0 else r[i].rjust(w[i])
                                   for i in range(len(r))))
        if cp:
            lines.append(f"cp -a, quiet: {cell(cp)} s")
    return "\n".join(lines)


def targets(rows, cp):
    """(target, measured, met) for the issue's targets; needs bkfs figures."""
    by = {label: cells for label, _, cells in rows}
    res = []

    def add(name, r, need):
        if r is not None:
            res.append((name, f"{r:.2f}x (need >= {need}x)", r >= need))

    add("first backup vs restic", ratio(by["first backup (s)"], "restic"), 3)
    add("first backup vs borg", ratio(by["first backup (s)"], "borg"), 5)
    add("no-change backup vs restic", ratio(by["no-change backup (s)"], "restic"), 3)
    add("restore vs restic", ratio(by["full restore (s)"], "restic"), 1.5)
    b = by["full restore (s)"].get("bkfs")
    if isinstance(b, tuple) and cp:
        res.append(("restore vs cp -a", f"bkfs {fmt(b[0], 'time')} s, cp -a {fmt(cp[0], 'time')} s",
                    b[0] <= cp[0]))
    add("store size vs restic", ratio(by["store size (MiB)"], "restic"), 1)
    rb = by["peak RSS, backups (MiB)"]
    rr = by["peak RSS, restore (MiB)"]
    if all(isinstance(x.get(t), tuple) for x in (rb, rr) for t in ("bkfs", "restic")):
        bk = max(rb["bkfs"][0], rr["bkfs"][0])
        rs = max(rb["restic"][0], rr["restic"][0])
        res.append(("peak memory vs restic", f"bkfs {bk:.0f} MiB, restic {rs:.0f} MiB", bk <= rs))
    return res


def text_table(ds, rows, cp, loads, others):
    head = ("step", "bkfs", "restic", "borg", "restic/bkfs", "borg/bkfs")
    body = []
    for label, kind, cells in rows:
        body.append((label, *(cell_text(cells[t], kind, True) for t in TOOLS),
                     ratio_text(ratio(cells, "restic")), ratio_text(ratio(cells, "borg"))))
    w = [max(len(r[i]) for r in (head, *body)) for i in range(len(head))]
    lines = [f"== {ds} =="]
    for r in (head, *body):
        lines.append("  ".join(r[i].ljust(w[i]) if i == 0 else r[i].rjust(w[i])
                               for i in range(len(r))))
    if cp:
        lines.append(f"cp -a of the same tree (restore reference): {cell_text(cp, 'time', True)} s")
    if loads or others:
        lines.append(noise_text(loads, others))
    for name, measured, met in targets(rows, cp):
        lines.append(f"target {name}: {measured}: {'met' if met else 'MISSED'}")
    return "\n".join(lines)


def md_table(ds, rows, cp, loads, others, nruns):
    lines = [f"**{ds}** (median of {nruns} runs)", "",
             "| step | bkfs | restic | borg | restic/bkfs | borg/bkfs |",
             "|---|---:|---:|---:|---:|---:|"]
    for label, kind, cells in rows:
        lines.append("| " + " | ".join((label, *(cell_text(cells[t], kind, False) for t in TOOLS),
                                        ratio_text(ratio(cells, "restic")),
                                        ratio_text(ratio(cells, "borg")))) + " |")
    lines.append("")
    if cp:
        lines.append(f"`cp -a` of the same tree: {fmt(cp[0], 'time')} s. ")
    if loads or others:
        t = noise_text(loads, others)
        lines.append(t[0].upper() + t[1:] + ".")
    t = targets(rows, cp)
    if t:
        lines += ["", "| target | measured | |", "|---|---|---|"]
        lines += [f"| {n} | {m} | {'met' if ok else '**missed**'} |" for n, m, ok in t]
    return "\n".join(lines)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__.split("\n")[2])
    out = sys.argv[1]
    data, loads, others = load(os.path.join(out, "results.tsv"))
    with open(os.path.join(out, "header.txt")) as f:
        header = f.read().rstrip("\n")
    texts, mds = [header, ""], [f"```\n{header}\n```", ""]
    for ds in data:
        rows, cp = summarise(data[ds])
        nruns = len({r for t in data[ds].values() for s in t.values()
                     for m in s.values() for r in m})
        texts += [text_table(ds, rows, cp, loads[ds], others[ds]), ""]
        mds += [md_table(ds, rows, cp, loads[ds], others[ds], nruns), ""]
        q = quiet_text(data[ds], False)
        if q:
            texts += [q, ""]
            mds += [quiet_text(data[ds], True), ""]
    md = "\n".join(mds)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(md)
    print("\n".join(texts))
    print("---- Markdown ----")
    print(md)


if __name__ == "__main__":
    main()
