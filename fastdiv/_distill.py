"""Knowledge distillation on scikit-learn's handwritten digits.

The code behind ``examples/distill_digits.py`` and ``fastdiv demo distill``.
Nothing but NumPy and fastdiv trains the networks: the forward pass and the
backpropagation are written out in NumPy, and the only loss code is
:func:`fastdiv.nll` and :func:`fastdiv.distill_loss` called with
``return_grad=True``, whose gradient with respect to the logits starts the
backward pass.

The experiment (Hinton et al., 2015, "Distilling the knowledge in a neural
network", on a small scale):

1. Data: the 1797 8 x 8 digits shipped inside scikit-learn (no download),
   pixels scaled from [0, 16] to [0, 1], split 75 / 25 into train and test
   with a fixed seed and the same class proportions on both sides.
2. Teacher: 64 -> 256 -> 10 with ReLU, trained on the labels with
   :func:`fastdiv.nll`.
3. Students: a network with a much smaller hidden layer, trained from the
   same initial weights and on the same minibatches in four ways: on the
   labels only, and with :func:`fastdiv.distill_loss` on the teacher's
   logits at T = 2, 4 and 8 (alpha = 0.9).

Steps 2 and 3 are repeated for several seeds (the seed sets the initial
weights and the order of the minibatches; the split stays the same) and the
table reports the mean and standard deviation of the test accuracy.

Optimiser: plain minibatch SGD with classical momentum,
``v <- mu v - lr g; w <- w + v`` with mu = 0.9, a constant learning rate
and no weight decay, for every network and every loss.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time

import numpy as np

import fastdiv

N_CLASSES = 10
TEACHER_HIDDEN = 256
# The student's width, chosen so that distillation has room to matter:
# with 60 epochs over 4 seeds, 8 hidden units trained on the labels reach
# 0.958 +- 0.012 against the teacher's 0.977, and distillation at T = 4
# 0.970; 12 units already reach 0.968 on labels alone, and 4 units lose
# one or two of their ReLUs (dead for every image) often enough to make
# the spread over seeds larger than any effect of the loss.
STUDENT_HIDDEN = 8
TEMPERATURES = (2.0, 4.0, 8.0)
ALPHA = 0.9
EPOCHS = 60
SEEDS = 5
BATCH_SIZE = 32
# With momentum 0.9 the effective step is 10 x this; 0.05 killed hidden
# units of the small students (2 of 6 on average), 0.01 and 0.02 both train
# well within 60 epochs.
LEARNING_RATE = 0.01
MOMENTUM = 0.9
SPLIT_SEED = 0
TEST_FRACTION = 0.25
# --quick: enough for the teacher to be far above chance, in a few seconds.
QUICK_EPOCHS = 8
QUICK_SEEDS = 1


def settings(quick=False, epochs=None, seeds=None):
    """Epochs and seeds of a run: those given, else the quick or full default."""
    if epochs is None:
        epochs = QUICK_EPOCHS if quick else EPOCHS
    if seeds is None:
        seeds = QUICK_SEEDS if quick else SEEDS
    return epochs, seeds


def load_digits_split(seed: int = SPLIT_SEED, test_fraction: float = TEST_FRACTION):
    """The digits, scaled to [0, 1], split into train and test.

    Parameters
    ----------
    seed : int
        ``random_state`` of :func:`sklearn.model_selection.train_test_split`.
    test_fraction : float
        Share of the samples kept for the test set (stratified by class).

    Returns
    -------
    x_train, x_test : ndarray of float64, shape (n, 64)
    y_train, y_test : ndarray of int64, shape (n,)
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # Pixels are integer ink counts in [0, 16].
    x = digits.data.astype(np.float64) / 16.0
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    return (
        np.ascontiguousarray(x_train),
        np.ascontiguousarray(x_test),
        y_train,
        y_test,
    )


