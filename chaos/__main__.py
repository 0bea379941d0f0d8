"""``python -m chaos [--quick] [--kills N] [--instances W] [--workers K] [--outage S] [--seed N]``,
or ``python -m chaos --drain [--quick] [--rounds N] [--instances W] [--workers K] [--seed N]``.

Prints a summary of the run and exits with 1 if any invariant was violated.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from dataclasses import dataclass
from pathlib import Path

from chaos.driver import RunConfig, run
from chaos.report import as_json, summary


@dataclass(frozen=True)
class Sizes:
    """Defaults of a run size; the command line overrides each."""

    kills: int
    instances_per_kill: float
    outage: float
    kill_interval: tuple[float, float]
    settle_timeout: float


QUICK = Sizes(kills=20, instances_per_kill=2, outage=10.0, kill_interval=(1.5, 4.5), settle_timeout=150.0)
"""The CI size: 20 kills, 40 instances and a 10 s outage in about 3 minutes on two busy cores."""
FULL = Sizes(kills=200, instances_per_kill=3, outage=0.0, kill_interval=(3.0, 11.0), settle_timeout=300.0)
QUICK_DRAIN_ROUNDS = 1
"""The CI size of the drain scenario: each worker drained and replaced once."""
FULL_DRAIN_ROUNDS = 5
DRAIN_INSTANCES_PER_DRAIN = 8


def parse_args(argv: list[str] | None) -> tuple[RunConfig, argparse.Namespace]:
    """The run's configuration from the command line, and the parsed arguments."""
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the reduced CI size (20 kills, 40 instances)")
    parser.add_argument(
        "--drain",
        action="store_true",
        help="the drain scenario: rolling SIGTERM restarts of every worker instead of kills and an outage",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help=f"drain scenario: rounds of restarts of every worker (default {FULL_DRAIN_ROUNDS}, --quick "
        f"{QUICK_DRAIN_ROUNDS})",
    )
    parser.add_argument("--kills", type=int, help="SIGKILLs of random workers (default 200)")
    parser.add_argument("--instances", type=int, help="orchestrations to start (default 3 per kill)")
    parser.add_argument("--workers", type=int, default=3, help="start processes on the hub (default 3)")
    parser.add_argument("--outage", type=float, help="seconds of storage outage halfway through (0: none)")
    parser.add_argument("--seed", type=int, help="random seed (default: a random one, printed)")
    parser.add_argument(
        "--kill-interval", type=float, nargs=2, metavar=("MIN", "MAX"), help="seconds between kills"
    )
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep Azurite's data and worker logs in DIR")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures and kills to FILE")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each kill and the outage")
    args = parser.parse_args(argv)
    if args.drain and (args.kills is not None or args.outage is not None or args.kill_interval):
        parser.error("--drain takes no --kills, --outage or --kill-interval")
    if args.rounds is not None and (not args.drain or args.rounds < 1):
        parser.error("--rounds takes a positive number, with --drain")
    return (_drain_config if args.drain else _kill_config)(args), args


def _kill_config(args: argparse.Namespace) -> RunConfig:
    sizes = QUICK if args.quick else FULL
    kills = args.kills if args.kills is not None else sizes.kills
    interval = args.kill_interval or sizes.kill_interval
    return RunConfig(
        kills=kills,
        instances=args.instances if args.instances is not None else round(kills * sizes.instances_per_kill),
        workers=args.workers,
        outage=args.outage if args.outage is not None else sizes.outage,
        seed=_seed(args),
        kill_interval=(float(interval[0]), float(interval[1])),
        settle_timeout=sizes.settle_timeout,
        keep=args.keep,
    )


def _drain_config(args: argparse.Namespace) -> RunConfig:
    sizes = QUICK if args.quick else FULL
    rounds = args.rounds or (QUICK_DRAIN_ROUNDS if args.quick else FULL_DRAIN_ROUNDS)
    per_round = args.workers * DRAIN_INSTANCES_PER_DRAIN
    return RunConfig(
        kills=0,
        instances=args.instances if args.instances is not None else rounds * per_round,
        workers=args.workers,
        outage=0.0,
        seed=_seed(args),
        kill_interval=sizes.kill_interval,
        settle_timeout=sizes.settle_timeout,
        keep=args.keep,
        drain_rounds=rounds,
    )


def _seed(args: argparse.Namespace) -> int:
    return args.seed if args.seed is not None else random.randrange(1 << 31)


def main(argv: list[str] | None = None) -> int:
    """Run the suite and print its summary; 1 if anything failed."""
    config, args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("azure", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    faults = f"{config.drain_rounds} round(s) of drains" if config.drains else f"{config.kills} kills"
    print(f"chaos: seed {config.seed}, {faults}, {config.instances} instances", flush=True)
    result = run(config)
    print(summary(result), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(as_json(result), indent=2) + "\n")
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
