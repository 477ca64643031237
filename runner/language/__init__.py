"""The flow language: the project and flow files (spec, YAML source), templates and mappings,
planning, look-ups, validation, flow tests, Stripe's objects and the Stripe client look-ups use."""
