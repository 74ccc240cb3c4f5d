"""`dailymix`: the command line of the platform. A user error (a bad argument, a missing or unreadable file, a
damaged store) is one line on stderr and a non-zero exit; `-v` shows the traceback instead."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import traceback
from pathlib import Path

from pipeline.core.config import PASSWORD_MASK, Settings, load_settings, redacted, without_password
from pipeline.core.process import exit_now

USER_ERRORS = (OSError, ValueError, LookupError)  # what bad arguments, files and stores raise (pydantic's included)
URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")


class OneLineParser(argparse.ArgumentParser):
    """argparse, with a bad argument reported in one line (the usage is one `--help` away)."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def iso_day(text: str) -> str:
    """An argparse type: a real calendar day written YYYY-MM-DD."""
    from pipeline.core.schema import calendar_day

    if calendar_day(text) is None:
        raise argparse.ArgumentTypeError(f"not a day like 2026-11-01: {text!r}")
    return text


def share(text: str) -> float:
    """An argparse type: a number in [0, 1] (NaN is not one: no share is ever above it)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"not a share in [0, 1]: {text!r}")
    return value


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def database_error(error: BaseException) -> str | None:
    """One line for a database that does not answer, a URL that does not parse or names a missing driver (the
    driver's own first line, every URL in it without its password); None for any other error."""
    sa_exc = sys.modules.get("sqlalchemy.exc")  # loaded whenever SQLAlchemy raised
    if isinstance(error, ModuleNotFoundError):
        return f"a driver the configured database needs is not installed ({one_line(error)})"
    if sa_exc is None or not isinstance(error, sa_exc.SQLAlchemyError):
        return None
    cause = getattr(error, "orig", None) or error
    line = next((part.strip() for part in str(cause).splitlines() if part.strip()), type(cause).__name__)
    line = URL_IN_TEXT.sub(lambda url: without_password(url.group(0), PASSWORD_MASK), line)
    return f"the database does not answer or its URL does not parse: {line}"


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.home)


def cmd_world(args: argparse.Namespace) -> int:
    """Generate a synthetic world and land its history as daily event files."""
    from pipeline.sim.world import create_world, world_summary

    overrides = {k: v for k, v in {"seed": args.seed, "n_users": args.users, "n_tracks": args.tracks,
                                   "n_artists": args.artists, "history_days": args.days}.items() if v is not None}
    settings, world = create_world(_settings(args), **overrides)
    print(world_summary(settings, world))
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    """Validate one events file into the raw store; bad rows to quarantine."""
    import pandas as pd

    from pipeline.core.paths import Layout
    from pipeline.data.catalog import read_catalog
    from pipeline.data.ingest import IngestError, ingest_file

    settings = _settings(args)
    layout = Layout(settings.home)
    threshold = args.max_bad_share if args.max_bad_share is not None else settings.max_bad_row_share
    try:
        report = ingest_file(Path(args.path), args.date, layout, read_catalog(layout),
                             max_bad_row_share=threshold, as_of=pd.Timestamp.now(tz="UTC"),
                             contract_root=layout.home / "validation")
    except IngestError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0


