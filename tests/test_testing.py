"""microfw.testing catches broken plugins; the built-ins compute exactly their formulas."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import microfw as mf
from microfw import testing
from microfw.core.fusions import Fusion, LossFusion, Step
from microfw.core.rng import LegacyRNG

REG = mf.Registry()


def builtin(kind: str, name: str, **params):
    """A built-in plugin instance, created by name as a spec would."""
    return REG.create(kind, {"type": name, **params})


# -- planted bugs: every checker can fail -----------------------------------------------------


class Softsign(mf.Activation):
    """y = x / (1 + |x|); y' = 1 / (1 + |x|)^2."""

    name = "softsign_test"

    def forward(self, x):
        return x / (1 + np.abs(x))

    def derivative(self, x, y):
        return 1 / (1 + np.abs(x)) ** 2


class SoftsignWrongDerivative(Softsign):
    """y = x / (1 + |x|) with the square missing from its derivative."""

    name = "softsign_wrong"

    def derivative(self, x, y):
        return 1 / (1 + np.abs(x))


class SoftsignSlightlyOff(Softsign):
    """y = x / (1 + |x|) with a derivative 0.1% too large."""

    name = "softsign_slightly_off"

    def derivative(self, x, y):
        return 1.001 / (1 + np.abs(x)) ** 2


def test_a_correct_unregistered_plugin_passes_every_check():
    assert "check_activation_gradient" in testing.check_plugin(Softsign)


def test_wrong_activation_derivative_is_caught():
    with pytest.raises(AssertionError) as info:
        testing.check_plugin(SoftsignWrongDerivative)
    message = str(info.value)
    assert "check_activation_gradient failed for activation 'softsign_wrong'" in message
    assert "max relative error" in message
    assert "analytic" in message and "numeric" in message


def test_a_small_derivative_error_is_caught():
    with pytest.raises(AssertionError, match=r"relative error 0\.000999 > rtol 1e-05"):
        testing.check_activation_gradient(SoftsignSlightlyOff)


class SoftmaxAsActivation(mf.Activation):
    """y = softmax(x) per row, wrongly registered as element-wise."""

    name = "softmax_activation"

    def forward(self, x):
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def derivative(self, x, y):
        return y * (1 - y)


def test_an_activation_that_mixes_elements_is_caught():
    with pytest.raises(AssertionError, match="forward is not element-wise"):
        testing.check_elementwise(SoftmaxAsActivation)


class Upcasting(Softsign):
    """y = x / (1 + |x|), returned as float64 whatever the input."""

    name = "softsign_upcasting"

    def forward(self, x):
        return super().forward(x.astype(np.float64))


def test_an_activation_that_upcasts_float32_is_caught():
    with pytest.raises(AssertionError, match=r"forward\(float32\) has dtype float64"):
        testing.check_shapes_and_dtypes(Upcasting)


class Float32Drifts(Softsign):
    """y = x / (1 + |x|), 1% too large in float32."""

    name = "softsign_float32_drifts"

    def forward(self, x):
        return super().forward(x) * x.dtype.type(1.01 if x.dtype == np.float32 else 1)


class DerivativeMixesElements(Softsign):
    """y = x / (1 + |x|) with a derivative that depends on the first column."""

    name = "softsign_mixed_derivative"

    def derivative(self, x, y):
        return super().derivative(x, y) + 1e-3 * x[:, :1]


def test_float32_results_must_agree_with_float64():
    with pytest.raises(AssertionError, match=r"forward in float32 differs from float64 by 0\.01"):
        testing.check_shapes_and_dtypes(Float32Drifts)


def test_a_derivative_that_mixes_elements_is_caught():
    with pytest.raises(AssertionError, match="derivative is not element-wise"):
        testing.check_elementwise(DerivativeMixesElements)


class SquaredErrorMissingMean(mf.Loss):
    """L = 1/(2m) sum((p - y)^2), whose gradient forgets the 1/m."""

    name = "squared_error_missing_mean"

    def value(self, y_pred, y_true):
        return float(np.sum((y_pred - y_true) ** 2)) / (2 * len(y_pred))

    def grad(self, y_pred, y_true):
        return y_pred - y_true


def test_loss_gradient_off_by_a_factor_is_caught():
    with pytest.raises(AssertionError) as info:
        testing.check_plugin(SquaredErrorMissingMean)
    message = str(info.value)
    assert "check_loss_gradient failed for loss 'squared_error_missing_mean'" in message
    assert "|analytic| / |numeric| = 5" in message  # the 5 samples of the check


class SoftsignFastForwardOff(Softsign):
    """y = x / (1 + |x|) whose in-place forward forgets the denominator."""

    name = "softsign_fast_forward_off"

    def forward_into(self, x, out):
        np.copyto(out, x)


class SoftsignFastBackwardOff(Softsign):
    """y = x / (1 + |x|) whose in-place backward drops dy."""

    name = "softsign_fast_backward_off"

    def backward_into(self, x, y, dy, out):
        np.copyto(out, self.derivative(x, y))


class SoftsignFastBackwardClobbers(Softsign):
    """y = x / (1 + |x|) whose in-place backward overwrites dy."""

    name = "softsign_fast_backward_clobbers"

    def backward_into(self, x, y, dy, out):
        dy *= self.derivative(x, y)
        np.copyto(out, dy)


class SoftsignWritesOutFirst(Softsign):
    """y = x / (1 + |x|) whose forward_into writes out before reading x: valid, as ``out`` is
    never ``x`` (running in place is a fusion rule's business, not the activation's)."""

    name = "softsign_writes_out_first"

    def forward_into(self, x, out):
        out[...] = 1
        out += np.abs(x)
        np.divide(x, out, out=out)


