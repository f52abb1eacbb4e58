"""The printed tables: every figure as a ratio against the no-index baseline measured in the same run."""

from __future__ import annotations

from typing import Any

ANALYTIC = ("tpch", "tpcds")
HEAD = f"  {'tool':<12}{'speed-up':>9}{'workload s':>12}{'index MB':>10}{'est. MB':>9}{'#idx':>6}" \
       f"{'advise s':>10}{'timeouts':>10}"


def _line(name: str, r: dict[str, Any]) -> str:
    if "workload_s" not in r:
        return f"  {name:<12} failed: {r.get('error')}"
    est = r.get("estimated_mb")
    return (f"  {name:<12}{r['speedup']:>8}x{r['workload_s']:>12.1f}{r['index_mb']:>10.1f}"
            f"{'-' if est is None else f'{est:.1f}':>9}{len(r['indexes']):>6}{r['advise_s']:>10.1f}"
            f"{len(r['timeouts']):>10}")


def show_analytic(res: dict[str, Any]) -> None:
    base = res["no_index"]
    print(f"\n{res['title']} SF {res['scale_factor']} ({res['queries']} queries, tables {res['table_mb']} MB, "
          f"statement_timeout {res['statement_timeout_s']:g} s, median of {res['runs']} pass(es)): "
          f"no index {base['workload_s']:.1f} s, timeouts {', '.join(base['timeouts']) or 'none'}")
    for label, budget in res["budgets"].items():
        print(f"\nbudget {label} of the tables = {budget['budget_mb']} MB")
        print(HEAD)
        for name, r in sorted(budget["tools"].items(), key=lambda kv: -(kv[1].get("speedup") or 0)):
            print(_line(name, r))
    names = sorted({n for b in res["budgets"].values() for n in b["tools"]})
    print(f"\nspeed-up over no index, per budget\n  {'tool':<12}" + "".join(f"{b:>8}" for b in res["budgets"]))
    for name in names:
        cells = [res["budgets"][b]["tools"].get(name, {}).get("speedup") for b in res["budgets"]]
        print(f"  {name:<12}" + "".join(f"{'-' if c is None else f'{c}x':>8}" for c in cells))


def show_pgbench(res: dict[str, Any]) -> None:
    base = res["tools"]["none"]
    print(f"\npgbench scale {res['scale']} (tables {res['table_mb']} MB), {len(res['scripts'])} read scripts, "
          f"{res['clients']} clients, {res['seconds']} s per run, median of {res['runs']}; budget "
          f"{res['budget_pct']:g}% = {res['budget_mb']} MB; no index {base['tps']:.2f} TPS")
    print(f"  {'tool':<12}{'TPS':>9}{'vs none':>9}{'index MB':>10}{'#idx':>6}{'advise s':>10}")
    for name, r in sorted(res["tools"].items(), key=lambda kv: -(kv[1].get("tps") or 0)):
        if "tps" not in r:
            print(f"  {name:<12} failed: {r.get('error')}")
            continue
        print(f"  {name:<12}{r['tps']:>9.2f}{r['ratio']:>8}x{r['index_mb']:>10.1f}{len(r['indexes']):>6}"
              f"{r['advise_s']:>10.1f}")


def show(result: dict[str, Any]) -> None:
    for part in ANALYTIC:
        if part in result:
            show_analytic(result[part])
    if "pgbench" in result:
        show_pgbench(result["pgbench"])
    for part in (*ANALYTIC, "pgbench"):
        sets = result.get(part, {})
        for label, budget in sets.get("budgets", {"": {"tools": sets.get("tools", {})}}).items():
            for name, r in budget["tools"].items():
                if r.get("indexes"):
                    print(f"\n{part} {label} {name}: " + "; ".join(r["indexes"]))