def cmd_mixes(args: argparse.Namespace) -> int:
    """Show a user's published mixes."""
    from pipeline.publish.files import user_mixes

    try:
        payload = user_mixes(_settings(args), args.user_id, args.date)
    except LookupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(payload, indent=2))
        return 0
    count = len(payload["mixes"])
    lineage = payload["mixes"][0]["lineage"] if payload["mixes"] else {}
    model = f" — model {_settings(args).model_name} v{lineage['model_version']}" if lineage else ""
    print(f"user {payload['user_id']} — {payload['date']} — {count} mix{'' if count == 1 else 'es'}{model}")
    for mix in payload["mixes"]:
        tracks = mix["tracks"]
        discoveries = sum(t["discovery"] for t in tracks)
        print(f"\n  {mix['title']}  ({len(tracks)} tracks, {discoveries} discoveries)  [{mix['mix_id']}]")
        for t in tracks:
            flag = "new" if t["discovery"] else "   "
            print(f"    {t['position']:>2}. track {t['track_id']:>7}  artist {t['artist_id']:>5}  {t['genre']:<12} "
                  f"{t['mood']:<12} {flag} {t['policy']:<7} p={t['propensity']:.3f}")
    print(f"\n  lineage: {lineage}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Run the nightly skew gate for a date against the champion's suites."""
    from pipeline.features.skew import SkewGateError, run_gate
    from pipeline.nightly.shard import plan

    settings = _settings(args)
    try:
        result = run_gate(settings, plan(settings, args.date))
    except SkewGateError as error:
        print(f"FAILED: {error}", file=sys.stderr)
        return 1
    print(f"skew gate passed for {args.date} (model v{result['model_version']}); Data Docs: {result['data_docs']}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Generate the default world and run every DAG through Airflow, then summarise."""
    from pipeline.ops.demo import run_demo

    return run_demo(_settings(args).home, fresh=not args.keep)


def cmd_eval(args: argparse.Namespace) -> int:
    """Offline evaluation on real listening data against tuned baselines (popularity, ALS, item-kNN, EASE, RP3beta)."""
    from pipeline.evaluation.offline import run_hetrec

    return run_hetrec(args)


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the HTTP API (mixes, events, online features, refresh) with uvicorn."""

    token = os.environ.get("DAILYMIX_API_TOKEN") or None
    if token is None and not args.insecure_dev:
        print("error: DAILYMIX_API_TOKEN is not set; refusing to serve without auth (--insecure-dev for local use)",
              file=sys.stderr)
        return 2
    import uvicorn

    from pipeline.serve.api import create_app

    settings = _settings(args)
    if args.workers == 1:
        uvicorn.run(create_app(settings, token), host=args.host, port=args.port,
                    access_log=settings.api.access_log)
        return 0
    from pipeline.serve.api import INSECURE_DEV

    os.environ["DAILYMIX_HOME"] = str(settings.home)  # each worker process builds its app from these
    os.environ[INSECURE_DEV] = "1" if token is None else ""
    uvicorn.run("pipeline.serve.api:app_from_environment", factory=True, host=args.host, port=args.port,
                workers=args.workers, access_log=settings.api.access_log)
    return 0


def cmd_bench_freshness(args: argparse.Namespace) -> int:
    """Measure POST /v1/events -> visible in GET .../features latency against a real server (loopback only)."""
    from pipeline.bench.freshness import BenchConfig, format_report, run
    from pipeline.core.config import FeatureStoreConfig

    redis_url = args.redis_url or os.environ.get("DAILYMIX_REDIS_URL") or FeatureStoreConfig().redis_url
    try:
        config = BenchConfig(store=args.store, rate=args.rate, seconds=args.seconds, users=args.users,
                             batch=args.batch, probe_every=args.probe_every, workers=args.workers,
                             redis_url=redis_url)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    report = run(config)
    print(format_report(report))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    """Print the settings of the data root as JSON, or the configuration reference as Markdown."""
    if args.markdown:
        from pipeline.core.config_reference import markdown

        print(markdown(), end="")
        return 0
    print(redacted(_settings(args)).model_dump_json(indent=2))
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    """Point the `champion` alias back at an earlier model version (the next nightly run serves it)."""
    from pipeline.core.registry import rollback

    settings = _settings(args)
    try:
        before = rollback(settings, args.version)
    except LookupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{settings.model_name}: champion {before or 'none'} -> {args.version}")
    return 0


def cmd_ope_experiment(args: argparse.Namespace) -> int:
    """Seeded synthetic experiment: IPS vs unweighted ranker, and IPS/SNIPS/DR errors against the truth."""
    from pipeline.sim.ope_experiment import run, summary

    results = run(list(range(args.first_seed, args.first_seed + args.seeds)))
    print(summary(results))
    if args.csv:
        results.to_csv(args.csv, index=False)
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    """Apply pending migrations to the published-mix database (settings.scale_out.publish_database_url)."""
    from pipeline.publish.postgres import schema_version, upgrade

    url = args.url or _settings(args).scale_out.publish_database_url
    if not url:
        print("error: no database configured: set DAILYMIX_PUBLISH_DB_URL, scale_out.publish_database_url in "
              "settings.json, or pass --url (the default file store needs no migration)", file=sys.stderr)
        return 2
    applied = upgrade(url)
    print(f"schema version {schema_version(url)}" + (f" (applied {applied})" if applied else " (up to date)"))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Nightly throughput benchmark: the real shard code on a seeded synthetic world, per stage and per core."""
    from pipeline.bench.compare import format_comparison, read_report
    from pipeline.bench.nightly import (
        default_home,
        format_projection,
        projection_from_reports,
        run_bench,
        summary,
        write_report,
    )
    from pipeline.core.config import BenchConfig

    overrides = {k: v for k, v in {"tracks": args.tracks, "users": args.users, "backend": args.backend,
                                   "growth_users": args.growth_users, "compare_backends": not args.no_compare,
                                   "compile_ranker": not args.no_compile,
                                   "cache": args.cache}.items() if v is not None}
    if args.project:  # pool finished runs into one projection, measure nothing
        print(format_projection(projection_from_reports([read_report(Path(path)) for path in args.project])))
        return 0
    config = BenchConfig.model_validate(overrides)
    old = read_report(Path(args.compare)) if args.compare else None
    if args.report:  # compare a finished run, measure nothing
        result = read_report(Path(args.report))
    else:
        home = Path(args.home).resolve() if args.home else default_home()
        result = run_bench(config, home, log=lambda line: print(line, file=sys.stderr, flush=True))
        if args.json_out:
            write_report(result, Path(args.json_out))
        print(summary(result))
    if old is not None:
        print(format_comparison(old, result, old_name=Path(args.compare).name))
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run the real loop for simulated weeks with simulated listeners; write report.json, plots, a table."""
    from pipeline.sim.loop import format_table, run_simulation, simulation_settings, simulation_world

    out = Path(args.out).resolve()
    settings = simulation_settings(Path(args.sim_home).resolve() if args.sim_home else out / "home",
                                   epsilon=args.epsilon, use_ips=not args.no_ips, seed=args.seed,
                                   world=simulation_world(args.users, args.tracks), base=_settings(args))
    report = run_simulation(settings, args.weeks, out, listener=_listener_config(args.listener))
    print(format_table(report))
    print(f"\nreport: {out / 'report.json'}; plots: {', '.join(sorted(p.name for p in out.glob('*.png')))}")
    return 0


def _listener_config(pairs: list[str]):
    """ListenerConfig from KEY=VALUE pairs (`--listener habit_rate=0.2`); unknown keys fail with the key named."""
    from pipeline.core.config import ListenerConfig

    malformed = [pair for pair in pairs or [] if "=" not in pair]
    if malformed:
        raise SystemExit(f"--listener expects KEY=VALUE, got {malformed[0]!r}")
    return ListenerConfig.model_validate(dict(pair.split("=", 1) for pair in pairs or []))


def cmd_tune_exploration(args: argparse.Namespace) -> int:
    """Simulate each exploration rate of a grid over a long horizon; recommend the one with the most completed
    plays within the skip guardrail and without an entropy alert, and save it."""
    from pipeline.sim.loop import simulation_world
    from pipeline.sim.tuning import format_tuning, tune_exploration

    grid = [float(x) for x in args.grid.split(",") if x.strip()]
    settings = _settings(args)
    tuning = tune_exploration(settings, grid, args.weeks, Path(args.out).resolve(), seeds=args.seeds,
                              guardrail=args.guardrail, apply=not args.dry_run,
                              world=simulation_world(args.users, args.tracks), jobs=args.jobs,
                              reuse_finished=args.reuse_finished)
    print(format_tuning(tuning))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="dailymix", description=__doc__)
    parser.add_argument("--home", help="data root (default: $DAILYMIX_HOME or ./.dailymix)")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    world = sub.add_parser("world", help=cmd_world.__doc__)
    world.add_argument("--seed", type=int)
    world.add_argument("--users", type=int)
    world.add_argument("--tracks", type=int)
    world.add_argument("--artists", type=int)
    world.add_argument("--days", type=int, help="days of history")
    world.set_defaults(func=cmd_world)

    ingest = sub.add_parser("ingest", help=cmd_ingest.__doc__)
    ingest.add_argument("path", help="CSV, JSONL or Parquet file of play events")
    ingest.add_argument("--date", required=True, type=iso_day, help="the day (YYYY-MM-DD) the events belong to")
    ingest.add_argument("--max-bad-share", type=share, help="fail above this quarantined share (default 0.01)")
    ingest.set_defaults(func=cmd_ingest)

    mixes = sub.add_parser("mixes", help=cmd_mixes.__doc__)
    mixes.add_argument("user_id", type=int)
    mixes.add_argument("--date", type=iso_day, help="publication date (default: latest)")
    mixes.add_argument("--json", action="store_true", help="machine-readable output (stable contract)")
    mixes.set_defaults(func=cmd_mixes)

    validate = sub.add_parser("validate", help=cmd_validate.__doc__)
    validate.add_argument("--date", required=True, type=iso_day,
                          help="the day (YYYY-MM-DD) whose serving features to check")
    validate.set_defaults(func=cmd_validate)

    demo = sub.add_parser("demo", help=cmd_demo.__doc__)
    demo.add_argument("--keep", action="store_true", help="keep an existing data root instead of starting fresh")
    demo.set_defaults(func=cmd_demo)
    evaluate = sub.add_parser("eval", help=cmd_eval.__doc__)
    hetrec = evaluate.add_subparsers(dest="dataset", required=True).add_parser("hetrec", help="HetRec 2011 Last.fm 2K")
    hetrec.add_argument("path", help="directory of the HetRec 2011 Last.fm 2K files (read in place)")
    hetrec.add_argument("--json", dest="json_out", help="also write the metrics to this JSON file")
    hetrec.add_argument("--seed", type=int, default=0, help="seed of the split and of every model (default 0)")
    hetrec.add_argument("--backend", choices=["annoy", "voyager"], default="annoy", help="ANN backend")
    hetrec.add_argument("--quick", action="store_true", help="fixed, previously tuned baseline settings (no tuning)")
    hetrec.set_defaults(func=cmd_eval)

    serve = sub.add_parser("serve", help=cmd_serve.__doc__)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--insecure-dev", action="store_true", help="serve without a token (never outside a laptop)")
    serve.add_argument("--workers", type=int, default=1, choices=range(1, 17), metavar="N",
                       help="uvicorn worker processes (default 1); intake passes are serialised across them")
    serve.set_defaults(func=cmd_serve)

    bench = sub.add_parser("bench-freshness", help=cmd_bench_freshness.__doc__)
    bench.add_argument("--store", choices=["sqlite", "redis"], default="sqlite", help="online store to measure")
    bench.add_argument("--rate", type=float, default=200.0, help="events per second, sustained (default 200)")
    bench.add_argument("--seconds", type=float, default=10.0, help="length of the load (default 10)")
    bench.add_argument("--users", type=int, default=100, help="listeners the events are spread over (default 100)")
    bench.add_argument("--batch", type=int, default=1, help="events per POST, each for a different user (default 1)")
    bench.add_argument("--probe-every", type=int, default=1,
                       help="watch every Nth event until visible (default 1: every event; polling costs server CPU)")
    bench.add_argument("--workers", type=int, default=1, help="worker processes of the served API (default 1)")
    bench.add_argument("--redis-url", help="Redis for --store redis (default: $DAILYMIX_REDIS_URL or redis://127.0.0.1"
                       ":6379/0); its dailymix keys are removed afterwards")
    bench.add_argument("--json", dest="json_out", help="also write the report to this JSON file")
    bench.set_defaults(func=cmd_bench_freshness)

    config = sub.add_parser("config", help=cmd_config.__doc__)
    config.add_argument("--markdown", action="store_true", help="every setting as Markdown (docs/configuration.md)")
    config.set_defaults(func=cmd_config)

    rollback = sub.add_parser("rollback", help=cmd_rollback.__doc__)
    rollback.add_argument("--version", required=True, help="the registered model version to serve again")
    rollback.set_defaults(func=cmd_rollback)

    experiment = sub.add_parser("ope-experiment", help=cmd_ope_experiment.__doc__)
    experiment.add_argument("--seeds", type=int, default=5, help="number of seeds (default 5)")
    experiment.add_argument("--first-seed", type=int, default=1)
    experiment.add_argument("--csv", help="also write the per-seed results to this CSV file")
    experiment.set_defaults(func=cmd_ope_experiment)

    db = sub.add_parser("db", help="the published-mix database").add_subparsers(dest="db_command", required=True)
    db_upgrade = db.add_parser("upgrade", help=cmd_db_upgrade.__doc__)
    db_upgrade.add_argument("--url", help="SQLAlchemy URL (default: the configured publish database)")
    db_upgrade.set_defaults(func=cmd_db_upgrade)

    bench = sub.add_parser("bench", help=cmd_bench.__doc__)
    bench.add_argument("--tracks", type=int, help="catalog size (default 1,000,000)")
    bench.add_argument("--users", type=int, help="users measured (default 20,000; a second pass runs a quarter)")
    bench.add_argument("--backend", choices=["annoy", "voyager", "faiss"], help="ANN backend of the shard path")
    bench.add_argument("--growth-users", type=int, help="users measured at tracks/10 for the growth exponent")
    bench.add_argument("--no-compare", action="store_true", help="skip building the other ANN backend")
    bench.add_argument("--no-compile", action="store_true", help="score with scikit-learn, not the compiled ranker")
    bench.add_argument("--cache", help="keep built indexes here between runs")
    bench.add_argument("--json", dest="json_out", help="write the full report to this JSON file")
    bench.add_argument("--compare", metavar="OLD.json", help="print each stage's CPU ms per user against this "
                       "earlier report, as a ratio (docs/bench/reference.json: the last accepted run)")
    bench.add_argument("--report", metavar="NEW.json", help="with --compare: compare this finished report instead "
                       "of running the bench")
    bench.add_argument("--project", nargs="+", metavar="REPORT.json", help="fit the growth with catalog size over "
                       "every size these finished reports measured and print the cores needed; measure nothing")
    bench.set_defaults(func=cmd_bench)

    simulate = sub.add_parser("simulate", help=cmd_simulate.__doc__)
    simulate.add_argument("--weeks", type=int, default=8, help="simulated weeks (default 8)")
    simulate.add_argument("--epsilon", type=float, help="exploration rate (default: rerank.exploration_rate)")
    simulate.add_argument("--no-ips", action="store_true", help="train the ranker without inverse-propensity weights")
    simulate.add_argument("--seed", type=int, default=7, help="seed of the world, listeners and pipeline (default 7)")
    simulate.add_argument("--out", required=True, help="directory for report.json and the PNG plots")
    simulate.add_argument("--sim-home", help="data root of the simulated platform (default: OUT/home)")
    simulate.add_argument("--users", type=int, help="listeners in the simulated world (default 80)")
    simulate.add_argument("--tracks", type=int, help="catalog size of the simulated world (default 1500)")
    simulate.add_argument("--listener", action="append", metavar="KEY=VALUE",
                          help="a listener setting (ListenerConfig), e.g. habit_rate=0.2; repeatable")
    simulate.set_defaults(func=cmd_simulate)

    tune = sub.add_parser("tune-exploration", help=cmd_tune_exploration.__doc__)
    tune.add_argument("--grid", default="0,0.02,0.05,0.1,0.2", help="comma-separated exploration rates (0 is "
                      "always run: the baseline)")
    tune.add_argument("--weeks", type=int, default=12, help="simulated weeks per rate (default 12)")
    tune.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="seeds per rate (default 1 2 3)")
    tune.add_argument("--guardrail", type=float, default=0.02,
                      help="most rise of the weeks 1-2 skip rate over ε=0's a pick may cost (default 0.02 = 2 pp)")
    tune.add_argument("--out", required=True, help="directory for tuning.json, the curve and each run")
    tune.add_argument("--dry-run", action="store_true", help="do not write the recommendation to settings.json")
    tune.add_argument("--jobs", type=int, default=1, help="simulations run at once, one process each (default 1)")
    tune.add_argument("--reuse-finished", action="store_true", help="take runs in OUT whose report.json has every "
                      "week under the same config as done (go on after a cut-short run of the same code)")
    tune.add_argument("--users", type=int, help="listeners in the simulated world (default 80)")
    tune.add_argument("--tracks", type=int, help="catalog size of the simulated world (default 1500)")
    tune.set_defaults(func=cmd_tune_exploration)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except USER_ERRORS as error:
        if args.verbose:
            raise
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 1
    except Exception as error:
        line = database_error(error)
        if line is None or args.verbose:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 1


def run() -> None:
    """The `dailymix` command: `main`, ended by `exit_now` (its exit code, without teardown aborts)."""
    try:
        code = main()
    except SystemExit as leaving:
        code = leaving.code
    except BaseException:
        traceback.print_exc()
        code = 1
    exit_now(code)


if __name__ == "__main__":
    run()
