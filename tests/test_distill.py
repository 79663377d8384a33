"""The distillation example (fastdiv._distill): a short training run, the
gradients it trains with against finite differences, and the command.

No accuracy threshold beyond "the teacher beats chance by far": a few epochs
of SGD on the digits reach 90 % and more, so 50 % cannot flake.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastdiv

pytest.importorskip("sklearn")

from fastdiv import _distill  # noqa: E402

TOPIC = "losses"
KERNELS = ("nll_rows", "distill_rows")

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "FASTDIV_NUM_THREADS": "1"}
CHANCE = 1 / _distill.N_CLASSES


@pytest.fixture(scope="module")
def short_run():
    # Few epochs, one seed: about a second with any backend.
    return _distill.run(epochs=4, seeds=1)


def test_short_run_teacher_beats_chance_by_far(short_run):
    acc = short_run.accuracy["teacher"]
    assert len(acc) == 1
    assert acc[0] > 5 * CHANCE  # 50 %; a few epochs give over 90 %


def test_short_run_trains_every_model(short_run):
    names = ["teacher", "labels only", "T=2", "T=4", "T=8"]
    assert list(short_run.accuracy) == names
    for name in names:
        (losses,) = short_run.loss_history[name]
        assert len(losses) == 4
        assert np.all(np.isfinite(losses))
        assert losses[-1] < losses[0], (name, losses)
        # Every student does at least better than guessing as well.
        assert short_run.accuracy[name][0] > CHANCE


def test_short_run_times_the_losses(short_run):
    r = short_run
    # One call per batch of 32: 43 batches per epoch of 1347 rows.
    batches = -(-r.n_train // _distill.BATCH_SIZE)
    assert r.loss_calls == 5 * 4 * batches
    assert 0 < r.loss_s < r.total_s
    text = _distill.format_table(r)
    for fragment in ("teacher", "labels only", "T=8", "fastdiv.distill_loss"):
        assert fragment in text


def test_split_is_fixed_scaled_and_stratified():
    a = _distill.load_digits_split()
    b = _distill.load_digits_split()
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    x_train, x_test, y_train, y_test = a
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    assert len(x_train) + len(x_test) == 1797
    assert np.array_equal(np.unique(y_test), np.arange(10))


def test_plot_writes_a_png(short_run, tmp_path):
    pytest.importorskip("matplotlib")
    _distill.plot(short_run, tmp_path / "acc.png")
    assert (tmp_path / "acc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_rejects_bad_counts():
    with pytest.raises(ValueError, match="epochs"):
        _distill.run(epochs=0)
    with pytest.raises(ValueError, match="seeds"):
        _distill.run(epochs=1, seeds=1.5)


# --------------------------------------------------------------------------
# Gradients: what training follows against central differences (float64)
# --------------------------------------------------------------------------

STEP = 1e-6
RTOL = 1e-6


def _batch(rng, n=16):
    x_train, _, y_train, _ = _distill.load_digits_split()
    rows = rng.choice(len(x_train), size=n, replace=False)
    return x_train[rows], y_train[rows]


def _objective(model, x, y, teacher, temperature, backend):
    with fastdiv.options(backend=backend):
        return _distill.loss_and_grads(model, x, y, teacher, temperature)


def _relative_error(got, want):
    # Max-norm error relative to the largest entry: entries near 0 would
    # make an entrywise ratio meaningless.
    return np.max(np.abs(got - want)) / np.max(np.abs(want))


def _assert_no_kink_nearby(model, x):
    # A central difference across a ReLU kink is wrong by O(1); a step of
    # STEP in one weight moves a pre-activation by at most STEP (x <= 1).
    pre = x @ model.params["W1"] + model.params["b1"]
    assert np.min(np.abs(pre)) > 100 * STEP


@pytest.mark.parametrize(
    "teacher_temperature", [None, 1.0, 4.0], ids=["nll", "T=1", "T=4"]
)
def test_network_gradients_match_finite_differences(backend, rng, teacher_temperature):
    x, y = _batch(rng)
    student = _distill.MLP(64, 8, 10, rng)
    # Move the biases off zero so that both layers' biases are tested on a
    # network that is not at its initial point.
    for name in ("b1", "b2"):
        student.params[name] += 0.1 * rng.standard_normal(student.params[name].shape)
    teacher = None
    if teacher_temperature is not None:
        teacher = _distill.MLP(64, 32, 10, rng).forward(x)[0] * 3.0
    _assert_no_kink_nearby(student, x)

    _, grads = _objective(student, x, y, teacher, teacher_temperature, backend)
    for name, w in student.params.items():
        numeric = np.empty_like(w)
        for i in np.ndindex(w.shape):
            keep = w[i]
            w[i] = keep + STEP
            up, _ = _objective(student, x, y, teacher, teacher_temperature, backend)
            w[i] = keep - STEP
            down, _ = _objective(student, x, y, teacher, teacher_temperature, backend)
            w[i] = keep
            numeric[i] = (up - down) / (2 * STEP)
        assert grads[name].shape == w.shape
        assert _relative_error(grads[name], numeric) < RTOL, name


def test_teacher_gradients_match_finite_differences(backend, rng):
    # The teacher's 64 x 256 first layer is too large to difference whole:
    # a random sample of its entries, and all of the smaller arrays.
    x, y = _batch(rng)
    teacher = _distill.MLP(64, 256, 10, rng)
    _assert_no_kink_nearby(teacher, x)
    _, grads = _objective(teacher, x, y, None, None, backend)
    for name, w in teacher.params.items():
        flat = w.reshape(-1)
        picked = rng.choice(flat.size, size=min(flat.size, 60), replace=False)
        numeric = np.empty(len(picked))
        for j, i in enumerate(picked):
            keep = flat[i]
            flat[i] = keep + STEP
            up, _ = _objective(teacher, x, y, None, None, backend)
            flat[i] = keep - STEP
            down, _ = _objective(teacher, x, y, None, None, backend)
            flat[i] = keep
            numeric[j] = (up - down) / (2 * STEP)
        got = grads[name].reshape(-1)[picked]
        assert _relative_error(got, numeric) < RTOL, name


@pytest.mark.parametrize("temperature", [None, 2.0, 8.0], ids=["nll", "T=2", "T=8"])
def test_logits_gradients_match_finite_differences(backend, rng, temperature):
    # The gradient fastdiv hands to the backward pass, on its own.
    z = rng.standard_normal((16, 10)) * 3
    y = rng.integers(0, 10, size=16)
    teacher = rng.standard_normal((16, 10)) * 3

    def loss(logits):
        if temperature is None:
            return fastdiv.nll(logits, y, backend=backend)
        return fastdiv.distill_loss(
            logits, teacher, y, temperature=temperature, backend=backend
        )

    if temperature is None:
        _, grad = fastdiv.nll(z, y, return_grad=True, backend=backend)
    else:
        _, grad = fastdiv.distill_loss(
            z, teacher, y, temperature=temperature, return_grad=True, backend=backend
        )
    numeric = np.empty_like(z)
    for i in np.ndindex(z.shape):
        up, down = z.copy(), z.copy()
        up[i] += STEP
        down[i] -= STEP
        numeric[i] = (loss(up) - loss(down)) / (2 * STEP)
    assert _relative_error(grad, numeric) < RTOL


def test_one_sgd_step_lowers_the_batch_loss(rng):
    # The update goes down the gradient: a small step lowers the loss.
    x, y = _batch(rng, n=64)
    model = _distill.MLP(64, 8, 10, rng)
    before, _ = _distill.loss_and_grads(model, x, y)
    _distill.train(model, x, y, epochs=1, batch_size=64, momentum=0.0, rng=rng)
    after, _ = _distill.loss_and_grads(model, x, y)
    assert after < before


# --------------------------------------------------------------------------
# The command and the example script
# --------------------------------------------------------------------------


def test_fastdiv_demo_distill_quick():
    proc = subprocess.run(
        [sys.executable, "-m", "fastdiv", "demo", "distill", "--quick"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    for fragment in ("teacher", "student, labels only", "T=2", "T=4", "T=8"):
        assert fragment in proc.stdout
    assert "time in fastdiv.nll and fastdiv.distill_loss" in proc.stdout


def test_example_script_writes_plot(tmp_path):
    pytest.importorskip("matplotlib")
    script = ROOT / "examples" / "distill_digits.py"
    if not script.is_file():
        pytest.skip("examples/ is not part of an installed package")
    png = tmp_path / "acc.png"
    proc = subprocess.run(
        [sys.executable, str(script), "--epochs", "2", "--seeds", "2", "--plot", png],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "+-" in proc.stdout  # two seeds: a spread is reported
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
