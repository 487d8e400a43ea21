"""courtlink courtlink package."""
