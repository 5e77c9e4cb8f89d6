import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xlr.pairs import PAPER_GRID, SIGNED_GRID, length_gap, search_alpha, select_pairs


def brute_force_alpha(R, L, grid, upper_bound=None):
    """Straightforward loops: for each alpha, pick argmax/argmin per prompt (first index on ties). ``upper_bound``: the
    search xlr used to make, under the bound (the paper's has none); kept to show a case where the two differ."""
    best = None
    for a in sorted(grid, key=abs):
        gaps = []
        for r, ln in zip(R, L):
            s = [ri - a * li for ri, li in zip(r, ln)]
            cands = [k for k in range(len(s)) if upper_bound is None or s[k] < upper_bound]
            if not cands:
                continue
            c = max(cands, key=lambda k: (s[k], -k))
            j = min(range(len(s)), key=lambda k: (s[k], k))
            gaps.append(ln[c] - ln[j])
        if not gaps:
            continue
        obj = abs(sum(gaps) / len(gaps))
        if best is None or obj < best[0]:
            best = (obj, a)
    return None if best is None else best[1]


@pytest.mark.parametrize("seed", range(6))
def test_search_alpha_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    P = 12
    R = [list(rng.normal(0, 2, size=rng.integers(2, 6))) for _ in range(P)]
    L = [list(rng.integers(5, 600, size=len(r)).astype(float)) for r in R]
    grid = PAPER_GRID[::7]
    assert search_alpha(R, L, grid) == brute_force_alpha(R, L, grid)
    sgrid = SIGNED_GRID[::11]
    assert search_alpha(R, L, sgrid) == brute_force_alpha(R, L, sgrid)


def test_search_alpha_default_grid_and_zero_when_lengths_balanced():
    R = [[1.0, 0.0], [0.0, 1.0]]
    L = [[10.0, 20.0], [10.0, 20.0]]  # already balanced at alpha 0: gaps -10 and +10
    assert search_alpha(R, L) == 0.0
    with pytest.raises(ValueError, match="empty"):
        search_alpha(R, L, [])


def test_length_control_removes_a_length_bias():
    rng = np.random.default_rng(0)
    L = [list(rng.integers(50, 500, size=8).astype(float)) for _ in range(200)]
    R = [[0.01 * li + rng.normal(0, 0.5) for li in ln] for ln in L]  # reward favours longer answers
    a = search_alpha(R, L)
    assert a > 0
    assert abs(length_gap(R, L, a)) < abs(length_gap(R, L, 0.0)) / 5


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.lists(st.tuples(st.integers(-20, 20), st.integers(1, 50)), min_size=2, max_size=5), min_size=1, max_size=6),
    st.one_of(st.none(), st.integers(-10, 10)),
)
def test_property_search_alpha_matches_brute_force_and_ignores_the_bound(data, ub):
    R = [[float(r) for r, _ in p] for p in data]
    L = [[float(n) for _, n in p] for p in data]
    grid = PAPER_GRID[::50]
    want = brute_force_alpha(R, L, grid)
    assert search_alpha(R, L, grid) == want == reference_optimize_alpha(R, L, grid)
    rows = [r for k, p in enumerate(data) for r in _rows("de", f"p{k}", R[k], ["x" * n for _, n in p])]
    _, stats = select_pairs(rows, {f"p{k}": "F" for k in range(len(data))}, grid=grid, upper_bound=ub)
    assert stats["alpha"] == want


def _rows(lang, pid, rewards, texts):
    return [
        {"id": pid, "lang": lang, "sample_idx": k, "response": t, "reward": r, "len_chars": len(t)}
        for k, (r, t) in enumerate(zip(rewards, texts))
    ]