def test_an_activation_writing_its_output_first_passes_every_check():
    testing.check_plugin(SoftsignWritesOutFirst)


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        (SoftsignFastForwardOff, r"forward_into \(float64\) differs from the plain method"),
        (SoftsignFastBackwardOff, r"backward_into \(float64\) differs"),
        (SoftsignFastBackwardClobbers, r"changed their input dy"),
    ],
)
def test_broken_activation_fast_paths_are_caught(cls, expected):
    with pytest.raises(AssertionError, match=f"check_fast_paths failed for activation.*{expected}"):
        testing.check_plugin(cls)


Linear = REG.get("layer", "linear")
Softmax = REG.get("layer", "softmax")


class LinearWrongBiasGradient(Linear):
    """y = x W + b, reporting twice the bias gradient."""

    name = "linear_wrong_bias"

    def backward(self, dy):
        dx = super().backward(dy)
        self.db *= 2
        return dx


class SoftmaxWrongInputGradient(Softmax):
    """Row-wise softmax whose backward drops the -y (dy . y) term."""

    name = "softmax_wrong"

    def backward(self, dy):
        return dy * self._y


class LinearAccumulating(Linear):
    """y = x W + b, adding each batch's weight gradient to the last one."""

    name = "linear_accumulating"

    def backward(self, dy):
        self.dW += self._x.T @ dy
        np.sum(dy, axis=0, out=self.db)
        return dy @ self.W.T


class LinearCopiesItsWeights(Linear):
    """y = x W + b with a copy of W taken when built: the store's W, which optimizers update,
    is never read."""

    name = "linear_copies_its_weights"

    def build(self, n_in, store):
        super().build(n_in, store)
        self.W = self.W.copy()


class LinearRebinding(Linear):
    """y = x W + b, replacing its weight array by a copy on every forward."""

    name = "linear_rebinding"

    def forward(self, x, training=False):
        self.W = self.W.copy()
        return super().forward(x, training)


class ShiftKeepingItsOwnGradient(mf.Layer):
    """y = x + b whose bias gradient goes to an array of its own, not the store's."""

    name = "shift_keeping_its_own_gradient"

    def build(self, n_in, store):
        self.b = store.add("b", (n_in,), 0.0)
        self.db = np.zeros(n_in, store.dtype)

    def forward(self, x, training=False):
        return x + self.b

    def backward(self, dy):
        np.sum(dy, axis=0, out=self.db)
        return dy


class LinearWrongWidth(Linear):
    """y = x W + b, announcing one output too many."""

    name = "linear_wrong_width"

    def output_dim(self, n_in):
        return self.units + 1


class LinearTrainingDiffers(Linear):
    """y = x W + b in training, but x W + 2b at inference."""

    name = "linear_training_differs"

    def forward(self, x, training=False):
        y = super().forward(x, training)
        if not training:
            y += self.b
        return y


class SquaredErrorFusedOff(mf.Loss):
    """L = 1/(2m) sum (p - y)^2 whose value_and_grad forgets the 1/m of the gradient."""

    name = "squared_error_fused_off"

    def value(self, y_pred, y_true):
        return float(np.sum((y_pred - y_true) ** 2)) / (2 * len(y_pred))

    def grad(self, y_pred, y_true):
        return (y_pred - y_true) / len(y_pred)

    def value_and_grad(self, y_pred, y_true):
        return self.value(y_pred, y_true), y_pred - y_true


def test_a_loss_whose_value_and_grad_disagrees_is_caught():
    with pytest.raises(AssertionError, match=r"check_fast_paths.*value_and_grad\(\)\[1\]"):
        testing.check_plugin(SquaredErrorFusedOff)


@pytest.mark.parametrize(
    ("cls", "check", "expected"),
    [
        (
            LinearWrongBiasGradient,
            "check_layer_gradient",
            r"gradient of b \(shape \(3,\)\) differs .*\|analytic\| / \|numeric\| = 2$",
        ),
        (SoftmaxWrongInputGradient, "check_layer_gradient", r"input gradient"),
        (LinearAccumulating, "check_layer_gradient", r"\|second\| / \|first\| = 2.*accumulated"),
        (
            LinearCopiesItsWeights,
            "check_layer_gradient",
            r"gradient of W \(shape \(4, 3\)\) differs from central differences.*numeric 0\)",
        ),
        (
            LinearRebinding,
            "check_layer_gradient",
            r"gradient of W \(shape \(4, 3\)\) differs from central differences.*numeric 0\)",
        ),
        (
            ShiftKeepingItsOwnGradient,
            "check_layer_gradient",
            r"gradient of b \(shape \(4,\)\) differs from central differences.*\(analytic 0,",
        ),
        (LinearWrongWidth, "check_shapes_and_dtypes", r"shape \(5, 3\), expected \(5, 4\)"),
        (LinearTrainingDiffers, "check_fast_paths", r"forward\(training=True\) \(float64\)"),
    ],
)
def test_broken_layers_are_caught(cls, check, expected):
    with pytest.raises(AssertionError, match=f"{check} failed for layer '{cls.name}'.*{expected}"):
        testing.check_plugin(cls)


# -- planted bugs in fusion rules: check_fusion catches them ----------------------------------

Tanh = REG.get("activation", "tanh")
Sigmoid = REG.get("activation", "sigmoid")
BCE = REG.get("loss", "bce")


