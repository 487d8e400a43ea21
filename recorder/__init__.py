"""courtlink recorder package."""
