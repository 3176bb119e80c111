"""The ``lth`` command.

    lth imp [--preset lenet_mnist] [--quick|--full] [--dataset D] [--model M] [--rounds N] [--fraction F]
            [--scope global|layer] [--seeds 0 1 ...] [--controls reinit,random] [--reset init|...]
            [--rewind-iteration K] [--finetune-iterations N] [--iterations T] [--device auto|cpu|cuda]
            [--out DIR] [--no-cache] [--no-progress]
    lth presets

``lth imp`` prints a table row per finished round while it runs, then writes ``results.json`` (settings and one
record per round and kind) and ``imp.png`` (the Frankle & Carbin figure) to ``--out``. Finished training runs are
cached (``lth_tutorial.store``), so an interrupted run resumes and a repeated one loads.

Failing early and cleanly: bad arguments, an ``--out`` or run store (``$LTH_CACHE``) that cannot be written, and a
second ``lth imp`` writing to the same ``--out`` (a lock file ``--out/.lth-imp.lock`` holds the writer's process
id) exit with status 2 and a one-line reason before anything trains. ``results.json`` and ``imp.png`` are written
atomically (temporary file, then ``os.replace``), so an earlier pair stays intact when a write fails. A cache
write that fails mid-run warns once and the run carries on uncached. Ctrl-C ends with one line and status 130;
finished rounds stay cached. Other failures (data unavailable, divergence, a failed write) exit 1 with one line.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import warnings
from pathlib import Path

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument on one line and exits with status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


class UsageError(Exception):
    """A bad argument found after parsing; reported on one line with exit status 2."""


class OutputError(Exception):
    """Writing the results failed; reported on one line with exit status 1."""


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {value}")
    return value


def _output_fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1) (0 keeps the output layer dense), got {value}")
    return value


def _whole_number_at_least(minimum: int):
    """An argparse type: a whole number >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


_non_negative_int = _whole_number_at_least(0)
_positive_int = _whole_number_at_least(1)


def _seed(text: str) -> int:
    from .imp import MAX_SEED

    value = _non_negative_int(text)
    if value >= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must lie in [0, 2**32), got {value}")
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
    p.add_argument("--seeds", type=_seed, nargs="+", default=[0], help="one IMP run per seed (distinct, in [0, 2**32))")
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

    p = sub.add_parser("reproduce", help="a paper figure as one command (writes results.json, figure.png, "
                                          "table.md)")
    p.add_argument("figure", choices=("fc-lenet",), help="fc-lenet: Frankle & Carbin's LeNet-300-100 figure")
    p.add_argument("--full", action="store_true", help="the paper's setting (MNIST, 50,000 iterations per run; GPU)")
    p.add_argument("--project", type=_positive_int, metavar="ITERATIONS",
                   help="time the full figure with runs cut to ITERATIONS and print the scaled time (a projection)")
    p.add_argument("--seeds", type=_seed, nargs="+", default=[0, 1, 2, 3, 4], help="seeds (distinct)")
    p.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, cuda:N, mps")
    p.add_argument("--threads", type=_positive_int, help="PyTorch CPU threads (default: as lth imp)")
    p.add_argument("--out", type=Path, help="output folder (default results/FIGURE)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the run store")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")

    sub.add_parser("presets", help="list the named experiment presets")
    from .assignments import add_cli as add_assignments_cli

    add_assignments_cli(sub)  # lth assignments build [--out DIR] | grade NOTEBOOK
    from .sweep import add_cli as add_sweep_cli

    add_sweep_cli(sub)  # lth sweep CONFIG [--executor local|slurm] | status CONFIG | gather CONFIG --out DIR
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
    if not controls:
        raise UsageError(f"--controls {text!r} names no control; give some of {', '.join(imp.CONTROLS)}, or none")
    if len(set(controls)) != len(controls):
        raise UsageError(f"--controls lists a control twice: {text!r}")
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


_LOCK_NAME = ".lth-imp.lock"


@contextlib.contextmanager
def _out_lock(out: Path):
    """Hold an exclusive lock on ``out/.lth-imp.lock`` (holding our process id) while this run owns ``out``;
    refuse when another process holds it. The operating system drops the lock when its holder dies, so a lock file
    left by a killed run is simply taken over. Without ``fcntl`` (Windows) the file's existence is the lock."""
    lock = out / _LOCK_NAME
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        fcntl = None
    for _ in range(5):
        if fcntl is None:
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
            except FileExistsError:
                raise UsageError(f"another lth imp is writing to {out} (lock file {lock}); wait for it to finish, "
                                 f"choose another --out, or delete the lock file if no run is active") from None
        else:
            fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                try:
                    holder = f"process {int(lock.read_text().strip())}"
                except (OSError, ValueError):
                    holder = "another process"
                raise UsageError(f"another lth imp ({holder}) is writing to {out}; wait for it to finish or choose "
                                 f"another --out") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(lock).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder removed the file between our open and our lock: try again
                os.close(fd)
                continue
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        break
    else:
        raise UsageError(f"cannot take the lock {lock}")
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


