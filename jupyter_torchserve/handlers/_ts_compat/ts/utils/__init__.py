"""``ts.utils`` (compat)."""
