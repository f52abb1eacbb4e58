"""indexd's own state schema: one module owns each table (or close group of tables) and every write to it."""
