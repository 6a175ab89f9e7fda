"""Building blocks a run is made of: plugins loaded, registries, components built, the default recipe."""
