"""courtlink signaling package."""
