"""deploy: scheduled flows become Prefect deployments (visible, with schedules, in the UI)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("deploy", help="register a Prefect deployment per scheduled flow (trigger.schedule); "
                                      "they show, with their schedules, under Deployments in the Prefect UI")
    p.add_argument("--work-pool", help="register for this Prefect work pool instead of `ledgerflow serve`'s runner")
    p.add_argument("--write-prefect-yaml", action="store_true",
                   help="also rewrite prefect.yaml from the flows (for `prefect deploy --all`)")
    p.add_argument("--check", action="store_true", help="only list what would be deployed; register nothing")
    p.set_defaults(func=cmd_deploy)


def cmd_deploy(args) -> int:
    from runner.app import App
    from runner.operate.deployments import prefect_yaml, register, scheduled_flows
    app = App()
    flows = scheduled_flows(app)
    if not flows:
        print("no flow has a trigger.schedule: nothing to deploy")
        return 0
    for s in flows:
        print(f"{s.name}: {s.flow_file}  cron {s.cron!r} ({s.timezone})")
    if args.write_prefect_yaml:
        path = app.project.dir / "prefect.yaml"
        path.write_text(prefect_yaml(app))
        print(f"wrote {path}")
    if args.check:
        return 0
    from runner.operate.prefect_server import use_project_api
    use_project_api(app)
    for name, dep_id in register(app, args.work_pool):
        print(f"registered {name} ({dep_id})")
    from prefect.settings import get_current_settings
    ui = get_current_settings().ui_url
    if ui:
        print(f"Prefect UI: {ui}/deployments")
    return 0
