"""The optimizers against NumPy references written from the torch.optim formulas.

Each reference below follows the update of the torch.optim class of the same name (PyTorch
2.x documentation, single-tensor form, ``maximize=False``, ``dampening=0``). 500 float64 steps
on a smooth non-quadratic objective must agree to 1e-12 (max absolute difference relative to
the largest parameter), through both paths: an array of 5000 elements (the compiled kernel,
when numba is installed) and three small arrays (the NumPy passes).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import microfw as mf
from microfw.core.interfaces import clip_grad_norm

STEPS = 500
SHAPES = {"kernel path": [(5000,)], "numpy path": [(3, 4), (7,), (2, 1)]}


def objective_grad(p: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Gradient of sum(c (p - 1)^2 / 2 + 0.1 cos(3 p) / 3)."""
    return c * (p - 1.0) - 0.1 * np.sin(3 * p)


def _start(shapes: list[tuple[int, ...]], seed: int = 0) -> tuple[list[np.ndarray], list[Any]]:
    rng = np.random.default_rng(seed)
    params = [rng.uniform(-2, 2, s) for s in shapes]
    curv = [rng.uniform(0.5, 2.0, s) for s in shapes]
    return params, curv


def run_microfw(
    optimizer: mf.Optimizer, shapes: list[tuple[int, ...]], steps: int = STEPS
) -> tuple[list, list]:
    params, curv = _start(shapes)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.learning_rate)
        grads = [objective_grad(p, c) for p, c in zip(params, curv, strict=True)]
        optimizer.step(params, grads)
        optimizer.end_epoch()
    return params, rates


# -- references (one flat vector: the update is element-wise) ---------------------------------


def ref_sgd(p, g, st, lr, t, *, momentum=0.0, nesterov=False, weight_decay=0.0, style="keras"):
    g = g + weight_decay * p
    if not momentum:
        return p - lr * g
    if style == "keras":  # Keras / scikit-learn: v = mu v - lr g
        v = st.get("v", np.zeros_like(p))
        v = momentum * v - lr * g
        st["v"] = v
        return p + (momentum * v - lr * g if nesterov else v)
    b = g if t == 1 else momentum * st["b"] + g  # torch.optim.SGD
    st["b"] = b
    return p - lr * (g + momentum * b if nesterov else b)


def ref_adam(
    p,
    g,
    st,
    lr,
    t,
    *,
    beta_1=0.9,
    beta_2=0.999,
    eps=1e-8,
    weight_decay=0.0,
    amsgrad=False,
    decoupled=False,
):
    if decoupled:  # torch.optim.AdamW
        p = p * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * p
    m = beta_1 * st.get("m", 0.0) + (1 - beta_1) * g
    v = beta_2 * st.get("v", 0.0) + (1 - beta_2) * g * g
    st["m"], st["v"] = m, v
    bias_1, bias_2 = 1 - beta_1**t, 1 - beta_2**t
    if amsgrad:
        st["v_max"] = np.maximum(st.get("v_max", 0.0), v)
        v = st["v_max"]
    denom = np.sqrt(v) / math.sqrt(bias_2) + eps
    return p - (lr / bias_1) * m / denom


def ref_rmsprop(
    p, g, st, lr, t, *, rho=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False
):
    g = g + weight_decay * p
    sq = rho * st.get("sq", 0.0) + (1 - rho) * g * g
    st["sq"] = sq
    if centered:
        ga = rho * st.get("ga", 0.0) + (1 - rho) * g
        st["ga"] = ga
        avg = np.sqrt(sq - ga * ga) + eps
    else:
        avg = np.sqrt(sq) + eps
    if momentum > 0:
        buf = momentum * st.get("buf", 0.0) + g / avg
        st["buf"] = buf
        return p - lr * buf
    return p - lr * g / avg


def ref_adagrad(
    p, g, st, lr, t, *, eps=1e-10, weight_decay=0.0, initial_accumulator_value=0.0, lr_decay=0.0
):
    g = g + weight_decay * p
    clr = lr / (1 + (t - 1) * lr_decay)
    s = st.get("sum", initial_accumulator_value) + g * g
    st["sum"] = s
    return p - clr * g / (np.sqrt(s) + eps)


