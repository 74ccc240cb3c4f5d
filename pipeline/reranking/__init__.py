"""Stage 3, re-ranking: mixes, the exploration pool with propensities, and the rules every mix obeys."""
