"""courtlink media package."""
