"""Target descriptions (TOML), one file per target; read by `roigen.target`."""
