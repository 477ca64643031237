"""The books harness: seeded Stripe scenarios (:mod:`tests.books.scenario`) with their truth."""
