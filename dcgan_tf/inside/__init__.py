"""Looking inside a model: `--mode=summary` (G and D layer by layer, with the shape arithmetic) and
`--mode=visualize` (what D's features respond to, its filters and maps, and samples beside their nearest
training images)."""
