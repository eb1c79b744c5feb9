"""Other machines over SSH: the connection, chain mode and device mode."""
