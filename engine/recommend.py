"""The budget picker: "given our budget, which model?" (`python -m engine recommend`, the
Trade-offs page, the report).

A budget is a set of limits (latency on a named setup, checkpoint size, GFLOPs at the setup's
resolution, a least clean mIoU, a least rPC) and the accuracy to rank by (clean mIoU, mPC, or the
mIoU on another dataset or condition: `miou@acdc/fog`). Every completed run of the chosen dataset
is either ranked (it meets every limit; best first) or excluded with the first limit it breaks, in
the order of LIMITS. A run with no figure for a limit (no latency on that setup, no sweep for rPC)
is excluded as "not measured", never silently passed. Published results (papers, model zoos) are
never ranked with the runs: they are listed apart, with the limits their own figures can be held to.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from engine.errors import UserError
from engine.setups import parse_setup, resolve_setup, setup_label


class BudgetError(UserError, ValueError):
    """A budget this store cannot answer (an accuracy nobody measured, a dataset without runs)."""


@dataclass(frozen=True)
class Budget:
    max_latency_ms: float | None = None
    latency_setup: str | None = None   # a setup key or words naming one (`engine.setups.match_setup`)
    max_size_mb: float | None = None
    max_gflops: float | None = None    # one image at the setup's resolution
    min_miou: float | None = None      # clean mIoU on the validation split
    min_rpc: float | None = None       # mPC / clean mIoU of the latest corruption sweep
    rank_by: str = "miou"              # miou | mpc | miou@<dataset>[/<condition>]

    def limits(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None and k not in ("latency_setup", "rank_by")}


# the limits in the order they are checked (the first one a run breaks is its reason): column, bound, words
LIMITS = (("min_miou", "miou", ">=", "clean mIoU"), ("min_rpc", "rpc", ">=", "rPC"),
          ("max_size_mb", "size_mb", "<=", "checkpoint size (MB)"), ("max_gflops", "gflops", "<=", "GFLOPs"),
          ("max_latency_ms", "latency_ms", "<=", "latency (ms)"))
FIGURES = ("run_id", "method", "miou", "mpc", "rpc", "params", "size_mb", "gflops", "latency_ms", "latency_precision",
           "latency_resolution", "dataset", "eval_size")


def accuracy_label(rank_by: str) -> str:
    if rank_by == "miou":
        return "clean mIoU"
    if rank_by == "mpc":
        return "mPC"
    if rank_by.startswith("miou@"):
        return f"mIoU on {rank_by[5:]}"
    raise BudgetError(f"rank by miou, mpc or miou@DATASET[/CONDITION], not {rank_by!r}")


def method_of(row: dict) -> str:
    """trained, imported, or how a derived model was made (its `derivation`'s method: prune, int8)."""
    if row.get("parent_run_id") is not None or row.get("method"):
        return row.get("method") or "derived"
    return "imported" if row.get("source") else "trained"


@dataclass
class Recommendation:
    recommended: str | None
    reason: str
    ranked: list[dict]
    excluded: list[dict]
    published: list[dict]
    budget: dict
    setup: str | None
    setup_label: str | None
    dataset: str | None
    rank_by: str
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def _fmt(v: float, column: str) -> str:
    return f"{v:.3f}" if column in ("miou", "rpc", "mpc") or column.startswith("miou@") else f"{v:.4g}"


def _limit_text(budget: Budget, setup: str | None) -> list[str]:
    out = []
    for key, column, op, words in LIMITS:
        bound = getattr(budget, key)
        if bound is None:
            continue
        where = ""
        if column == "latency_ms":
            where = f" on {setup_label(setup)}" if setup else ""
        elif column == "gflops" and setup:
            where = f" at {parse_setup(setup)['resolution']}"
        out.append(f"{words} {'≥' if op == '>=' else '≤'} {_fmt(bound, column)}{where}")
    return out


def rank(rows: list[dict], budget: Budget, *, setup: str | None) -> tuple[list[dict], list[dict]]:
    """(ranked, excluded) of `Store.leaderboard(setup=...)` rows, each row carrying `rank_by`'s column.
    Ranked: best accuracy first (ties: lower latency, smaller checkpoint, name). Excluded: each with
    `reason` (the first limit broken, or what is not measured) and `not_measured`."""
    acc, label = budget.rank_by, accuracy_label(budget.rank_by)
    ranked, excluded = [], []
    for r in rows:
        out = {"name": r["variant"], **{k: r.get(k) for k in FIGURES}, "method": method_of(r),
               "accuracy": r.get(acc)}
        reason, missing = None, False
        if r.get(acc) is None:
            reason, missing = f"not measured: no {label}", True
        for key, column, op, words in LIMITS:
            bound = getattr(budget, key)
            if reason is not None or bound is None:
                continue
            value = r.get(column)
            if value is None:
                what = {"latency_ms": f"no latency on {setup_label(setup)}" if setup else "no latency measured",
                        "gflops": f"no GFLOPs at {parse_setup(setup)['resolution']}" if setup else "no GFLOPs",
                        "rpc": "no corruption sweep (rPC)"}.get(column, f"no {words}")
                reason, missing = f"not measured: {what}", True
            elif (value < bound) if op == ">=" else (value > bound):
                reason = f"{words} {_fmt(value, column)} {'<' if op == '>=' else '>'} {_fmt(bound, column)}"
                if setup and column == "latency_ms":
                    reason += f" on {setup_label(setup)}"
                elif setup and column == "gflops":
                    reason += f" at {parse_setup(setup)['resolution']}"
        if reason is None:
            ranked.append(out)
        else:
            excluded.append({**out, "reason": reason, "not_measured": missing})
    ranked.sort(key=lambda d: (-d["accuracy"], d["latency_ms"] if d["latency_ms"] is not None else float("inf"),
                               d["size_mb"] if d["size_mb"] is not None else float("inf"), d["name"]))
    return ranked, excluded


def reason_for(ranked: list[dict], budget: Budget, setup: str | None, total: int) -> str:
    """Why the first of `ranked` is recommended, in one sentence."""
    label = accuracy_label(budget.rank_by)
    limits = _limit_text(budget, setup)
    if not ranked:
        return (f"No model meets the budget ({'; '.join(limits)}): none of the {total} runs qualifies; "
                "see why each is excluded.")
    best = ranked[0]
    among = (f"among the {len(ranked)} of {total} models with {', '.join(limits)}" if limits
             else f"among all {len(ranked)} evaluated models (no limit set)")
    sentence = f"{best['name']}: the highest {label} ({best['accuracy']:.3f}) {among}"
    if len(ranked) > 1:
        nxt = ranked[1]
        gap = (best["accuracy"] - nxt["accuracy"]) * 100
        sentence += (f"; {gap:.1f} points above the next, {nxt['name']} ({nxt['accuracy']:.3f})" if gap > 0
                     else f"; tied with {nxt['name']}, and ahead on latency or size")
    else:
        sentence += "; the only one that qualifies"
    return sentence + "."


def published_apart(published: list[dict], budget: Budget, setup: str | None) -> list[dict]:
    """The published rows beside the answer, never in it: each with `meets` (the limits its own
    figures can be checked against: clean mIoU, GFLOPs at the setup's resolution; None when none can)."""
    resolution = parse_setup(setup)["resolution"] if setup else None
    out = []
    for p in published:
        checks = []
        if budget.min_miou is not None:
            checks.append(p["miou"] >= budget.min_miou)
        if budget.max_gflops is not None and p.get("gflops") is not None and p.get("gflops_resolution") == resolution:
            checks.append(p["gflops"] <= budget.max_gflops)
        out.append({"name": p["model"], "miou": p["miou"], "params": p.get("params"), "gflops": p.get("gflops"),
                    "gflops_resolution": p.get("gflops_resolution"), "fps": p.get("fps"),
                    "fps_device": p.get("fps_device"), "source": p.get("source"), "url": p.get("url"),
                    "meets": all(checks) if checks else None})
    return out


def accuracy_on(evaluations: list[dict], rank_by: str) -> dict[int, float]:
    """run_id -> the mIoU of its latest evaluation on `rank_by`'s dataset and condition ('miou@acdc/fog')."""
    where = rank_by[5:]
    dataset, _, condition = where.partition("/")
    out = {}
    for ev in evaluations:  # oldest first: the latest wins
        if ev["dataset"] == dataset and (ev.get("condition") or "") == condition and ev.get("run_id") is not None:
            out[ev["run_id"]] = ev["miou"]
    return out


def recommend(store, budget: Budget, *, dataset: str | None = None) -> Recommendation:
    """The answer for the completed runs of `dataset` (default: the dataset most runs were trained
    on) in `store` (`engine.store.Store`)."""
    accuracy_label(budget.rank_by)  # an unknown accuracy fails before anything is read
    setups = [s["setup"] for s in store.cost_setups()]
    setup = resolve_setup(budget.latency_setup, setups, default=setups[0] if setups else None)
    rows = [r for r in store.leaderboard(setup=setup, status="completed") if r.get("miou") is not None]
    datasets = sorted({r["dataset"] for r in rows}, key=lambda d: (-sum(r["dataset"] == d for r in rows), d))
    if dataset is None:
        if not datasets:
            raise BudgetError("no evaluated run in the store yet: train and evaluate one (`python -m engine demo` "
                              "runs every variant)")
        dataset = datasets[0]
    elif dataset not in datasets:
        raise BudgetError(f"no evaluated run trained on {dataset!r}; the datasets with runs: "
                          f"{', '.join(datasets) or 'none'}")
    rows = [r for r in rows if r["dataset"] == dataset]
    notes = []
    if budget.rank_by.startswith("miou@"):
        on = accuracy_on(store.evaluations(), budget.rank_by)
        rows = [{**r, budget.rank_by: on.get(r["run_id"])} for r in rows]
        if not any(r[budget.rank_by] is not None for r in rows):
            raise BudgetError(f"no run of {dataset} was evaluated on {budget.rank_by[5:]} "
                              "(`python -m engine evaluate --dataset ...`)")
    if budget.max_latency_ms is not None and setup is None:
        raise BudgetError("a latency limit needs latencies: none is recorded yet (evaluate a model, or "
                          "`python -m engine profile`)")
    if dataset == "synthetic":
        notes.append("These runs were trained and evaluated on the built-in synthetic street scenes, not on "
                     "Cityscapes: their accuracy says nothing about real streets.")
    ranked, excluded = rank(rows, budget, setup=setup)
    resolved = Budget(**{**asdict(budget), "latency_setup": setup})
    return Recommendation(
        recommended=ranked[0]["name"] if ranked else None, reason=reason_for(ranked, budget, setup, len(rows)),
        ranked=ranked, excluded=excluded, published=published_apart(store.published(), budget, setup),
        budget=asdict(resolved), setup=setup, setup_label=setup_label(setup) if setup else None, dataset=dataset,
        rank_by=budget.rank_by, notes=notes)


def format_recommendation(rec: Recommendation) -> str:
    """What `python -m engine recommend` prints."""
    label = accuracy_label(rec.rank_by)
    lines = [f"Runs trained on {rec.dataset}; costs on {rec.setup_label or 'no recorded setup'}; ranked by {label}.",
             "", f"Recommended: {rec.recommended or 'none'}", f"  {rec.reason}", ""]

    def cell(v, spec):
        return format(v, spec) if v is not None else "-".rjust(int(spec.split(".")[0]))

    rows = rec.ranked + rec.excluded
    repeated = {r["name"] for r in rows if sum(o["name"] == r["name"] for o in rows) > 1}

    def name(r):  # a variant trained more than once: each run named by its id
        return f"{r['name']} (run {r['run_id']})" if r["name"] in repeated else r["name"]

    head = f"  {'#':>2s} {'model':32s} {'method':11s} {label[:12]:>12s} {'mIoU':>6s} {'rPC':>5s} {'MB':>7s} " \
           f"{'GFLOPs':>8s} {'ms':>8s}"
    if rec.ranked:
        lines += [f"Meet the budget ({len(rec.ranked)}):", head]
        for i, r in enumerate(rec.ranked, 1):
            lines.append(f"  {i:2d} {name(r):32s} {r['method']:11s} {r['accuracy']:12.4f} {cell(r['miou'], '6.3f')} "
                         f"{cell(r['rpc'], '5.2f')} {cell(r['size_mb'], '7.1f')} {cell(r['gflops'], '8.1f')} "
                         f"{cell(r['latency_ms'], '8.1f')}")
    if rec.excluded:
        lines += ["", f"Excluded ({len(rec.excluded)}):"]
        lines += [f"  {name(r):32s} {r['reason']}" for r in rec.excluded]
    if rec.published:
        lines += ["", "Published results (not measured here, never ranked with the runs):"]
        for p in rec.published:
            meets = {True: "within the limits its figures can show", False: "outside the budget",
                     None: "no figure to hold to the budget"}[p["meets"]]
            lines.append(f"  {p['name']:40s} mIoU {p['miou']:.4f}   {meets}")
    lines += [""] + rec.notes if rec.notes else []
    return "\n".join(lines)
