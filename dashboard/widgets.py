"""UI pieces several pages share: the store guard, model pickers, the class filter, the legend."""
from __future__ import annotations

import html

import pandas as pd
import streamlit as st
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from dashboard import loaders, tables
from engine.classes import CATEGORIES, CLASS_CATEGORIES, CLASS_NAMES, NUM_CLASSES, PALETTE
from engine.checkpoints import CheckpointError
from engine.onnx_backend import OnnxUnavailable
from engine.recommend import Budget, BudgetError, Recommendation
from engine.setups import SetupError, device_label
from engine.store import StoreVersionError

TRAIN_HINT = ("Train and evaluate every variant in a few minutes with `python -m engine demo --no-dashboard` "
              "(or one with `python -m engine train --variant deeplabv3_r50_adam` then "
              "`python -m engine evaluate --variant deeplabv3_r50_adam`).")


def shown_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: show it as given
        return url


def runs_or_stop() -> pd.DataFrame:
    """The leaderboard frame of every run; stops the page with a clear message when the store
    cannot be read or holds no runs."""
    url = loaders.store_url()
    try:
        rows = loaders.leaderboard(url, loaders.cost_setup())
    except (StoreVersionError, SQLAlchemyError, OSError) as e:
        st.error(f"Cannot read the results store `{shown_url(url)}`: {str(e).splitlines()[0]}\n\n"
                 "Set `RESULTS_DB` to a SQLAlchemy URL of a results store, e.g. `sqlite:///results.db`.")
        st.stop()
    if not rows:
        st.info(f"The results store `{shown_url(url)}` has no runs yet.\n\n{TRAIN_HINT}")
        st.stop()
    return tables.leaderboard_frame(rows)


