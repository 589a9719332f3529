"""The inference engine's artifacts: the pinned vLLM build, its wheelhouse, and checks of its arguments."""
