"""`python -m engine <command>`: each command parses its flags, calls one function, prints."""
from __future__ import annotations

import argparse
import json
import math
import sys


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 512x256, got {text!r}") from None
    if w < 8 or h < 8:
        raise argparse.ArgumentTypeError(f"size {text} is too small (min 8x8)")
    return w, h


def _common(p: argparse.ArgumentParser, data=True, db=True, weights=True, device=True) -> None:
    if data:
        p.add_argument("--data-root", help="Cityscapes root (default: $CITYSCAPES_DATASET, else the synthetic dataset)")
    if db:
        p.add_argument("--db", help="SQLAlchemy URL of the results store (default: $RESULTS_DB or sqlite:///results.db)")
    if weights:
        p.add_argument("--weights-dir", help="checkpoint folder (default: $WEIGHTS_DIR or weights/)")
    if device:
        p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")


def _data_root(a) -> str:
    """settings.data_root(--data-root); the built-in synthetic scenes are written on first use."""
    from engine import settings
    from engine.data.synthetic import ensure_synthetic_dataset

    root = settings.data_root(a.data_root)
    if root == settings.SYNTHETIC_ROOT:
        ensure_synthetic_dataset(root)
    return str(root)


def cmd_synth(a) -> int:
    from engine.data.synthetic import write_synthetic_dataset

    counts = write_synthetic_dataset(a.out, train=a.train, val=a.val, size=a.size, seed=a.seed)
    print(f"wrote {counts['train']} train + {counts['val']} val synthetic scenes ({a.size[0]}x{a.size[1]}) to {a.out}")
    return 0


def cmd_variants(a) -> int:
    from engine.config import list_variants, load_recipe

    for name in list_variants():
        r = load_recipe(name)
        print(f"{name:32s} {r.model.arch:16s} {r.description}")
    return 0


def cmd_train(a) -> int:
    from engine.config import load_recipe
    from engine.store import Store
    from engine.train import train

    recipe = load_recipe(a.variant, a.profile)
    if a.epochs is not None:
        recipe.schedule.epochs = a.epochs
    if a.max_iters is not None:
        recipe.schedule.max_iters = a.max_iters
    res = train(recipe, store=Store(a.db), data_root=_data_root(a), device=a.device, weights_dir=a.weights_dir,
                resume=a.resume, progress=not a.quiet)
    print(f"{recipe.name}: {res.epochs} epoch(s), {res.iterations} iterations in {res.train_seconds:.1f}s "
          f"({res.images_per_second:.1f} img/s); best val mIoU {res.best_miou:.4f}; checkpoint {res.best_checkpoint}")
    return 0


def cmd_evaluate(a) -> int:
    from engine.evaluate import evaluate_checkpoint
    from engine.store import Store

    if not a.variant and not a.checkpoint:
        print("error: give --variant NAME or --checkpoint PATH", file=sys.stderr)
        return 2
    res = evaluate_checkpoint(variant=a.variant, checkpoint=a.checkpoint, data_root=_data_root(a), split=a.split,
                              device=a.device, store=Store(a.db), weights_dir=a.weights_dir,
                              save_predictions=a.save_predictions, eval_size=a.eval_size, progress=not a.json)
    if a.json:
        print(json.dumps(res))
        return 0
    print(f"{res['variant']} on {res['dataset']} {res['split']} ({res['num_images']} images, input {res['eval_size']}):")
    print(f"  mIoU {res['mIoU']:.4f}   pixel accuracy {res['pixel_accuracy']:.4f}   mean loss {res['mean_loss']:.4f}")
    for name, iou in res["per_class_iou"].items():
        print(f"    {name:15s} {'   n/a' if iou is None else f'{iou:.4f}'}")
    print(f"  params {res['params'] / 1e6:.2f}M   checkpoint {res['size_mb']:.1f} MB   {res['gflops']:.2f} GFLOPs   "
          f"latency {res['latency_ms']:.1f} ms ({res['device']}, {res['threads']} threads, {res['precision']}, {res['resolution']})")
    if a.save_predictions:
        print(f"  predictions (label ids, official evaluator format) in {a.save_predictions}")
    return 0


