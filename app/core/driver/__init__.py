"""What drives the pipeline: the Worker that runs each step, and the status board."""
