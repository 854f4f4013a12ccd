"""The schedules against the torch / Keras / scikit-learn formulas they are documented to match."""

from __future__ import annotations

import math

import numpy as np
import pytest

import microfw as mf


def make(ref: dict) -> mf.Schedule:
    return mf.default_registry().create("schedule", ref)


def test_warmup_is_torch_linear_lr_then_the_next_schedule():
    """torch: SequentialLR([LinearLR(start_factor=f, total_iters=k), CosineAnnealingLR(T)],
    milestones=[k]): factor f + (1 - f) t / k during warm-up, then cosine from its own t=0."""
    lr0, k, f, T = 0.1, 5, 0.25, 20
    s = make(
        {"type": "warmup", "warmup": k, "start_factor": f, "after": {"type": "cosine", "t_max": T}}
    )
    for t in range(40):
        if t < k:
            expected = lr0 * (f + (1 - f) * t / k)
        else:
            expected = lr0 * (1 + math.cos(math.pi * min(t - k, T) / T)) / 2
        assert s(lr0, t) == pytest.approx(expected, rel=1e-15, abs=1e-18)


def test_warmup_and_its_follower_must_count_the_same_thing():
    with pytest.raises(mf.SpecError, match=r"after\.per"):
        make({"type": "warmup", "warmup": 3, "per": "step", "after": "constant"})


def test_piecewise_constant_is_torch_multistep_lr_and_keras_piecewise_constant_decay():
    lr0, gamma, milestones = 0.5, 0.1, [3, 7]
    s = make({"type": "piecewise_constant", "boundaries": milestones, "factors": [gamma, gamma**2]})
    for t in range(12):  # torch MultiStepLR: lr0 * gamma ** bisect_right(milestones, t)
        assert s(lr0, t) == pytest.approx(lr0 * gamma ** sum(m <= t for m in milestones))
    # Keras PiecewiseConstantDecay(boundaries=[2, 6], values=[0.5, 0.05, 0.005]): step <= 2
    # gives values[0], so its boundaries are microfw's minus one.
    keras_boundaries, values = [2, 6], [0.5, 0.05, 0.005]
    for t in range(12):
        i = sum(t > b for b in keras_boundaries)
        assert s(values[0], t) == pytest.approx(values[i])


@pytest.mark.parametrize(
    ("ref", "problem"),
    [
        ({"boundaries": [5, 5], "factors": [0.1, 0.01]}, "boundaries: must be strictly increasing"),
        ({"boundaries": [5], "factors": [0.1, 0.01]}, "factors: needs one factor per boundary"),
    ],
)
def test_piecewise_constant_refuses_inconsistent_lists(ref, problem):
    with pytest.raises(mf.SpecError, match=problem):
        make({"type": "piecewise_constant", **ref})


def test_polynomial_is_keras_polynomial_decay_and_torch_polynomial_lr():
    lr0, end, T, p = 0.2, 0.01, 30, 2.0
    keras = make({"type": "polynomial", "t_max": T, "power": p, "lr_end": end})
    torch = make({"type": "polynomial", "t_max": T, "power": p})
    for t in range(50):
        frac = 1 - min(t, T) / T
        assert keras(lr0, t) == pytest.approx((lr0 - end) * frac**p + end, rel=1e-14)
        assert torch(lr0, t) == pytest.approx(lr0 * frac**p, rel=1e-14, abs=1e-300)


def torch_warm_restarts(lr0: float, t: int, T0: int, mult: int, eta_min: float) -> float:
    """CosineAnnealingWarmRestarts's closed form (its docs / step(epoch) branch)."""
    if t >= T0:
        if mult == 1:
            t_cur, T_i = t % T0, T0
        else:
            n = int(math.log(t / T0 * (mult - 1) + 1, mult))
            t_cur, T_i = t - T0 * (mult**n - 1) / (mult - 1), T0 * mult**n
    else:
        t_cur, T_i = t, T0
    return eta_min + (lr0 - eta_min) * (1 + math.cos(math.pi * t_cur / T_i)) / 2


@pytest.mark.parametrize("mult", [1, 2, 3])
def test_cosine_restarts_is_torch_cosine_annealing_warm_restarts(mult):
    lr0, T0, eta_min = 0.1, 7, 0.001
    s = make({"type": "cosine", "t_max": T0, "lr_min": eta_min, "restart": True, "t_mult": mult})
    got = [s(lr0, t) for t in range(200)]
    expected = [torch_warm_restarts(lr0, t, T0, mult, eta_min) for t in range(200)]
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_cosine_restarts_is_keras_cosine_decay_restarts_with_m_mul():
    """Keras CosineDecayRestarts(lr0, first_decay_steps=T, t_mul=2, m_mul=0.5, alpha=0)."""
    lr0, T = 1.0, 5
    s = make({"type": "cosine", "t_max": T, "restart": True, "t_mult": 2.0, "m_mul": 0.5})
    for t in range(100):
        frac = t / T
        i = math.floor(math.log(1 - frac * (1 - 2.0)) / math.log(2.0))
        frac = (1 - 2.0**i) / (1 - 2.0) if i else 0.0
        done = t / T - frac
        frac_cycle = done / 2.0**i
        expected = lr0 * 0.5**i * 0.5 * (1 + math.cos(math.pi * frac_cycle))
        assert s(lr0, t) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_cosine_without_restart_is_unchanged():
    s = make({"type": "cosine", "t_max": 10, "lr_min": 0.01})
    assert [s(0.1, t) for t in (0, 10, 25)] == [0.1, 0.01, 0.01]


def test_inverse_time_with_decay_n_samples_per_epoch_is_scikit_learns_invscaling():
    """MLPClassifier(learning_rate="invscaling", power_t=p): after each epoch, with t_ the
    samples seen, learning_rate = learning_rate_init / (t_ + 1) ** power_t."""
    n, p, lr0 = 150, 0.5, 0.01
    s = make({"type": "inverse_time", "decay": n, "power": p, "per": "epoch"})
    for epoch in range(20):
        assert s(lr0, epoch) == pytest.approx(lr0 / (n * epoch + 1) ** p, rel=1e-15)


def test_a_fit_records_the_rates_of_a_warmup_into_cosine_per_step():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 2)), rng.standard_normal(40)
    schedule = {
        "type": "warmup",
        "warmup": 4,
        "per": "step",
        "after": {"type": "cosine", "t_max": 8, "per": "step"},
    }
    model = mf.Sequential(
        [{"type": "linear", "units": 1}],
        input_dim=2,
        loss="squared_error",
        optimizer={"type": "adam", "lr": 0.1, "schedule": schedule},
        seed=0,
    )
    seen = []
    step = model.optimizer.step

    def spy(params, grads):
        seen.append(model.optimizer.learning_rate)
        step(params, grads)

    model.optimizer.step = spy
    model.fit(X, y, epochs=3, batch_size=10)
    s = model.optimizer.schedule
    assert seen == [s(0.1, t) for t in range(12)]
    assert seen[0] == 0.0 and max(seen) == 0.1
