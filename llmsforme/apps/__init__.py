"""Applications built from the package's layers: "Ask the course" (Part 6)."""