class DenseTanh(Step):
    """tanh(x W + b) as one step, written from the formula: dz = dy (1 - y^2), dW = x^T dz,
    db = the column sums of dz, dx = dz W^T."""

    def __init__(self, plugins):
        self.linear, self.tanh = plugins

    def forward(self, x):
        self._x = x
        self._y = np.tanh(x @ self.linear.W + self.linear.b)
        return self._y

    def backward(self, dy):
        dz = dy * (1 - self._y**2)
        self.linear.dW[...] = self._x.T @ dz
        self.linear.db[...] = dz.sum(axis=0)
        return dz @ self.linear.W.T


class DenseTanhForgetsTheBias(DenseTanh):
    """tanh(x W), the bias left out of the forward pass."""

    def forward(self, x):
        self._x = x
        self._y = np.tanh(x @ self.linear.W)
        return self._y


class DenseTanhForgetsTheBiasGradient(DenseTanh):
    """tanh(x W + b) that never writes db."""

    def backward(self, dy):
        dz = dy * (1 - self._y**2)
        self.linear.dW[...] = self._x.T @ dz
        return dz @ self.linear.W.T


class DenseTanhScalesDx(DenseTanh):
    """tanh(x W + b) returning twice the input gradient."""

    def backward(self, dy):
        return 2 * super().backward(dy)


class DenseTanhSkipsTheBiasGradient(DenseTanh):
    """tanh(x W + b) that also skips db when nobody reads dx (it may skip only dx)."""

    def backward(self, dy):
        dx = super().backward(dy)
        if not self.needs_input_grad:
            self.linear.db[...] = 0
        return dx


class DenseTanhOverwritesDy(DenseTanh):
    """tanh(x W + b) computing dz over dy without being told dy is scratch."""

    def backward(self, dy):
        dy *= 1 - self._y**2
        self.linear.dW[...] = self._x.T @ dy
        self.linear.db[...] = dy.sum(axis=0)
        return dy @ self.linear.W.T


class DenseTanhWhereAllowed(DenseTanh):
    """tanh(x W + b) that overwrites dy only when it is scratch and skips dx when unread."""

    def backward(self, dy):
        dz = dy if self.dy_is_scratch else np.empty_like(dy)
        np.multiply(dy, 1 - self._y**2, out=dz)
        self.linear.dW[...] = self._x.T @ dz
        self.linear.db[...] = dz.sum(axis=0)
        return dz @ self.linear.W.T if self.needs_input_grad else dy


@pytest.mark.parametrize("step", [DenseTanh, DenseTanhWhereAllowed])
def test_a_correct_fusion_passes_check_fusion(step):
    testing.check_fusion(Fusion((Linear, Tanh), step))


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (DenseTanhForgetsTheBias, r"output \(fused, float64\) differs from the plain methods"),
        (
            DenseTanhForgetsTheBiasGradient,
            r"gradient of layers\.0\.b \(fused, float64\) differs from the plain methods by 1 ",
        ),
        (
            DenseTanhScalesDx,
            r"input gradient \(fused, float64\) differs from the plain methods by 1 \(relative\)",
        ),
        (
            DenseTanhSkipsTheBiasGradient,
            r"gradient of layers\.0\.b \(fused, no input gradient, float64\) differs",
        ),
    ],
)
def test_broken_fusions_are_caught(step, expected):
    with pytest.raises(
        AssertionError, match=f"check_fusion failed for fusion rule 'linear\\+tanh': {expected}"
    ):
        testing.check_fusion(Fusion((Linear, Tanh), step))


def test_a_fusion_overwriting_a_dy_that_is_not_scratch_is_caught():
    """The planner hands ``dy`` over as scratch only when its producer never reads it again
    (``dy_is_scratch``); overwriting it otherwise corrupts the producer's array."""
    with pytest.raises(AssertionError, match=r"check_fusion failed for .*\bdy\b"):
        testing.check_fusion(Fusion((Linear, Tanh), DenseTanhOverwritesDy))


def sigmoid_bce_from_logits(loss, z, p, y):
    """bce from the logits: mean(log(1 + exp(z)) - z y), gradient (p - y) / n."""
    return float(np.mean(np.logaddexp(0, z) - z * y)), (p - y) / y.size


def bce_forgetting_the_mean_of_the_gradient(loss, z, p, y):
    value, _ = sigmoid_bce_from_logits(loss, z, p, y)
    return value, p - y


def bce_forgetting_the_mean_of_the_value(loss, z, p, y):
    value, grad = sigmoid_bce_from_logits(loss, z, p, y)
    return value * y.size, grad


def sigmoid_of(act, z):
    return 1 / (1 + np.exp(-z))


def test_a_correct_loss_fusion_passes_check_fusion():
    testing.check_fusion(LossFusion(Sigmoid, BCE, sigmoid_of, sigmoid_bce_from_logits))


@pytest.mark.parametrize(
    ("forward", "value_and_grad", "expected"),
    [
        (
            sigmoid_of,
            bce_forgetting_the_mean_of_the_gradient,
            r"gradient \(float64\) differs from value_and_grad then backward by 17 \(relative\)",
        ),
        (
            sigmoid_of,
            bce_forgetting_the_mean_of_the_value,
            r"loss value \(float64\) differs from the loss's value by 17 \(relative\)",
        ),
        (
            lambda act, z: z,
            sigmoid_bce_from_logits,
            r"forward \(float64\) differs from the layer's forward",
        ),
    ],
)
def test_broken_loss_fusions_are_caught(forward, value_and_grad, expected):
    """6 samples of 3 outputs in the check: a forgotten mean is a factor 18."""
    with pytest.raises(
        AssertionError, match=f"check_fusion failed for fusion rule 'sigmoid\\+bce': {expected}"
    ):
        testing.check_fusion(LossFusion(Sigmoid, BCE, forward, value_and_grad))


