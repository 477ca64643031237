"""Sending to Slack with the project's settings (a webhook URL or a bot token, each a secret
reference), and the Prefect UI links messages carry. Used by alerts (runner/deliver/alerts.py) and by the
payout reconciliation's summary; knows nothing of what the messages say."""

from __future__ import annotations

import logging
from typing import Any

from runner.core.redact import scrub

log = logging.getLogger("ledgerflow.alerts")


def slack_config(app) -> dict[str, Any] | None:
    cfg = app.project.raw.get("slack")
    if not cfg or not (cfg.get("webhook_url") or cfg.get("bot_token")):
        return None
    return cfg


def prefect_ui_url() -> str | None:
    """PREFECT_UI_URL as the environment has it now (a public address, say), else Prefect's own
    setting (derived from the API URL). Read per call: settings loaded earlier may be stale."""
    import os
    ui = os.environ.get("PREFECT_UI_URL", "").strip()
    if not ui:
        try:
            from prefect.settings import get_current_settings
            ui = str(get_current_settings().ui_url or "")
        except Exception:  # noqa: BLE001
            ui = ""
    return ui.rstrip("/") or None


def prefect_run_url(run_id: str | None) -> str | None:
    ui = prefect_ui_url() if run_id else None
    return f"{ui}/runs/flow-run/{run_id}" if ui else None


def post_message(app, text: str, blocks: list[dict] | None = None, channel: str | None = None) -> bool:
    """Send one message with the project's Slack settings; False (logged) when it could not go."""
    cfg = slack_config(app)
    if cfg is None:
        return False
    from slack_sdk.errors import SlackApiError, SlackClientError
    from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
    retry = [RateLimitErrorRetryHandler(max_retry_count=2)]
    try:
        if cfg.get("webhook_url"):
            from slack_sdk.webhook import WebhookClient
            url = app.secrets.resolve(cfg["webhook_url"], "slack.webhook_url")
            resp = WebhookClient(url, timeout=10, retry_handlers=retry).send(text=text, blocks=blocks)
            if resp.status_code != 200:
                log.error("Slack webhook answered %s: %s", resp.status_code, scrub(resp.body)[:200])
                return False
            return True
        from slack_sdk import WebClient
        token = app.secrets.resolve(cfg["bot_token"], "slack.bot_token")
        target = channel or cfg.get("channel")
        if not target:
            log.error("slack.channel: a bot token needs a channel (in ledgerflow.yaml or the flow's alert.slack)")
            return False
        client = WebClient(token=token, base_url=cfg.get("api_url", WebClient.BASE_URL), timeout=10,
                           retry_handlers=retry)
        client.chat_postMessage(channel=target, text=text, blocks=blocks)
        return True
    except SlackApiError as exc:
        log.error("Slack refused the alert: %s", exc.response.get("error") if exc.response else "error")
    except (SlackClientError, OSError) as exc:
        log.error("Slack alert not sent: %s", type(exc).__name__)
    except Exception as exc:  # noqa: BLE001 - a missing secret, say: alerts must never stop delivery
        log.error("Slack alert not sent: %s", scrub(str(exc)))
    return False


def flow_alert_settings(app, flow_name: str) -> dict[str, Any]:
    try:
        flow = app.flows().get(flow_name)
    except Exception:  # noqa: BLE001 - a broken flow file must not stop its own alert
        flow = None
    return dict(flow.alert) if flow is not None else {}


def channel_for(app, flow_name: str) -> str | None:
    return flow_alert_settings(app, flow_name).get("slack")
