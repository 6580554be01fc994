"""Summaries, the markdown table and the charts of a benchmark run.

    .bench-venv/bin/python benches/report.py benches/results/<date>-<host>.json \\
        [--doc docs/benchmarks.md]

rewrites the generated part of ``docs/benchmarks.md`` (between the
``<!-- bench:begin -->`` and ``<!-- bench:end -->`` markers) and the charts
``docs/img/bench-<dataset>.png`` from a results file written by
``benches/suite.py``; the suite calls the same functions at the end of a run.

Every figure is the median over the samples of a (dataset, reader, phase) with
the min-max spread: one sample per repeat for single-epoch readers and cold
epochs, two per repeat for warm epochs (2 and 3) of alluxiofs.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"

LABELS = {
    "raw": "raw local disk",
    "s3fs": "s3fs",
    "simplecache": "simplecache::s3",
    "blockcache": "blockcache::s3",
    "obstore": "obstore (fsspec)",
    "pypi-1w": "alluxiofs 1.0.3 (PyPI), 1 worker",
    "alluxiofs-1w": "alluxiofs, 1 worker",
    "alluxiofs-3w": "alluxiofs, 3 workers",
}
DATASET_TITLES = {
    "small": "Small files (100 KiB each, shuffled, {c} threads)",
    "large": "Large files, sequential 8 MiB reads",
    "parquet": "Parquet, 2 of 20 columns through PyArrow",
    "random": "Random 4 KiB reads in one file ({c} threads)",
}


def versions() -> dict[str, str]:
    """Versions of the packages measured."""
    out = {}
    for pkg in ("alluxiofs", "fsspec", "s3fs", "obstore", "pyarrow"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "missing"
    out["alluxiofs-pypi"] = "1.0.3"
    return out


def _phase(reader_epochs: int, epoch: int) -> str:
    if reader_epochs == 1:
        return "-"
    return "cold" if epoch == 1 else "warm"


def _stat(values: list[float]) -> dict:
    return {"med": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(results: dict) -> list[dict]:
    """One row per (dataset, reader, phase) with medians, spreads and ratios."""
    groups: dict[tuple, dict] = {}
    order: list[tuple] = []
    for run in results["runs"]:
        ds, rid = run["dataset"], run["reader"]
        epochs = run.get("epochs", [])
        if not epochs:
            key = (ds, rid, "-")
            if key not in groups:
                order.append(key)
                groups[key] = {"samples": [], "rss": [], "error": run.get("error")}
            continue
        n = len(epochs)
        for e in epochs:
            key = (ds, rid, _phase(n, e["epoch"]))
            if key not in groups:
                order.append(key)
                groups[key] = {"samples": [], "rss": [], "error": None}
            groups[key]["samples"].append(e)
            groups[key]["rss"].append(run.get("peak_rss_mb", 0.0))
        if run.get("error"):
            groups[(ds, rid, _phase(n, 1))]["error"] = run["error"]
    rows = []
    for key in order:
        ds, rid, phase = key
        g = groups[key]
        row = {
            "dataset": ds,
            "reader": rid,
            "phase": phase,
            "label": LABELS.get(rid, rid),
            "samples": len(g["samples"]),
            "error": g["error"],
        }
        s = g["samples"]
        if s:
            row["mbps"] = _stat([e["bytes"] / e["wall_s"] / 1e6 for e in s])
            row["ops"] = _stat([e["reads"] / e["wall_s"] for e in s])
            row["files_per_s"] = _stat([e["files"] / e["wall_s"] for e in s])
            row["p50_ms"] = _stat([e["lat_p50_ms"] for e in s])
            row["p99_ms"] = _stat([e["lat_p99_ms"] for e in s])
            row["client_cpu_s_per_gb"] = _stat([e["client_cpu_s"] / (e["bytes"] / 1e9) for e in s])
            row["worker_cpu_s_per_gb"] = _stat([e["worker_cpu_s"] / (e["bytes"] / 1e9) for e in s])
            row["ufs_requests"] = _stat([e["ufs_requests"] for e in s])
            row["ufs_bytes"] = _stat([e["ufs_bytes"] for e in s])
            row["peak_rss_mb"] = _stat(g["rss"])
        rows.append(row)
    for row in rows:
        if "mbps" not in row:
            continue
        for ref in ("s3fs", "raw"):
            base = next(
                (
                    r
                    for r in rows
                    if r["dataset"] == row["dataset"] and r["reader"] == ref and "mbps" in r
                ),
                None,
            )
            if base:
                row[f"vs_{ref}"] = row["mbps"]["med"] / base["mbps"]["med"]
    return rows


def _find(rows: list[dict], ds: str, rid: str, phase: str) -> dict | None:
    return next(
        (
            r
            for r in rows
            if (r["dataset"], r["reader"], r["phase"]) == (ds, rid, phase) and "mbps" in r
        ),
        None,
    )


def targets(results: dict) -> list[tuple[str, str, str]]:
    """(target, measured, met?) for each target of the issue that this run measured."""
    rows = results["summary"]
    out = []

    def ratio(ds: str, a: tuple, b: tuple, want: float, what: str) -> None:
        ra, rb = _find(rows, ds, *a), _find(rows, ds, *b)
        if ra and rb:
            x = ra["mbps"]["med"] / rb["mbps"]["med"]
            out.append((what, f"{x:.2f}x", "yes" if x >= want else "**no**"))

    ratio(
        "small",
        ("alluxiofs-1w", "warm"),
        ("s3fs", "-"),
        10,
        "warm alluxiofs >= 10x s3fs, small files",
    )
    ratio(
        "parquet",
        ("alluxiofs-1w", "warm"),
        ("s3fs", "-"),
        3,
        "warm alluxiofs >= 3x s3fs, Parquet columns",
    )
    for ds in ("small", "large", "parquet", "random"):
        ratio(
            ds,
            ("alluxiofs-1w", "warm"),
            ("pypi-1w", "warm"),
            3,
            f"warm alluxiofs >= 3x PyPI client (warm, same worker), {ds}",
        )
    ratio(
        "large",
        ("alluxiofs-1w", "warm"),
        ("raw", "-"),
        0.7,
        "warm alluxiofs >= 0.7x raw local read, large files",
    )
    warm = [
        r
        for r in rows
        if r["reader"].startswith("alluxiofs") and r["phase"] == "warm" and "mbps" in r
    ]
    if warm:
        worst = max(r["ufs_requests"]["max"] for r in warm)
        out.append(
            (
                "zero UFS requests in warm epochs (alluxiofs, all datasets)",
                f"max {worst:.0f}",
                "yes" if worst == 0 else "**no**",
            )
        )
    dbytes = results["meta"]["dataset_bytes"]
    for ds in ("small", "large"):
        for rid in ("alluxiofs-1w", "alluxiofs-3w"):
            r = _find(rows, ds, rid, "cold")
            if r:
                x = r["ufs_bytes"]["med"] / dbytes[ds]
                out.append(
                    (
                        f"cold epoch reads each byte once, {ds}, {LABELS[rid]}",
                        f"UFS bytes / dataset = {x:.3f}",
                        "yes" if 0.98 <= x <= 1.05 else "**no**",
                    )
                )
    return out


def _fmt(stat: dict | None, digits: int = 0, scale: float = 1.0) -> str:
    if not stat:
        return ""
    f = f"{{:.{digits}f}}"
    med, lo, hi = (f.format(stat[k] * scale) for k in ("med", "min", "max"))
    return med if lo == hi else f"{med} ({lo}-{hi})"


def _ratio(row: dict, key: str) -> str:
    return f"{row[key]:.2f}" if key in row else "-"


def _has_workers(row: dict) -> bool:
    return row["reader"].startswith(("alluxiofs", "pypi"))


def markdown_tables(results: dict) -> str:
    """The per-dataset tables and the targets, as markdown."""
    meta, rows = results["meta"], results["summary"]
    parts = []
    for ds in [d for d in DATASET_TITLES if any(r["dataset"] == d for r in rows)]:
        title = DATASET_TITLES[ds].format(c=meta["concurrency"])
        ops = "reads/s" if ds == "random" else "files/s"
        parts.append(f"#### {title}\n")
        parts.append(
            f"| reader | epoch | MB/s | {ops} | p50 ms | p99 ms | client CPU s/GB | "
            "worker CPU s/GB | peak RSS MB | UFS requests | UFS MB | vs s3fs | vs raw |"
        )
        parts.append("|" + "---|" * 13)
        for r in (r for r in rows if r["dataset"] == ds):
            if "mbps" not in r:
                parts.append(
                    f"| {r['label']} | {r['phase']} | fails: {r['error'][:120]} |" + " |" * 10
                )
                continue
            ops_stat = r["ops"] if ds == "random" else r["files_per_s"]
            wcpu = _fmt(r["worker_cpu_s_per_gb"], 2) if _has_workers(r) else "-"
            parts.append(
                f"| {r['label']} | {r['phase']} | {_fmt(r['mbps'])} | {_fmt(ops_stat)} | "
                f"{_fmt(r['p50_ms'], 2)} | {_fmt(r['p99_ms'], 1)} | "
                f"{_fmt(r['client_cpu_s_per_gb'], 2)} | {wcpu} | "
                f"{_fmt(r['peak_rss_mb'])} | {_fmt(r['ufs_requests'])} | "
                f"{_fmt(r['ufs_bytes'], 1, 1e-6)} | "
                f"{_ratio(r, 'vs_s3fs')} | {_ratio(r, 'vs_raw')} |"
            )
        parts.append("")
    parts.append("#### Targets\n")
    parts.append("| target | measured | met |")
    parts.append("|---|---|---|")
    for what, measured, met in targets(results):
        parts.append(f"| {what} | {measured} | {met} |")
    return "\n".join(parts) + "\n"


def charts(results: dict, img_dir: Path) -> list[Path]:
    """One bar chart of MB/s per dataset (median, min-max whiskers, log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img_dir.mkdir(parents=True, exist_ok=True)
    rows, meta = results["summary"], results["meta"]
    written = []
    for ds, title in DATASET_TITLES.items():
        rs = [r for r in rows if r["dataset"] == ds and "mbps" in r]
        if not rs:
            continue
        labels = [r["label"] + ("" if r["phase"] == "-" else f" — {r['phase']}") for r in rs]
        med = [r["mbps"]["med"] for r in rs]
        lo = [r["mbps"]["med"] - r["mbps"]["min"] for r in rs]
        hi = [r["mbps"]["max"] - r["mbps"]["med"] for r in rs]
        colors = [
            "#2b7bba"
            if r["reader"].startswith("alluxiofs")
            else "#888888"
            if r["reader"] == "raw"
            else "#e08a2b"
            for r in rs
        ]
        fig, ax = plt.subplots(figsize=(8, 0.42 * len(rs) + 1.4))
        y = range(len(rs))
        ax.barh(y, med, xerr=[lo, hi], color=colors, capsize=3)
        ax.set_yticks(list(y), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("MB/s (log scale; median, whiskers min-max)")
        net = f"{meta['rtt_ms']:g} ms RTT, {meta['rate'] or 'loopback'}"
        ax.set_title(
            f"{title.format(c=meta['concurrency'])}\n{net}, scale {meta['scale']:g}", fontsize=9
        )
        for i, m in enumerate(med):
            ax.text(m, i, f" {m:,.0f}", va="center", fontsize=7)
        fig.tight_layout()
        path = img_dir / f"bench-{ds}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def write_doc(results: dict, json_path: Path, doc: Path) -> None:
    """Replace the generated part of ``doc`` and redraw the charts next to it."""
    meta = results["meta"]
    imgs = charts(results, doc.parent / "img")
    try:
        rel_json = json_path.resolve().relative_to(REPO)
    except ValueError:
        rel_json = json_path
    sizes = ", ".join(f"{k} {v / 1e9:.2f} GB" for k, v in meta["dataset_bytes"].items())
    vers = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    gen = [
        BEGIN,
        f"Run of {meta['started']} on `{meta['host']}` ({meta['cpus']} CPUs, Linux "
        f"{meta['kernel']}, Python {meta['python']}); results file `{rel_json}`; "
        f"alluxiofs at commit `{meta.get('commit', '?')}` ({meta.get('build', '?')}).",
        f"Network: {meta['network']}; delaying proxy {meta['rtt_ms']:g} ms round trip. "
        f"Scale {meta['scale']:g} ({sizes}); {meta['repeat']} repeats; "
        f"{meta['concurrency']} reader threads. Versions: {vers}.",
        "",
        markdown_tables(results),
        *[f"![{p.stem}](img/{p.name})" for p in imgs],
        END,
    ]
    text = doc.read_text() if doc.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    doc.write_text(head + "\n".join(gen) + tail)


def main() -> None:
    ap = argparse.ArgumentParser(description="table and charts from a results file")
    ap.add_argument("results", type=Path)
    ap.add_argument("--doc", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = ap.parse_args()
    results = json.loads(args.results.read_text())
    results["summary"] = summarize(results)
    write_doc(results, args.results, args.doc)
    print(markdown_tables(results))


if __name__ == "__main__":
    sys.exit(main())