class LinearSquaredErrorRule:
    """A LossFusion over ``linear``, a layer with parameters: dL/dz is right (``grad W^T``),
    but the layer's own gradients dW and db are never written, so it would never train."""

    def forward(self, layer, z):
        self.layer = layer
        return z @ layer.W + layer.b

    def value_and_grad(self, loss, z, p, y):
        value, grad = loss.value_and_grad(p, y)
        return value, grad @ self.layer.W.T


def test_a_loss_fusion_leaving_the_last_layers_parameters_without_gradients_is_caught():
    rule = LinearSquaredErrorRule()
    squared_error = REG.get("loss", "squared_error")
    with pytest.raises(AssertionError, match=r"check_fusion failed for fusion rule 'linear\+squ"):
        testing.check_fusion(LossFusion(Linear, squared_error, rule.forward, rule.value_and_grad))


def test_a_rule_not_applying_to_the_example_params_is_reported():
    rule = LossFusion(
        Sigmoid, BCE, sigmoid_of, sigmoid_bce_from_logits, applies=lambda act, loss: False
    )
    with pytest.raises(AssertionError, match=r"applies\(\) is false for the classes' example"):
        testing.check_fusion(rule)


class HeavyBall(mf.Optimizer):
    """v = 0.9 v - lr g, p += v: state, and no reset_state (the method is optional)."""

    name = "heavy_ball"

    def update(self, params, grads, lr):
        if not hasattr(self, "v"):
            self.v = [np.zeros_like(p) for p in params]
        for p, g, v in zip(params, grads, self.v, strict=True):
            v *= 0.9
            v -= lr * g
            p += v


class HeavyBallForgettingNothing(HeavyBall):
    """Heavy ball whose reset_state claims to reset but keeps the velocity."""

    name = "heavy_ball_forgetting_nothing"

    def reset_state(self):
        pass


def test_an_optimizer_without_reset_state_passes_and_a_false_reset_is_caught():
    testing.check_plugin(HeavyBall)
    with pytest.raises(AssertionError, match=r"parameter 0 after reset_state\(\) and a step"):
        testing.check_plugin(HeavyBallForgettingNothing)


class OverstatedHe(mf.Initializer):
    """N(0, 1) * sqrt(2 / n_in), claiming variance 1 / n_in."""

    name = "overstated_he"

    def __call__(self, shape, rng):
        return rng.standard_normal(shape) * np.sqrt(2 / shape[0])

    def variance(self, fan_in, fan_out):
        return 1 / fan_in


class TenPercentOff(OverstatedHe):
    """N(0, 1) * sqrt(1.1 / n_in), claiming variance 1 / n_in."""

    name = "ten_percent_off"

    def __call__(self, shape, rng):
        return rng.standard_normal(shape) * np.sqrt(1.1 / shape[0])


class SwappedFans(OverstatedHe):
    """N(0, 1) / sqrt(n_out), claiming variance 1 / n_in."""

    name = "swapped_fans"

    def __call__(self, shape, rng):
        return rng.standard_normal(shape) / np.sqrt(shape[-1])


class GlobalState(OverstatedHe):
    """N(0, 1) * 0.01 from the global numpy.random state."""

    name = "global_state"

    def __call__(self, shape, rng):
        return np.random.standard_normal(shape) * 0.01

    def variance(self, fan_in, fan_out):
        return 1e-4


class ReseedsGlobalState(GlobalState):
    """N(0, 1) * 0.01 after np.random.seed(0)."""

    name = "reseeds_global_state"

    def __call__(self, shape, rng):
        np.random.seed(0)
        return super().__call__(shape, rng)


class IgnoresRng(GlobalState):
    """N(0, 1) * 0.01 from its own fixed generator."""

    name = "ignores_rng"

    def __call__(self, shape, rng):
        return np.random.default_rng(1).standard_normal(shape) * 0.01


class UsesNormal(GlobalState):
    """N(0, 0.01^2) through rng.normal, which the legacy adapter lacks."""

    name = "uses_normal"

    def __call__(self, shape, rng):
        return rng.normal(0, 0.01, shape)


@pytest.fixture
def restore_global_rng():
    state = np.random.get_state()
    yield
    np.random.set_state(state)


@pytest.mark.usefixtures("restore_global_rng")
@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        (OverstatedHe, r"sample variance 0\.005\d* .* variance\(400, 100\) = 0\.0025 \(ratio 2"),
        (TenPercentOff, r"\(ratio 1\.1"),
        (SwappedFans, r"\(ratio 4"),
        (GlobalState, r"two draws with the same seed differ"),
        (ReseedsGlobalState, r"global numpy\.random state changed"),
        (IgnoresRng, r"two different seeds gave the same draw"),
        (UsesNormal, r"may call only rng\.standard_normal\(shape\) .* not rng\.normal"),
    ],
)
def test_broken_initializers_are_caught(cls, expected):
    with pytest.raises(
        AssertionError, match=f"check_initializer failed for initializer.*{expected}"
    ):
        testing.check_plugin(cls)


class Ascending(mf.Optimizer):
    """p += lr g: gradient ascent."""

    name = "ascending"

    def update(self, params, grads, lr):
        for p, g in zip(params, grads, strict=True):
            p += lr * g


