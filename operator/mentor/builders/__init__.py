"""Pure builders: spec in, manifests out."""
