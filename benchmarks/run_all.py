"""Run the jupyter_taskrun benchmark suite against real servers and print one summary.

    python benchmarks/run_all.py [--quick] [--only latency,streaming] [--json out.json]

Benchmarks (each prints its own side-by-side table, then all figures go into one summary
with their same-run baseline ratio, target and PASS/FAIL):

  latency     submit -> completed for print(1): pool hit, cold, stock nbclient, papermill, jupyter-scheduler
  streaming   kernel print -> SSE client latency
  throughput  fresh-kernel tasks/min at concurrency 1/2/4, pool off/on, vs stock nbclient
  fanout      1,000 SSE subscribers on one task
  list        GET /taskrun/api/tasks with 100k tasks stored
  bigoutput   a task printing 200 MiB: server RSS growth, longest loop stall

``--install-peers`` installs jupyter_scheduler into a side venv first (it is not installed in
the main environment on purpose: installed there, it would load into every Jupyter server).
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
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
    ctx = Context(quick=a.quick, keep=a.keep, peers_dir=peers, cache=not a.no_cache)
    rows: list[Row] = []
    errors = 0
    t0 = time.monotonic()
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
    passed = sum(r.ok is True for r in rows)
    failed = sum(r.ok is False for r in rows)
    print(f"\n{passed} passed, {failed} failed, {len(rows) - passed - failed} informational; "
          f"{time.monotonic() - t0:.0f}s; machine after: {machine_load()}")  # fmt: skip
    if a.json:
        a.json.write_text(json.dumps(
            [{"bench": r.bench, "figure": r.figure, "value": r.value, "vs_baseline": r.ratio, "target": r.target,
              "result": r.verdict, "raw": r.raw} for r in rows], indent=1, default=str,
        ))  # fmt: skip
    return 2 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
