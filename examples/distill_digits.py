"""Knowledge distillation on scikit-learn's handwritten digits with fastdiv.

A teacher network (64 -> 256 -> 10) learns the digits with ``fastdiv.nll``;
a much smaller student (64 -> 8 -> 10) then learns them four ways, from the
same initial weights: on the labels alone, and with ``fastdiv.distill_loss``
on the teacher's logits at T = 2, 4 and 8 (alpha = 0.9). NumPy does the
matrix products and the backpropagation; the losses and their gradients
with respect to the logits come from fastdiv. The code lives in
``fastdiv._distill``, which ``fastdiv demo distill`` runs as well.

Needs scikit-learn for the data (and matplotlib for ``--plot``)::

    pip install 'fastdiv[examples]'
    python examples/distill_digits.py                 # 60 epochs, 5 seeds
    python examples/distill_digits.py --quick         # a few seconds
    python examples/distill_digits.py --plot acc.png  # accuracy against T
"""

from __future__ import annotations

import argparse
import sys

import fastdiv
from fastdiv import _distill


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    # The help texts state their defaults themselves: several depend on
    # --quick, which ArgumentDefaultsHelpFormatter would show as None.
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help=f"epochs of every training run (default {_distill.EPOCHS}, "
        f"{_distill.QUICK_EPOCHS} with --quick)",
    )
    parser.add_argument(
        "--seeds",
        type=positive_int,
        default=None,
        help=f"repetitions with different initial weights (default "
        f"{_distill.SEEDS}, {_distill.QUICK_SEEDS} with --quick)",
    )
    parser.add_argument("--quick", action="store_true", help="few epochs and one seed")
    parser.add_argument(
        "--plot", metavar="FILE.png", help="draw test accuracy against T"
    )
    parser.add_argument(
        "--backend",
        choices=["auto", "numpy", "numba", "cython"],
        default=None,
        help="fastdiv backend of the losses (default: FASTDIV_BACKEND or auto)",
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    epochs, seeds = _distill.settings(args.quick, args.epochs, args.seeds)
    with fastdiv.options(backend=args.backend):
        result = _distill.run(
            epochs, seeds, progress=lambda line: print(line, file=sys.stderr)
        )
    print(_distill.format_table(result))
    if args.plot:
        _distill.plot(result, args.plot)
        print(f"plot saved to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