class Idle(mf.Optimizer):
    """p unchanged."""

    name = "idle"

    def update(self, params, grads, lr):
        pass


class Overshooting(mf.Optimizer):
    """p -= 1.1 g: too long a step for curvatures above 2/1.1: a first decrease, then growth."""

    name = "overshooting"

    def update(self, params, grads, lr):
        for p, g in zip(params, grads, strict=True):
            p -= 1.1 * g


class Rebinding(mf.Optimizer):
    """params[i] = p - lr g: a new array, not an in-place update."""

    name = "rebinding"

    def update(self, params, grads, lr):
        for i, g in enumerate(grads):
            params[i] = params[i] - lr * g


class ReversedState(mf.Optimizer):
    """v = 0.5 v - lr g, p += v, with the velocities created in reverse parameter order."""

    name = "reversed_state"

    def update(self, params, grads, lr):
        if not hasattr(self, "_velocity"):
            self._velocity = [np.zeros_like(p) for p in reversed(params)]
        for p, g, v in zip(params, grads, self._velocity, strict=True):
            v *= 0.5
            v -= lr * g
            p += v


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        (ReversedState, r"ValueError: .*broadcast"),
        (
            Ascending,
            r"in float64, the first step did not lower the convex loss .*: ([\d.]+) -> (?!\1)",
        ),
        (Idle, r"the first step did not lower the convex loss .*: ([\d.]+) -> \1$"),
        (
            Overshooting,
            r"the loss after 20 steps \(5814\.\d+\) is not below the loss after the first",
        ),
        (Rebinding, r"step 1 replaced params\[0, 1, 2\] instead of updating them in place"),
    ],
)
def test_broken_optimizers_are_caught(cls, expected):
    with pytest.raises(AssertionError, match=f"check_optimizer failed for optimizer.*{expected}"):
        testing.check_plugin(cls)


class HalfStart(mf.Schedule):
    """lr(t) = lr0 / 2."""

    name = "half_start"

    def __call__(self, lr0, t):
        return lr0 / 2


class GoesNegative(mf.Schedule):
    """lr(t) = lr0 - 0.01 t."""

    name = "goes_negative"

    def __call__(self, lr0, t):
        return lr0 - 0.01 * t


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        (HalfStart, r"the rate at t=0 is 0\.05, expected lr0 = 0\.1"),
        (GoesNegative, r"the rate at t=11 is -0\.00999\d*, expected a finite float >= 0"),
    ],
)
def test_broken_schedules_are_caught(cls, expected):
    with pytest.raises(AssertionError, match=f"check_schedule failed for schedule.*{expected}"):
        testing.check_plugin(cls)


class BadExample(Linear):
    """y = x W + b, with invalid example parameters."""

    name = "bad_example"
    example_params = {"units": 0}


class Undocumented(mf.Schedule):
    name = "undocumented"

    def __call__(self, lr0, t):
        return lr0


class NoRoundTrip(mf.Schedule):
    """lr(t) = lr0 * scale ** t, reporting a different scale than it holds."""

    name = "no_round_trip"
    scale: float = 0.5

    def __call__(self, lr0, t):
        return lr0 * self.scale**t

    def get_params(self):
        return {**super().get_params(), "scale": self.scale / 2}


class Relu(mf.Activation):
    """y = max(x, 0), under a name the built-in already holds."""

    name = "relu"

    def forward(self, x):
        return np.maximum(x, 0)

    def derivative(self, x, y):
        return (x > 0).astype(x.dtype)


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        (BadExample, r"SpecError.*units: Input should be greater than 0"),
        (Undocumented, r"the class has no docstring"),
        (
            NoRoundTrip,
            r"get_params\(\) does not round-trip: .*'scale': 0\.25.* -> .*'scale': 0\.125",
        ),
        (Relu, r"the name 'relu' is registered to microfw_plugins\.activations\.ReLU"),
    ],
)
def test_schema_problems_are_caught(cls, expected):
    with pytest.raises(AssertionError, match=f"(?s)check_schema failed for .*{expected}"):
        testing.check_schema(cls, registry=REG)


def test_check_plugin_looks_names_up_with_did_you_mean():
    assert testing.check_plugin("relu", registry=REG)
    with pytest.raises(LookupError, match="did you mean 'relu'"):
        testing.check_plugin("rleu", registry=REG)


def test_individual_checks_reject_other_kinds():
    with pytest.raises(TypeError, match="check_layer_gradient checks a Layer"):
        testing.check_layer_gradient(Softsign)


class FixedVarianceNormal(mf.Initializer):
    """N(0, 1) * std, always claiming the variance of std = 0.1."""

    name = "fixed_variance_normal"
    std: float = 0.1

    def __call__(self, shape, rng):
        return rng.standard_normal(shape) * self.std

    def variance(self, fan_in, fan_out):
        return 0.01


def test_an_instance_is_checked_with_its_own_parameters():
    testing.check_initializer(FixedVarianceNormal)
    with pytest.raises(AssertionError, match="ratio 4"):
        testing.check_initializer(FixedVarianceNormal(std=0.2))


# -- the built-ins compute exactly their formulas ---------------------------------------------


