"""Configuration: typed settings (schema) and the loader that builds them from YAML and the environment.

Import from the module that defines a name (indexd.config.schema, indexd.config.load ...); this package
re-exports nothing."""
