"""The accounting model: a Stripe movement turned into balanced home-currency postings (ACCOUNTING.md)."""