@pytest.fixture
def strict_warnings():
    """Any warning (overflow, divide by zero, invalid value) fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


X = np.array([[-1000.0, -2.0, 0.0, 0.5, 1000.0]])


@pytest.mark.usefixtures("strict_warnings")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sigmoid_is_stable_for_huge_inputs(dtype):
    sigmoid = builtin("activation", "sigmoid")
    x = X.astype(dtype)
    y = sigmoid.forward(x)
    assert y.dtype == dtype
    expected = 1 / (1 + np.exp(-np.array([-2.0, 0.0, 0.5])))
    np.testing.assert_allclose(y[0, 1:4], expected, rtol=1e-6 if dtype == np.float32 else 1e-15)
    floor = 2 * np.finfo(dtype).tiny  # saturates at the smallest normal number, no denormals
    assert 0 < y[0, 0] < floor and y[0, 4] == 1
    d = sigmoid.derivative(x, y)[0, [0, 4]]
    assert d[0] < floor and d[1] == 0


def finite_arrays(bound: float):
    """Float64 batches of 1-4 rows and 2-5 columns with values in [-bound, bound]."""
    shape = st.tuples(st.integers(1, 4), st.integers(2, 5))
    elements = st.floats(-bound, bound, allow_nan=False, allow_infinity=False)
    return arrays(np.float64, shape, elements=elements)


@given(finite_arrays(1e300))
def test_sigmoid_lies_in_0_1_for_any_input(x):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = builtin("activation", "sigmoid").forward(x)
    assert np.all((y >= 0) & (y <= 1))
    assert np.all(y[x > 40] == 1) and np.all(y[x < -800] < 2 * np.finfo(x.dtype).tiny)


@given(finite_arrays(1e10))
def test_softmax_rows_are_distributions_for_any_input(x):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = builtin("layer", "softmax").forward(x)
    assert np.all(y >= 0)
    np.testing.assert_allclose(y.sum(axis=1), 1, rtol=1e-12)


@given(finite_arrays(1e6), st.integers(0, 2**32 - 1))
def test_bce_from_logits_is_finite_and_non_negative(z, seed):
    y = np.random.default_rng(seed).uniform(0, 1, z.shape)
    bce = builtin("loss", "bce", from_logits=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value, grad = bce.value(z, y), bce.grad(z, y)
    assert math.isfinite(value) and value >= 0
    assert np.all(np.abs(grad) <= 1 / z.size)


def test_elementwise_activations_match_their_formulas():
    x = np.array([[-2.0, -0.5, 0.0, 0.5, 3.0]])
    tanh = builtin("activation", "tanh")
    np.testing.assert_allclose(tanh.derivative(x, tanh.forward(x)), 1 / np.cosh(x) ** 2)
    relu = builtin("activation", "relu")
    np.testing.assert_array_equal(relu.forward(x), [[0, 0, 0, 0.5, 3]])
    np.testing.assert_array_equal(relu.derivative(x, relu.forward(x)), [[0, 0, 0, 1, 1]])
    leaky = builtin("activation", "leaky_relu", alpha=0.1)
    np.testing.assert_allclose(leaky.forward(x), [[-0.2, -0.05, 0, 0.5, 3]], rtol=1e-15)
    np.testing.assert_array_equal(leaky.derivative(x, leaky.forward(x)), [[0.1, 0.1, 0.1, 1, 1]])
    identity = builtin("activation", "identity")
    np.testing.assert_array_equal(identity.forward(x), x)
    np.testing.assert_array_equal(identity.derivative(x, x), np.ones_like(x))


@pytest.mark.parametrize("alpha", [-0.1, 1.0, "0.1"])
def test_leaky_relu_alpha_is_validated(alpha):
    with pytest.raises(mf.SpecError, match="alpha"):
        builtin("activation", "leaky_relu", alpha=alpha)


@pytest.mark.usefixtures("strict_warnings")
def test_softmax_rows_sum_to_one_and_survive_huge_inputs():
    softmax = builtin("layer", "softmax")
    x = np.array([[1000.0, 1000.0, -1000.0], [1.0, 2.0, 3.0]])
    y = softmax.forward(x)
    np.testing.assert_array_equal(y[0], [0.5, 0.5, 0.0])
    e = np.exp([1.0, 2.0, 3.0])
    np.testing.assert_allclose(y[1], e / e.sum(), rtol=1e-15)
    np.testing.assert_allclose(y.sum(axis=1), 1, rtol=1e-15)
    np.testing.assert_allclose(softmax.forward(x + 500), y, rtol=1e-15)
    assert softmax.forward(x.astype(np.float32)).dtype == np.float32


def test_softmax_backward_is_the_jacobian_vector_product():
    softmax = builtin("layer", "softmax")
    rng = np.random.default_rng(3)
    x, dy = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    y = softmax.forward(x, training=True).copy()
    np.testing.assert_array_equal(y, softmax.forward(x))
    dx = softmax.backward(dy)
    for row in range(4):
        jacobian = np.diag(y[row]) - np.outer(y[row], y[row])
        np.testing.assert_allclose(dx[row], jacobian.T @ dy[row], rtol=1e-13, atol=1e-15)


def test_softmax_needs_two_inputs():
    with pytest.raises(ValueError, match=r"at least 2 inputs.*got 1"):
        builtin("layer", "softmax").output_dim(1)


def test_linear_computes_xw_plus_b_and_its_gradients():
    linear = builtin("layer", "linear", units=2)
    store = testing.built(linear, 3)
    assert store.names() == ["layer.W", "layer.b"]
    W, b = store["layer.W"], store["layer.b"]
    b[:] = [0.5, -1.0]
    x = np.arange(6.0).reshape(2, 3)
    np.testing.assert_allclose(linear.forward(x), x @ W + b, rtol=1e-15)
    np.testing.assert_allclose(linear.forward(x, training=True), x @ W + b, rtol=1e-15)
    dy = np.array([[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_allclose(linear.backward(dy), dy @ W.T, rtol=1e-15)
    np.testing.assert_array_equal(store.grad("layer.W"), x.T @ dy)
    np.testing.assert_array_equal(store.grad("layer.b"), [4.0, 6.0])


def test_squared_error_is_half_the_mean_sum_of_squares():
    loss = builtin("loss", "squared_error")
    p, y = np.array([[1.0, 2.0], [3.0, 5.0]]), np.array([[0.0, 2.0], [1.0, 1.0]])
    assert loss.value(p, y) == (1 + 0 + 4 + 16) / (2 * 2)
    np.testing.assert_array_equal(loss.grad(p, y), (p - y) / 2)


def test_bce_from_logits_equals_bce_on_sigmoid():
    rng = np.random.default_rng(4)
    z, y = rng.uniform(-5, 5, (6, 2)), rng.uniform(0, 1, (6, 2))
    s = 1 / (1 + np.exp(-z))
    logits, probs = builtin("loss", "bce", from_logits=True), builtin("loss", "bce")
    expected = -np.mean(y * np.log(s) + (1 - y) * np.log(1 - s))
    assert logits.value(z, y) == pytest.approx(expected, rel=1e-12)
    assert probs.value(s, y) == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(logits.grad(z, y), (s - y) / z.size, rtol=1e-12)
    np.testing.assert_allclose(logits.grad(z, y), probs.grad(s, y) * s * (1 - s), rtol=1e-9)
    assert logits.decision_threshold() == 0.0 and probs.decision_threshold() == 0.5


@pytest.mark.usefixtures("strict_warnings")
def test_bce_is_stable_at_the_extremes():
    y = np.array([[1.0, 0.0, 1.0, 0.0]])
    logits = builtin("loss", "bce", from_logits=True)
    z = np.array([[1000.0, -1000.0, -1000.0, 1000.0]])
    assert logits.value(z, y) == pytest.approx(1000 / 2)
    np.testing.assert_allclose(logits.grad(z, y), [[0, 0, -0.25, 0.25]], rtol=0, atol=1e-300)
    probs = builtin("loss", "bce", eps=1e-7)
    p = np.array([[1.0, 0.0, 0.0, 1.0]])
    assert probs.value(p, y) == pytest.approx(-np.log(1e-7) / 2, rel=1e-7)  # 2 of 4 clipped
    assert np.all(np.isfinite(probs.grad(p, y)))


def test_bce_targets_must_lie_in_0_1():
    bce = builtin("loss", "bce")
    bce.check_targets(np.array([[0.0], [0.3], [1.0]]))
    with pytest.raises(
        ValueError, match=r"bce targets must lie in \[0, 1\]; 2 value\(s\).*-1\.0, 2\.0"
    ):
        bce.check_targets(np.array([[0.0], [2.0], [-1.0]]))


def test_categorical_crossentropy_matches_its_formula():
    cce = builtin("loss", "categorical_crossentropy")
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    y = np.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    expected = -(np.log(0.7) + 0.5 * np.log(0.1) + 0.5 * np.log(0.8)) / 2
    assert cce.value(p, y) == pytest.approx(expected, rel=1e-14)
    np.testing.assert_allclose(cce.grad(p, y), -y / p / 2, rtol=1e-15)


def test_categorical_crossentropy_checks_outputs_and_targets():
    cce = builtin("loss", "categorical_crossentropy")
    cce.check_output_dim(2)
    with pytest.raises(ValueError, match=r"at least 2 outputs.*got 1.*'bce'"):
        cce.check_output_dim(1)
    cce.check_targets(np.eye(3))
    with pytest.raises(
        ValueError, match=r"1 row\(s\) do not, e\.g\. row 1 sums to 1\.1 \(\[0\.5, 0\.6\]\)"
    ):
        cce.check_targets(np.array([[0.0, 1.0], [0.5, 0.6]]))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\].*-1\.0"):
        cce.check_targets(np.array([[2.0, -1.0]]))


@pytest.mark.parametrize(
    ("name", "params", "variance"),
    [
        ("plain", {}, 1e-4),
        ("xavier", {}, 1 / 4),
        ("he", {}, 2 / 4),
        ("glorot_uniform", {}, 2 / 10),
        ("glorot_normal", {}, 2 / 10),
        ("normal", {"std": 0.1}, 0.1**2),
        ("zeros", {}, 0.0),
    ],
)
def test_initializer_variance_formulas(name, params, variance):
    assert builtin("initializer", name, **params).variance(4, 6) == pytest.approx(
        variance, rel=1e-15
    )


@pytest.mark.parametrize(
    ("name", "scale"),
    [
        ("plain", lambda n_in, n_out: 0.01),
        ("he", lambda n_in, n_out: np.sqrt(2 / n_in)),
        ("glorot_normal", lambda n_in, n_out: np.sqrt(2 / (n_in + n_out))),
    ],
)
def test_normal_initializers_scale_a_standard_normal_draw(name, scale):
    drawn = builtin("initializer", name)((4, 6), np.random.default_rng(5))
    np.testing.assert_array_equal(
        drawn, np.random.default_rng(5).standard_normal((4, 6)) * scale(4, 6)
    )


def test_glorot_uniform_draws_within_its_limit():
    limit = np.sqrt(6 / 10)
    drawn = builtin("initializer", "glorot_uniform")((4, 6), np.random.default_rng(6))
    np.testing.assert_array_equal(drawn, np.random.default_rng(6).uniform(-limit, limit, (4, 6)))


def test_xavier_reproduces_the_seed_tutorials_weights():
    # np.random.seed(48), then randn(n_out, n_in) / sqrt(n_in) per layer of the 2-3-1 XOR net.
    rng = LegacyRNG(np.random.RandomState(48))
    xavier = builtin("initializer", "xavier")
    w1, w2 = xavier((2, 3), rng), xavier((3, 1), rng)
    seeds_w1 = [[-0.702603, -0.751938], [-0.451188, 0.750657], [-0.111302, 0.773383]]
    np.testing.assert_allclose(w1.T, seeds_w1, atol=5e-7)
    np.testing.assert_allclose(w2.T, [[-1.197918, 0.404511, 0.966853]], atol=5e-7)
    # Bit for bit: dividing by sqrt(n_in), as the seeds do (multiplying by 1/sqrt differs).
    seeds = np.random.RandomState(48)
    np.testing.assert_array_equal(w1.T, seeds.randn(3, 2) / np.sqrt(2))
    np.testing.assert_array_equal(w2.T, seeds.randn(1, 3) / np.sqrt(3))


def schedule_at(name, t, lr0=0.1, **params):
    return builtin("schedule", name, **params)(lr0, t)


@pytest.mark.parametrize(
    ("name", "params", "t", "expected"),
    [
        ("constant", {}, 1000, 0.1),
        ("step", {"step_size": 10, "gamma": 0.5}, 9, 0.1),
        ("step", {"step_size": 10, "gamma": 0.5}, 10, 0.05),
        ("step", {"step_size": 10, "gamma": 0.5}, 25, 0.025),
        ("exponential", {"rate": 0.9}, 3, 0.1 * 0.729),
        ("inverse_time", {}, 4, 0.1 / 5),
        ("inverse_time", {"decay": 0.5, "power": 2.0}, 2, 0.1 / 4),
        ("cosine", {"t_max": 10, "lr_min": 0.01}, 5, (0.1 + 0.01) / 2),
        ("cosine", {"t_max": 10, "lr_min": 0.01}, 10, 0.01),
        ("cosine", {"t_max": 10, "lr_min": 0.01}, 20, 0.01),
        ("cosine", {"t_max": 4}, 1, 0.1 * (1 + math.cos(math.pi / 4)) / 2),
    ],
)
def test_schedule_values(name, params, t, expected):
    assert schedule_at(name, t, **params) == pytest.approx(expected, rel=1e-14)
    assert schedule_at(name, 0, **params) == 0.1


@pytest.mark.parametrize("power_t", [0.25, 0.5])
def test_inverse_time_is_scikit_learns_invscaling(power_t):
    # scikit-learn: eta = eta0 / pow(t', power_t), with t' counting samples seen from 1.
    for t in range(5):
        expected = 0.1 / (t + 1) ** power_t
        assert schedule_at("inverse_time", t, decay=1.0, power=power_t) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("step", {}),
        ("step", {"step_size": 0}),
        ("step", {"step_size": 5, "gamma": 1.5}),
        ("exponential", {"rate": 0.0}),
        ("inverse_time", {"power": -1.0}),
        ("cosine", {"t_max": 10, "lr_min": -0.1}),
        ("cosine", {"t_max": 10, "per": "batch"}),
    ],
)
def test_schedule_parameters_are_validated(name, params):
    with pytest.raises(mf.SpecError):
        builtin("schedule", name, **params)


def sgd_steps(grads, **params):
    sgd = builtin("optimizer", "sgd", **params)
    p = np.array([1.0, -2.0])
    for g in grads:
        sgd.step([p], [np.array(g)])
    return p


def test_sgd_plain_step():
    np.testing.assert_allclose(sgd_steps([[0.5, -1.0]], lr=0.1), [0.95, -1.9], rtol=1e-15)


def test_sgd_momentum_steps():
    g1, g2 = np.array([0.5, -1.0]), np.array([0.2, 0.4])
    v1 = -0.1 * g1
    v2 = 0.9 * v1 - 0.1 * g2
    expected = np.array([1.0, -2.0]) + v1 + v2
    np.testing.assert_allclose(sgd_steps([g1, g2], lr=0.1, momentum=0.9), expected, rtol=1e-15)


def test_sgd_nesterov_steps():
    g1, g2 = np.array([0.5, -1.0]), np.array([0.2, 0.4])
    p1 = np.array([1.0, -2.0]) - 0.1 * g1 * (1 + 0.9)
    np.testing.assert_allclose(sgd_steps([g1], lr=0.1, momentum=0.9, nesterov=True), p1, rtol=1e-15)
    v1 = -0.1 * g1
    v2 = 0.9 * v1 - 0.1 * g2
    p2 = p1 + 0.9 * v2 - 0.1 * g2
    two = sgd_steps([g1, g2], lr=0.1, momentum=0.9, nesterov=True)
    np.testing.assert_allclose(two, p2, rtol=1e-15)


def test_sgd_keeps_float32_and_follows_its_schedule():
    schedule = {"type": "step", "step_size": 1, "gamma": 0.5, "per": "step"}
    sgd = builtin("optimizer", "sgd", lr=0.1, momentum=0.5, schedule=schedule)
    p = np.ones(3, dtype=np.float32)
    for _ in range(3):
        sgd.step([p], [np.ones(3, dtype=np.float32)])
    assert p.dtype == np.float32
    v1 = -0.1
    v2 = 0.5 * v1 - 0.05
    v3 = 0.5 * v2 - 0.025
    np.testing.assert_allclose(p, 1 + v1 + v2 + v3, rtol=1e-6)
