"""Features: one definition per feature, the Feast repository, the daily feature job, the skew gate."""
