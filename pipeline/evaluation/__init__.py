"""Offline evaluation on real listening data (HetRec 2011 Last.fm 2K)."""