class MLP:
    r"""A network with one hidden ReLU layer, in NumPy.

    .. math::

        h = \max(0, x W_1 + b_1), \qquad z = h W_2 + b_2

    Parameters
    ----------
    n_in, n_hidden, n_out : int
        Layer widths.
    rng : numpy.random.Generator
        Source of the initial weights: He initialisation (normal with
        variance 2 / fan-in) for the ReLU layer, variance 1 / fan-in for the
        output layer, zero biases.

    Examples
    --------
    >>> import numpy as np
    >>> net = MLP(4, 3, 2, np.random.default_rng(0))
    >>> net.forward(np.ones((5, 4)))[0].shape
    (5, 2)
    """

    def __init__(self, n_in: int, n_hidden: int, n_out: int, rng):
        self.params = {
            "W1": rng.standard_normal((n_in, n_hidden)) * math.sqrt(2.0 / n_in),
            "b1": np.zeros(n_hidden),
            "W2": rng.standard_normal((n_hidden, n_out)) * math.sqrt(1.0 / n_hidden),
            "b2": np.zeros(n_out),
        }

    def forward(self, x):
        """Logits of ``x`` and what :meth:`backward` needs."""
        p = self.params
        pre = x @ p["W1"] + p["b1"]
        hidden = np.maximum(pre, 0.0)
        logits = hidden @ p["W2"] + p["b2"]
        return logits, (x, pre, hidden)

    def backward(self, cache, grad_logits):
        """Gradients of the loss with respect to every parameter, given
        ``grad_logits``, the gradient with respect to the logits."""
        x, pre, hidden = cache
        grad_hidden = grad_logits @ self.params["W2"].T
        # ReLU passes the gradient where its input was positive; at exactly
        # 0 we take the subgradient 0.
        grad_pre = np.where(pre > 0.0, grad_hidden, 0.0)
        return {
            "W1": x.T @ grad_pre,
            "b1": grad_pre.sum(axis=0),
            "W2": hidden.T @ grad_logits,
            "b2": grad_logits.sum(axis=0),
        }

    def copy(self):
        """A network with copies of these weights."""
        twin = object.__new__(MLP)
        twin.params = {name: w.copy() for name, w in self.params.items()}
        return twin

    def predict(self, x):
        """The most likely class of each row."""
        return np.argmax(self.forward(x)[0], axis=1)


class LossClock:
    """Calls a fastdiv loss and adds the time it took to ``seconds``."""

    def __init__(self):
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, fn, *args, **kwargs):
        started = time.perf_counter()
        result = fn(*args, **kwargs)
        self.seconds += time.perf_counter() - started
        self.calls += 1
        return result


def loss_and_grads(
    model, x, y, teacher_logits=None, temperature=None, alpha=ALPHA, clock=None
):
    """The training objective on one batch and its gradient.

    Parameters
    ----------
    model : MLP
    x : ndarray, shape (n, n_in)
    y : ndarray of int, shape (n,)
    teacher_logits : ndarray, shape (n, n_out), optional
        None: the loss is ``fastdiv.nll(logits, y)`` (mean over the batch).
        Given: ``fastdiv.distill_loss(logits, teacher_logits, y,
        temperature, alpha)`` (batch mean).
    clock : LossClock, optional
        Times the fastdiv call.

    Returns
    -------
    loss : float
    grads : dict of ndarray
        Gradient of ``loss`` with respect to each of ``model.params``.
    """
    call = clock if clock is not None else (lambda fn, *a, **k: fn(*a, **k))
    logits, cache = model.forward(x)
    if teacher_logits is None:
        loss, grad_logits = call(fastdiv.nll, logits, y, return_grad=True)
    else:
        loss, grad_logits = call(
            fastdiv.distill_loss,
            logits,
            teacher_logits,
            y,
            temperature=temperature,
            alpha=alpha,
            return_grad=True,
        )
    return float(loss), model.backward(cache, grad_logits)


def train(
    model,
    x,
    y,
    *,
    teacher_logits=None,
    temperature=None,
    alpha=ALPHA,
    epochs=EPOCHS,
    batch_size=BATCH_SIZE,
    learning_rate=LEARNING_RATE,
    momentum=MOMENTUM,
    rng,
    clock=None,
):
    """Minibatch SGD with momentum on :func:`loss_and_grads`.

    Each epoch visits the rows of ``x`` once in an order drawn from ``rng``.
    ``teacher_logits`` (the teacher's logits on all of ``x``) switches from
    :func:`fastdiv.nll` to :func:`fastdiv.distill_loss`.

    Returns
    -------
    list of float
        The mean training loss of each epoch (the batch losses weighted by
        batch size).
    """
    velocity = {name: np.zeros_like(w) for name, w in model.params.items()}
    history = []
    n = len(x)
    for _ in range(epochs):
        order = rng.permutation(n)
        total = 0.0
        for start in range(0, n, batch_size):
            rows = order[start : start + batch_size]
            soft = None if teacher_logits is None else teacher_logits[rows]
            loss, grads = loss_and_grads(
                model, x[rows], y[rows], soft, temperature, alpha, clock
            )
            total += loss * len(rows)
            for name, w in model.params.items():
                v = velocity[name]
                v *= momentum
                v -= learning_rate * grads[name]
                w += v
        history.append(total / n)
    return history


def accuracy(model, x, y) -> float:
    """Share of the rows of ``x`` whose predicted class is ``y``."""
    return float(np.mean(model.predict(x) == y))