def test_select_pairs_upper_bound_semantics():
    rows = _rows("de", "p", [5.0, 1.0, 3.0, -2.0], ["aa", "bb", "cc", "dd"])
    pairs, _ = select_pairs(rows, {"p": "Frage"}, grid=[0.0])
    assert (pairs[0]["chosen"], pairs[0]["rejected"]) == ("aa", "dd")
    pairs, _ = select_pairs(rows, {"p": "Frage"}, grid=[0.0], upper_bound=4.0)
    assert (pairs[0]["chosen"], pairs[0]["rejected"]) == ("cc", "dd")  # 5.0 >= bound cannot be chosen
    pairs, _ = select_pairs(rows, {"p": "Frage"}, grid=[0.0], upper_bound=5.0)  # the bound itself is excluded
    assert pairs[0]["chosen"] == "cc"
    pairs, stats = select_pairs(_rows("de", "p", [9.0, 8.0], ["aa", "bb"]), {"p": "Frage"}, grid=[0.0], upper_bound=4.0)
    assert pairs == [] and stats["drops"]["no candidate below upper_bound (prompt)"] == 1
    # a sample above the bound can still be rejected
    pairs, _ = select_pairs(_rows("de", "p", [9.0, -8.0, 1.0], ["aa", "bb", "cc"]), {"p": "Frage"}, grid=[0.0], upper_bound=4.0)
    assert (pairs[0]["chosen"], pairs[0]["rejected"]) == ("cc", "bb")


def test_select_pairs_counts_every_drop():
    rows = (
        _rows("de", "a", [1.0, 0.0], ["x", "y"])
        + _rows("de", "b", [1.0, 0.0], ["same", "same"])
        + _rows("de", "c", [1.0, 0.0], ["only", ""])
        + _rows("de", "d", [2.0, 1.0, 0.0], ["", "u", "v"])
    )
    pairs, stats = select_pairs(rows, {k: k.upper() for k in "abcd"}, grid="paper")
    assert [p["id"] for p in pairs] == ["a", "d"]
    assert stats["drops"] == {
        "empty response (sample)": 2,
        "fewer than 2 candidates (prompt)": 1,
        "chosen and rejected identical (prompt)": 1,
    }
    assert stats["prompts"] == 4 and stats["pairs"] == 2
    p = pairs[1]
    assert (p["chosen"], p["rejected"], p["prompt"]) == ("u", "v", "D")
    assert set(p) >= {
        "id",
        "lang",
        "prompt",
        "chosen",
        "rejected",
        "chosen_score",
        "rejected_score",
        "chosen_reward",
        "rejected_reward",
        "alpha",
    }


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(st.tuples(st.integers(-5, 5), st.sampled_from(["", "a", "bb", "a", "ccc dd", "eeee"])), min_size=1, max_size=5),
        min_size=1,
        max_size=6,
    ),
    st.sampled_from(["paper", "signed"]),
)
def test_property_select_pairs_accounts_for_every_prompt_and_sample(data, grid):
    """Whatever the rewards and texts (empty, duplicated), every prompt ends as a pair or a counted drop, every
    empty sample is counted, chosen scores at least its rejected under the alpha used, and the two texts differ."""
    rows = [r for k, p in enumerate(data) for r in _rows("de", f"p{k}", [float(x) for x, _ in p], [t for _, t in p])]
    prompts = {f"p{k}": f"Frage {k}" for k in range(len(data))}
    pairs, stats = select_pairs(rows, prompts, grid=grid)
    drops = stats["drops"]
    assert drops.get("empty response (sample)", 0) == sum(t == "" for p in data for _, t in p)
    prompt_drops = sum(v for k, v in drops.items() if k.endswith("(prompt)"))
    assert len(pairs) + prompt_drops == len(data) == stats["prompts"]
    assert len({p["id"] for p in pairs}) == len(pairs)
    for p in pairs:
        assert p["chosen"] != p["rejected"] and p["chosen"] and p["rejected"]
        assert p["chosen_score"] >= p["rejected_score"]
        assert p["chosen_score"] == pytest.approx(p["chosen_reward"] - p["alpha"] * len(p["chosen"]))
        assert p["rejected_score"] == pytest.approx(p["rejected_reward"] - p["alpha"] * len(p["rejected"]))


def reference_optimize_alpha(R, L, grid):
    """The paper's alpha search, re-implemented with loops from utils/generate_preference_pair.py (optimize_alpha,
    lines 48-82) in github.com/ZNLP/Implicit-Cross-Lingual-Rewarding at commit 168a420: alphas in increasing order,
    s = r - alpha * len, chosen = first argmax of s, rejected = first argmin, objective mean(len_c - len_r); an alpha
    replaces the best only with a strictly smaller |objective|. No upper bound anywhere in it."""
    best_alpha, best = 0.0, float("inf")
    for a in grid:
        gaps = []
        for r, ln in zip(R, L):
            s = [ri - a * li for ri, li in zip(r, ln)]
            gaps.append(ln[s.index(max(s))] - ln[s.index(min(s))])
        gap = sum(gaps) / len(gaps)
        if abs(gap) < abs(best):
            best, best_alpha = gap, a
    return best_alpha