def cmd_imp(args) -> int:
    from . import data, imp, plots, presets, store
    from .device import configure_threads, pick

    if len(set(args.seeds)) != len(args.seeds):
        duplicated = sorted({s for s in args.seeds if args.seeds.count(s) > 1})
        raise UsageError(f"--seeds lists {', '.join(map(str, duplicated))} more than once; give distinct seeds")
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

    # Everything that will be written must be writable before anything is generated or trained.
    run_store = store.RunStore(enabled=not args.no_cache)
    try:
        out = store.check_writable(args.out, "--out")
        if run_store.enabled:
            store.check_writable(run_store.root, "the run store (LTH_CACHE)")
    except ValueError as err:
        raise UsageError(f"{err}; use --out DIR elsewhere, set LTH_CACHE to a writable folder, or pass --no-cache"
                         if run_store.enabled else f"{err}; use --out DIR elsewhere") from None
    if run_store.enabled:
        run_store.cleanup()

    with _out_lock(out):
        store.remove_stale_temporaries(out)  # of a results write that a kill -9 interrupted
        dataset = data.load(spec.dataset, device=device)
        print(f"lth imp: {spec.model} on {dataset!r}\n  {config}\n  rounds={spec.rounds} fraction={spec.fraction} "
              f"scope={spec.scope} output_fraction={spec.output_fraction} reset={reset.describe()} "
              f"controls={list(controls)} seeds={args.seeds} device={device} threads={threads}\n"
              f"  store: {run_store.root if run_store.enabled else 'off (--no-cache)'}")
        print(HEADER, flush=True)
        started = time.perf_counter()
        results = imp.run_seeds(  # the seeds' rounds train side by side as populations
            dataset, spec.model, config, args.seeds, rounds=spec.rounds, fraction=spec.fraction, scope=spec.scope,
            output_fraction=spec.output_fraction, reset=reset, controls=controls, store=run_store,
            progress=not args.no_progress, keep_weights=False,
            on_round=lambda seed, r: print(_row(r, seed), flush=True))
        elapsed = time.perf_counter() - started

        import io
        import json

        import matplotlib.pyplot as plt

        records = [rec for res in results for rec in res.records()]
        text = json.dumps({"settings": [res.settings for res in results], "elapsed_seconds": elapsed,
                           "records": records}, indent=1, default=lambda o: None)
        fig = plots.imp_figure(results, title=f"{spec.model} on {spec.dataset}, {len(args.seeds)} seed(s)")
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=120)
        plt.close(fig)
        for name, payload in (("results.json", text.encode()), ("imp.png", png.getvalue())):
            try:
                store.atomic_write(out / name, payload)
            except OSError as err:
                raise OutputError(f"cannot write {out / name} ({err.strerror or err}); any earlier {name} there is "
                                  f"unchanged, and the finished runs are cached") from None
    print(f"done in {elapsed:.1f} s; wrote {out / 'results.json'} and {out / 'imp.png'}")
    return 0


def cmd_reproduce(args) -> int:
    from . import reproduce, store
    from .device import configure_threads, pick

    if len(set(args.seeds)) != len(args.seeds):
        raise UsageError("--seeds must be distinct")
    try:
        device = pick(args.device)
        configure_threads(args.threads, not (args.full or args.project), device)
    except ValueError as err:
        raise UsageError(str(err)) from None
    out = store.check_writable(args.out or Path("results") / args.figure, "--out")
    summary = reproduce.reproduce(args.figure, full=args.full, project=args.project, seeds=args.seeds, out=out,
                                  device=device, store_=store.RunStore(enabled=not args.no_cache),
                                  progress=not args.no_progress)
    print(summary["table"])
    print(f"{summary['mode']} run on {summary['device']} ({summary['threads']} threads), data: {summary['data']}; "
          f"wrote {', '.join(summary['paths'])}")
    if "projected_seconds" in summary:
        print(f"{summary['projection']}: projected full figure {summary['projected_seconds'] / 60:.1f} min on this "
              f"machine")
    print(f"done in {summary['elapsed_seconds']:.1f} s")
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


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"lth: warning: {' '.join(str(message).split())}\n"


def main(argv: list[str] | None = None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    parser = build_parser()
    args = parser.parse_args(argv)
    saved_format = warnings.formatwarning
    warnings.formatwarning = _one_line_warning  # library warnings (cache, data) print as one line each
    try:
        if args.command in ("assignments", "sweep"):
            return args.run(args)
        return {"imp": cmd_imp, "presets": cmd_presets, "reproduce": cmd_reproduce}[args.command](args)
    except UsageError as err:
        print(f"lth {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OutputError as err:
        print(f"lth {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        resume = ("finished rounds are cached, rerun the same command to resume"
                  if not getattr(args, "no_cache", True) else "nothing was cached (--no-cache)")
        print(f"lth {args.command}: interrupted; {resume}", file=sys.stderr)
        return 130
    except Exception as err:  # data unavailable, divergence, a failed write, ...: one clear line, non-zero exit
        from .data import DatasetUnavailableError
        from .training import DivergenceError

        if isinstance(err, (DatasetUnavailableError, DivergenceError, ValueError, OSError)):
            detail = " ".join(str(err).split())
            if isinstance(err, OSError):
                detail = f"{type(err).__name__}: {detail}"
            print(f"lth {args.command}: error: {detail}", file=sys.stderr)
            return 2 if isinstance(err, ValueError) else 1
        raise
    finally:
        warnings.formatwarning = saved_format


if __name__ == "__main__":
    sys.exit(main())