@dataclasses.dataclass
class Result:
    """What :func:`run` measured.

    ``accuracy`` maps each model ("teacher", "labels only", "T=2", ...) to
    its test accuracy per seed; ``loss_history`` maps it to the training
    loss per epoch of each seed.
    """

    accuracy: dict
    loss_history: dict
    temperatures: tuple
    alpha: float
    epochs: int
    seeds: int
    teacher_hidden: int
    student_hidden: int
    n_train: int
    n_test: int
    backend: str
    warmup_s: float
    loss_s: float
    loss_calls: int
    total_s: float


def run(
    epochs=EPOCHS,
    seeds=SEEDS,
    *,
    temperatures=TEMPERATURES,
    alpha=ALPHA,
    teacher_hidden=TEACHER_HIDDEN,
    student_hidden=STUDENT_HIDDEN,
    threads=1,
    progress=None,
) -> Result:
    """Train the teachers and students and measure their test accuracy.

    Parameters
    ----------
    epochs : int
        Epochs of every training run (teacher and students alike).
    seeds : int
        Repetitions, with seeds 0, 1, ...: seed s sets the initial weights
        and minibatch order of teacher s, and the students of seed s learn
        from teacher s, all from one initialisation.
    threads : int or None, default 1
        Threads for fastdiv's losses and for NumPy's matrix products (through
        threadpoolctl, which scikit-learn installs). A batch is 32 x 10
        logits and a 32 x 64 x 256 product: waking a second thread costs more
        than the work, and on a busy machine a thread that waits for another
        one to be scheduled can make a call a hundred times slower (8 ms
        instead of 80 us for a loss, measured here). None leaves both
        libraries' defaults.
    progress : callable, optional
        Called with a line of text after each seed.

    Examples
    --------
    >>> r = run(epochs=1, seeds=1)  # doctest: +SKIP
    >>> sorted(r.accuracy)  # doctest: +SKIP
    ['T=2', 'T=4', 'T=8', 'labels only', 'teacher']
    """
    for value, name in ((epochs, "epochs"), (seeds, "seeds")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    with contextlib.ExitStack() as stack:
        if threads is not None:
            from threadpoolctl import threadpool_limits

            stack.enter_context(threadpool_limits(limits=threads))
            stack.enter_context(fastdiv.options(threads=threads))
        return _run(
            epochs,
            seeds,
            temperatures,
            alpha,
            teacher_hidden,
            student_hidden,
            progress,
        )


def _run(
    epochs, seeds, temperatures, alpha, teacher_hidden, student_hidden, progress
) -> Result:
    started = time.perf_counter()
    x_train, x_test, y_train, y_test = load_digits_split()
    n_in = x_train.shape[1]

    # A first call of each loss compiles or loads what the backend needs;
    # it is timed apart so that the loss time is the steady-state cost.
    t0 = time.perf_counter()
    probe = np.zeros((2, N_CLASSES))
    fastdiv.nll(probe, [0, 1], return_grad=True)
    fastdiv.distill_loss(probe, probe, [0, 1], return_grad=True)
    warmup_s = time.perf_counter() - t0

    names = ["teacher", "labels only"] + [_label(t) for t in temperatures]
    acc = {name: [] for name in names}
    history = {name: [] for name in names}
    clock = LossClock()
    fit = dict(epochs=epochs, clock=clock)
    for seed in range(seeds):
        rng = np.random.default_rng([seed, 0])
        teacher = MLP(n_in, teacher_hidden, N_CLASSES, rng)
        history["teacher"].append(train(teacher, x_train, y_train, rng=rng, **fit))
        acc["teacher"].append(accuracy(teacher, x_test, y_test))
        soft = teacher.forward(x_train)[0]

        # Every student of this seed starts from the same weights and sees
        # the same minibatches, so that only the loss differs between them.
        init = MLP(n_in, student_hidden, N_CLASSES, np.random.default_rng([seed, 1]))
        for name, t in [("labels only", None)] + [(_label(t), t) for t in temperatures]:
            student = init.copy()
            losses = train(
                student,
                x_train,
                y_train,
                teacher_logits=None if t is None else soft,
                temperature=t,
                alpha=alpha,
                rng=np.random.default_rng([seed, 2]),
                **fit,
            )
            history[name].append(losses)
            acc[name].append(accuracy(student, x_test, y_test))
        if progress is not None:
            done = ", ".join(f"{k} {v[-1]:.3f}" for k, v in acc.items())
            progress(f"seed {seed}: {done}")

    return Result(
        accuracy=acc,
        loss_history=history,
        temperatures=tuple(float(t) for t in temperatures),
        alpha=float(alpha),
        epochs=epochs,
        seeds=seeds,
        teacher_hidden=teacher_hidden,
        student_hidden=student_hidden,
        n_train=len(x_train),
        n_test=len(x_test),
        backend=_backend_name(),
        warmup_s=warmup_s,
        loss_s=clock.seconds,
        loss_calls=clock.calls,
        total_s=time.perf_counter() - started,
    )


def _label(t) -> str:
    return f"T={float(t):g}"


def _backend_name() -> str:
    # The backend the losses run on for a training batch, as the dispatcher
    # resolves it (options(), FASTDIV_BACKEND, or "auto" by size).
    from fastdiv._dispatch import choose_backend

    size = BATCH_SIZE * N_CLASSES
    return (
        choose_backend("nll_rows", size)
        + " (nll), "
        + choose_backend("distill_rows", size)
        + " (distill_loss)"
    )


def format_table(result: Result) -> str:
    """The report: test accuracy per model over seeds, and the timing."""
    r = result
    head = (
        f"digits: {r.n_train} train / {r.n_test} test images; "
        f"teacher 64-{r.teacher_hidden}-10, students 64-{r.student_hidden}-10; "
        f"{r.epochs} epochs, {r.seeds} seed{'s' if r.seeds != 1 else ''}"
    )
    rows = [("model", "loss", "test accuracy", "min", "max", "vs labels only")]
    base = np.asarray(r.accuracy["labels only"])
    for name, values in r.accuracy.items():
        v = np.asarray(values)
        # The students of one seed share their start and their batches, so
        # the per-seed difference isolates the loss's effect.
        paired = (
            "" if name in ("teacher", "labels only") else f"{(v - base).mean():+.3f}"
        )
        if name == "teacher":
            label, loss = "teacher", "nll"
        elif name == "labels only":
            label, loss = "student, labels only", "nll"
        else:
            label, loss = f"student, {name}", f"distill_loss alpha={r.alpha:g}"
        spread = f" +- {v.std(ddof=1):.3f}" if len(v) > 1 else ""
        rows.append(
            (
                label,
                loss,
                f"{v.mean():.3f}{spread}",
                f"{v.min():.3f}",
                f"{v.max():.3f}",
                paired,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [head, ""]
    for i, row in enumerate(rows):
        lines.append(
            "  ".join(
                cell.ljust(w) if j < 2 else cell.rjust(w)
                for j, (cell, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    share = r.loss_s / r.total_s if r.total_s > 0 else float("nan")
    per_call = r.loss_s / r.loss_calls * 1e6 if r.loss_calls else float("nan")
    lines.append(
        "(mean +- sample standard deviation over seeds; last column: mean "
        "difference per seed)"
        if r.seeds > 1
        else "(last column: difference from the labels-only student)"
    )
    lines += [
        "",
        f"time in fastdiv.nll and fastdiv.distill_loss: {r.loss_s:.2f} s of "
        f"{r.total_s:.2f} s in all ({share:.1%})",
        f"  {r.loss_calls} calls on batches of {BATCH_SIZE} x {N_CLASSES}, "
        f"{per_call:.1f} us each; first calls {r.warmup_s:.2f} s; "
        f"backend {r.backend}",
    ]
    return "\n".join(lines)


def plot(result: Result, path) -> None:
    """Draw the students' test accuracy against the temperature (PNG).

    The distilled students are points with error bars (standard deviation
    over seeds) joined by a line; the labels-only student and the teacher
    are horizontal lines, with a band for their spread.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = result
    temps = np.asarray(r.temperatures)
    acc = {k: np.asarray(v) for k, v in r.accuracy.items()}
    spread = {k: (v.std(ddof=1) if len(v) > 1 else 0.0) for k, v in acc.items()}
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    means = [acc[_label(t)].mean() for t in temps]
    errs = [spread[_label(t)] for t in temps]
    ax.errorbar(
        temps,
        means,
        yerr=errs,
        marker="o",
        capsize=4,
        label=f"student, distill_loss (alpha={r.alpha:g})",
    )
    for name, style, text in (
        ("labels only", "--", "student, labels only"),
        ("teacher", ":", "teacher"),
    ):
        m, s = acc[name].mean(), spread[name]
        line = ax.axhline(m, linestyle=style, color="C1" if name != "teacher" else "C2")
        ax.axhspan(m - s, m + s, color=line.get_color(), alpha=0.12)
        line.set_label(text)
    ax.set_xscale("log", base=2)
    ax.set_xticks(temps, [f"{t:g}" for t in temps])
    ax.set_xlabel("distillation temperature T")
    ax.set_ylabel("test accuracy")
    ax.set_title(
        f"digits: students 64-{r.student_hidden}-10, teacher "
        f"64-{r.teacher_hidden}-10 ({r.seeds} seeds)"
    )
    ax.legend(loc="best", fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
