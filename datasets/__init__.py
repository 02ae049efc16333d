"""Built-in dataset plugins: one module per dataset family, registered in pyproject.toml."""
