"""The ``lth`` command.

    lth imp [--preset lenet_mnist] [--quick|--full] [--dataset D] [--model M] [--rounds N] [--fraction F]
            [--scope global|layer] [--seeds 0 1 ...] [--controls reinit,random] [--reset init|...]
            [--rewind-iteration K] [--finetune-iterations N] [--iterations T] [--device auto|cpu|cuda]
            [--out DIR] [--no-cache] [--no-progress]
    lth presets

``lth imp`` prints a table row per finished round while it runs, then writes ``results.json`` (settings and one
record per round and kind) and ``imp.png`` (the Frankle & Carbin figure) to ``--out``. Finished training runs are
cached (``lth_tutorial.store``), so an interrupted run resumes and a repeated one loads. Bad arguments exit with
status 2 and a one-line reason.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument on one line and exits with status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


class UsageError(Exception):
    """A bad argument found after parsing; reported on one line with exit status 2."""


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {value}")
    return value


def _output_fraction(text: str) -> float:
    if text.strip() == "0":
        return 0.0
    return _fraction(text)


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    from . import data, imp, models, presets
    from .rewinding import RESETS

    parser = _Parser(prog="lth", description="Lottery Ticket Hypothesis experiments from the command line.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("imp", help="iterative magnitude pruning with controls; writes results.json and imp.png")
    p.add_argument("--preset", default="lenet_mnist", help=f"starting settings: {', '.join(presets.names())}")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="full", action="store_false", help="CPU-sized setting on embedded data "
                                                                         "(default)")
    mode.add_argument("--full", dest="full", action="store_true", help="the paper's setting (real data; GPU)")
    p.set_defaults(full=False)
    p.add_argument("--dataset", choices=data.names(), help="overrides the preset's dataset")
    p.add_argument("--model", choices=models.names(), help="overrides the preset's model")
    p.add_argument("--rounds", type=_non_negative_int, help="pruning rounds after the dense run")
    p.add_argument("--fraction", type=_fraction, help="share of the remaining weights removed per round")
    p.add_argument("--output-fraction", type=_output_fraction,
                   help="per-round fraction for the output layer (0 keeps it dense)")
    p.add_argument("--scope", choices=("global", "layer"), help="rank weights globally or within each layer")
    p.add_argument("--iterations", type=_positive_int, help="training iterations per round")
    p.add_argument("--seeds", type=_non_negative_int, nargs="+", default=[0], help="one IMP run per seed")
    p.add_argument("--controls", default=",".join(imp.CONTROLS),
                   help="comma-separated subset of reinit,random; 'none' for no controls")
    p.add_argument("--reset", default="init", help=f"reset strategy: {', '.join(RESETS)}")
    p.add_argument("--rewind-iteration", type=_non_negative_int, help="k for --reset rewind / lr_rewind")
    p.add_argument("--finetune-iterations", type=_positive_int,
                   help="steps per round for --reset finetune (default: the round's training length, --iterations)")
    p.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, cuda:N, mps")
    p.add_argument("--threads", type=_positive_int,
                   help="PyTorch CPU threads (default: 1 in quick mode on a CPU, else PyTorch's default)")
    p.add_argument("--out", type=Path, default=Path("results/imp"), help="folder for results.json and imp.png")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the run store")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")

    sub.add_parser("presets", help="list the named experiment presets")
    return parser


#: the option of :func:`lth_tutorial.rewinding.make_reset` behind each command-line flag.
_RESET_FLAGS = {"rewind_to": "--rewind-iteration", "finetune_steps": "--finetune-iterations"}


def _reset_from_args(args, config):
    """The reset strategy of ``--reset`` with its flags; errors are worded in flags, not in Python."""
    from .rewinding import RESETS, make_reset

    if args.reset not in RESETS:
        raise UsageError(f"unknown reset strategy {args.reset!r}; valid: {', '.join(RESETS)}")
    options = {}
    if args.rewind_iteration is not None:
        if args.reset not in ("rewind", "lr_rewind"):
            raise UsageError(f"--rewind-iteration applies to --reset rewind or lr_rewind, not --reset {args.reset}")
        options["rewind_to"] = args.rewind_iteration
    elif args.reset == "rewind":
        raise UsageError("--reset rewind needs --rewind-iteration K (the dense run's iteration to rewind to)")
    if args.finetune_iterations is not None:
        if args.reset != "finetune":
            raise UsageError(f"--finetune-iterations applies to --reset finetune, not --reset {args.reset}")
        options["finetune_steps"] = args.finetune_iterations
    elif args.reset == "finetune":
        options["finetune_steps"] = config.iterations  # default budget: as long as a round of training
    try:
        reset = make_reset(args.reset, **options)
        reset.validate(config)
    except ValueError as err:
        message = str(err)
        for option, flag in _RESET_FLAGS.items():
            message = message.replace(f"{option}=", f"{flag} ").replace(option, flag)
        raise UsageError(message) from None
    return reset


def _controls_from_args(text: str) -> tuple[str, ...]:
    from . import imp

    if text.strip().lower() == "none":
        return ()
    controls = tuple(c.strip() for c in text.split(",") if c.strip())
    unknown = [c for c in controls if c not in imp.CONTROLS]
    if unknown:
        raise UsageError(f"unknown controls {unknown}; valid: {', '.join(imp.CONTROLS)} or none")
    return controls


def _row(r, seed: int) -> str:
    ticket = r.ticket
    cells = [f"{seed:>4d}", f"{r.round:>5d}", f"{r.density * 100:>9.2f}", f"{ticket.best_test_accuracy * 100:>9.2f}",
             f"{ticket.best_iteration:>8d}"]
    for kind in ("reinit", "random"):
        c = r.controls.get(kind)
        cells.append(f"{c.best_test_accuracy * 100:>9.2f}" if c else f"{'-':>9}")
    return " ".join(cells)


HEADER = " ".join([f"{'seed':>4}", f"{'round':>5}", f"{'remain %':>9}", f"{'ticket %':>9}", f"{'stop it':>8}",
                   f"{'reinit %':>9}", f"{'random %':>9}"])


def cmd_imp(args) -> int:
    from . import data, imp, plots, presets, store
    from .device import configure_threads, pick

    try:
        preset = presets.get(args.preset)
    except ValueError as err:
        raise UsageError(str(err)) from None
    spec = preset.spec(quick=not args.full)
    changes = {k: getattr(args, k) for k in ("dataset", "model", "rounds", "fraction", "scope")
               if getattr(args, k) is not None}
    if args.output_fraction is not None:
        changes["output_fraction"] = args.output_fraction
    spec = spec.replace(**changes)
    config = spec.config
    if args.iterations is not None:
        config = config.replace(iterations=args.iterations, eval_every=max(1, min(config.eval_every,
                                                                                    args.iterations // 10 or 1)))
    reset = _reset_from_args(args, config)
    controls = _controls_from_args(args.controls)
    try:
        device = pick(args.device)
        threads = configure_threads(args.threads, not args.full, device)
    except ValueError as err:
        raise UsageError(str(err)) from None

    dataset = data.load(spec.dataset, device=device)
    run_store = store.RunStore(enabled=not args.no_cache)
    print(f"lth imp: {spec.model} on {dataset!r}\n  {config}\n  rounds={spec.rounds} fraction={spec.fraction} "
          f"scope={spec.scope} output_fraction={spec.output_fraction} reset={reset.describe()} "
          f"controls={list(controls)} seeds={args.seeds} device={device} threads={threads}\n"
          f"  store: {run_store.root}")
    print(HEADER, flush=True)
    started = time.perf_counter()
    results = []
    for seed in args.seeds:
        results.append(imp.run(
            dataset, spec.model, config, rounds=spec.rounds, fraction=spec.fraction, scope=spec.scope,
            output_fraction=spec.output_fraction, reset=reset, controls=controls, seed=seed, store=run_store,
            progress=not args.no_progress, keep_weights=False,
            on_round=lambda r, seed=seed: print(_row(r, seed), flush=True)))
    elapsed = time.perf_counter() - started

    args.out.mkdir(parents=True, exist_ok=True)
    import json

    records = [rec for res in results for rec in res.records()]
    (args.out / "results.json").write_text(json.dumps(
        {"settings": [res.settings for res in results], "elapsed_seconds": elapsed, "records": records},
        indent=1, default=lambda o: None))
    fig = plots.imp_figure(results, title=f"{spec.model} on {spec.dataset}, {len(args.seeds)} seed(s)")
    fig.savefig(args.out / "imp.png", dpi=120)
    print(f"done in {elapsed:.1f} s; wrote {args.out / 'results.json'} and {args.out / 'imp.png'}")
    return 0


def cmd_presets(args) -> int:
    from . import presets

    for name in presets.names():
        p = presets.get(name)
        print(f"{name}: {p.description}\n  paper: {p.paper}")
        for label, spec in (("full", p.full), ("quick", p.quick)):
            c = spec.config
            print(f"  {label:5s}: {spec.model} on {spec.dataset}; {c.optimizer} lr {c.lr:g}, batch {c.batch_size}, "
                  f"{c.iterations} it, {spec.rounds} rounds x {spec.fraction:g} ({spec.scope})"
                  + (f"; {spec.runtime}" if spec.runtime else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return {"imp": cmd_imp, "presets": cmd_presets}[args.command](args)
    except UsageError as err:
        print(f"lth {args.command}: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # data unavailable, divergence, ...: one clear line, non-zero exit
        from .data import DatasetUnavailableError
        from .training import DivergenceError

        if isinstance(err, (DatasetUnavailableError, DivergenceError, ValueError)):
            print(f"lth {args.command}: error: {err}", file=sys.stderr)
            return 2 if isinstance(err, ValueError) else 1
        raise


if __name__ == "__main__":
    sys.exit(main())
