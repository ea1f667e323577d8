"""The paper's sampler (protocol §3.2) and Crowded Valley's baseline sampler (protocol §6), exactly."""

import numpy as np
import pytest
from scipy import stats

from deepobs_tree import float2str, setting_folder_name
from optimizers.distributions import CROWDED_VALLEY_SPACE, PAPER_SPACE, SpaceError
from runners.sampler import crowded_valley_samples, paper_samples, sample_search

# protocol §3.2: the paper's 50 samples (learning_rate, power) as folder tokens, in draw order.
PAPER_TABLE = [
    ("3.148911648e-03", "8.e-01"),
    ("5.4167545832e-04", "8.e-01"),
    ("2.4400607091e-02", "5.e-01"),
    ("4.2070539503e-04", "6.e-01"),
    ("6.8706142826e-03", "8.e-01"),
    ("2.5378155083e-02", "6.e-01"),
    ("1.2087541473e-04", "5.e-01"),
    ("7.726718478e-02", "9.e-01"),
    ("7.0689749506e-04", "7.e-01"),
    ("5.4152441194e-04", "7.e-01"),
    ("2.7964859516e-02", "8.e-01"),
    ("5.3429372613e-03", "4.e-01"),
    ("1.2563152774e-02", "5.e-01"),
    ("1.5369603111e-04", "7.e-01"),
    ("2.9204338472e-03", "9.e-01"),
    ("2.303699023e-04", "9.e-01"),
    ("6.2906442946e-04", "7.e-01"),
    ("2.3423849847e-02", "6.e-01"),
    ("2.7527173929e-01", "8.e-01"),
    ("6.3386534415e-03", "5.e-01"),
    ("6.2451395747e-01", "7.e-01"),
    ("1.7912362571e-02", "5.e-01"),
    ("1.6536937183e-03", "8.e-01"),
    ("8.3863947804e-04", "7.e-01"),
    ("5.7624872165e-03", "7.e-01"),
    ("9.5654992159e-03", "6.e-01"),
    ("4.3379206975e-01", "7.e-01"),
    ("5.3572800696e-04", "7.e-01"),
    ("1.7654048052e-03", "9.e-01"),
    ("6.7883879124e-04", "7.e-01"),
    ("5.4880470008e-04", "5.e-01"),
    ("1.2604664586e-01", "5.e-01"),
    ("3.8071583792e-03", "7.e-01"),
    ("2.4637685959e-02", "9.e-01"),
    ("6.0803901903e-04", "4.e-01"),
    ("6.9933956232e-01", "8.e-01"),
    ("3.5868164986e-03", "5.e-01"),
    ("1.4413469371e-02", "5.e-01"),
    ("7.261414516e-01", "7.e-01"),
    ("1.4817820606e-02", "4.e-01"),
    ("1.5314189712e-03", "8.e-01"),
    ("1.9870215385e-04", "4.e-01"),
    ("1.2273800988e-01", "7.e-01"),
    ("1.4926318309e-03", "6.e-01"),
    ("6.2426590539e-04", "6.e-01"),
    ("1.4477786307e-01", "6.e-01"),
    ("1.9777828512e-04", "5.e-01"),
    ("2.9072088907e-04", "4.e-01"),
    ("3.1130959561e-02", "5.e-01"),
    ("2.4079111955e-04", "9.e-01"),
]


def test_paper_sampler_reproduces_all_50_pairs_in_order():
    samples = paper_samples()
    assert len(PAPER_TABLE) == 50 and len(samples) == 50
    got = [(float2str(s["learning_rate"]), float2str(s["power"])) for s in samples]
    for k, (want, have) in enumerate(zip(PAPER_TABLE, got), start=1):
        assert have == want, f"sample #{k}: {have} != {want}"
    # values carry DeepOBS' float noise (deepobs-format Q19): 0.1 * 6 is 0.6000000000000001
    assert samples[3]["power"] == 0.1 * 6 != 0.6
    assert list(samples[0]) == ["learning_rate", "power"]
    assert all(isinstance(v, float) for s in samples for v in s.values())


def test_paper_sampler_equals_deepobs_global_seed_stream():
    """Same draws as DeepOBS' RandomSearch: np.random.seed(42), then rvs() per parameter per sample; its
    np.power(10, u) is taken correctly rounded (optimizers/distributions.py), within 4 ulp of NumPy's on any CPU and
    with the same setting-folder token."""
    state = np.random.get_state()
    try:
        np.random.seed(42)
        ref = []
        for _ in range(50):
            lr = np.power(10, stats.uniform(loc=-4, scale=4).rvs(size=1))[0]
            ref.append((float(lr), float(0.1 * stats.randint(4, 10).rvs())))
    finally:
        np.random.set_state(state)
    ours = [(s["learning_rate"], s["power"]) for s in paper_samples()]
    assert [p for _, p in ours] == [p for _, p in ref]
    for (lr, _), (lr_ref, _) in zip(ours, ref):
        assert abs(lr - lr_ref) <= 4 * np.spacing(lr_ref) and float2str(lr) == float2str(lr_ref)