def evaluated_runs_or_stop() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(every run, the completed and evaluated ones); stops the page when none is evaluated yet."""
    df = runs_or_stop()
    done = tables.evaluated(df)
    if done.empty:
        st.info(f"No completed and evaluated run yet.\n\n{TRAIN_HINT}")
        st.stop()
    return df, done


def models_or_stop() -> list[loaders.Model]:
    """Trained checkpoints in the weights folder; stops the page with the command to train one."""
    try:
        models = loaders.available_models(loaders.store_url(), loaders.weights_dir())
    except (StoreVersionError, SQLAlchemyError, OSError) as e:
        st.error(f"Cannot read the results store: {str(e).splitlines()[0]}")
        st.stop()
    if not models:
        st.info(f"No trained models in the weights folder `{loaders.weights_dir()}` "
                f"(set `WEIGHTS_DIR` to use another).\n\n{TRAIN_HINT}")
        st.stop()
    return models


def setup_picker() -> str | None:
    """The sidebar's choice of the setup every page shows latency and FLOPs for (session state
    "cost_setup"): figures measured on different setups are never shown together."""
    try:
        setups = loaders.cost_setups(loaders.store_url())
    except (StoreVersionError, SQLAlchemyError, OSError):
        return None  # the page says why the store cannot be read
    if not setups:
        return None
    labels = {s["setup"]: f"{s['resolution']}, batch {s['batch']} · {device_label(s['setup'])} · {s['runs']} "
                          f"run{'s' if s['runs'] != 1 else ''}" for s in setups}  # the resolution first: a narrow box
    if st.session_state.get("cost_setup") not in labels:
        st.session_state["cost_setup"] = setups[0]["setup"]
    return st.selectbox("Costs measured on", list(labels), key="cost_setup", format_func=labels.get,
                        help="The device, threads, resolution and batch every latency and GFLOPs figure on every page "
                             "holds for (`python -m engine profile --size WxH` measures another). Runs not measured "
                             "on it show no latency.")


def budget_inputs(setup: dict | None, rank_by: str = "miou", key: str = "budget") -> Budget:
    """The budget picker's limits (empty: no limit) as a `engine.recommend.Budget` on `setup` (a
    `Store.cost_setups()` row: what the latency and GFLOPs limits hold for), ranked by `rank_by`.
    The inputs keep their values across pages (session state under `key`)."""
    st.markdown("**Budget picker**: the most accurate model within every limit you set; leave a limit empty for none.")
    label = setup["label"] if setup else None
    c = st.columns(5)
    return Budget(
        max_latency_ms=c[0].number_input("Max latency (ms)", min_value=0.0, value=None, step=10.0, key=f"{key}_latency",
                                         help=f"on {label}" if label else "no latency measured yet"),
        max_size_mb=c[1].number_input("Max size (MB)", min_value=0.0, value=None, step=10.0, key=f"{key}_size",
                                      help="the checkpoint on disk"),
        max_gflops=c[2].number_input("Max GFLOPs", min_value=0.0, value=None, step=10.0, key=f"{key}_gflops",
                                     help=f"one image at {setup['resolution']}" if setup else None),
        min_miou=c[3].number_input("Min clean mIoU", min_value=0.0, max_value=1.0, value=None, step=0.01,
                                   key=f"{key}_miou"),
        min_rpc=c[4].number_input("Min rPC", min_value=0.0, max_value=1.0, value=None, step=0.05, key=f"{key}_rpc",
                                  help="mPC / clean mIoU: the share of accuracy kept under corruptions"),
        latency_setup=setup["setup"] if setup else None, rank_by=rank_by)


def recommendation(budget: Budget, dataset: str) -> Recommendation | None:
    """The budget's answer, said on the page (recommended and why, or why none); None when the
    store cannot answer it (the reason is shown)."""
    try:
        answer = loaders.recommendation(loaders.store_url(), budget, dataset)
    except (BudgetError, SetupError) as e:
        st.warning(str(e))
        return None
    if answer.recommended:
        st.success(f"**Recommended: {answer.recommended}**: {answer.reason.split(': ', 1)[1]}",
                   icon=":material/verified:")
    else:
        st.warning(answer.reason, icon=":material/block:")
    return answer


def current_setup() -> dict | None:
    """The `Store.cost_setups()` row of the setup chosen in the sidebar (None when nothing is measured)."""
    setups = loaders.cost_setups(loaders.store_url())
    return next((s for s in setups if s["setup"] == loaders.cost_setup()), setups[0] if setups else None)


def backend_picker() -> str:
    """The sidebar's choice of inference backend for Compare and Coverage (session state "backend")."""
    return st.selectbox("Inference backend", list(loaders.BACKENDS), key="backend", format_func=loaders.BACKENDS.get,
                        help="How Compare and Coverage run the models: PyTorch (BatchNorm folded, calibrated bf16 "
                             "on CPUs with AMX), or ONNX Runtime (float32; the checkpoint is exported next to "
                             "itself the first time).")


def segmenter_or_stop(model: loaders.Model):
    """The model loaded for the chosen backend; stops the page with the reason when it cannot be."""
    try:
        return loaders.segmenter(str(model.checkpoint), model.mtime_ns, loaders.backend())
    except OnnxUnavailable as e:
        st.error(f"{model.variant} cannot run on ONNX Runtime here: {e}\n\nChoose PyTorch in the sidebar.")
        st.stop()
    except CheckpointError as e:  # refused: pickled code, or not the file training wrote (sha256)
        st.error(f"{model.variant}: {e}")
        st.stop()


def pick_model(label: str, models: list[loaders.Model], slot: str, default: int = 0) -> loaders.Model:
    """A model selectbox whose choice survives page switches (kept in session state under `slot`,
    which the Trade-offs page also sets when a point is clicked)."""
    by_variant = {m.variant: m for m in models}
    key = f"pick_{slot}"
    if st.session_state.get(key) not in by_variant:
        remembered = st.session_state.get(slot)
        st.session_state[key] = remembered if remembered in by_variant else models[min(default, len(models) - 1)].variant
    variant = st.selectbox(label, list(by_variant), key=key, format_func=lambda v: by_variant[v].label)
    st.session_state[slot] = variant
    return by_variant[variant]


def _set_pick(slot: str, variant: str) -> None:
    st.session_state[slot] = variant
    st.session_state[f"pick_{slot}"] = variant


