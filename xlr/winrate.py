"""Win rate and length-controlled win rate (AlpacaEval's GLM); their bootstrap CIs are xlr.stats' (xlr.evaluate.model_metrics).

Conventions: ``p`` is the judge's soft preference for the MODEL's output over the baseline's (reference) output, in
[0, 1] (AlpacaEval's ``preference`` is ``1 + p``: 1 = baseline wins, 2 = model wins). Win rate = mean(p) x 100.

The length-controlled win rate is AlpacaEval 2's GLM (``alpaca_eval.metrics.glm_winrate``, ``length_controlled_v1``):
a logistic regression without intercept of the preference on ``tanh(std_delta_len)`` (character length of baseline
minus model output, divided by its standard deviation), the instruction's difficulty and a ``not_gamed_baseline``
indicator, fitted with sklearn's ``LogisticRegressionCV`` (L1, liblinear, 5 group folds, soft labels by duplication),
regularised toward two gamed baselines (``df_gamed.csv``, weight lambda = 0.2 / 2); the LC win rate is its mean
prediction with the length term at zero. Written here rather than called because alpaca_eval fetches
``df_gamed.csv`` from the Hugging Face hub inside the function (no offline switch), and without that file it cannot run at
all; tests/test_winrate.py checks that this code gives alpaca_eval's own numbers (when alpaca_eval imports).

Variants, always named in results and tables:
- ``length_controlled_v1`` (official): needs AlpacaEval's ``df_gamed.csv`` (which also carries the instruction
  difficulty); pass ``gamed``.
- ``length_controlled_noreg``: instruction difficulty given (``difficulty``), no gamed-baseline regulariser.
- ``length_controlled_minimal``: neither file: length term + ``not_gamed_baseline`` only (alpaca_eval's own name for it).

Offline (``offline_lc_files``): both files rebuilt from the shipped AlpacaEval 2 annotations as alpaca_eval made them
(notebooks/instruction_difficulty.ipynb: the instruction weights of a joint GLM over all models; df_gamed: the rows of
the two gamed baselines ``gpt4_1106_preview_verbose`` / ``_concise``), cached by a hash of the inputs. The shipped data
holds no annotations of those two baselines, so offline df_gamed is not built and the offline LC is ``noreg`` (measured
against the published leaderboard in bench/RESULTS.md). ``annotation_winrates`` gives WR (``alpaca_win_rates``, equal to
alpaca_eval's get_winrate) and LC per AlpacaEval annotations file.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from typing import Any

import numpy as np

from xlr.errors import XlrError

FEATURES_V1 = ["np.tanh(std_delta_len)", "instruction_difficulty", "not_gamed_baseline.astype(float)"]
FEATURES_MINIMAL = ["np.tanh(std_delta_len)", "not_gamed_baseline.astype(float)"]
REGULARIZE_TO_BASELINE_LAMBDA = 0.2  # alpaca_eval GLM_INFO["length_controlled_v1"]


class WinRateError(XlrError, ValueError):
    pass


def win_rates(p: Sequence[float]) -> dict[str, float]:
    """Soft win rate (mean p x 100), discrete win rate (wins 1, ties 0.5), counts and the standard error (as alpaca_eval)."""
    x = np.asarray(p, dtype=float)
    if x.size == 0:
        raise WinRateError("win rate of zero judged items")
    if np.isnan(x).any() or (x < 0).any() or (x > 1).any():
        raise WinRateError("preferences must be in [0, 1] with no NaN (unjudgeable items are counted and left out before this)")
    return {
        "win_rate": float(x.mean() * 100),
        "standard_error": float(x.std(ddof=1) / np.sqrt(x.size) * 100) if x.size > 1 else float("nan"),
        "discrete_win_rate": float((np.where(x > 0.5, 1.0, np.where(x < 0.5, 0.0, 0.5))).mean() * 100),
        "n_wins": int((x > 0.5).sum()),
        "n_wins_base": int((x < 0.5).sum()),
        "n_draws": int((x == 0.5).sum()),
        "n_total": int(x.size),
    }


def _logistic_cv(X: np.ndarray, y_soft: np.ndarray, sample_weight: np.ndarray | None, n_splits: int = 5) -> Any:
    """alpaca_eval's ``fit_LogisticRegressionCV(is_ytrue_proba=True)``: each row twice (label 1 weighted by p, label 0
    by 1 - p), L1 logistic regression without intercept, C chosen by 5-fold GroupKFold on the soft log loss."""
    import sklearn
    from scipy import sparse
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import make_scorer
    from sklearn.model_selection import GroupKFold

    n = len(y_soft)
    X2 = sparse.vstack([X, X]).tocsr() if sparse.issparse(X) else np.concatenate([X, X])  # sparse: the joint difficulty fit
    y2 = np.concatenate([np.ones(n), np.zeros(n)])
    true_prob = np.concatenate([y_soft, 1 - y_soft])
    groups = np.concatenate([np.arange(n), np.arange(n)])
    true_weight = None if sample_weight is None else np.concatenate([sample_weight, sample_weight])
    weight = true_prob if true_weight is None else true_prob * true_weight

    def soft_logloss(y_true: np.ndarray, y_pred: np.ndarray, true_prob: np.ndarray, true_sample_weight: np.ndarray | None = None) -> float:
        y = np.where(y_true == 1, true_prob, 1 - true_prob)
        q = np.clip(y_pred, 1e-15, 1 - 1e-15)
        ll = y * np.log(q) + (1 - y) * np.log(1 - q)
        if true_sample_weight is not None:
            ll = ll * true_sample_weight
        return -float(np.mean(ll))

    import warnings

    # sklearn 1.8-1.9 deprecates penalty=/legacy attributes (FutureWarning); alpaca_eval 0.6.6 passes them as here
    with sklearn.config_context(enable_metadata_routing=True), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scorer = make_scorer(soft_logloss, response_method="predict_proba", greater_is_better=False).set_score_request(
            true_sample_weight=True, true_prob=True
        )
        model = LogisticRegressionCV(
            cv=GroupKFold(n_splits=n_splits),
            scoring=scorer,
            random_state=123,
            dual=False,
            penalty="l1",
            solver="liblinear",
            n_jobs=None,
            fit_intercept=False,
        )
        model.set_fit_request(sample_weight=True)
        model.fit(X2, y2, sample_weight=weight, groups=groups, true_sample_weight=true_weight, true_prob=true_prob)
    return model


def length_controlled_winrate(
    p: Sequence[float],
    len_model: Sequence[int],
    len_baseline: Sequence[int],
    index: Sequence[int] | None = None,
    difficulty: Any = None,
    gamed: Any = None,
) -> dict[str, Any]:
    """LC win rate of the model over the baseline from soft preferences and character lengths.

    ``p`` may hold NaN for unjudged items: as in alpaca_eval they count in the length scale (std of the length
    difference) and in the mean prediction, not in the fit.
    ``index``: AlpacaEval instruction index (0..804, its row order) per item, needed with ``difficulty`` or ``gamed``.
    ``difficulty``: a pandas Series index -> instruction difficulty (AlpacaEval's ``instruction_difficulty.csv``); when
    given with ``gamed`` it is the lookup (else the first row per index of ``gamed``, as alpaca_eval).
    ``gamed``: AlpacaEval's ``df_gamed.csv`` as a DataFrame (columns preference (0..1), index, std_delta_len,
    instruction_difficulty, not_gamed_baseline [, model]). Returns the LC win rate, its standard error, the variant and
    the GLM weights."""
    import pandas as pd

    y = np.asarray(p, dtype=float)
    if not (len(y) == len(len_model) == len(len_baseline)):
        raise WinRateError("p, len_model and len_baseline must have the same length")
    judged = ~np.isnan(y)  # unjudged items (NaN) count in the length scale and the prediction, not in the fit (as alpaca_eval)
    if judged.sum() < 10:
        raise WinRateError(f"length-controlled win rate needs at least 10 judged items for 5-fold CV, got {int(judged.sum())}")
    delta = np.asarray(len_baseline, dtype=float) - np.asarray(len_model, dtype=float)  # output_1 (baseline) - output_2 (model)
    sd = pd.Series(delta).std()
    std_delta = delta / sd if sd > 0 else np.zeros_like(delta)
    if gamed is not None or difficulty is not None:
        if index is None:
            raise WinRateError("instruction difficulty needs the AlpacaEval index of every item")
        if difficulty is not None:
            diff_map = difficulty
        else:
            # exactly alpaca_eval's lookup: first row per index, looked up by the file's row label
            diff_map = gamed.reset_index(drop=True).drop_duplicates("index")["instruction_difficulty"]
        try:
            diff = np.asarray([float(diff_map[int(i)]) for i in index])
        except KeyError as e:
            raise WinRateError(f"instruction difficulty has no entry for AlpacaEval index {e}") from None
        features, variant = FEATURES_V1, "length_controlled_v1" if gamed is not None else "length_controlled_noreg"
        X = np.column_stack([np.tanh(std_delta), diff, np.ones_like(y)])
        X_test = np.column_stack([np.zeros_like(y), diff, np.ones_like(y)])
    else:
        features, variant = FEATURES_MINIMAL, "length_controlled_minimal"
        X = np.column_stack([np.tanh(std_delta), np.ones_like(y)])
        X_test = np.column_stack([np.zeros_like(y), np.ones_like(y)])
    weight = None
    if gamed is not None:
        g = gamed
        gX = np.column_stack(
            [
                np.tanh(g["std_delta_len"].to_numpy(float)),
                g["instruction_difficulty"].to_numpy(float),
                g["not_gamed_baseline"].astype(bool).to_numpy().astype(float),
            ]
        )
        gy = g["preference"].to_numpy(float)  # df_gamed's preferences are already in [0, 1] (alpaca_eval uses them as they are)
        not_gamed = np.concatenate([g["not_gamed_baseline"].astype(bool).to_numpy(), np.ones(len(y), dtype=bool)])
        weight = not_gamed.astype(float) + (REGULARIZE_TO_BASELINE_LAMBDA * (~not_gamed)).astype(float) / 2
        X, y_fit = np.concatenate([gX, X]), np.concatenate([gy, y])
        keep = ~np.isnan(y_fit)
        X, y_fit, weight = X[keep], y_fit[keep], weight[keep]
    else:
        X, y_fit = X[judged], y[judged]
    model = _logistic_cv(X, y_fit, weight)
    pred = model.predict_proba(X_test)[:, 1]
    return {
        "length_controlled_winrate": float(pred.mean() * 100),
        "lc_standard_error": float(pd.Series(pred).sem() * 100),
        "variant": variant,
        "weights": dict(zip(features, map(float, model.coef_[0]), strict=True)),
    }


# ----------------------------------------------------------------------------------------------------------------
# AlpacaEval-format annotations: win rate as alpaca_eval, and the LC GLM's two files rebuilt offline

ALPACA_BASELINE = "gpt4_1106_preview"
# The two gamed baselines that df_gamed.csv holds: alpaca_eval notebooks/notebook_helpers.py, make_data's
# ``fn_is_gamed_baseline`` (baseline name + "verbose"/"concise"); glm_winrate.py weights them lambda / 2 each.
GAMED_BASELINES = ("gpt4_1106_preview_verbose", "gpt4_1106_preview_concise")
LC_METHOD_VERSION = "1"  # bump when the rebuild changes: it is part of the cache key
LC_NOISE_SEED = 0
VARIANTS = ("length_controlled_v1", "length_controlled_noreg", "length_controlled_minimal")


def alpaca_win_rates(preference: Sequence[float]) -> dict[str, float]:
    """alpaca_eval's ``get_winrate`` / ``pairwise_to_winrate`` (metrics/winrate.py, metrics/helpers.py
    ``describe_head2head``) on its own scale: ``preference`` in [1, 2] (1 = baseline output_1 wins, 2 = model wins,
    1.5 = tie; the legacy 0 also means a tie); NaN (no judgment) is dropped before the win rate. win_rate = mean(p - 1)
    x 100, standard_error = its sem x 100, discrete_win_rate counts wins 1 and exact ties 0.5; n_draws counts exact
    ties (1.5 or 0) as alpaca_eval does."""
    x = np.asarray(preference, dtype=float)
    x = np.where(x == 0, 1.5, x)
    if ((x[~np.isnan(x)] < 1) | (x[~np.isnan(x)] > 2)).any():
        raise WinRateError("AlpacaEval preferences must be in [1, 2] (or 0 / NaN); xlr.data.load_alpaca_annotations checks files")
    kept = x[~np.isnan(x)]
    out = win_rates(kept - 1)
    out["n_draws"] = int((kept == 1.5).sum())
    return out


def _instruction_index(instructions: Sequence[str], data_dir: Any = None) -> tuple[np.ndarray | None, str]:
    """AlpacaEval index (0..804, its row order) of each instruction, matched by exact text to the shipped
    X-AlpacaEval English prompts (ids 1..805 = AlpacaEval's row order); (None, why) where any does not match."""
    from xlr import data as D

    try:
        root = D._root(data_dir)
        path = D._file(root, f"{D.XAE_PROMPTS}/en.json", "X-AlpacaEval English prompts (AlpacaEval's 805 instructions)")
    except (D.DataError, FileNotFoundError) as e:
        return None, f"no AlpacaEval instruction list to match against ({e})"
    pos = {r["instruction"]: int(r["id"]) - 1 for r in D._read_json_list(path)}
    idx = [pos.get(t) for t in instructions]
    missing = sum(i is None for i in idx)
    if missing:
        return None, f"{missing} of {len(idx)} instructions are not AlpacaEval's (matched by exact text to {path})"
    return np.asarray(idx, dtype=int), "matched by instruction text"


def _rows_for_glm(df: Any, model: str, not_gamed: bool) -> Any:
    """alpaca_eval notebook_helpers.load_annotations: judged rows (preference >= 0, as p - 1 in [0, 1]) with the row
    position as ``index`` (pd.read_json(...).reset_index()), lengths; empty model outputs dropped (the notebook's
    ``query("len_2 != 0")``)."""
    out = df[["preference"]].copy()
    out["index"] = np.arange(len(df))
    out["model"] = model
    out["len_1"] = df["output_1"].str.len().to_numpy()
    out["len_2"] = df["output_2"].str.len().to_numpy()
    out["not_gamed_baseline"] = not_gamed
    out = out[out["preference"].notna() & (out["len_2"] != 0)].copy()
    out["preference"] = out["preference"] - 1
    return out


def _joint_difficulty(
    frames: dict[str, Any], baseline: str = ALPACA_BASELINE, seed: int = LC_NOISE_SEED
) -> tuple[Any, Any, dict[str, Any]]:
    """Instruction difficulty from the joint GLM of alpaca_eval's notebooks/instruction_difficulty.ipynb, ported:
    ``C(generator_2):np.tanh(rand_delta_len_std_only) + C(generator_2) + C(index) + not_gamed_baseline - 1`` (a length
    slope and a bias per model, one weight per instruction, index 0 the reference at 0) fitted with
    fit_LogisticRegressionCV (L1, 5 group folds, soft labels); the instruction weights are the difficulty.
    ``rand_delta_len``: length difference plus uniform noise of width 1e-4 (seeded here; alpaca_eval's is unseeded),
    divided by its std per model (make_data). Returns (difficulty Series, the pooled rows with their features, info)."""
    import pandas as pd
    from scipy import sparse

    models = [baseline] + [m for m in frames if m != baseline] if baseline in frames else list(frames)
    A = pd.concat([frames[m] for m in models], ignore_index=True)
    rng = np.random.default_rng(seed)
    A["rand_delta_len"] = (A["len_1"] - A["len_2"]).astype(float) + (rng.random(len(A)) - 0.5) * 1e-4
    A["std_delta_len"] = A["rand_delta_len"] / A.groupby("model")["rand_delta_len"].transform("std")
    levels = np.sort(A["index"].unique())
    ref = levels[0]
    col_of = {v: k for k, v in enumerate(levels[1:])}
    n, M = len(A), len(models)
    mcol = A["model"].map({m: k for k, m in enumerate(models)}).to_numpy()
    r = np.arange(n)
    idx = A["index"].to_numpy()
    has = idx != ref
    rows = np.concatenate([r, r, r[has], r])
    cols = np.concatenate([mcol, M + mcol, 2 * M + np.array([col_of[v] for v in idx[has]], dtype=int), np.full(n, 2 * M + len(col_of))])
    vals = np.concatenate(
        [np.tanh(A["std_delta_len"].to_numpy()), np.ones(n), np.ones(int(has.sum())), A["not_gamed_baseline"].astype(float).to_numpy()]
    )
    X = sparse.csr_matrix((vals, (rows, cols)), shape=(n, 2 * M + len(col_of) + 1))
    model = _logistic_cv(X, A["preference"].to_numpy(float), None)
    coef = model.coef_[0]
    difficulty = pd.Series(0.0, index=pd.Index(levels, name="index"), name="instruction_difficulty")
    difficulty.loc[levels[1:]] = coef[2 * M : 2 * M + len(col_of)]
    info = {
        "C": float(np.ravel(model.C_)[0]),
        "n_rows": int(n),
        "n_models": M,
        "n_instructions": int(len(levels)),
        "reference_index": int(ref),
    }
    return difficulty, A, info


def build_lc_files(frames: dict[str, Any], baseline: str = ALPACA_BASELINE) -> tuple[Any, Any, dict[str, Any]]:
    """From {model: load_alpaca_annotations frame}: (instruction difficulty Series, df_gamed DataFrame or None, info).
    df_gamed = the rows of the two gamed baselines (GAMED_BASELINES) as make_data builds them (preference - 1, index,
    std_delta_len, instruction_difficulty, not_gamed_baseline False); None where either baseline is not among the frames."""
    glm_frames = {m: _rows_for_glm(df, m, not_gamed=m not in GAMED_BASELINES) for m, df in frames.items()}
    difficulty, A, info = _joint_difficulty(glm_frames, baseline)
    missing = [g for g in GAMED_BASELINES if g not in frames]
    if missing:
        gamed = None
        info["df_gamed"] = (
            f"not built: the gamed baselines' annotations ({', '.join(missing)}) are not among the inputs; "
            "alpaca_eval's df_gamed.csv is exactly those rows, so the official v1 regulariser cannot be rebuilt without them"
        )
    else:
        g = A[A["model"].isin(GAMED_BASELINES)].copy()
        g["order"] = g["model"].map({m: k for k, m in enumerate(GAMED_BASELINES)})
        g = g.sort_values(["order", "index"], kind="stable")
        g["instruction_difficulty"] = difficulty.reindex(g["index"]).to_numpy()
        gamed = g[["model", "preference", "index", "std_delta_len", "instruction_difficulty", "not_gamed_baseline"]].reset_index(drop=True)
        info["df_gamed"] = f"built from {', '.join(GAMED_BASELINES)} ({len(gamed)} rows)"
    return difficulty, gamed, info


def _lc_inputs(data_dir: Any) -> tuple[Any, dict[str, Any], list[dict[str, str]]]:
    """The annotation files the rebuild uses (the leaderboard's models, as the notebook: lb models with annotations;
    all shipped files where there is no leaderboard), the leaderboard, and their sha256."""
    from xlr import data as D
    from xlr.files import sha256_file

    root = D._root(data_dir)
    files = D.alpaca_annotation_files(root)
    inputs = []
    try:
        lb = D.load_alpaca_leaderboard(root)
        inputs.append({"file": D.ALPACA_LEADERBOARD, "sha256": sha256_file(root / D.ALPACA_LEADERBOARD)})
        files = {m: p for m, p in files.items() if m in lb.index}
    except D.DataError:
        pass
    inputs += [{"file": str(p.relative_to(root)), "sha256": sha256_file(p)} for p in files.values()]
    return root, files, inputs


def offline_lc_files(data_dir: Any = None) -> tuple[Any, Any, dict[str, Any]]:
    """AlpacaEval's ``instruction_difficulty.csv`` and ``df_gamed.csv`` rebuilt from the shipped AlpacaEval 2
    annotations (data root ``alpaca-eval/``) the way alpaca_eval made them (notebooks/instruction_difficulty.ipynb,
    notebook_helpers.make_data), cached under ``xlr.paths.cache_dir() / "alpaca-eval-lc" / <hash of the inputs>/``
    (instruction_difficulty.csv, df_gamed.csv where it can be built, provenance.json) and reused while the inputs,
    the method and sklearn are the same. Returns (difficulty Series indexed 0..804, df_gamed DataFrame or None,
    provenance dict). df_gamed is None where the two gamed baselines (GAMED_BASELINES) are not in the data: the
    LC is then ``length_controlled_noreg`` (provenance["df_gamed"] says so)."""
    import hashlib
    import json
    from datetime import datetime

    import pandas as pd
    import sklearn

    import xlr
    from xlr import data as D
    from xlr.files import atomic_write_json, atomic_write_text
    from xlr.paths import cache_dir

    root, files, inputs = _lc_inputs(data_dir)
    key_src = {"method": LC_METHOD_VERSION, "noise_seed": LC_NOISE_SEED, "sklearn": sklearn.__version__, "inputs": inputs}
    key = hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()[:16]
    out = cache_dir() / "alpaca-eval-lc" / key
    prov_path, diff_path, gamed_path = out / "provenance.json", out / "instruction_difficulty.csv", out / "df_gamed.csv"
    if prov_path.is_file() and diff_path.is_file():  # provenance is written last: its presence means complete
        prov = json.loads(prov_path.read_text())
        if prov.get("cache_key") == key and (prov.get("df_gamed_file") is None or gamed_path.is_file()):
            difficulty = pd.read_csv(diff_path, index_col=0).squeeze("columns")
            gamed = pd.read_csv(gamed_path) if prov.get("df_gamed_file") else None
            return difficulty, gamed, {**prov, "reused": True, "dir": str(out)}
    frames = {m: D.load_alpaca_annotations(p)[0] for m, p in files.items()}
    difficulty, gamed, info = build_lc_files(frames)
    atomic_write_text(diff_path, difficulty.to_csv())
    if gamed is not None:
        atomic_write_text(gamed_path, gamed.to_csv(index=False))
    prov = {
        "cache_key": key,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "xlr_version": xlr.__version__,
        "sklearn_version": sklearn.__version__,
        "data_root": str(root),
        "inputs": inputs,
        "models": list(frames),
        "method": (
            "instruction_difficulty: joint L1 GLM over all input models' judged rows (per-model length slope and bias, one weight per "
            "instruction, index 0 = 0), the instruction weights; df_gamed: the two gamed baselines' rows with that difficulty. Index = "
            "row position in each file (alpaca_eval's convention; files with missing rows are shifted after the gap, as there)."
        ),
        "source": [
            "alpaca_eval notebooks/instruction_difficulty.ipynb (joint_formula, get_index_param_from_joint_optimization)",
            "alpaca_eval notebooks/notebook_helpers.py (load_annotations, make_data)",
            "alpaca_eval src/alpaca_eval/metrics/glm_winrate.py (fit_LogisticRegressionCV, _get_featurized_data)",
        ],
        "noise_seed": LC_NOISE_SEED,
        **info,
        "instruction_difficulty_file": diff_path.name,
        "df_gamed_file": gamed_path.name if gamed is not None else None,
    }
    atomic_write_json(prov_path, prov)
    return difficulty, gamed, {**prov, "reused": False, "dir": str(out)}


def _read_lc_csvs(difficulty_csv: Any, gamed_csv: Any) -> tuple[Any, Any]:
    import pandas as pd

    difficulty = pd.read_csv(difficulty_csv, index_col=0).squeeze("columns") if difficulty_csv else None
    gamed = pd.read_csv(gamed_csv) if gamed_csv else None
    return difficulty, gamed


def annotation_winrates(
    paths: Sequence[Any],
    variant: str = "auto",
    data_dir: Any = None,
    *,
    difficulty_csv: Any = None,
    gamed_csv: Any = None,
    index: str = "match",
) -> list[dict[str, Any]]:
    """Win rate and LC win rate of AlpacaEval-format annotation files (one dict per file), as alpaca_eval computes them.

    ``variant``: "auto" (v1 where df_gamed is available and every instruction has its AlpacaEval index; noreg where only
    the difficulty is; else minimal), or one of length_controlled_v1 / _noreg / _minimal (short names v1, noreg,
    minimal). The two LC files are ``difficulty_csv`` / ``gamed_csv`` where given, else offline_lc_files(data_dir).
    ``index``: "match" (instruction text -> AlpacaEval row order, the correct index) or "row" (position in the file,
    what alpaca_eval itself uses: shifted after any missing row). Keys: model (generator_2), name (file name without
    .json[.gz]), file, n (judged), n_records, n_skipped, skipped, win_rate, standard_error, discrete_win_rate, n_wins,
    n_wins_base, n_draws, avg_length, length_controlled_winrate, lc_standard_error, lc_variant, lc_weights, lc_index,
    lc_note, lc_files."""
    from pathlib import Path

    from xlr import data as D

    want = {"v1": "length_controlled_v1", "noreg": "length_controlled_noreg", "minimal": "length_controlled_minimal"}.get(variant, variant)
    if want not in VARIANTS + ("auto",):
        raise WinRateError(f"LC variant {variant!r}: use auto, v1, noreg or minimal")
    if index not in ("match", "row"):
        raise WinRateError(f"index {index!r}: use 'match' or 'row'")
    lc_files: dict[str, Any] = {}

    def files() -> tuple[Any, Any]:
        if "difficulty" not in lc_files:
            if difficulty_csv or gamed_csv:
                lc_files["difficulty"], lc_files["gamed"] = _read_lc_csvs(difficulty_csv, gamed_csv)
                lc_files["source"] = {
                    "difficulty_csv": str(difficulty_csv) if difficulty_csv else None,
                    "gamed_csv": str(gamed_csv) if gamed_csv else None,
                }
            else:
                try:
                    d, g, prov = offline_lc_files(data_dir)
                    lc_files.update(difficulty=d, gamed=g, source={"offline": prov["dir"], "df_gamed": prov.get("df_gamed")})
                except (D.DataError, FileNotFoundError) as e:
                    lc_files.update(difficulty=None, gamed=None, source={"offline": f"not available: {e}"})
        return lc_files["difficulty"], lc_files["gamed"]

    results = []
    for path in paths:
        path = Path(path)
        df, rep = D.load_alpaca_annotations(path)
        gens = df["generator_2"].unique()
        if len(gens) != 1:
            raise D.DataError(
                f"{path}: annotations of {len(gens)} models ({', '.join(map(str, gens[:5]))}); the win rate is per model. "
                "Fix: one file per generator_2."
            )
        if rep.kept == 0:
            raise D.DataError(
                f"{path}: none of its {len(df)} annotations has a preference ({dict(rep.skipped)}). Fix: judge the outputs first."
            )
        row: dict[str, Any] = {
            "model": str(gens[0]),
            "name": path.name.removesuffix(".gz").removesuffix(".json"),
            "file": str(path),
            "n_records": len(df),
            "n_skipped": int(sum(rep.skipped.values())),
            "skipped": dict(rep.skipped),
            "avg_length": int(df["output_2"].str.len().mean()),
        }
        row.update(alpaca_win_rates(df["preference"].to_numpy()))
        row["n"] = row["n_total"]
        p = df["preference"].to_numpy(float) - 1
        len_model, len_base = df["output_2"].str.len().to_numpy(), df["output_1"].str.len().to_numpy()
        note = ""
        if index == "row":
            idx, how = np.arange(len(df)), "row position in the file (alpaca_eval's convention)"
        else:
            idx, how = _instruction_index(df["instruction"].tolist(), data_dir)
        chosen = want
        if want != "length_controlled_minimal":
            difficulty, gamed = files()
            if want == "auto":
                if idx is None:
                    chosen, note = "length_controlled_minimal", f"minimal: no AlpacaEval index ({how})"
                elif gamed is not None:
                    chosen = "length_controlled_v1"
                elif difficulty is not None:
                    chosen, note = "length_controlled_noreg", "noreg: no df_gamed (lc_files says why)"
                else:
                    chosen, note = "length_controlled_minimal", "minimal: no LC files (lc_files says why)"
            elif idx is None:
                raise WinRateError(f"{path}: {want} needs every instruction's AlpacaEval index: {how}. Fix: use --lc minimal.")
            elif want == "length_controlled_v1" and gamed is None:
                raise WinRateError(
                    f"{path}: length_controlled_v1 needs df_gamed ({lc_files['source']}). Fix: give AlpacaEval's df_gamed.csv, or use noreg/minimal."
                )
            elif want == "length_controlled_noreg" and difficulty is None:
                raise WinRateError(f"{path}: length_controlled_noreg needs the instruction difficulty ({lc_files['source']}).")
        kw: dict[str, Any] = {}
        if chosen == "length_controlled_v1":
            kw = {"index": idx, "gamed": lc_files["gamed"], "difficulty": lc_files["difficulty"]}
        elif chosen == "length_controlled_noreg":
            kw = {"index": idx, "difficulty": lc_files["difficulty"]}
        row["lc_index"] = how if chosen != "length_controlled_minimal" else None
        if "generator_1" in df.columns and (df["generator_1"] == df["generator_2"]).all():
            # alpaca_eval get_length_controlled_winrate: the baseline against itself is 0.5 by construction
            row.update(
                length_controlled_winrate=50.0,
                lc_standard_error=0.0,
                lc_variant=chosen,
                lc_weights=None,
                lc_note=(note + "; " if note else "") + "baseline against itself: 50 by construction (alpaca_eval)",
            )
        else:
            try:
                lc = length_controlled_winrate(p, len_model, len_base, **kw)
                row.update(
                    length_controlled_winrate=lc["length_controlled_winrate"],
                    lc_standard_error=lc["lc_standard_error"],
                    lc_variant=lc["variant"],
                    lc_weights=lc["weights"],
                    lc_note=note,
                )
            except WinRateError as e:
                row.update(
                    length_controlled_winrate=float("nan"),
                    lc_standard_error=float("nan"),
                    lc_variant=f"not computed: {e}",
                    lc_weights=None,
                    lc_note=note,
                )
        row["lc_files"] = lc_files.get("source")
        results.append(row)
    return results
