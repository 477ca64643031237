"""Core: money, FX rates, JSON with decimals, errors, secrets, redaction, Slack sending,
background-service plumbing. Imports nothing else of the runner."""
