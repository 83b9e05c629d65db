"""Bundled run configs, installed as the package ``dreamfusion.configs``."""