def run_reference(
    update: Callable[..., np.ndarray],
    kwargs: dict[str, Any],
    shapes: list[tuple[int, ...]],
    rates: list[float],
    clip_norm: float | None = None,
    clip_value: float | None = None,
) -> list[np.ndarray]:
    params, curv = _start(shapes)
    sizes = [p.size for p in params]
    flat = np.concatenate([p.ravel() for p in params])
    c = np.concatenate([x.ravel() for x in curv])
    state: dict[str, Any] = {}
    for t, lr in enumerate(rates, start=1):
        g = objective_grad(flat, c)
        if clip_norm is not None:  # torch.nn.utils.clip_grad_norm_
            norm = math.sqrt(float(np.sum(g * g)))
            g = g * min(1.0, clip_norm / (norm + 1e-6))
        if clip_value is not None:
            g = np.clip(g, -clip_value, clip_value)
        flat = update(flat, g, state, lr, t, **kwargs)
    out, start = [], 0
    for shape, n in zip(shapes, sizes, strict=True):
        out.append(flat[start : start + n].reshape(shape))
        start += n
    return out


CASES: list[tuple[str, dict[str, Any], Callable[..., np.ndarray]]] = [
    ("sgd", {"lr": 0.05}, ref_sgd),
    ("sgd", {"lr": 0.05, "momentum": 0.9}, ref_sgd),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}, ref_sgd),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "momentum_style": "pytorch"}, ref_sgd),
    (
        "sgd",
        {
            "lr": 0.05,
            "momentum": 0.8,
            "nesterov": True,
            "momentum_style": "pytorch",
            "weight_decay": 0.01,
        },
        ref_sgd,
    ),
    ("adam", {"lr": 0.01}, ref_adam),
    (
        "adam",
        {"lr": 0.01, "beta_1": 0.8, "beta_2": 0.99, "eps": 1e-6, "weight_decay": 0.1},
        ref_adam,
    ),
    ("adam", {"lr": 0.01, "amsgrad": True}, ref_adam),
    ("adamw", {"lr": 0.01}, ref_adam),
    ("adamw", {"lr": 0.01, "weight_decay": 0.3, "amsgrad": True}, ref_adam),
    ("rmsprop", {"lr": 0.01}, ref_rmsprop),
    (
        "rmsprop",
        {"lr": 0.005, "rho": 0.9, "momentum": 0.5, "centered": True, "weight_decay": 0.01},
        ref_rmsprop,
    ),
    ("rmsprop", {"lr": 0.005, "momentum": 0.9}, ref_rmsprop),
    ("adagrad", {"lr": 0.1}, ref_adagrad),
    (
        "adagrad",
        {
            "lr": 0.1,
            "lr_decay": 0.01,
            "initial_accumulator_value": 0.1,
            "weight_decay": 0.01,
            "eps": 1e-8,
        },
        ref_adagrad,
    ),
]


def _reference_kwargs(name: str, params: dict[str, Any]) -> dict[str, Any]:
    kwargs = {k: v for k, v in params.items() if k not in ("lr", "schedule")}
    if name == "sgd" and "momentum_style" in kwargs:
        kwargs["style"] = kwargs.pop("momentum_style")
    if name == "adamw":
        kwargs.setdefault("weight_decay", 0.01)
        kwargs["decoupled"] = True
    return kwargs


def assert_close(actual: list[np.ndarray], expected: list[np.ndarray], rtol: float) -> None:
    for a, e in zip(actual, expected, strict=True):
        scale = float(np.max(np.abs(e)))
        err = float(np.max(np.abs(a - e))) / scale
        assert err <= rtol, f"relative difference {err:.3g} > {rtol:g}"


