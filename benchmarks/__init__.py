"""`make bench`, outside the arena package: measure quality and speed into results.json, render the report from it."""
