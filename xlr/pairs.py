"""Length-controlled preference pairs.

Score s = r - alpha * len_chars(y) (Python string length). Per language, alpha is taken from a grid so that the
mean over prompts of len(chosen) - len(rejected) is closest to 0, where chosen = argmax s and rejected = argmin s
(first index on ties). The paper's grid is 0, 0.001, ..., 0.999 (the smallest alpha wins on equal objective).
The optional signed grid (-0.999 ... 0.999, beyond the paper) lets the control work when the reward favours
SHORTER answers; there the alpha of smallest |alpha| wins on equal objective.

The optional upper bound, as in the paper's code (utils/generate_preference_pair.py in ZNLP/Implicit-Cross-Lingual-
Rewarding: ``optimize_alpha`` searches without it, ``generate_lc_dpo_pair`` applies it), plays no part in the alpha
search: at the alpha found, a sample whose length-controlled score s is at or above the bound cannot be chosen (the
best one below it is), while any sample can still be rejected. A prompt with no s below the bound: the paper takes its
first sample as chosen (numpy's argmax of a row of -inf); xlr drops it and counts it unless ``above_bound`` is
"first_sample".
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

PAPER_GRID = tuple(round(k * 0.001, 3) for k in range(1000))
SIGNED_GRID = tuple(round(k * 0.001, 3) for k in range(-999, 1000))


def grid_for(name: str) -> tuple[float, ...]:
    if name == "paper":
        return PAPER_GRID
    if name == "signed":
        return SIGNED_GRID
    raise ValueError(f"alpha grid {name!r}: use 'paper' or 'signed'")


def _matrix(values: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Ragged per-prompt lists -> (P, Nmax) float array and a validity mask."""
    n = max(len(v) for v in values)
    arr = np.zeros((len(values), n))
    mask = np.zeros((len(values), n), dtype=bool)
    for i, v in enumerate(values):
        arr[i, : len(v)] = v
        mask[i, : len(v)] = True
    return arr, mask


