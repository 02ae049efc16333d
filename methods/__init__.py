"""Built-in method plugins: one module per method, registered in pyproject.toml."""