def reference_pair(r, ln, alpha, upper_bound):
    """The paper's pair for one prompt (generate_lc_dpo_pair, same file, lines 84-90): the bound is applied to the
    length-controlled score s (not the raw reward): chosen = first argmax of [s if s < bound else -inf] (numpy's argmax
    of an all -inf row is 0, so sample 0 when every s is at or above the bound); rejected = first argmin of s."""
    s = [ri - alpha * li for ri, li in zip(r, ln)]
    masked = [x if x < upper_bound else -float("inf") for x in s]
    return masked.index(max(masked)), s.index(min(s))


def _bound_case():
    rng = np.random.default_rng(0)
    L = [list(rng.integers(10, 400, size=4).astype(float)) for _ in range(30)]
    R = [[0.02 * li + rng.normal(0, 1.0) for li in ln] for ln in L]
    rows = [r for k in range(len(R)) for r in _rows("de", f"p{k}", R[k], ["x" * int(n) for n in L[k]])]
    return R, L, rows, {f"p{k}": f"Frage {k}" for k in range(len(R))}


def test_alpha_is_searched_without_the_upper_bound_which_only_acts_on_the_pairs():
    R, L, rows, prompts = _bound_case()
    grid = PAPER_GRID[::5]
    want = reference_optimize_alpha(R, L, grid)
    ub = 0.616  # about the 70th percentile of the length-controlled scores: the best sample of many prompts is above it
    assert brute_force_alpha(R, L, grid, upper_bound=ub) != want  # a search under the bound would pick another alpha here
    free, st_free = select_pairs(rows, prompts, grid=grid)
    bound, st_bound = select_pairs(rows, prompts, grid=grid, upper_bound=ub)
    assert st_free["alpha"] == st_bound["alpha"] == want == search_alpha(R, L, grid)
    assert st_bound["length_gap_after"] == st_free["length_gap_after"]  # the search's objective, bound or not
    # the pairs do depend on the bound: each is the reference's pair at the same alpha
    got = {p["id"]: (p["chosen_sample_idx"], p["rejected_sample_idx"]) for p in bound}
    expected = {f"p{k}": reference_pair(R[k], L[k], want, ub) for k in range(len(R))}
    none_below = {f"p{k}" for k in range(len(R)) if all(r - want * n >= ub for r, n in zip(R[k], L[k]))}
    assert none_below and st_bound["drops"]["no candidate below upper_bound (prompt)"] == len(none_below)  # default: dropped, counted
    assert got == {k: v for k, v in expected.items() if k not in none_below and v[0] != v[1]}
    assert got != {p["id"]: (p["chosen_sample_idx"], p["rejected_sample_idx"]) for p in free}
    assert all(p["chosen_score"] < ub for p in bound)


def test_above_bound_first_sample_reproduces_the_papers_pairs_exactly():
    R, L, rows, prompts = _bound_case()
    grid = PAPER_GRID[::5]
    ub = 0.616
    alpha = reference_optimize_alpha(R, L, grid)
    pairs, stats = select_pairs(rows, prompts, grid=grid, upper_bound=ub, above_bound="first_sample")
    expected = {f"p{k}": reference_pair(R[k], L[k], alpha, ub) for k in range(len(R))}
    same = {k for k, (c, j) in expected.items() if c == j}  # the paper keeps these (chosen text = rejected text); xlr drops them, counted
    assert {p["id"]: (p["chosen_sample_idx"], p["rejected_sample_idx"]) for p in pairs} == {
        k: v for k, v in expected.items() if k not in same
    }
    assert "no candidate below upper_bound (prompt)" not in stats["drops"]
    assert stats["drops"].get("chosen and rejected identical (prompt)", 0) == len(same)
    assert any(p["chosen_score"] >= ub for p in pairs)  # sample 0 of a prompt with nothing below the bound, as the paper
    with pytest.raises(ValueError, match="above_bound"):
        select_pairs(rows, prompts, grid=grid, upper_bound=ub, above_bound="keep")
