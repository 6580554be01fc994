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

The targets table (``targets``) has one row per target of the issues that the
run measured: ratios between readers of the same run, the link bandwidth from
``--rate`` (tc units), UFS requests per file from the delay proxy's counts,
CPU s/GB of client plus workers, and the Ray Data ratio from ``--ray``. A
target whose reader failed is listed as not measured, with the error.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
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
    "alluxiofs-prefetch": "alluxiofs, 1 worker, prefetch",
    "alluxiofs-remote": "alluxiofs, remote worker",
    "alluxiofs-remote-batched": "alluxiofs, remote worker, batched",
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
            row["total_cpu_s_per_gb"] = _stat(
                [(e["client_cpu_s"] + e["worker_cpu_s"]) / (e["bytes"] / 1e9) for e in s]
            )
            row["ufs_requests_per_file"] = _stat([e["ufs_requests"] / e["files"] for e in s])
            row["peak_rss_mb"] = _stat(g["rss"])
            local = [e for e in s if "bytes_local" in e and "bytes_remote" in e]
            if local:
                row["bytes_local"] = _stat([e["bytes_local"] for e in local])
                row["local_share"] = _stat(
                    [e["bytes_local"] / max(1, e["bytes_local"] + e["bytes_remote"]) for e in local]
                )
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


_RATE_UNITS = {
    "": 1,
    "bit": 1,
    "kbit": 1e3,
    "mbit": 1e6,
    "gbit": 1e9,
    "tbit": 1e12,
    "kibit": 2**10,
    "mibit": 2**20,
    "gibit": 2**30,
    "tibit": 2**40,
    "bps": 8,
    "kbps": 8e3,
    "mbps": 8e6,
    "gbps": 8e9,
    "tbps": 8e12,
    "kibps": 8 * 2**10,
    "mibps": 8 * 2**20,
    "gibps": 8 * 2**30,
    "tibps": 8 * 2**40,
}


def link_mb_per_s(rate: str | None) -> float | None:
    """A ``tc`` rate (``1gbit``, ``500mbit``, ``100mbps`` = bytes) in MB/s; None if unknown."""
    m = re.fullmatch(r"([0-9]*\.?[0-9]+)([a-z]*)", (rate or "").strip().lower())
    if not m or m.group(2) not in _RATE_UNITS:
        return None
    return float(m.group(1)) * _RATE_UNITS[m.group(2)] / 8 / 1e6


def _error(rows: list[dict], ds: str, rid: str) -> str | None:
    """Why ``rid`` has no numbers on ``ds``, if it ran and failed."""
    return next(
        (r["error"] for r in rows if (r["dataset"], r["reader"]) == (ds, rid) and r.get("error")),
        None,
    )


