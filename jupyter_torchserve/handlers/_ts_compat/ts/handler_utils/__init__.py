"""``ts.handler_utils`` (compat)."""
