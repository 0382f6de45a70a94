"""Where profiles come from. The pipeline reads any `Source`; each source knows its own
positions (a Profile API list cursor, a warehouse keyset), the pipeline knows none."""

from __future__ import annotations

from migrator.sources.base import Merge, Page, Profile, ProfileUnreadable, Source, after_first

__all__ = ["Merge", "Page", "Profile", "ProfileUnreadable", "Source", "after_first"]
