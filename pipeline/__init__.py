"""Recipe, stage graph, executors, CLI, run manifests and reports of the Ruyi2 pipeline."""