def parent_shortcut(models: list[loaders.Model], a: loaders.Model, b: loaders.Model,
                    slots: tuple[str, str] = ("compare_a", "compare_b")) -> None:
    """For two model pickers (session slots of `pick_model`): when A (else B) is a derived model
    whose parent's checkpoint is here and the other side is not that parent, a button that puts the
    parent on the other side; when one side was made from the other, a line that says how."""
    for model, other, slot, side in ((a, b, slots[1], "B"), (b, a, slots[0], "A")):
        parent = loaders.parent_of(model, models)
        if parent is not None and parent == other:
            st.caption(f":material/account_tree: {'B' if side == 'A' else 'A'} ({model.variant}) was made from "
                       f"{side} ({parent.variant}): {tables.method_text(model.method, model.ratio)}.")
            return
    for model, other, slot, side in ((a, b, slots[1], "B"), (b, a, slots[0], "A")):
        parent = loaders.parent_of(model, models)
        if parent is not None:
            st.button(f"Compare with its parent: {side} = {parent.variant}", key=f"{slot}_parent",
                      icon=":material/account_tree:", on_click=_set_pick, args=(slot, parent.variant),
                      help=f"{model.variant} was made from {parent.variant} "
                           f"({tables.method_text(model.method, model.ratio)}): see where that changes the labels")
            return


def _set_classes(key: str, ids: list[int], toggle: bool = False) -> None:
    current = set(st.session_state.get(key, []))
    if toggle:
        chosen = current - set(ids) if set(ids) <= current else current | set(ids)
    else:
        chosen = set(ids)
    st.session_state[key] = sorted(chosen)


def class_filter(key: str = "visible_classes") -> list[int]:
    """The 19 classes as a multiselect, with All / None and one toggle per official category."""
    if key not in st.session_state:
        st.session_state[key] = list(range(NUM_CLASSES))
    with st.container(horizontal=True, gap="small"):
        st.button("All", key=f"{key}_all", on_click=_set_classes, args=(key, list(range(NUM_CLASSES))))
        st.button("None", key=f"{key}_none", on_click=_set_classes, args=(key, []))
        for cat, ids in CATEGORIES.items():
            st.button(cat, key=f"{key}_{cat}", on_click=_set_classes, args=(key, ids, True),
                      help=f"show/hide {', '.join(CLASS_NAMES[i] for i in ids)}")
    return st.multiselect("Classes shown", list(range(NUM_CLASSES)), key=key, format_func=lambda i: CLASS_NAMES[i],
                          placeholder="no class shown: pick classes or a category")


def legend_html(class_ids: list[int], shares: dict[str, list[float]] | None = None) -> str:
    """Colour chips for the given trainIds; with `shares` (model -> 19 pixel shares) each chip also
    says how much of the image each model gives that class."""
    chips = []
    for c in class_ids:
        r, g, b = PALETTE[c].tolist()
        extra = ""
        if shares:
            extra = " · ".join(f"{html.escape(m)} {s[c]:.0%}" for m, s in shares.items())
            extra = f"<span style='opacity:.65;font-size:.8em;margin-left:6px'>{extra}</span>"
        chips.append(f"<span title='{CLASS_CATEGORIES[c]}' style='display:inline-flex;align-items:center;"
                     f"margin:2px 10px 2px 0;white-space:nowrap'><span style='width:14px;height:14px;"
                     f"border-radius:3px;background:rgb({r},{g},{b});display:inline-block;margin-right:5px;"
                     f"border:1px solid rgba(0,0,0,.25)'></span>{CLASS_NAMES[c]}{extra}</span>")
    return "<div style='line-height:1.9'>" + "".join(chips) + "</div>"


def dataset_picker(df: pd.DataFrame, key: str) -> str:
    """One dataset at a time (mIoU on synthetic scenes and on Cityscapes are not comparable)."""
    datasets = sorted(df["dataset"].dropna().unique(), key=lambda d: (d != "cityscapes", d))
    choice = st.selectbox("Dataset", datasets, key=key) if len(datasets) > 1 else datasets[0]
    if choice == "synthetic":
        st.caption("Numbers on the built-in synthetic street scenes, not on Cityscapes.")
    return choice