def format_leaderboard(rows: list[dict]) -> str:
    def f(v, spec):
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)

    head = f"{'variant':30s} {'dataset':10s} {'status':11s} {'mIoU':>7s} {'pixAcc':>7s} {'params':>8s} " \
           f"{'size MB':>8s} {'GFLOPs':>8s} {'lat ms':>8s} {'train s':>8s}"
    lines = [head, "-" * len(head)]
    for r in rows:
        params = None if r.get("params") is None else r["params"] / 1e6
        lines.append(f"{r['variant']:30s} {r['dataset']:10s} {r['status']:11s} {f(r.get('miou'), '7.4f')} "
                     f"{f(r.get('pixel_accuracy'), '7.4f')} {f(params, '7.2f')}M {f(r.get('size_mb'), '8.1f')} "
                     f"{f(r.get('gflops'), '8.2f')} {f(r.get('latency_ms'), '8.1f')} {f(r.get('train_seconds'), '8.1f')}")
    if any(r["dataset"] == "synthetic" for r in rows):
        lines.append("(dataset 'synthetic': numbers on the built-in synthetic street scenes, not Cityscapes)")
    return "\n".join(lines)


def cmd_runs(a) -> int:
    from engine.store import Store

    rows = Store(a.db).leaderboard(dataset=a.dataset, arch=a.arch, status=a.status)
    if a.json:
        keep = ("run_id", "variant", "arch", "dataset", "status", "miou", "pixel_accuracy", "params", "size_mb",
                "gflops", "latency_ms", "train_seconds", "images_per_second", "device", "profile")
        print(json.dumps([{**{k: r.get(k) for k in keep}, "mIoU": r.get("miou")} for r in rows], default=str))
    else:
        print(format_leaderboard(rows) if rows else "no runs yet: train one with `python -m engine train --variant NAME` "
                                                    "or run everything with `python -m engine demo`")
    return 0


def cmd_demo(a) -> int:
    from engine.demo import run_demo

    return run_demo(db=a.db, weights_dir=a.weights_dir, device=a.device, variants=a.variants,
                    dashboard=not a.no_dashboard, profile=a.profile)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description="Train, evaluate and compare Cityscapes "
                                     "segmentation models; results go to the results store.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write synthetic street scenes in the official Cityscapes layout")
    p.add_argument("--out", required=True)
    p.add_argument("--train", type=int, default=24)
    p.add_argument("--val", type=int, default=8)
    p.add_argument("--size", type=_size, default=(512, 256), help="WIDTHxHEIGHT (default 512x256)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("variants", help="list the variants (one recipe each in training/)")
    p.set_defaults(func=cmd_variants)

    p = sub.add_parser("train", help="train one variant")
    p.add_argument("--variant", required=True)
    p.add_argument("--profile", default="full", help="recipe profile: full (default) or quick")
    p.add_argument("--epochs", type=int)
    p.add_argument("--max-iters", type=int)
    p.add_argument("--resume", action="store_true", help="continue from weights/<variant>/last.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a checkpoint on a split, profile it, record it")
    p.add_argument("--variant")
    p.add_argument("--checkpoint")
    p.add_argument("--split", default="val")
    p.add_argument("--eval-size", type=_size, help="model input WIDTHxHEIGHT (default: the recipe's)")
    p.add_argument("--save-predictions", metavar="DIR", help="write *_pred_labelIds.png for the official evaluator")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _common(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("runs", help="print the leaderboard")
    p.add_argument("--json", action="store_true")
    p.add_argument("--dataset")
    p.add_argument("--arch")
    p.add_argument("--status")
    _common(p, data=False, weights=False, device=False)
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("demo", help="synthetic data -> train and evaluate every variant (quick) -> leaderboard")
    p.add_argument("--variants", nargs="*", help="only these variants (default: all)")
    p.add_argument("--profile", default="quick")
    p.add_argument("--no-dashboard", action="store_true", help="do not start the dashboard at the end")
    _common(p, data=False)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from engine.errors import USER_ERRORS

    try:
        return args.func(args)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