def targets(results: dict) -> list[tuple[str, str, str]]:
    """(target, measured, met?) for each target of the issues that this run measured."""
    rows = results["summary"]
    out = []

    def missing(what: str, ds: str, *rids: str) -> None:
        errs = [(rid, _error(rows, ds, rid)) for rid in rids]
        errs = [(rid, e) for rid, e in errs if e]
        if errs:
            rid, e = errs[0]
            out.append((what, f"not measured: {LABELS.get(rid, rid)} fails ({e[:80]})", "**no**"))

    def ratio(ds: str, a: tuple, b: tuple, want: float, what: str) -> None:
        ra, rb = _find(rows, ds, *a), _find(rows, ds, *b)
        if ra and rb:
            x = ra["mbps"]["med"] / rb["mbps"]["med"]
            out.append((what, f"{x:.2f}x", "yes" if x >= want else "**no**"))
        else:
            missing(what, ds, a[0], b[0])

    # Same node (issue 12): the short-circuit path against the raw local read.
    ratio(
        "large",
        ("alluxiofs-1w", "warm"),
        ("raw", "-"),
        0.8,
        "warm large files, same node, >= 0.8x raw local read",
    )
    ratio(
        "large",
        ("alluxiofs-1w", "warm"),
        ("simplecache", "warm"),
        1.0,
        "warm large files, same node, >= simplecache::s3 warm",
    )
    r = _find(rows, "large", "alluxiofs-1w", "warm")
    if r:
        x = r["total_cpu_s_per_gb"]["med"]
        out.append(
            (
                "warm large files, client + worker CPU <= 0.3 s/GB",
                f"{x:.2f} s/GB",
                "yes" if x <= 0.3 else "**no**",
            )
        )
    ratio(
        "small",
        ("alluxiofs-1w", "warm"),
        ("raw", "-"),
        0.9,
        "warm small files (16 threads), same node, >= 0.9x raw",
    )
    ratio(
        "random",
        ("alluxiofs-1w", "warm"),
        ("raw", "-"),
        1.5,
        "warm random 4 KiB, same node, >= 1.5x raw",
    )
    # Another host: batched reads against today's per-file HTTP path.
    ratio(
        "small",
        ("alluxiofs-remote-batched", "warm"),
        ("alluxiofs-remote", "warm"),
        2.0,
        "warm small files, remote worker, batched >= 2x per-file HTTP reads",
    )
    for rid in ("alluxiofs-remote", "alluxiofs-remote-batched"):
        r = _find(rows, "small", rid, "warm")
        if r and "bytes_local" in r:
            x = r["bytes_local"]["max"]
            out.append(
                (
                    f"{LABELS[rid]}: no byte through the same-node socket (sanity)",
                    f"bytes_local max {x:.0f}",
                    "yes" if x == 0 else "**no**",
                )
            )
    # Cold small files: one UFS request per file, obstore's speed, the link's bandwidth.
    for rid in ("alluxiofs-1w", "alluxiofs-prefetch"):
        r = _find(rows, "small", rid, "cold")
        if r:
            x = r["ufs_requests_per_file"]["med"]
            out.append(
                (
                    f"cold small files, {LABELS[rid]}: <= 1 UFS request per file",
                    f"{x:.2f}",
                    "yes" if x <= 1.0 + 1e-9 else "**no**",
                )
            )
    ratio(
        "small",
        ("alluxiofs-1w", "cold"),
        ("obstore", "-"),
        1.0,
        "cold small files, alluxiofs, 1 worker >= 1x obstore",
    )
    link = link_mb_per_s(results["meta"].get("rate"))
    r = _find(rows, "small", "alluxiofs-prefetch", "cold")
    if r and link:
        x = r["mbps"]["med"] / link
        out.append(
            (
                f"cold small files with prefetch >= 0.8x the link ({link:.0f} MB/s)",
                f"{x:.2f}x ({r['mbps']['med']:.0f} MB/s)",
                "yes" if x >= 0.8 else "**no**",
            )
        )
    elif r is None:
        missing("cold small files with prefetch >= 0.8x the link", "small", "alluxiofs-prefetch")
    # Kept from the first issue.
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
        for rid in ("alluxiofs-1w", "alluxiofs-3w", "alluxiofs-prefetch"):
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
    out.extend(ray_targets(results.get("ray")))
    return out


def ray_targets(ray: dict | None) -> list[tuple[str, str, str]]:
    """The Ray Data row: warm alluxiofs epochs against s3fs, small object store."""
    if ray is None:
        return []
    what = "Ray Data warm epochs >= 5x s3fs, small object store (benches/ray, scale 1)"
    if ray.get("error"):
        return [(what, f"not measured: {ray['error'][:80]}", "**no**")]
    rows = [
        r
        for r in ray.get("table", [])
        if r["store"] == "pressure" and r["reader"] == "alluxiofs warm"
    ]
    if not rows:
        return [(what, "not measured: no warm epochs in the Ray results", "**no**")]
    worst = min(r["s3fs_over_this"] for r in rows)
    measured = ", ".join(f"{r['dataset']} {r['s3fs_over_this']:.2f}x" for r in rows)
    return [(what, measured, "yes" if worst >= 5 else "**no**")]


def _fmt(stat: dict | None, digits: int = 0, scale: float = 1.0) -> str:
    if not stat:
        return ""
    f = f"{{:.{digits}f}}"
    med, lo, hi = (f.format(stat[k] * scale) for k in ("med", "min", "max"))
    return med if lo == hi else f"{med} ({lo}-{hi})"


def _pct(stat: dict | None) -> str:
    """A share as a percentage with its spread; ``-`` when not measured."""
    return f"{_fmt(stat, 0, 100)} %" if stat else "-"


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
        # The same-node share of the bytes the workers served, where fs.stats() has it.
        local = any("local_share" in r for r in rows if r["dataset"] == ds)
        parts.append(f"#### {title}\n")
        parts.append(
            f"| reader | epoch | MB/s | {ops} | p50 ms | p99 ms | client CPU s/GB | "
            "worker CPU s/GB | peak RSS MB | UFS requests | UFS MB | vs s3fs | vs raw |"
            + (" local share |" if local else "")
        )
        parts.append("|" + "---|" * (14 if local else 13))
        for r in (r for r in rows if r["dataset"] == ds):
            if "mbps" not in r:
                err = r["error"][:120].replace("|", "/").replace("\n", " ")
                parts.append(
                    f"| {r['label']} | {r['phase']} | fails: {err} |" + " |" * (11 if local else 10)
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
                + (f" {_pct(r.get('local_share'))} |" if local else "")
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
