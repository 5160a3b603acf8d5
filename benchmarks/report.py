"""The perf suite's output: its section of RESULTS.md and its PNG charts.

Both are drawn from the raw results dict that run_suite.py saves as JSON, so
``run_suite.py --charts-only`` can redraw them without measuring again.
"""

from __future__ import annotations

import os
from pathlib import Path

from results_md import machine_lines, replace_section

SECTION = "suite"
SCRIPT = "benchmarks/run_suite.py"
SIZE_LABELS = {10: "10 B", 100: "100 B", 1024: "1 KiB", 10240: "10 KiB"}
TARGETS = {
    "produce_acks1": "≥ 1,000,000 records/s",
    "produce_acksall": "≥ 500,000 records/s",
    "consume": "≥ 1,500,000 records/s",
    "e2e": "p50 ≤ 0.5 ms, p99 ≤ 1 ms",
}
ACK_COLORS = {"0": "#4c72b0", "1": "#dd8452", "all": "#55a868"}


def machine() -> dict:
    return {"lines": machine_lines()}


def _size(n: int) -> str:
    return SIZE_LABELS.get(n, f"{n} B")


def _num(x) -> str:
    return "n/a" if x is None else f"{x:,.0f}"


def _ms(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _ok(rows: list[dict]) -> list[dict]:
    return [r for r in rows if "failed" not in r]


# ------------------------------------------------------------ charts


def draw_charts(results: dict, directory: Path) -> list[tuple[str, Path]]:
    """Draw the PNG charts into ``directory``; returns [(title, path)] of those drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    drawn = []
    mode = results.get("meta", {}).get("mode", "full")
    note = f"Ferry perf suite ({mode} run), one broker and client processes on one machine"

    def save(fig, name: str, title: str) -> None:
        fig.text(0.5, 0.005, note, ha="center", fontsize=7, color="gray")
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        path = directory / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        drawn.append((title, path))

    # throughput by record size, one line per acks (1 partition, 1 producer)
    produce = [r for r in _ok(results.get("produce", [])) if r["partitions"] == 1 and r["producers"] == 1]
    consume = [r for r in _ok(results.get("consume", [])) if r["partitions"] == 1]
    if produce:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
        for acks in ("0", "1", "all"):
            rows = sorted((r for r in produce if r["acks"] == acks), key=lambda r: r["size"])
            if rows:
                xs = [r["size"] for r in rows]
                ax1.plot(xs, [r["records_per_sec"] for r in rows], "o-", color=ACK_COLORS[acks],
                         label=f"produce acks={acks}")
                ax2.plot(xs, [r["mb_per_sec"] for r in rows], "o-", color=ACK_COLORS[acks],
                         label=f"produce acks={acks}")
        if consume:
            rows = sorted(consume, key=lambda r: r["size"])
            xs = [r["size"] for r in rows]
            ax1.plot(xs, [r["records_per_sec"] for r in rows], "s--", color="#8172b3", label="consume")
            ax2.plot(xs, [r["mb_per_sec"] for r in rows], "s--", color="#8172b3", label="consume")
        sizes = sorted({r["size"] for r in produce})
        ax1.set_yscale("log")  # before the formatters: setting a scale resets them
        ax1.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        for ax, ylabel in ((ax1, "records/s (log scale)"), (ax2, "MB/s (2^20 bytes)")):
            ax.set_xscale("log")
            ax.set_xticks(sizes, [_size(s) for s in sizes])
            ax.minorticks_off()
            ax.set_xlabel("record size")
            ax.set_ylabel(ylabel)
            ax.grid(True, alpha=0.3)
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax2.set_ylim(bottom=0)
        ax1.legend(fontsize=8)
        fig.suptitle("Throughput by record size (1 partition, 1 producer process)")
        save(fig, "throughput_by_record_size.png", "Throughput by record size")

    # throughput by partitions and producer processes, 100-byte records
    cells = [r for r in _ok(results.get("produce", [])) if r["size"] == 100]
    parts = sorted({r["partitions"] for r in cells})
    procs = sorted({r["producers"] for r in cells})
    if len(parts) > 1 or len(procs) > 1:
        acks_list = [a for a in ("0", "1", "all") if any(r["acks"] == a for r in cells)]
        fig, axes = plt.subplots(1, len(acks_list), figsize=(4 * len(acks_list), 4), sharey=True,
                                 squeeze=False)
        width = 0.8 / len(procs)
        for ax, acks in zip(axes[0], acks_list):
            for j, p in enumerate(procs):
                ys = []
                for part in parts:
                    match = [r for r in cells if r["acks"] == acks and r["partitions"] == part
                             and r["producers"] == p]
                    ys.append(match[0]["records_per_sec"] if match else 0)
                ax.bar([i + j * width for i in range(len(parts))], ys, width,
                       label=f"{p} producer process{'es' if p > 1 else ''}")
            ax.set_xticks([i + width * (len(procs) - 1) / 2 for i in range(len(parts))],
                          [f"{p} partition{'s' if p > 1 else ''}" for p in parts])
            ax.set_title(f"acks={acks}")
            ax.grid(True, axis="y", alpha=0.3)
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
        axes[0][0].set_ylabel("records/s")
        axes[0][0].legend(fontsize=8)
        fig.suptitle("Produce throughput by partitions and producer processes (100-byte records)")
        save(fig, "throughput_by_partitions.png", "Produce throughput by partitions and producer processes")

    # latency percentiles at 5,000 records/s
    series = []
    e2e = results.get("headline", {}).get("e2e")
    if e2e and "failed" not in e2e:
        series.append(("end to end (send → receive)", e2e["latency_ms"]))
    for r in _ok(results.get("ack_latency", [])):
        series.append((f"produce ack, acks={r['acks']}", r["latency_ms"]))
    if series:
        keys = [("p50", "50th"), ("p95", "95th"), ("p99", "99th"), ("p999", "99.9th")]
        fig, ax = plt.subplots(figsize=(9, 4.2))
        width = 0.8 / len(series)
        for j, (label, lat) in enumerate(series):
            ys = [lat[k] or 0 for k, _ in keys]
            bars = ax.bar([i + j * width for i in range(len(keys))], ys, width, label=label)
            ax.bar_label(bars, [f"{y:.2f}" for y in ys], fontsize=6, padding=1)
        ax.set_xticks([i + width * (len(series) - 1) / 2 for i in range(len(keys))],
                      [name for _, name in keys])
        ax.set_ylabel("ms")
        values = [lat[k] for _, lat in series for k, _ in keys if lat[k]]
        if values and max(values) / max(min(values), 1e-3) > 50:
            ax.set_yscale("log")
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title("Latency percentiles at 5,000 records/s, 100-byte records, linger_ms=0")
        save(fig, "latency_percentiles.png", "Latency percentiles at 5,000 records/s")
    return drawn


# ------------------------------------------------------------ RESULTS.md


def _headline_rows(headline: dict) -> list[str]:
    rows = []
    names = {
        "produce_acks1": "produce, acks=1",
        "produce_acksall": "produce, acks=all",
        "consume": "consume (iterating ConsumerRecord)",
    }
    for key, name in names.items():
        r = headline.get(key)
        if not r:
            continue
        if "failed" in r:
            rows.append(f"| {name} | failed: {r['failed'][:120]} | | {TARGETS[key]} | |")
            continue
        runs = " / ".join(_num(x.get("records_per_sec")) for x in r["runs"])
        rows.append(f"| {name} | **{_num(r['records_per_sec'])} records/s** ({r['mb_per_sec']:.1f} MB/s) "
                    f"| {runs} | {TARGETS[key]} | `{r['command']}` |")
    r = headline.get("e2e")
    if r:
        if "failed" in r:
            rows.append(f"| end-to-end latency at 5,000 records/s | failed: {r['failed'][:120]} | | "
                        f"{TARGETS['e2e']} | |")
        else:
            lat = r["latency_ms"]
            runs = " / ".join(f"{_ms((x.get('latency_ms') or {}).get('p50'))}, "
                              f"{_ms((x.get('latency_ms') or {}).get('p99'))}" for x in r["runs"])
            rows.append(f"| end-to-end latency at 5,000 records/s, p50 / p99 | **{_ms(lat['p50'])} / "
                        f"{_ms(lat['p99'])} ms** (p99.9 {_ms(lat['p999'])}, max {_ms(lat['max'])}) "
                        f"| {runs} | {TARGETS['e2e']} | `{r['command']}` |")
    return rows


def write_results(results: dict, out: Path, charts: list[tuple[str, Path]]) -> None:
    """Rewrite the suite's section of ``out`` (other sections are kept)."""
    meta = results.get("meta", {})
    out = Path(out)
    lines = [f"## Perf suite ({meta.get('mode', 'full')} run)", ""]
    lines += results.get("machine", {}).get("lines", machine_lines())
    lines += [
        f"- Broker: one `ferry broker` process with default settings on 127.0.0.1 and a temporary "
        f"data dir (nothing fsynced unless acks=all); peak RSS "
        f"{meta.get('broker_peak_rss_mb', 'n/a')} MB over the whole suite",
        f"- Load average (1, 5, 15 min) before: {meta.get('load_before')}, after: "
        f"{meta.get('load_after')}; the machine was shared with other work, so single runs are noisy",
        f"- Wall time: {meta.get('wall_minutes')} min",
        "",
        "Every figure is one `ferry perf ... --json` run (its command beside it) against a broker "
        "the suite started; `-b HOST:PORT` is left out of the commands. MB/s counts value bytes "
        "in units of 2^20 bytes, as Kafka's tools do.",
        "",
        f"### Headline: 100-byte records, no key, default settings (median of {meta.get('runs', 3)} runs)",
        "",
        "| figure | median | all runs | target | command |",
        "|---|---|---|---|---|",
        *_headline_rows(results.get("headline", {})),
        "",
        f"Each produce run writes {meta.get('headline_records', 0):,} records to a fresh one-partition "
        "topic; the consume runs read the first acks=1 topic from its beginning. The end-to-end "
        "runs send for "
        f"{meta.get('e2e_seconds', 0):g} s with linger_ms=0 and time each record from just before "
        "`send()` to the consumer process reaching it (latency in the \"all runs\" column: p50, p99).",
        "",
    ]
    acks_rows = _ok(results.get("ack_latency", []))
    if acks_rows:
        lines += [
            "### Produce acknowledgement latency at 5,000 records/s (100 B, linger_ms=0)",
            "",
            "| acks | avg ms | p50 | p95 | p99 | p99.9 | max | command |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in acks_rows:
            lat = r["latency_ms"]
            lines.append(f"| {r['acks']} | {_ms(lat['avg'])} | {_ms(lat['p50'])} | {_ms(lat['p95'])} | "
                         f"{_ms(lat['p99'])} | {_ms(lat['p999'])} | {_ms(lat['max'])} | `{r['command']}` |")
        lines.append("")
    produce = results.get("produce", [])
    if produce:
        lines += [
            "### Produce matrix (one run per cell)",
            "",
            "Each cell writes to a fresh topic created with `ferry topic create TOPIC -p PARTITIONS`; "
            "it sends about "
            f"{meta.get('cell_seconds', 0):g} s worth of records (sized from the cells before it). "
            "Latency is from `send()` to the acknowledgement with the producer running flat out, "
            "so it is mostly time spent queued in the producer's buffer.",
            "",
            "| record size | acks | partitions | producers | records | records/s | MB/s | p50 ms | p99 ms "
            "| command |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in produce:
            head = f"| {_size(r['size'])} | {r['acks']} | {r['partitions']} | {r['producers']} |"
            if "failed" in r:
                lines.append(f"{head} failed: {r['failed'][:100]} | | | | | `{r['command']}` |")
                continue
            lat = r["latency_ms"]
            lines.append(f"{head} {_num(r['records'])} | {_num(r['records_per_sec'])} | "
                         f"{r['mb_per_sec']:.1f} | {_ms(lat['p50'])} | {_ms(lat['p99'])} | "
                         f"`{r['command']}` |")
        lines.append("")
    consume = results.get("consume", [])
    if consume:
        lines += [
            "### Consume (each acks=1, single-producer matrix topic, read whole)",
            "",
            "| record size | partitions | records | records/s | MB/s | command |",
            "|---|---|---|---|---|---|",
        ]
        for r in consume:
            head = f"| {_size(r['size'])} | {r['partitions']} |"
            if "failed" in r:
                lines.append(f"{head} failed: {r['failed'][:100]} | | | `{r['command']}` |")
                continue
            lines.append(f"{head} {_num(r['records'])} | {_num(r['records_per_sec'])} | "
                         f"{r['mb_per_sec']:.1f} | `{r['command']}` |")
        lines.append("")
    if charts:
        lines += ["### Charts", ""]
        for title, path in charts:
            rel = os.path.relpath(path, out.parent)
            lines += [f"![{title}]({rel})", ""]
    errors = results.get("errors", [])
    if errors:
        lines += ["### Failed runs", ""]
        lines += [f"- `{e['command']}`: {e['error'][:300]}" for e in errors]
        lines.append("")
    replace_section(out, SECTION, SCRIPT, "\n".join(lines))
