"""Store backends: the only modules that touch SQLite or Redis."""