def choose(scores: np.ndarray, valid: np.ndarray, upper_bound: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(chosen, rejected, ok) indices along the last axis: chosen = argmax of scores among valid candidates below
    ``upper_bound`` (if given), rejected = argmin among all valid ones; first index on ties. ``ok`` is False where
    no candidate can be chosen."""
    can_choose = valid if upper_bound is None else valid & (scores < upper_bound)
    chosen = np.argmax(np.where(can_choose, scores, -np.inf), axis=-1)
    rejected = np.argmin(np.where(valid, scores, np.inf), axis=-1)
    return chosen, rejected, can_choose.any(axis=-1)


ABOVE_BOUND = ("drop", "first_sample")


def length_gap(
    rewards: Sequence[Sequence[float]], lengths: Sequence[Sequence[float]], alpha: float, upper_bound: float | None = None
) -> float:
    """Mean over prompts of len(chosen) - len(rejected) at this alpha: without ``upper_bound``, the alpha search's
    objective; with it, chosen as when building pairs (prompts without a choosable sample excluded)."""
    r, valid = _matrix(rewards)
    ln, _ = _matrix(lengths)
    c, j, ok = choose(r - alpha * ln, valid, upper_bound)
    rows = np.arange(len(r))
    gaps = ln[rows, c] - ln[rows, j]
    return float(gaps[ok].mean()) if ok.any() else float("nan")


def search_alpha(rewards: Sequence[Sequence[float]], lengths: Sequence[Sequence[float]], grid: Sequence[float] | None = None) -> float:
    """The grid alpha minimising |mean(len(chosen) - len(rejected))| (paper grid by default), chosen = argmax s and
    rejected = argmin s over every sample: no upper bound (the paper's ``optimize_alpha`` has none; the bound acts on
    the pairs only, see :func:`select_pairs`).

    ``rewards`` and ``lengths``: per prompt, a list of per-sample values. Ties in the objective go to the smallest
    |alpha| (for the paper's non-negative grid: the smallest alpha, as the paper's loop)."""
    grid = np.asarray(PAPER_GRID if grid is None else grid, dtype=float)
    if grid.size == 0:
        raise ValueError("alpha grid is empty")
    if not rewards:
        raise ValueError("no prompts to search alpha on")
    r, valid = _matrix(rewards)
    ln, _ = _matrix(lengths)
    rows = np.arange(len(r))
    best_obj, best_alpha = np.inf, None
    # Evaluate in blocks of alphas: (A, P, N) at once, bounded memory.
    block = max(1, 4_000_000 // max(r.size, 1))
    order = np.argsort(np.abs(grid), kind="stable")  # |alpha| ascending; equal |alpha|: grid order (negative first)
    for k in range(0, len(order), block):
        alphas = grid[order[k : k + block]]
        scores = r[None] - alphas[:, None, None] * ln[None]
        c, j, _ = choose(scores, np.broadcast_to(valid, scores.shape))
        gaps = ln[rows[None], c] - ln[rows[None], j]
        obj = np.abs(gaps.mean(axis=1))
        m = int(np.argmin(obj))  # first minimum = smallest |alpha| within the block
        if best_alpha is None or obj[m] < best_obj:  # strict: earlier blocks (smaller |alpha|) win ties
            best_obj, best_alpha = obj[m], float(alphas[m])
    return best_alpha


def select_pairs(
    rewards: Sequence[dict[str, Any]],
    prompts: dict[str, str],
    grid: Sequence[float] | str = "paper",
    upper_bound: float | None = None,
    language_ok: dict[tuple[str, int], bool] | None = None,
    above_bound: str = "drop",
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Build pairs for ONE language from reward rows (id, sample_idx, response, reward, len_chars, ...).

    ``prompts`` maps id -> target-language instruction. Empty responses (and, with ``language_ok``, samples
    detected in another language) are removed from the candidates; prompts left with fewer than 2 candidates or
    whose chosen and rejected texts are equal are dropped. Alpha is searched without ``upper_bound``; the bound then
    keeps samples whose score s is at or above it from being chosen; a prompt with none below it is dropped
    (``above_bound`` "drop") or, as the paper's code, takes its first candidate as chosen ("first_sample"). Every
    removal is counted in the returned stats, with alpha and the length gap (the search's objective, no bound) before
    (alpha = 0) and after control.
    """
    if above_bound not in ABOVE_BOUND:
        raise ValueError(f"above_bound={above_bound!r}: use one of {', '.join(ABOVE_BOUND)}")
    grid_vals = grid_for(grid) if isinstance(grid, str) else tuple(grid)
    drops: Counter = Counter()
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rewards:
        text = row.get("response_original", row["response"])
        if not text.strip():
            drops["empty response (sample)"] += 1
            continue
        if language_ok is not None and not language_ok.get((row["id"], row["sample_idx"]), True):
            drops["wrong language (sample, filter on)"] += 1
            continue
        by_id[row["id"]].append(row)
    groups = []
    position = {pid: k for k, pid in enumerate(prompts)}
    # every prompt of the rows, also one whose samples were all removed above (it must be counted as dropped)
    for pid in sorted(dict.fromkeys(r["id"] for r in rewards), key=lambda i: position.get(i, len(position))):
        cands = sorted(by_id.get(pid, []), key=lambda r: r["sample_idx"])
        if len(cands) < 2:
            drops["fewer than 2 candidates (prompt)"] += 1
            continue
        groups.append((pid, cands))
    stats: dict[str, Any] = {"prompts": len({r["id"] for r in rewards}), "drops": dict(drops)}
    if not groups:
        stats.update(pairs=0, alpha=None)
        return [], stats
    R = [[c["reward"] for c in cands] for _, cands in groups]
    L = [[c["len_chars"] for c in cands] for _, cands in groups]
    alpha = search_alpha(R, L, grid_vals)
    r, valid = _matrix(R)
    ln, _ = _matrix(L)
    scores = r - alpha * ln
    c_idx, j_idx, ok = choose(scores, valid, upper_bound)
    pairs = []
    for k, (pid, cands) in enumerate(groups):
        if not ok[k]:
            if above_bound == "drop":
                drops["no candidate below upper_bound (prompt)"] += 1
                continue
            c_idx[k] = 0  # the paper: np.argmax of a row of -inf is its first entry
        ch, rj = cands[c_idx[k]], cands[j_idx[k]]
        ch_text, rj_text = ch.get("response_original", ch["response"]), rj.get("response_original", rj["response"])
        if ch_text == rj_text:
            drops["chosen and rejected identical (prompt)"] += 1
            continue
        pairs.append(
            {
                "id": pid,
                "lang": ch["lang"],
                "prompt": prompts[pid],
                "chosen": ch_text,
                "rejected": rj_text,
                "chosen_score": float(scores[k, c_idx[k]]),
                "rejected_score": float(scores[k, j_idx[k]]),
                "chosen_reward": ch["reward"],
                "rejected_reward": rj["reward"],
                "alpha": alpha,
                "chosen_sample_idx": ch["sample_idx"],
                "rejected_sample_idx": rj["sample_idx"],
            }
        )
    stats.update(
        pairs=len(pairs),
        alpha=alpha,
        drops=dict(drops),
        length_gap_before=length_gap(R, L, 0.0),
        length_gap_after=length_gap(R, L, alpha),
        mean_len_chosen=float(np.mean([len(p["chosen"]) for p in pairs])) if pairs else None,
        mean_len_rejected=float(np.mean([len(p["rejected"]) for p in pairs])) if pairs else None,
    )
    return pairs, stats