@pytest.mark.parametrize("path", list(SHAPES))
@pytest.mark.parametrize(("name", "params", "reference"), CASES, ids=lambda x: str(x))
def test_500_float64_steps_agree_with_the_torch_formula(name, params, reference, path):
    schedule = {"type": "cosine", "t_max": 300, "lr_min": 1e-4, "per": "step"}
    optimizer = mf.default_registry().create(
        "optimizer", {"type": name, **params, "schedule": schedule}
    )
    got, rates = run_microfw(optimizer, SHAPES[path])
    assert len(set(rates)) > 100  # the schedule drove the rate
    expected = run_reference(reference, _reference_kwargs(name, params), SHAPES[path], rates)
    assert_close(got, expected, 1e-12)
    assert not np.allclose(got[0], _start(SHAPES[path])[0][0])  # it moved


def test_the_two_momentum_styles_agree_at_a_constant_rate_and_part_with_a_schedule():
    base = {"type": "sgd", "lr": 0.05, "momentum": 0.9}
    reg = mf.default_registry()
    results = {}
    for schedule in ("constant", {"type": "exponential", "rate": 0.99}):
        for style in ("keras", "pytorch"):
            opt = reg.create("optimizer", {**base, "momentum_style": style, "schedule": schedule})
            results[str(schedule), style] = run_microfw(opt, SHAPES["numpy path"], 30)[0]
    same = results["constant", "keras"], results["constant", "pytorch"]
    assert_close(same[0], same[1], 1e-12)
    decayed = results[str({"type": "exponential", "rate": 0.99}), "keras"]
    torch_like = results[str({"type": "exponential", "rate": 0.99}), "pytorch"]
    assert (
        max(float(np.max(np.abs(a - b))) for a, b in zip(decayed, torch_like, strict=True)) > 1e-3
    )


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop", "adagrad"])
@pytest.mark.parametrize(
    "clip", [{"clip_norm": 0.5}, {"clip_value": 0.05}, {"clip_norm": 2.0, "clip_value": 0.1}]
)
def test_clipping_is_the_torch_definition_for_every_optimizer(name, clip):
    params = {"lr": 0.01}
    opt = mf.default_registry().create("optimizer", {"type": name, **params, **clip})
    got, rates = run_microfw(opt, SHAPES["numpy path"])
    reference = {n: r for n, _, r in CASES}[name]
    expected = run_reference(
        reference, _reference_kwargs(name, params), SHAPES["numpy path"], rates, **clip
    )
    assert_close(got, expected, 1e-12)


def test_clip_grad_norm_scales_all_gradients_together():
    grads = [np.array([3.0, 0.0]), np.array([[4.0]])]
    norm = clip_grad_norm(grads, 1.0)
    assert norm == 5.0
    np.testing.assert_allclose(grads[0], [3 / (5 + 1e-6), 0.0], rtol=1e-15)
    np.testing.assert_allclose(grads[1], [[4 / (5 + 1e-6)]], rtol=1e-15)
    small = [np.array([0.3, 0.4])]
    clip_grad_norm(small, 1.0)
    np.testing.assert_array_equal(small[0], [0.3, 0.4])  # below the bound: untouched


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop", "adagrad"])
def test_every_schedule_drives_every_optimizer(name, schedule_entry):
    cls = schedule_entry.cls
    params = {**cls.example_params, "per": "step"}
    if "after" in params or cls.name == "warmup":
        params["after"] = {"type": "constant", "per": "step"}
    schedule = cls(**params)
    opt = mf.default_registry().create(
        "optimizer", {"type": name, "momentum": 0.5} if name == "sgd" else name
    )
    opt.schedule = schedule
    lr0 = opt.lr
    params = [np.ones(3)]
    for t in range(30):
        assert opt.learning_rate == schedule(lr0, t)
        seen: list[float] = []
        original = opt.update
        opt.update = lambda p, g, lr, _seen=seen, _o=original: (_seen.append(lr), _o(p, g, lr))
        opt.step(params, [np.full(3, 0.1)])
        del opt.update
        assert seen == [schedule(lr0, t)]


def test_float32_stays_float32_and_state_is_one_flat_array_per_quantity():
    opt = mf.default_registry().create("optimizer", {"type": "adam", "amsgrad": True})
    params = [np.ones((3, 2), np.float32), np.ones(4, np.float32)]
    opt.step(params, [np.full((3, 2), 0.5, np.float32), np.full(4, 0.5, np.float32)])
    assert all(p.dtype == np.float32 for p in params)
    state = opt.state_arrays()
    assert sorted(state) == ["m", "step", "v", "v_max"]
    assert all(state[k].shape == (10,) and state[k].dtype == np.float32 for k in ("m", "v"))
    assert int(state["step"]) == 1


