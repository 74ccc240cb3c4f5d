"""Row-level data rules: what makes an input row trustworthy enough to enter the raw store."""
