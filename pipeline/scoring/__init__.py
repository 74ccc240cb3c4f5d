"""Stage 2, scoring: the ranker and the scorers behind one `Scorer` interface."""