def test_paper_sampler_gives_the_papers_learning_rates_bit_for_bit(paper_tree):
    """All 50 learning rates equal the float64 values in the paper's released files exactly (NumPy's AVX-512
    np.power misses 3 of them by 1 ulp, glibc's pow 1: the sampler's value must not depend on the CPU)."""
    import json

    released: dict[str, set[float]] = {}
    for path in (paper_tree / "fmnist_2c2d").rglob("*.json"):
        lr = json.loads(path.read_text())["optimizer_hyperparams"]["learning_rate"]
        released.setdefault(float2str(lr), set()).add(lr)
    samples = paper_samples()
    assert all(float2str(s["learning_rate"]) in released for s in samples)
    assert [
        s["learning_rate"] for s in samples if s["learning_rate"] not in released[float2str(s["learning_rate"])]
    ] == []


def test_global_numpy_state_untouched():
    np.random.seed(7)
    before = np.random.random_sample()
    np.random.seed(7)
    paper_samples(5)
    assert np.random.random_sample() == before


def test_paper_sampler_matches_released_quadratic_deep_folders(paper_tree):
    folder = paper_tree / "quadratic_deep" / "PowKernelGradientDescentOptimizer"
    released = {p.name for p in folder.iterdir() if p.is_dir()}
    ours = {setting_folder_name(100, 128, s) for s in paper_samples()}
    assert ours == released


def test_crowded_valley_samples_1_and_2_give_their_folder_tokens():
    got = crowded_valley_samples(2)
    assert [(float2str(s["learning_rate"]), float2str(s["momentum"])) for s in got] == [
        ("3.148911648e-03", "7.1144760093e-01"),
        ("8.4718014188e-02", "6.2513735745e-02"),
    ]
    assert list(got[0]) == ["learning_rate", "momentum"]
    assert sample_search(CROWDED_VALLEY_SPACE, 2) == got
    # all 50 inside the documented ranges
    for s in crowded_valley_samples(50):
        assert 1e-4 <= s["learning_rate"] <= 1 and 1e-3 <= s["momentum"] <= 1


def test_choice_uses_the_same_stream_as_randint():
    space = {"learning_rate": PAPER_SPACE["learning_rate"], "power": {"choice": [0.4, 0.5, 0.6, 0.7, 0.8, 0.9]}}
    a, b = sample_search(space, 50), paper_samples()
    assert [s["learning_rate"] for s in a] == [s["learning_rate"] for s in b]
    assert [float2str(s["power"]) for s in a] == [float2str(s["power"]) for s in b]


def test_fixed_and_uniform_and_seed():
    space = {"x": {"uniform": [2.0, 3.0]}, "c": 0.002, "d": {"fixed": "all"}, "flag": True}
    s = sample_search(space, 20, seed=3)
    assert all(2.0 <= v["x"] < 3.0 and v["c"] == 0.002 and v["d"] == "all" and v["flag"] is True for v in s)
    assert sample_search(space, 20, seed=3) == s != sample_search(space, 20, seed=4)
    assert sample_search(space, 0) == []


@pytest.mark.parametrize(
    "space, match",
    [
        ({}, "non-empty"),
        ({"lr": {"log_uniform": [0.0, 1.0]}}, "lr: log_uniform needs 0 < low < high"),
        ({"lr": {"log_uniform": [1.0]}}, "lr: log_uniform needs"),
        ({"lr": {"uniform": [2, 1]}}, "lr: uniform"),
        ({"p": {"randint": [4.5, 9]}}, "p: randint needs integers"),
        ({"p": {"choice": []}}, "p: choice needs a non-empty list"),
        ({"p": {"normal": [0, 1]}}, "p: a distribution needs exactly one"),
        ({"p": {"uniform": [0, 1], "scale": 2}}, "p: 'scale' is only allowed"),
        ({"p": [1, 2]}, "p: expected"),
    ],
)
def test_bad_spaces_name_the_parameter(space, match):
    with pytest.raises(SpaceError, match=match):
        sample_search(space, 3)


def test_drawers_equal_scipys_draws_bit_for_bit():
    """The drawers call NumPy directly (SciPy takes ~1 s to import); on shared streams they return exactly what
    scipy.stats' frozen distributions return, in the same order, over many seeds and every distribution kind."""
    from optimizers.distributions import parse, pow10

    for seed in range(200):
        ours, theirs = np.random.RandomState(seed), np.random.RandomState(seed)
        for _ in range(3):
            assert parse("lr", {"log_uniform": [1e-4, 1.0]}).drawer()(ours) == pow10(
                float(stats.uniform(-4, 4).rvs(size=1, random_state=theirs)[0])
            )
            assert parse("u", {"uniform": [0.5, 2.5]}).drawer()(ours) == float(
                stats.uniform(0.5, 2.0).rvs(random_state=theirs)
            )
            assert parse("p", {"randint": [4, 9], "scale": 0.1}).drawer()(ours) == float(
                0.1 * stats.randint(4, 10).rvs(random_state=theirs)
            )
            assert parse("k", {"randint": [1, 5]}).drawer()(ours) == int(stats.randint(1, 6).rvs(random_state=theirs))
            assert (
                parse("c", {"choice": ["a", "b", "c"]}).drawer()(ours)
                == "abc"[int(stats.randint(0, 3).rvs(random_state=theirs))]
            )
        assert ours.random_sample() == theirs.random_sample()  # the streams stayed in step
