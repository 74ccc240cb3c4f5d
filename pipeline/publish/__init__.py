"""Publication stores (files, Postgres): atomic, idempotent, latest never moves back."""