def test_state_round_trips_through_state_arrays():
    reg = mf.default_registry()
    for ref in (
        {"type": "adam"},
        {"type": "rmsprop", "centered": True, "momentum": 0.5},
        {"type": "adagrad"},
        {"type": "sgd", "momentum": 0.9},
    ):
        a, b = reg.create("optimizer", ref), reg.create("optimizer", ref)
        pa, curv = _start(SHAPES["numpy path"])
        for _ in range(5):
            a.step(pa, [objective_grad(p, c) for p, c in zip(pa, curv, strict=True)])
        pb = [p.copy() for p in pa]
        b.load_state_arrays({k: v.copy() for k, v in a.state_arrays().items()})
        for _ in range(5):
            a.step(pa, [objective_grad(p, c) for p, c in zip(pa, curv, strict=True)])
            b.step(pb, [objective_grad(p, c) for p, c in zip(pb, curv, strict=True)])
        for x, y in zip(pa, pb, strict=True):
            np.testing.assert_array_equal(x, y)


def test_wrong_state_is_refused_with_its_names():
    opt = mf.default_registry().create("optimizer", "adam")
    with pytest.raises(ValueError, match=r"keeps state \['m', 'step', 'v'\]"):
        opt.load_state_arrays({"m": np.zeros(3)})
    opt.load_state_arrays({"m": np.zeros(3), "v": np.zeros(3), "step": np.array(2)})
    with pytest.raises(ValueError, match="state array 'm'"):
        opt.step([np.ones(4)], [np.ones(4)])  # 3 state values for 4 parameters
    with pytest.raises(ValueError, match="no state"):
        mf.default_registry().create("optimizer", "sgd").load_state_arrays(
            {"velocity": np.zeros(2)}
        )


def test_bad_hyperparameters_are_refused_with_paths():
    with pytest.raises(mf.SpecError, match="beta_1"):
        mf.default_registry().create("optimizer", {"type": "adam", "beta_1": 1.0})
    with pytest.raises(mf.SpecError, match="clip_norm"):
        mf.default_registry().create("optimizer", {"type": "adam", "clip_norm": -1.0})
    with pytest.raises(mf.SpecError, match="momentum_style"):
        mf.default_registry().create("optimizer", {"type": "sgd", "momentum_style": "torch"})


def test_switching_a_state_quantity_on_starts_the_state_afresh():
    opt = mf.default_registry().create("optimizer", "adam")
    params = [np.ones(5)]
    opt.step(params, [np.full(5, 0.1)])
    opt.amsgrad = True
    opt.step(params, [np.full(5, 0.1)])
    assert sorted(opt.state_arrays()) == ["m", "step", "v", "v_max"]
    assert int(opt.state_arrays()["step"]) == 1


@pytest.mark.parametrize(
    "ref",
    [
        {"type": "adam", "weight_decay": 0.1},
        {"type": "adamw", "amsgrad": True},
        {"type": "rmsprop", "centered": True, "momentum": 0.5, "weight_decay": 0.1},
        {"type": "adagrad", "weight_decay": 0.1, "lr_decay": 0.1},
        {"type": "sgd", "momentum": 0.9, "momentum_style": "pytorch", "nesterov": True},
    ],
    ids=lambda r: r["type"],
)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_compiled_kernels_give_the_numpy_paths_bits(ref, dtype, monkeypatch):
    from microfw_plugins import kernels

    if not kernels.available():
        pytest.skip("numba is not installed")
    results = []
    for compiled in (True, False):
        if not compiled:
            monkeypatch.setattr(kernels, "available", lambda: False)
        opt = mf.default_registry().create("optimizer", ref)
        p = [np.random.default_rng(0).standard_normal(5000).astype(dtype)]
        for _ in range(50):
            opt.step(p, [(p[0] * 0.7 + 0.1 * np.sin(p[0])).astype(dtype)])
        results.append(p[0])
    np.testing.assert_array_equal(results[0], results[1])
