"""`python -m engine <command>`: each command parses its flags, calls one function, prints."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 512x256, got {text!r}") from None
    if w < 8 or h < 8:
        raise argparse.ArgumentTypeError(f"size {text} is too small (min 8x8)")
    return w, h


class ListFlag(argparse.Action):
    """A list flag: values separated by spaces, commas or both (`--variants a,b c`), and the flag may be
    repeated. `item` converts each value; for paths (`paths=True`) a value that names an existing file
    or folder is kept whole, commas and all. A default list is replaced, not extended."""

    def __init__(self, option_strings, dest, item=str, paths=False, **kwargs):
        super().__init__(option_strings, dest, nargs="+", **kwargs)
        self.item, self.paths = item, paths

    def __call__(self, parser, namespace, values, option_string=None):
        items = getattr(namespace, self.dest)
        items = [] if items is None or items is self.default else list(items)
        for value in values:
            parts = [value] if self.paths and Path(value).exists() else value.split(",")
            for part in filter(None, (p.strip() for p in parts)):
                try:
                    items.append(self.item(part))
                except (argparse.ArgumentTypeError, ValueError) as e:
                    raise argparse.ArgumentError(self, f"{part!r}: {e}") from None
        setattr(namespace, self.dest, items)


def _common(p: argparse.ArgumentParser, data=True, db=True, weights=True, device=True) -> None:
    if data:
        p.add_argument("--data-root", help="Cityscapes root (default: $CITYSCAPES_DATASET, else the synthetic dataset)")
    if db:
        p.add_argument("--db", help="SQLAlchemy URL of the results store (default: $RESULTS_DB or sqlite:///results.db)")
    if weights:
        p.add_argument("--weights-dir", help="checkpoint folder (default: $WEIGHTS_DIR or weights/)")
    if device:
        p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")


def _dataset_flags(p: argparse.ArgumentParser) -> None:
    from engine.data import ACDC_CONDITIONS, DATASETS

    p.add_argument("--dataset", default="cityscapes", choices=DATASETS,
                   help="the layout under --data-root (default cityscapes; README: Other streets)")
    p.add_argument("--condition", help=f"ACDC: {' | '.join(ACDC_CONDITIONS)} | all (one result per condition)")
    p.add_argument("--label-format", choices=("labelIds", "trainIds"),
                   help="folder: what the label PNGs hold (default labelIds)")


def _data_root(a, kind: str = "cityscapes") -> str:
    """The root of a `kind` dataset: --data-root, else its setting (CITYSCAPES_DATASET...), else its
    built-in synthetic copy, written on first use."""
    from engine.data import ensure_layout

    return str(ensure_layout(kind, a.data_root))


def cmd_synth(a) -> int:
    from engine import settings
    from engine.data.synthetic_layouts import write_layout

    out = a.out or settings.synthetic_root(a.layout)
    counts = write_layout(a.layout, out, train=a.train, val=a.val, size=a.size, seed=a.seed)
    print(f"wrote {counts['train']} train + {counts['val']} val synthetic scenes ({a.size[0]}x{a.size[1]}) "
          f"in the {a.layout} layout to {out}")
    return 0


def cmd_check_data(a) -> int:
    from engine.data.check import check_dataset

    report = check_dataset(_data_root(a, a.dataset), splits=tuple(a.splits) if a.splits else None,
                           full=not a.quick, progress=True, kind=a.dataset, condition=a.condition,
                           label_format=a.label_format)
    print(report)
    return 0 if report.ok else 1


def cmd_variants(a) -> int:
    from engine.config import list_variants, load_recipe, schedule_summary

    for name in list_variants():
        r = load_recipe(name, a.profile)
        if a.profile == "full":
            print(f"{name:32s} {r.model.arch:16s} {r.description}")
        else:
            print(f"{name:32s} {r.model.arch:16s} {schedule_summary(r)}\n{'':49s} {r.description}")
    return 0


def cmd_train(a) -> int:
    from engine import distributed
    from engine.config import load_recipe, validate
    from engine.store import Store
    from engine.train import train

    recipe = load_recipe(a.variant, a.profile)
    for key in ("epochs", "max_iters", "checkpoint_every_iters"):
        if getattr(a, key) is not None:
            setattr(recipe.schedule, key, getattr(a, key))
    validate(recipe, f"{a.variant} (with the command line's values)")
    if a.micro_batch is not None and a.micro_batch < 1:
        print("error: --micro-batch must be >= 1", file=sys.stderr)
        return 2
    distributed.init(a.device)  # under torchrun: join the group (a no-op otherwise)
    main = distributed.is_main()
    try:
        res = train(recipe, store=Store(a.db) if main else None, data_root=_data_root(a),
                    device=a.device, weights_dir=a.weights_dir, resume=a.resume, progress=not a.quiet,
                    micro_batch=a.micro_batch)
    finally:
        distributed.cleanup()
    if not main:
        return 0
    print(f"{recipe.name}: {res.epochs} epoch(s), {res.iterations} iterations in {res.train_seconds:.1f}s "
          f"({res.images_per_second:.1f} img/s); best val mIoU {res.best_miou:.4f}; checkpoint {res.best_checkpoint}")
    return 0


def _where(res: dict) -> str:
    return f"{res['dataset']}{'/' + res['condition'] if res.get('condition') else ''} {res['split']}"


def _per_condition(a, run) -> list[dict] | None:
    """`run(loaded_checkpoint, store, root, condition)` for each condition of --dataset/--condition, the
    checkpoint loaded once; under torchrun every rank runs it (images sharded) and only rank 0 gets
    the results (None on the others)."""
    from engine import distributed
    from engine.data import conditions
    from engine.evaluate import load_checkpoint
    from engine.store import Store

    distributed.init(a.device)
    main = distributed.is_main()
    try:
        root, store = _data_root(a, a.dataset), Store(a.db) if main else None
        m = load_checkpoint(variant=a.variant, checkpoint=a.checkpoint, weights_dir=a.weights_dir, store=store,
                            device=a.device, eval_size=a.eval_size)
        results = [run(m, store, root, condition) for condition in conditions(a.dataset, a.condition)]
    finally:
        distributed.cleanup()
    return results if main else None


def cmd_evaluate(a) -> int:
    from engine.evaluate import evaluate_loaded
    from engine.per_image import interior_boundary_means

    if not a.variant and not a.checkpoint:
        print("error: give --variant NAME or --checkpoint PATH", file=sys.stderr)
        return 2
    results = _per_condition(a, lambda m, store, root, condition: evaluate_loaded(
        m, dataset=a.dataset, data_root=root, condition=condition, label_format=a.label_format, split=a.split,
        store=store, save_predictions=a.save_predictions, keep_predictions=a.keep_predictions,
        deploy_sizes=a.deploy_size, progress=not a.json))
    if results is None:  # a torchrun rank other than 0: rank 0 prints and records
        return 0
    if a.json:  # "mIoU": the spelling users of earlier output read; a list when several conditions were asked for
        out = [{**res, "mIoU": res["miou"]} for res in results]
        print(json.dumps(out[0] if len(out) == 1 else out))
        return 0
    for res in results:
        print(f"{res['variant']} on {_where(res)} ({res['num_images']} images, input {res['eval_size']}):")
        print(f"  mIoU {res['miou']:.4f}   pixel accuracy {res['pixel_accuracy']:.4f}   mean loss {res['mean_loss']:.4f}")
        split = interior_boundary_means(res)
        if split:
            print(f"  boundary mIoU {split['boundary_miou']:.4f}   interior mIoU {split['interior_miou']:.4f}   (trimap: "
                  f"within {res['boundary_fraction']:.0%} of the image diagonal of a ground-truth boundary, and the rest)")
        for name, iou in res["per_class_iou"].items():
            print(f"    {name:15s} {'   n/a' if iou is None else f'{iou:.4f}'}")
        for prof in res.get("profiles", []):
            print(_cost_line(prof))
    if a.save_predictions:
        print(f"  predictions (label ids, official evaluator format) in {a.save_predictions}")
    for res in results:
        if res.get("predictions_dir"):
            print(f"  predictions kept (trainIds) in {res['predictions_dir']}")
    return 0


def _cost_line(prof: dict) -> str:
    """One profile (`engine.profiling.Profile` as a dict), its setup beside every figure."""
    return (f"  at {prof['resolution']}: {prof['gflops']:.2f} GFLOPs   latency {prof['latency_ms']:.1f} ms (batch "
            f"{prof['batch']}, {prof['device']}, {prof['threads']} threads, {prof['precision']})   params "
            f"{prof['params'] / 1e6:.2f}M   checkpoint {prof['size_mb']:.1f} MB")


def cmd_profile(a) -> int:
    from engine.evaluate import load_checkpoint, profile_checkpoint
    from engine.store import Store

    store = Store(a.db)
    if a.all:
        targets = [(r["variant"], r["checkpoint"]) for r in store.runs(status="completed")
                   if r.get("checkpoint") and Path(r["checkpoint"]).is_file()]
        targets = list(dict.fromkeys(targets))
    elif a.variant or a.checkpoint:
        targets = [(v, None) for v in a.variant or []] + [(None, c) for c in a.checkpoint or []]
    else:
        print("error: give --variant NAME..., --checkpoint PATH... or --all", file=sys.stderr)
        return 2
    out = []
    for variant, checkpoint in targets:
        m = load_checkpoint(variant=variant if checkpoint is None else None, checkpoint=checkpoint,
                            weights_dir=a.weights_dir, store=store, device=a.device)
        rows = profile_checkpoint(m, sizes=a.size, batch=a.batch, repeats=a.repeats, store=store)
        out += rows
        if not a.json:
            print(f"{m.variant} ({m.path}):")
            for prof in rows:
                print(_cost_line(prof))
    if a.json:
        print(json.dumps(out))
    return 0


def cmd_recommend(a) -> int:
    from engine.recommend import Budget, format_recommendation, recommend
    from engine.store import Store

    budget = Budget(max_latency_ms=a.max_latency_ms, latency_setup=a.latency_setup, max_size_mb=a.max_size_mb,
                    max_gflops=a.max_gflops, min_miou=a.min_miou, min_rpc=a.min_rpc, rank_by=a.rank_by)
    with Store(a.db) as store:
        rec = recommend(store, budget, dataset=a.dataset)
    print(json.dumps(rec.to_json(), default=str) if a.json else format_recommendation(rec))
    return 0


def cmd_report(a) -> int:
    from engine.recommend import Budget
    from engine.store import Store
    from dashboard.report import write_report  # the entry point: the report draws the dashboard's own figures

    budget = Budget(max_latency_ms=a.max_latency_ms, latency_setup=a.latency_setup, max_size_mb=a.max_size_mb,
                    max_gflops=a.max_gflops, min_miou=a.min_miou, min_rpc=a.min_rpc, rank_by=a.rank_by)
    html = None if a.pdf and a.out is None else (a.out or "report.html")
    with Store(a.db) as store:
        out = write_report(store, html_path=html, pdf_path=a.pdf, dataset=a.dataset, run_ids=a.runs, title=a.title,
                           budget=budget, date=a.date)
    for kind in ("html", "pdf"):
        if out.get(kind):
            print(f"{kind.upper()}: {out[kind]}")
    print(f"{len(out['runs'])} runs; recommended: {out['recommended'] or 'none within the budget'}")
    return 0


def _budget_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-latency-ms", type=float, metavar="MS")
    p.add_argument("--latency-setup", metavar="WORDS",
                   help="the setup the latencies hold for, by words of its name ('1024x512', 'cuda', 'xeon "
                        "2 threads'); default: the setup most runs were measured on")
    p.add_argument("--max-size-mb", type=float, metavar="MB", help="checkpoint size on disk")
    p.add_argument("--max-gflops", type=float, metavar="G", help="per image, at the setup's resolution")
    p.add_argument("--min-miou", type=float, metavar="X", help="clean mIoU (a fraction)")
    p.add_argument("--min-rpc", type=float, metavar="X", help="rPC: mPC / clean mIoU (a fraction)")
    p.add_argument("--rank-by", default="miou", metavar="ACCURACY",
                   help="miou (default) | mpc | miou@DATASET[/CONDITION], e.g. miou@acdc/night")


def cmd_robustness(a) -> int:
    from engine.robustness import sweep_loaded

    if not a.variant and not a.checkpoint:
        print("error: give --variant NAME or --checkpoint PATH", file=sys.stderr)
        return 2
    results = _per_condition(a, lambda m, store, root, condition: sweep_loaded(
        m, dataset=a.dataset, data_root=root, condition=condition, label_format=a.label_format, split=a.split,
        corruptions=a.corruptions, severities=a.severities, limit=a.limit, store=store,
        cache_dir=False if a.no_cache else a.cache_dir, workers=a.workers, progress=not a.json))
    if results is None:
        return 0
    if a.json:
        print(json.dumps(results[0] if len(results) == 1 else results))
        return 0
    for res in results:
        print(f"{res['variant']} on {_where(res)} ({res['num_images']} images, input {res['eval_size']}; "
              f"{res['library']}):")
        print(f"  clean mIoU {res['clean_miou']:.4f}   mPC {res['mpc']:.4f}   rPC {res['rpc']:.3f}")
        print("  groups: " + "   ".join(f"{g} {v:.4f}" for g, v in res["groups"].items()))
        print(f"  {'corruption':18s} " + " ".join(f"{'s' + str(s):>7s}" for s in sorted({r['severity'] for r in res['results']})))
        by_name: dict[str, list] = {}
        for r in res["results"]:
            by_name.setdefault(r["corruption"], []).append(r["miou"])
        for name, values in by_name.items():
            print(f"  {name:18s} " + " ".join(f"{v:7.4f}" for v in values))
    if not a.no_cache:
        from engine import settings
        from engine.robustness import cache_bytes

        cache = settings.corruption_cache(a.cache_dir)
        print(f"corrupted images cached in {cache} ({cache_bytes(cache) / 1e6:.1f} MB)", file=sys.stderr)
    return 0


def _options(a):
    from engine.inference import InferenceOptions

    return InferenceOptions(backend=a.backend, precision=a.precision, channels_last=not a.no_channels_last,
                            compile=a.compile, flip=getattr(a, "flip", False),
                            scales=tuple(getattr(a, "scales", None) or (1.0,)),
                            window=getattr(a, "window", None), batch_size=a.batch_size, rewrite=not a.no_rewrites,
                            min_agreement=a.min_agreement)


def _segmenter(a, options=None, store=None):
    from engine import checkpoints
    from engine.inference import Segmenter

    if not a.variant and not a.checkpoint:
        raise checkpoints.CheckpointError("give --variant NAME or --checkpoint PATH")
    path = checkpoints.resolve(a.variant, a.checkpoint, a.weights_dir)
    size = "native" if a.input_size == "native" else (_size(a.input_size) if a.input_size else None)
    return Segmenter(path, a.device, input_size=size, options=options or _options(a),
                     store=store if store is not None else _existing_store(a))


def _existing_store(a):
    """The results store, to check a checkpoint against the sha256 recorded when training wrote it;
    None where there is no store yet (opening one would create an empty database)."""
    from engine import settings
    from engine.store import Store, sqlite_path

    url = settings.db_url(a.db)
    path = sqlite_path(url)
    return None if path is not None and not path.is_file() else Store(url)


def _for_each_input(a, process) -> int:
    """`process(Input)` for each file of --input (folders expanded) with a progress bar. A file that
    cannot be used (unreadable, corrupt, too large, not an image or video...) is reported in one
    line and skipped; the others are processed. Returns the number of failures (problems included)."""
    from tqdm import tqdm

    from engine.errors import UserError
    from engine.segment import expand_inputs

    inputs, problems = expand_inputs(a.input)
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    failed = len(problems)
    for item in tqdm(inputs, desc="files", disable=a.quiet or len(inputs) < 2, dynamic_ncols=True):
        try:
            process(item)
        except UserError as e:
            failed += 1
            msg = str(e)
            print(f"error: {msg if str(item.path) in msg or item.path.name in msg else f'{item.path}: {msg}'}",
                  file=sys.stderr)
    if failed:
        print(f"{failed} of {len(inputs) + len(problems)} input(s) failed (see above)", file=sys.stderr)
    return failed


def cmd_segment(a) -> int:
    from tqdm import tqdm

    from engine import video
    from engine.classes import class_ids
    from engine.segment import segment_image, segment_video

    visible = class_ids(a.classes) if a.classes else None
    seg = _segmenter(a)
    out = Path(a.output)
    done = []

    def process(item):
        src, name = item.path, out / item.out_name
        if src.suffix.lower() in video.VIDEO_SUFFIXES:
            total = video.probe(src).frames or None
            with tqdm(total=total, desc=src.name, unit="frame", disable=a.quiet, dynamic_ncols=True) as bar:
                res = segment_video(seg, src, name.with_name(f"{name.name}_overlay.mp4"), alpha=a.alpha, visible=visible,
                                    label_dir=name.with_name(f"{name.name}_trainIds"),
                                    on_frames=lambda n: bar.update(n - bar.n))
            print(f"{src}: {res['frames']} frames at {res['fps']:.1f} fps -> {res['output']}")
        else:
            segment_image(seg, src, out, alpha=a.alpha, visible=visible, out_name=item.out_name)
        done.append(src)

    failed = _for_each_input(a, process)
    print(f"{len(done)} input(s) segmented with {seg.backend_name} ({seg.precision}) on {seg.device}; outputs in {out}")
    return 1 if failed else 0


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text!r}")
    return value


def cmd_coverage(a) -> int:
    from engine import coverage, geo, survey, video
    from engine.errors import UsageError
    from engine.files import atomic_write
    from engine.images import decode_image, read_bytes

    if a.districts and a.grid_m:
        raise UsageError("aggregate by --districts or by --grid-m, not both")
    locations = geo.read_locations(a.locations) if a.locations else None
    track = geo.read_gpx(a.gpx) if a.gpx else None
    districts = geo.read_districts(a.districts, a.district_field) if a.districts else None
    store = _existing_store(a)
    seg = _segmenter(a, store=store)  # with a store, the checkpoint is checked against it: seg.sha256
    model = a.variant or Path(a.checkpoint).parent.name
    evaluations = store.evaluations(checkpoint_sha256=seg.sha256) if store else []
    found = survey.Survey(coverage.provenance(model, evaluations, a.gvi_terrain))

    def process(item):
        if item.path.suffix.lower() in video.VIDEO_SUFFIXES:
            if track is None:
                raise UsageError(f"{item.path}: a video needs its GPX track (--gpx) to be placed along the route")
            n = survey.survey_video(found, seg.predict, item.path, track, every_m=a.every_m, offset_s=a.gpx_offset)
            print(f"{item.path}: {n} frames, one every {a.every_m:g} m along the track")
            return
        data = read_bytes(item.path)
        found.add(str(item.path), seg.predict(decode_image(data, str(item.path))),
                  survey.image_place(data, str(item.path), locations))

    failed = _for_each_input(a, process)
    if not found.rows:
        print("error: no image could be processed; nothing written", file=sys.stderr)
        return 1
    survey.assign_areas(found, districts, a.grid_m)
    atomic_write(a.csv, coverage.to_csv(found.rows))  # temp file + rename: never a half-written file
    if a.summary:
        atomic_write(a.summary, coverage.to_csv(coverage.summary(found.rows), coverage.SUMMARY_COLUMNS))
    if a.indicators:
        atomic_write(a.indicators, coverage.to_csv(found.places, coverage.PLACE_COLUMNS))
    if a.geojson:
        atomic_write(a.geojson, geo.to_geojson(survey.geojson(found)))
    total = coverage.summary(coverage.aggregate(found.rows))[0]
    placed = sum(r["located"] for r in found.places)
    print(f"{len(found.places)} image(s), {placed} with a place, {total['pixels']} pixels; " + ", ".join(
        f"{k.removeprefix('share_')} {v:.1%}" for k, v in total.items() if k.startswith("share_")))
    means = coverage.mean_indicators(found.places)
    print("mean per image: " + ", ".join(f"{coverage.INDICATOR_LABELS[k]} {means[k]:.1%}"
                                        for k in coverage.INDICATOR_KEYS if means[k] is not None))
    for row in survey.area_rows(found):
        gvi = row["green_view_index"]
        print(f"  {row['area']}: {row['images']} image(s), Green View Index "
              + (f"{gvi:.1%}" if gvi is not None else "-"))
    print(found.provenance.line())
    if found.provenance.warning:
        print(f"warning: {found.provenance.warning}", file=sys.stderr)
    print(f"tidy CSV ({len(found.rows)} rows) -> {a.csv}" + "".join(
        f"; {what} -> {path}" for what, path in (("summary", a.summary), ("indicators", a.indicators),
                                                ("GeoJSON", a.geojson)) if path))
    return 1 if failed else 0


def cmd_export_onnx(a) -> int:
    from engine import checkpoints
    from engine.onnx_backend import export_onnx

    path = checkpoints.resolve(a.variant, a.checkpoint, a.weights_dir)
    out = export_onnx(path, a.out)
    print(f"exported {path} -> {out}")
    return 0


def cmd_import_checkpoint(a) -> int:
    from engine.models.imports import ImportCheckpointError, import_checkpoint
    from engine.store import Store

    if not Path(a.file).is_file():  # before opening (creating) the store
        raise ImportCheckpointError(f"no file at {a.file}")
    with Store(a.db) as store:
        res = import_checkpoint(a.file, a.format, a.name, published_miou=a.published_miou, source_url=a.source,
                                store=store, weights_dir=a.weights_dir)
    flags = "".join(f" --{flag} {value}" for flag, value in (("db", a.db), ("weights-dir", a.weights_dir)) if value)
    print(f"{a.name}: {'already imported from' if res['already_imported'] else 'imported'} {a.format} checkpoint "
          f"{a.file} as {res['arch']} (run {res['run_id']})")
    print(f"  checkpoint {res['checkpoint']}  sha256 {res['sha256']}")
    print(f"  source     {Path(a.file).name}  sha256 {res['source_sha256']}")
    print(f"next: python -m engine evaluate --variant {a.name} --dataset cityscapes{flags}\n"
          f"      (Cityscapes val at 2048x1024, as published, with CITYSCAPES_DATASET set; else the synthetic "
          f"scenes: add --eval-size 512x256 there)")
    return 0


def cmd_bench(a) -> int:
    from engine.bench import bench_video, record
    from engine.config import list_variants
    from engine.store import Store

    if a.train:
        return _bench_train(a)
    store = None if a.no_store else Store(a.db)
    rows = []
    for variant in a.variants or list_variants():
        for size in a.sizes:
            row = bench_video(variant, size=size, frames=a.frames, options=_options(a), device=a.device,
                              weights_dir=a.weights_dir, repeats=a.repeats)
            if store is not None:
                record(store, row)
            rows.append(row)
            if a.json:
                print(json.dumps(row), flush=True)
            else:
                print(f"{variant:30s} {row['size']:>9s}  model {row['baseline_model_ms']:8.1f} -> {row['fast_model_ms']:8.1f} ms "
                      f"(x{row['model_speedup']:.2f})  end-to-end {row['baseline_fps']:6.2f} -> {row['fast_fps']:6.2f} fps "
                      f"(x{row['speedup']:.2f})  agreement {row['agreement']:.4f}  [{row['precision']}"
                      + (f", calibration {row['calibration']['agreement']:.4f}" if row["calibration"] else "") + "]"
                      + (f"  vs {row['baseline_variant']} {row['parent_precision']}: {row['parent_fast_fps']:.2f} fps "
                         f"(x{row['speedup_vs_parent_fast']:.2f})" if "parent_fast_fps" in row else ""),
                      flush=True)
    if rows and not a.json:
        r = rows[0]
        print(f"device {r['device']}, {r['threads']} threads, fast path: {r['backend']}, "
              f"batch {r['batch_size']}, channels_last {r['channels_last']}; torch {r['torch_version']}")
    return 0


def _bench_train(a) -> int:
    from engine.bench import record
    from engine.config import list_variants, load_recipe
    from engine.store import Store
    from engine.throughput import training_throughput

    store = None if a.no_store else Store(a.db)
    for variant in a.variants or list_variants():
        row = training_throughput(load_recipe(variant, a.profile), data_root=_data_root(a), device=a.device,
                                  size=a.size, iters=a.iters)
        if store is not None:
            record(store, row, kind="train")
        print(json.dumps(row) if a.json else
              f"{variant:30s} {row['size']:>9s}  train {row['train_images_per_second']:7.1f} img/s   "
              f"data pipeline {row['data_images_per_second']:8.1f} img/s", flush=True)
    return 0


def cmd_compress(a) -> int:
    from engine.compress import compress
    from engine.store import Store

    if not a.variant and not a.checkpoint:
        print("error: give --variant NAME or --checkpoint PATH", file=sys.stderr)
        return 2
    results = compress(variant=a.variant, checkpoint=a.checkpoint, method=a.method, ratios=a.ratio,
                       importance=a.importance, finetune_iters=a.finetune_iters,
                       calibration_images=a.calibration_images, calibration_size=a.calibration_size,
                       store=Store(a.db), data_root=_data_root(a),
                       device=a.device, weights_dir=a.weights_dir, resume=a.resume, progress=not a.json)
    if a.json:
        for res in results:
            print(json.dumps(res))
        return 0
    for r in results:
        how = (f"{1 - r['flops_ratio']:.1%} of the FLOPs removed, {r['channel_ratio']:.0%} of each layer's channels"
               if r["method"] == "prune" else r["format"])
        print(f"{r['name']}  ({r['method']} of {r['parent']}: {how})")
        print(f"  mIoU {r['miou']:.4f}" + (f" (before fine-tuning {r['miou_before_finetune']:.4f})"
                                           if r.get("miou_before_finetune") is not None else "")
              + (f"   labels agree with the parent on {r['agreement']:.2%} of the pixels" if r.get("agreement") else ""))
        print(f"  params {r['params'] / 1e6:.2f}M   size {r['size_mb']:.1f} MB   at {r['resolution']}: {r['gflops']:.2f} "
              f"GFLOPs   latency {r['latency_ms']:.1f} ms ({r['device']}, {r['precision']})")
        print(f"  checkpoint {r['checkpoint']}")
    return 0


def cmd_errors(a) -> int:
    from engine.per_image import find_errors, measure_label
    from engine.store import Store

    found = find_errors(Store(a.db), a.variant, vs=a.vs, dataset=a.dataset, condition=a.condition or "",
                        split=a.split, by=a.by, top=a.top)
    if a.json:  # one object per image, one per line
        for item in found["images"]:
            print(json.dumps(item))
        return 0
    ev_a, ev_b, label = found["a"], found["b"], measure_label(a.by)
    where = f"{_where(ev_a)}, {ev_a['images']} images"
    if ev_b is None:
        print(f"{a.variant}: the {len(found['images'])} worst images by {label} on {where} (evaluation {ev_a['id']}, "
              f"mIoU {ev_a['miou']:.4f})")
        cols = [("mIoU", "miou"), ("pixel acc", "pixel_accuracy"), ("boundary mIoU", "boundary_miou")]
        cols += [(label, "value")] if a.by.startswith("class:") else []
        print(f"  {'image':40s} " + " ".join(f"{name:>13s}" for name, _ in cols))
        for r in found["images"]:
            print(f"  {r['image']:40s} " + " ".join(_num(r[key], 13) for _, key in cols))
    else:
        print(f"where {a.vs} (B, evaluation {ev_b['id']}) beats {a.variant} (A, evaluation {ev_a['id']}) the most, "
              f"by {label}, on {where}; swap them for the reverse")
        print(f"  {'image':40s} {'A':>7s} {'B':>7s} {'B - A':>7s}")
        for r in found["images"]:
            print(f"  {r['image']:40s} {r['value']:7.4f} {r['value_vs']:7.4f} {r['delta']:+7.4f}")
    if not found["images"]:
        print("  (no image has this measure)")
    return 0


def _num(v, width: int = 7) -> str:
    return f"{'n/a':>{width}s}" if v is None else f"{v:{width}.4f}"


def cmd_runs(a) -> int:
    from engine.leaderboard import format_leaderboard
    from engine.store import Store

    from engine.setups import resolve_setup

    store = Store(a.db)
    setup = resolve_setup(a.setup, [x["setup"] for x in store.cost_setups()], store.default_setup())
    rows = store.leaderboard(dataset=a.dataset, arch=a.arch, status=a.status, setup=setup)
    if a.json:
        keep = ("run_id", "variant", "arch", "dataset", "status", "miou", "pixel_accuracy", "mpc", "rpc", "params",
                "size_mb", "gflops", "latency_ms", "latency_precision", "latency_resolution", "cost_setup",
                "cost_setup_label", "train_seconds", "images_per_second", "device", "profile", "parent_variant",
                "method", "ratio")
        print(json.dumps([{**{k: r.get(k) for k in keep}, "mIoU": r.get("miou")} for r in rows], default=str))
    else:
        print(format_leaderboard(rows) if rows else "no runs yet: train one with `python -m engine train --variant NAME` "
                                                    "or run everything with `python -m engine demo`")
    return 0


def cmd_published(a) -> int:
    from sqlalchemy.engine import make_url

    from engine import published
    from engine.store import Store

    with Store(a.db) as store:
        if a.load:
            n = published.load(store)
            if not a.json:
                shown = make_url(store.url).render_as_string(hide_password=True)
                print(f"loaded {n} published results from {published.DEFAULT.name} into {shown}")
        rows = store.published()
    if a.json:
        print(json.dumps(rows, default=str))
    elif not a.load:
        print(published.format_table(rows) if rows else "no published results in the store yet: "
                                                        "`python -m engine published --load` loads them")
    return 0


def cmd_demo(a) -> int:
    from engine.demo import run_demo

    return run_demo(db=a.db, weights_dir=a.weights_dir, device=a.device, variants=a.variants,
                    dashboard=not a.no_dashboard, profile=a.profile)


def cmd_db_migrate_to(a) -> int:
    from sqlalchemy.engine import make_url

    from engine import settings
    from engine.store import copy_store

    counts = copy_store(a.db, a.url)
    src = make_url(settings.db_url(a.db)).render_as_string(hide_password=True)
    dst = make_url(a.url).render_as_string(hide_password=True)
    print(f"copied {src} -> {dst}:")
    width = max(map(len, counts))
    for table, n in counts.items():
        print(f"  {table:{width}s} {n}")
    return 0


def cmd_clean(a) -> int:
    from engine.clean import clean, plan_clean

    plan = plan_clean(a.db, a.weights_dir)
    for path in plan.remove:
        print(f"{'would remove' if a.dry_run else 'removing'} {path}")
    for what, why in plan.keep:
        print(f"keeping {what}: {why}")
    if not a.dry_run:
        clean(plan)
    if not plan.remove:
        print("nothing the demo made is left")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description="Train, evaluate and compare Cityscapes "
                                     "segmentation models; results go to the results store.")
    sub = parser.add_subparsers(dest="command", required=True)

    from engine.data import DATASETS

    p = sub.add_parser("synth", help="write synthetic street scenes in a dataset's official layout")
    p.add_argument("--layout", default="cityscapes", choices=DATASETS,
                   help="cityscapes (default) | acdc (fog, night, rain, snow) | bdd100k | kitti | folder")
    p.add_argument("--out", help="default: data/synthetic (cityscapes), else data/synthetic-<layout>")
    p.add_argument("--train", type=int, default=24)
    p.add_argument("--val", type=int, default=8)
    p.add_argument("--size", type=_size, default=(512, 256), help="WIDTHxHEIGHT (default 512x256)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("check-data", help="check a dataset: pairing, sizes, label values, splits (exit 1 on a problem)")
    p.add_argument("--splits", action=ListFlag, help="only these splits (default: those with labels; Cityscapes: "
                   "train, val, and test when present)")
    p.add_argument("--quick", action="store_true",
                   help="pairing and file headers only (what training runs first): no pixel decoded")
    _common(p, db=False, weights=False, device=False)
    _dataset_flags(p)
    p.set_defaults(func=cmd_check_data)

    p = sub.add_parser("variants", help="list the variants (one recipe each in training/)")
    p.add_argument("--profile", default="full", help="full (default), quick or reference: also print the schedule")
    p.set_defaults(func=cmd_variants)

    p = sub.add_parser("train", help="train one variant")
    p.add_argument("--variant", required=True)
    p.add_argument("--profile", default="full", help="recipe profile: full (default), quick or reference")
    p.add_argument("--epochs", type=int)
    p.add_argument("--max-iters", type=int)
    p.add_argument("--checkpoint-every-iters", type=int, metavar="N",
                   help="also write last.pt every N iterations, mid-epoch included (default: the recipe's)")
    p.add_argument("--resume", action="store_true", help="continue from weights/<variant>/last.pt (exactly where it stopped)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--micro-batch", type=int, metavar="N",
                   help="at most N images per process and forward pass: gradient accumulation keeps the "
                        "recipe's total batch (under torchrun the total is split over the processes first)")
    _common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a checkpoint on a split, profile it, record it")
    p.add_argument("--variant")
    p.add_argument("--checkpoint")
    p.add_argument("--split", default="val")
    p.add_argument("--eval-size", type=_size, help="model input WIDTHxHEIGHT (default: the recipe's)")
    p.add_argument("--save-predictions", metavar="DIR", help="write *_pred_labelIds.png for the official evaluator")
    p.add_argument("--keep-predictions", action="store_true",
                   help="keep each image's predicted trainIds (PNG) with the evaluation, for the Drill-down page "
                        "(under $SEGBENCH_PREDICTIONS_DIR, default data/predictions)")
    p.add_argument("--json", action="store_true", help="print one JSON object (a list of them for several conditions)")
    p.add_argument("--deploy-size", action=ListFlag, item=_size, metavar="WxH",
                   help="the resolutions to profile FLOPs and latency at (default: $SEGBENCH_DEPLOY_SIZES or 1024x512)")
    _dataset_flags(p)
    _common(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("profile", help="what checkpoints cost (FLOPs, latency, size) at deployment resolutions, "
                                       "recorded with their setup")
    p.add_argument("--variant", action=ListFlag, help="the variants' best.pt in the weights folder")
    p.add_argument("--checkpoint", action=ListFlag, paths=True, help="checkpoint files")
    p.add_argument("--all", action="store_true", help="every completed run whose checkpoint is on disk")
    p.add_argument("--size", action=ListFlag, item=_size, metavar="WxH",
                   help="resolutions (default: $SEGBENCH_DEPLOY_SIZES or 1024x512)")
    p.add_argument("--batch", type=int, default=1, help="images per timed forward (default 1)")
    p.add_argument("--repeats", type=int, help="timed forwards (default: the recipe's latency_repeats)")
    p.add_argument("--json", action="store_true", help="one JSON list of the profiles")
    _common(p, data=False)
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("recommend", help="the budget picker: which model, given limits on latency, size, "
                                         "GFLOPs, mIoU, rPC")
    p.add_argument("--dataset", help="the runs trained on this dataset (default: the one most runs were)")
    _budget_flags(p)
    p.add_argument("--json", action="store_true",
                   help="one object: recommended, reason, ranked, excluded (each with a reason), published")
    _common(p, data=False, weights=False, device=False)
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser("report", help="a self-contained HTML report (and a PDF): the recommendation under a budget, "
                                      "the leaderboard, trade-offs, robustness, what every number stands on")
    p.add_argument("--out", metavar="HTML", help="the HTML file (default report.html; none with only --pdf)")
    p.add_argument("--pdf", metavar="PDF", help="also print it to this PDF (headless Chromium)")
    p.add_argument("--dataset", help="the runs trained on this dataset (default: the one most runs were)")
    p.add_argument("--runs", action=ListFlag, item=int, metavar="ID", help="only these run ids (default: all evaluated)")
    p.add_argument("--title", help="the report's title")
    p.add_argument("--date", help="the date printed on it (default none: two reports of one store are identical)")
    _budget_flags(p)
    _common(p, data=False, weights=False, device=False)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("robustness", help="mIoU under the ImageNet-C/Cityscapes-C corruptions: mPC, rPC, per group")
    p.add_argument("--variant")
    p.add_argument("--checkpoint")
    p.add_argument("--split", default="val")
    p.add_argument("--corruptions", action=ListFlag, default=["benchmark"],
                   help="benchmark (the 15, default) | all (+ the 4 held-out) | noise | blur | weather | digital | "
                        "held-out | corruption names, e.g. gaussian_noise,fog")
    p.add_argument("--severities", action=ListFlag, item=int, default=[1, 2, 3, 4, 5],
                   help="severities 1-5 (default all five; the clean image is always measured)")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N images of the split")
    p.add_argument("--eval-size", type=_size, help="model input WIDTHxHEIGHT (default: the recipe's)")
    p.add_argument("--workers", type=int, metavar="N", help="processes corrupting images (default: min(cores, 4))")
    p.add_argument("--cache-dir", help="corrupted-image cache (default: $SEGBENCH_CORRUPTION_CACHE or "
                                       "data/corruption-cache)")
    p.add_argument("--no-cache", action="store_true", help="corrupt every image afresh, keep nothing")
    p.add_argument("--json", action="store_true", help="print one JSON object (a list of them for several conditions)")
    _dataset_flags(p)
    _common(p)
    p.set_defaults(func=cmd_robustness)

    p = sub.add_parser("compress", help="deployment variants of a trained model: pruned, INT8, or both "
                                        "(README: Deployment variants)")
    p.add_argument("--variant")
    p.add_argument("--checkpoint")
    p.add_argument("--method", required=True, choices=["int8", "prune", "prune+int8"])
    p.add_argument("--ratio", action=ListFlag, item=float, default=[0.5],
                   help="prune: share of the FLOPs to remove, one derived model each (default 0.5), e.g. 0.3,0.5")
    p.add_argument("--importance", choices=["l1", "taylor"], default="l1",
                   help="prune: rank channels by L1 norm (default) or by first-order Taylor importance")
    p.add_argument("--finetune-iters", type=int, metavar="N",
                   help="prune: fine-tuning iterations with the parent's recipe (default: a quarter of the "
                        "parent's training iterations; 0: none)")
    p.add_argument("--calibration-images", type=int, default=32, metavar="N",
                   help="int8: training images the activation ranges are calibrated on (default 32)")
    p.add_argument("--calibration-size", type=_size, metavar="WxH",
                   help="int8: the resolution to calibrate at, the one it will run at (default: the recipe's "
                        "evaluation size)")
    p.add_argument("--resume", action="store_true", help="prune: continue an interrupted fine-tuning exactly")
    p.add_argument("--json", action="store_true", help="print one JSON object per derived model")
    _common(p)
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("errors", help="per-image results: a model's worst images, or where another model beats it")
    p.add_argument("--variant", required=True, help="model A")
    p.add_argument("--vs", metavar="B", help="model B: list the images where B beats A the most (swap for the reverse)")
    p.add_argument("--dataset", help="the evaluations' dataset: cityscapes, synthetic, acdc... (default: the one A "
                                     "was trained on)")
    p.add_argument("--condition", help="ACDC condition of the evaluations (default: none)")
    p.add_argument("--split", default="val")
    p.add_argument("--by", default="miou", metavar="MEASURE",
                   help="miou (default), boundary (mIoU within the ground truth's boundary band) or class:NAME")
    p.add_argument("--top", type=int, default=10, metavar="K", help="how many images (default 10)")
    p.add_argument("--json", action="store_true", help="one JSON object per image, one per line")
    _common(p, data=False, weights=False, device=False)
    p.set_defaults(func=cmd_errors)

    p = sub.add_parser("runs", help="print the leaderboard")
    p.add_argument("--json", action="store_true")
    p.add_argument("--dataset")
    p.add_argument("--arch")
    p.add_argument("--status")
    p.add_argument("--setup", metavar="WORDS", help="the setup costs are shown for ('1024x512', 'cuda'; "
                                                    "default: the one most runs were measured on)")
    _common(p, data=False, weights=False, device=False)
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("published", help="published Cityscapes val results (papers, model zoos), apart from ours")
    p.add_argument("--load", action="store_true", help="load engine/published_results.csv into the store (idempotent)")
    p.add_argument("--json", action="store_true", help="the store's published rows as one JSON list")
    _common(p, data=False, weights=False, device=False)
    p.set_defaults(func=cmd_published)

    p = sub.add_parser("demo", help="synthetic data -> train and evaluate every variant (quick) -> leaderboard")
    p.add_argument("--variants", action=ListFlag, help="only these variants, e.g. unet_ce_dice,deeplabv3_r50_adam (default: all)")
    p.add_argument("--profile", default="quick")
    p.add_argument("--no-dashboard", action="store_true", help="do not start the dashboard at the end")
    _common(p, data=False)
    p.set_defaults(func=cmd_demo)

    def fast_path(p):
        p.add_argument("--backend", choices=["torch", "onnx"], default="torch")
        p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16", "mixed"], default="auto",
                       help="auto: bf16 on CUDA; on a CPU with native bf16 (AMX), bf16 when it keeps --min-agreement "
                            "of the float32 labels of a calibration scene, else bf16 for the largest share of the "
                            "convs that keeps it (mixed), else fp32; mixed: that per-conv search alone")
        p.add_argument("--min-agreement", type=float, default=0.995,
                       help="precision auto on a bf16 CPU, and mixed: label agreement with float32 needed (default 0.995)")
        p.add_argument("--no-rewrites", action="store_true",
                       help="run the model as trained: no BatchNorm folding, no dilated-conv rewrite, no weight cast")
        p.add_argument("--batch-size", type=int, default=None,
                       help="video frames per forward (default: 4 on CUDA, 1 on the CPU, where batching is slower)")
        p.add_argument("--no-channels-last", action="store_true")
        p.add_argument("--compile", action="store_true", help="torch.compile the model (torch backend)")

    def model_choice(p):
        p.add_argument("--variant")
        p.add_argument("--checkpoint")
        p.add_argument("--input-size", help="model input WIDTHxHEIGHT, or 'native' (default: the recipe's)")

    p = sub.add_parser("segment", help="segment images, folders and videos: overlays and label maps")
    model_choice(p)
    p.add_argument("--input", action=ListFlag, paths=True, required=True,
                   help="images, videos or folders of them (repeatable)")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity (default 0.5)")
    p.add_argument("--classes", action=ListFlag, help="only these classes or categories in the overlay, e.g. road,sky vehicle")
    p.add_argument("--flip", action="store_true", help="test-time augmentation: add the mirrored image")
    p.add_argument("--scales", action=ListFlag, item=float, help="test-time augmentation: input scales, e.g. 0.75,1,1.25")
    p.add_argument("--window", type=_size, help="sliding-window inference with crops of WIDTHxHEIGHT")
    p.add_argument("--quiet", action="store_true")
    fast_path(p)
    _common(p, data=False)
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("coverage", help="class coverage and planners' indicators of images or a dashcam video, "
                                         "with places (the dashboard's Coverage page): CSV and GeoJSON")
    model_choice(p)
    p.add_argument("--input", action=ListFlag, paths=True, required=True,
                   help="images, folders of them, or a dashcam video with --gpx (repeatable)")
    p.add_argument("--csv", required=True, help="tidy CSV: source, model, lat, lon, class_id, class_name, category, "
                                                "pixels, share, evaluation, validated, class_iou")
    p.add_argument("--summary", help="also the per-image summary CSV (categories)")
    p.add_argument("--indicators", help="also one CSV row per image or frame: place, area, every indicator and class share")
    p.add_argument("--geojson", help="GeoJSON FeatureCollection (RFC 7946): a point per image, districts or cells "
                                     "when aggregated, the route of a video")
    p.add_argument("--locations", help="CSV of file, lat, lon[, direction] for images (before their EXIF GPS)")
    p.add_argument("--gpx", help="GPX track of a video's drive: frames are placed by time along it")
    p.add_argument("--gpx-offset", type=float, default=0.0,
                   help="seconds from the track's first point to the video's first frame (default 0)")
    p.add_argument("--every-m", type=_positive, default=10.0, help="a video frame every N metres of the route (default 10)")
    p.add_argument("--districts", help="GeoJSON of district polygons: images aggregated by the district holding them")
    p.add_argument("--district-field", help="the property naming each district (default 'name', else the first text one)")
    p.add_argument("--grid-m", type=_positive, help="aggregate by a grid of N-metre cells instead")
    p.add_argument("--gvi-terrain", action="store_true",
                   help="count terrain (grass, soil) in the Green View Index (default: vegetation only, as Treepedia)")
    p.add_argument("--quiet", action="store_true")
    fast_path(p)
    _common(p, data=False)
    p.set_defaults(func=cmd_coverage)

    p = sub.add_parser("export-onnx", help="export a checkpoint to ONNX (next to it, or --out)")
    p.add_argument("--variant")
    p.add_argument("--checkpoint")
    p.add_argument("--out")
    _common(p, data=False, db=False, device=False)
    p.set_defaults(func=cmd_export_onnx)

    p = sub.add_parser("import-checkpoint", help="convert a published Cityscapes checkpoint (official HRNet, "
                                                 "mmsegmentation) into a model of ours, recorded as an imported run")
    p.add_argument("file", help="the published .pth file")
    p.add_argument("--format", required=True, choices=["hrnet-official", "mmseg"],
                   help="hrnet-official: HRNet-Semantic-Segmentation's HRNetV2-W48 (hrnet_cs_8090_torch11.pth); "
                        "mmseg: mmsegmentation's FCN-HRNetV2p-W48 or DeepLabV3 R-50b/R-101b-D8 (told by its keys)")
    p.add_argument("--name", required=True, help="the variant name it gets (weights/NAME/best.pt, the leaderboard)")
    p.add_argument("--published-miou", type=float, metavar="X", help="its published Cityscapes val mIoU, a fraction "
                                                                     "(80.9%% is 0.809)")
    p.add_argument("--source", metavar="URL", help="where the file was downloaded from")
    _common(p, data=False, device=False)
    p.set_defaults(func=cmd_import_checkpoint)

    p = sub.add_parser("bench", help="fast path vs baseline inference (or --train: training throughput)")
    p.add_argument("--variants", action=ListFlag, help="default: all")
    p.add_argument("--sizes", action=ListFlag, item=_size, default=[(512, 256), (1024, 512), (2048, 1024)],
                   help="WIDTHxHEIGHT values (default 512x256,1024x512,2048x1024)")
    p.add_argument("--frames", type=int, default=8, help="frames of the synthetic test video (default 8)")
    p.add_argument("--repeats", type=int, default=3, help="model-only timing repeats (default 3)")
    p.add_argument("--train", action="store_true", help="training images/s and data-pipeline images/s instead")
    p.add_argument("--size", type=_size, help="--train: training size (default: the recipe's)")
    p.add_argument("--iters", type=int, default=20, help="--train: timed iterations (default 20)")
    p.add_argument("--profile", default="full", help="--train: recipe profile (default full)")
    p.add_argument("--no-store", action="store_true", help="do not record the results in the store")
    p.add_argument("--json", action="store_true", help="one JSON object per (variant, size)")
    fast_path(p)
    _common(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("clean", help="remove what the demo made (synthetic scenes, its checkpoints, a store of only "
                                     "demo runs); keep and list everything else")
    p.add_argument("--dry-run", action="store_true", help="only list what would be removed and what is kept")
    _common(p, data=False, device=False)
    p.set_defaults(func=cmd_clean)

    p = sub.add_parser("db", help="results store maintenance")
    db_sub = p.add_subparsers(dest="db_command", required=True)
    p = db_sub.add_parser("migrate-to", help="copy the whole store (--db / RESULTS_DB) into another, empty database, "
                                             "ids included, e.g. a SQLite results.db into PostgreSQL")
    p.add_argument("url", help="SQLAlchemy URL of the target, e.g. postgresql+psycopg://user:pass@host/segbench")
    _common(p, data=False, weights=False, device=False)
    p.set_defaults(func=cmd_db_migrate_to)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from engine.errors import UserError

    try:
        return args.func(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
