"""layerwatch package."""
