"""Command line for the SMS gateway simulator: ``python -m simulator --port 8080 ...``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

from simulator.config import OUTCOMES, SimulatorConfig
from simulator.server import run


def _money(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not an amount: {text!r}") from None
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(f"amount must be >= 0: {text!r}")
    return value


def _force(text: str) -> tuple[str, str]:
    mobile, sep, outcome = text.partition("=")
    if not sep or outcome not in OUTCOMES:
        raise argparse.ArgumentTypeError(
            f"expected MOBILE=OUTCOME with OUTCOME one of {', '.join(OUTCOMES)}"
        )
    return mobile, outcome


def build_parser() -> argparse.ArgumentParser:
    """The simulator's options; durations are seconds, probabilities 0..1."""
    d = SimulatorConfig()
    p = argparse.ArgumentParser(
        prog="python -m simulator",
        description="Simulated SMS gateway (send_sms.php, dlr.php) with fault injection.",
    )
    p.add_argument("--host", default=d.host, help="address to bind (default %(default)s)")
    p.add_argument("--port", type=int, default=d.port, help="0 picks a free port")
    p.add_argument("--key", default=d.key, help="the API key clients must send")
    p.add_argument("--credit", type=_money, default=None, help="money left; unlimited if unset")
    p.add_argument(
        "--allow-ip",
        dest="allow_ips",
        action="append",
        default=[],
        help="allowed client IP (repeatable); all allowed if none",
    )
    p.add_argument("--price", type=_money, default=d.price, help="cost of one SMS part")
    p.add_argument("--latency", type=float, default=d.latency, help="seconds added to replies")
    p.add_argument("--jitter", type=float, default=d.jitter, help="random 0..JITTER s on top")
    p.add_argument("--error-5xx", type=float, default=d.error_5xx, help="P(HTTP 503)")
    p.add_argument("--busy", type=float, default=d.busy, help="P(Message not accepted)")
    p.add_argument("--late", type=float, default=d.late, help="P(accept, answer late)")
    p.add_argument("--late-delay", type=float, default=d.late_delay, help="seconds of a late reply")
    p.add_argument("--drop", type=float, default=d.drop, help="P(accept, close without reply)")
    p.add_argument("--max-rate", type=float, default=None, help="accepted messages per second")
    p.add_argument("--pending", type=float, default=d.pending, help="seconds DLR says pending")
    p.add_argument("--sending", type=float, default=d.sending, help="seconds DLR says sending")
    p.add_argument(
        "--mix",
        default="delivered=1",
        help="outcome weights, e.g. delivered=0.9,failed=0.05,stuck=0.05",
    )
    p.add_argument(
        "--force",
        type=_force,
        action="append",
        default=[],
        metavar="MOBILE=OUTCOME",
        help="fixed outcome for one number (repeatable)",
    )
    p.add_argument("--seed", type=int, default=None, help="seed for outcomes and faults")
    p.add_argument(
        "--access-log",
        action="store_true",
        help="log every request (key, numbers and texts masked)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and serve until interrupted; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = SimulatorConfig(
            host=args.host,
            port=args.port,
            key=args.key,
            allow_ips=args.allow_ips,
            credit=args.credit,
            price=args.price,
            latency=args.latency,
            jitter=args.jitter,
            error_5xx=args.error_5xx,
            busy=args.busy,
            late=args.late,
            late_delay=args.late_delay,
            drop=args.drop,
            max_rate=args.max_rate,
            pending=args.pending,
            sending=args.sending,
            mix=args.mix,
            force=dict(args.force),
            seed=args.seed,
            access_log=args.access_log,
        )
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(
        level=logging.INFO if args.access_log else logging.WARNING,
        format="%(asctime)s %(name)s %(message)s",
    )
    try:
        run(config)
    except OSError as exc:
        print(f"simulator: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
