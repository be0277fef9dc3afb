"""Run the jupyter_taskrun benchmark suite against real servers and print one summary.

    python benchmarks/run_all.py [--quick] [--repeat 3] [--only latency,streaming] [--json out.json]

Benchmarks (each prints its own side-by-side table, then all figures go into one summary
with their same-run baseline ratio, target and PASS/FAIL):

  latency     submit -> completed for print(1): pool hit, cold, stock nbclient, papermill, jupyter-scheduler
  streaming   kernel print -> SSE client latency
  throughput  fresh-kernel tasks/min at concurrency 1/2/4, pool off/on, vs stock nbclient
  fanout      1,000 SSE subscribers on one task
  list        GET /taskrun/api/tasks with 100k tasks stored
  bigoutput   a task printing 200 MiB: server RSS growth, longest loop stall

``--repeat N`` runs the whole suite N times (fresh servers each time) and ends with one table: per
figure the median and spread (min-max) over the runs, and whether its target held in every run.

``--install-peers`` installs jupyter_scheduler into a side venv first (it is not installed in
the main environment on purpose: installed there, it would load into every Jupyter server).
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import re
import statistics
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    DEFAULT_PEERS_DIR,
    Context,
    Row,
    emit_table,
    install_peers,
    log,
    machine_load,
    print_summary,
)

BENCHES = ["latency", "streaming", "throughput", "fanout", "list", "bigoutput"]


def versions(peers_dir: Path) -> str:
    out = [f"Python {platform.python_version()}"]
    for dist in ("jupyter_taskrun", "jupyter_server", "nbclient", "ipykernel", "jupyter_client", "tornado", "papermill"):
        try:
            out.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            out.append(f"{dist} (not installed)")
    try:
        out.append(f"jupyter_scheduler {metadata.version('jupyter_scheduler')}")
    except metadata.PackageNotFoundError:
        found = list(metadata.distributions(path=[str(peers_dir)]))
        sched = [d for d in found if d.metadata["Name"].lower().replace("-", "_") == "jupyter_scheduler"]
        out.append(f"jupyter_scheduler {sched[0].version} (peers dir)" if sched else "jupyter_scheduler (not installed: skipped)")
    return ", ".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions: a sanity run of a few minutes")
    ap.add_argument("--only", default="", help=f"comma-separated subset of {','.join(BENCHES)}")
    ap.add_argument("--skip", default="", help="comma-separated benchmarks to leave out")
    ap.add_argument("--json", type=Path, help="also write every summary row to this JSON file")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (server logs)")
    ap.add_argument("--peers-dir", type=Path, default=DEFAULT_PEERS_DIR, help="where jupyter_scheduler may be installed")
    ap.add_argument("--install-peers", action="store_true", help="pip-install jupyter_scheduler into the peers venv first")
    ap.add_argument("--no-cache", action="store_true", help="rebuild cached fixtures (the 100k-task store)")
    ap.add_argument("--repeat", type=int, default=1, help="run the whole suite N times; report median, spread, held in all")
    a = ap.parse_args()

    selected = [b for b in (a.only.split(",") if a.only else BENCHES) if b]
    unknown = [b for b in selected + [s for s in a.skip.split(",") if s] if b not in BENCHES]
    if unknown:
        ap.error(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    selected = [b for b in selected if b not in a.skip.split(",")]
    peers = install_peers() if a.install_peers else a.peers_dir

    print(f"jupyter_taskrun benchmarks ({'quick' if a.quick else 'full'} run, {time.strftime('%Y-%m-%d %H:%M')})")
    print(f"versions: {versions(peers)}")
    print(f"machine: {machine_load()}", flush=True)
    t0 = time.monotonic()
    runs: list[list[Row]] = []
    errors = 0
    for rep in range(1, max(1, a.repeat) + 1):
        if a.repeat > 1:
            log(f"##### repetition {rep} of {a.repeat}")
        rows, errs = run_suite(a, selected, peers)
        runs.append(rows)
        errors += errs
    rows = runs[-1]
    if a.repeat > 1:
        print_repeated(runs)
    passed = sum(r.ok is True for r in rows)
    failed = sum(r.ok is False for r in rows)
    print(f"\n{passed} passed, {failed} failed, {len(rows) - passed - failed} informational (last run); "
          f"{time.monotonic() - t0:.0f}s; machine after: {machine_load()}")  # fmt: skip
    if a.json:
        a.json.write_text(json.dumps(
            [{"run": i, "bench": r.bench, "figure": r.figure, "value": r.value, "vs_baseline": r.ratio,
              "target": r.target, "result": r.verdict, "raw": r.raw} for i, rs in enumerate(runs, 1) for r in rs],
            indent=1, default=str,
        ))  # fmt: skip
    return 2 if errors else 0


def run_suite(a: argparse.Namespace, selected: list[str], peers: Path) -> tuple[list[Row], int]:
    """One run of the selected benchmarks with their own servers; (summary rows, crashed benchmarks)."""
    ctx = Context(quick=a.quick, keep=a.keep, peers_dir=peers, cache=not a.no_cache)
    rows: list[Row] = []
    errors = 0
    try:
        for name in selected:
            mod = importlib.import_module(f"bench_{name}")
            log(f"=== {name}")
            t1 = time.monotonic()
            try:
                rows += mod.run(ctx)
            except Exception as e:  # noqa: BLE001 - one broken benchmark must not hide the others
                errors += 1
                traceback.print_exc()
                first = (str(e).splitlines() or [""])[0]
                rows.append(Row(name, "benchmark error (traceback above)", f"{type(e).__name__}: {first}"[:120], ok=False))
            log(f"=== {name} took {time.monotonic() - t1:.0f}s; {machine_load()}")
    finally:
        ctx.close()
    print_summary(rows)
    return rows, errors


#: a figure's number and unit as the benchmarks print it ("10.6 ms", "1,234/min", "0.21x", "33 MiB")
_NUMBER = re.compile(r"(-?[\d,]*\.?\d+)\s*(ms|s|x|/min|MiB|KiB|%)?")


def number(value: str) -> tuple[float, str] | None:
    m = _NUMBER.search(value or "")
    if not m:
        return None
    return float(m.group(1).replace(",", "")), m.group(2) or ""


def spell(x: float, unit: str) -> str:
    if unit == "ms" and x >= 100:
        return f"{x:,.0f} ms"
    if unit in ("x",) or abs(x) < 10:
        return f"{x:.2f}{unit}" if unit in ("x", "/min", "%") else f"{x:.2f} {unit}".rstrip()
    return f"{x:,.0f}{unit}" if unit in ("/min", "%") else f"{x:,.0f} {unit}".rstrip()


def print_repeated(runs: list[list[Row]]) -> None:
    """Per figure over the runs: median, spread (min-max), and whether the target held in every run."""
    order: list[tuple[str, str]] = []
    by: dict[tuple[str, str], list[Row]] = {}
    for rows in runs:
        for r in rows:
            key = (r.bench, r.figure)
            if key not in by:
                order.append(key)
            by.setdefault(key, []).append(r)
    table = []
    for key in order:
        rs = by[key]
        nums = [n for n in (number(r.value) for r in rs) if n is not None]
        if nums and len({u for _, u in nums}) == 1:
            xs = [x for x, _ in nums]
            unit = nums[0][1]
            median, spread = spell(statistics.median(xs), unit), f"{spell(min(xs), unit)} - {spell(max(xs), unit)}"
        else:
            median, spread = " / ".join(r.value for r in rs), ""
        verdicts = [r.ok for r in rs]
        if all(v is None for v in verdicts):
            held = "-"
        else:
            good = sum(v is True for v in verdicts)
            held = "PASS (every run)" if good == len(runs) else f"FAIL ({good}/{len(runs)} runs)"
        table.append([key[0], key[1], median, spread, f"{len(rs)}/{len(runs)}", rs[0].target, held])
    emit_table(
        ["benchmark", "figure", "median", "spread (min - max)", "runs", "target", "target held"],
        table,
        f"REPEATED SUMMARY ({len(runs)} runs of the whole suite; each figure vs its baseline of the same run)",
    )


if __name__ == "__main__":
    sys.exit(main())
