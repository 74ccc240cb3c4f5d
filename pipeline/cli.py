"""`dailymix`: the command line of the platform."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pipeline.config import Settings, WorldConfig, load_settings, save_settings


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.home)


def cmd_world(args: argparse.Namespace) -> int:
    """Generate a synthetic world and land its history as daily event files."""
    from pipeline.paths import Layout
    from pipeline.world import generate_world, history_days, write_world

    settings = _settings(args)
    overrides = {k: v for k, v in {"seed": args.seed, "n_users": args.users, "n_tracks": args.tracks,
                                   "n_artists": args.artists, "history_days": args.days}.items() if v is not None}
    world_config = settings.world.model_copy(update=overrides)
    world_config = WorldConfig.model_validate(world_config.model_dump())
    settings = settings.model_copy(update={"world": world_config})
    save_settings(settings)
    world = generate_world(world_config)
    write_world(world, Layout(settings.home))
    days = history_days(world_config)
    print(f"world (seed {world_config.seed}) in {settings.home}: {len(world.users)} users, {len(world.catalog)} "
          f"tracks, {world.catalog['artist_id'].nunique()} artists, {len(world.events)} events over "
          f"{days[0]}..{days[-1]}")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    """Validate one events file into the raw store; bad rows to quarantine."""
    import pandas as pd

    from pipeline.ingest import IngestError, ingest_file
    from pipeline.paths import Layout
    from pipeline.world import read_world

    settings = _settings(args)
    layout = Layout(settings.home)
    threshold = args.max_bad_share if args.max_bad_share is not None else settings.max_bad_row_share
    try:
        report = ingest_file(Path(args.path), args.date, layout, read_world(layout).catalog,
                             max_bad_row_share=threshold, as_of=pd.Timestamp.now(tz="UTC"),
                             contract_root=layout.home / "validation")
    except IngestError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0


def cmd_mixes(args: argparse.Namespace) -> int:
    """Show a user's published mixes."""
    from pipeline.publish import user_mixes

    try:
        payload = user_mixes(_settings(args), args.user_id, args.date)
    except LookupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(payload, indent=2))
        return 0
    count = len(payload["mixes"])
    print(f"user {payload['user_id']} — {payload['date']} — {count} mix{'' if count == 1 else 'es'}")
    for mix in payload["mixes"]:
        tracks = mix["tracks"]
        discoveries = sum(t["discovery"] for t in tracks)
        print(f"\n  {mix['title']}  ({len(tracks)} tracks, {discoveries} discoveries)  [{mix['mix_id']}]")
        for t in tracks:
            flag = "new" if t["discovery"] else "   "
            print(f"    {t['position']:>2}. track {t['track_id']:>7}  artist {t['artist_id']:>5}  {t['genre']:<12} "
                  f"{t['mood']:<12} {flag} {t['policy']:<7} p={t['propensity']:.3f}")
    lineage = payload["mixes"][0]["lineage"] if payload["mixes"] else {}
    print(f"\n  lineage: {lineage}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Run the nightly skew gate for a date against the champion's suites."""
    from pipeline.nightly import plan
    from pipeline.skew import SkewGateError, run_gate

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
    from pipeline.demo import run_demo

    return run_demo(_settings(args).home, fresh=not args.keep)


def cmd_eval(args: argparse.Namespace) -> int:
    """Offline evaluation on real listening data against popularity, ALS and item-kNN baselines."""
    from pipeline.evaluation import run_hetrec

    return run_hetrec(args)


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the HTTP API (mixes, events, online features, refresh) with uvicorn."""
    import os

    token = os.environ.get("DAILYMIX_API_TOKEN") or None
    if token is None and not args.insecure_dev:
        print("error: DAILYMIX_API_TOKEN is not set; refusing to serve without auth (--insecure-dev for local use)",
              file=sys.stderr)
        return 2
    import uvicorn

    from pipeline.api import create_app

    uvicorn.run(create_app(_settings(args), token), host=args.host, port=args.port)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run the real loop for simulated weeks with simulated listeners; write report.json, plots, a table."""
    from pipeline.simulate import format_table, run_simulation, simulation_settings, simulation_world

    out = Path(args.out).resolve()
    settings = simulation_settings(Path(args.sim_home).resolve() if args.sim_home else out / "home",
                                   epsilon=args.epsilon, use_ips=not args.no_ips, seed=args.seed,
                                   world=simulation_world(args.users, args.tracks), base=_settings(args))
    report = run_simulation(settings, args.weeks, out)
    print(format_table(report))
    print(f"\nreport: {out / 'report.json'}; plots: {', '.join(sorted(p.name for p in out.glob('*.png')))}")
    return 0


def cmd_tune_exploration(args: argparse.Namespace) -> int:
    """Simulate each exploration rate of a grid; recommend one within the skip-rate guardrail and save it."""
    from pipeline.simulate import simulation_world
    from pipeline.tuning import format_tuning, tune_exploration

    grid = [float(x) for x in args.grid.split(",") if x.strip()]
    settings = _settings(args)
    tuning = tune_exploration(settings, grid, args.weeks, Path(args.out).resolve(), seeds=args.seeds,
                              guardrail=args.guardrail, apply=not args.dry_run,
                              world=simulation_world(args.users, args.tracks))
    print(format_tuning(tuning))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dailymix", description=__doc__)
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
    ingest.add_argument("--date", required=True, help="the day (YYYY-MM-DD) the events belong to")
    ingest.add_argument("--max-bad-share", type=float, help="fail above this quarantined share (default 0.01)")
    ingest.set_defaults(func=cmd_ingest)

    mixes = sub.add_parser("mixes", help=cmd_mixes.__doc__)
    mixes.add_argument("user_id", type=int)
    mixes.add_argument("--date", help="publication date (default: latest)")
    mixes.add_argument("--json", action="store_true", help="machine-readable output (stable contract)")
    mixes.set_defaults(func=cmd_mixes)

    validate = sub.add_parser("validate", help=cmd_validate.__doc__)
    validate.add_argument("--date", required=True, help="the day (YYYY-MM-DD) whose serving features to check")
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
    hetrec.set_defaults(func=cmd_eval)

    serve = sub.add_parser("serve", help=cmd_serve.__doc__)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--insecure-dev", action="store_true", help="serve without a token (never outside a laptop)")
    serve.set_defaults(func=cmd_serve)

    simulate = sub.add_parser("simulate", help=cmd_simulate.__doc__)
    simulate.add_argument("--weeks", type=int, default=8, help="simulated weeks (default 8)")
    simulate.add_argument("--epsilon", type=float, help="exploration rate (default: rerank.exploration_rate)")
    simulate.add_argument("--no-ips", action="store_true", help="train the ranker without inverse-propensity weights")
    simulate.add_argument("--seed", type=int, default=7, help="seed of the world, listeners and pipeline (default 7)")
    simulate.add_argument("--out", required=True, help="directory for report.json and the PNG plots")
    simulate.add_argument("--sim-home", help="data root of the simulated platform (default: OUT/home)")
    simulate.add_argument("--users", type=int, help="listeners in the simulated world (default 80)")
    simulate.add_argument("--tracks", type=int, help="catalog size of the simulated world (default 1500)")
    simulate.set_defaults(func=cmd_simulate)

    tune = sub.add_parser("tune-exploration", help=cmd_tune_exploration.__doc__)
    tune.add_argument("--grid", default="0,0.05,0.1,0.2,0.3", help="comma-separated exploration rates")
    tune.add_argument("--weeks", type=int, default=4, help="simulated weeks per rate (default 4)")
    tune.add_argument("--seeds", type=int, nargs="+", default=[7], help="seeds averaged per rate (default 7)")
    tune.add_argument("--guardrail", type=float, default=0.02,
                      help="most skip-rate rise over ε=0 a recommendation may cost (default 0.02 = 2 pp)")
    tune.add_argument("--out", required=True, help="directory for tuning.json, the curve and each run")
    tune.add_argument("--dry-run", action="store_true", help="do not write the recommendation to settings.json")
    tune.add_argument("--users", type=int, help="listeners in the simulated world (default 80)")
    tune.add_argument("--tracks", type=int, help="catalog size of the simulated world (default 1500)")
    tune.set_defaults(func=cmd_tune_exploration)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
