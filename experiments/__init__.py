"""Scripts that measure the implementation against the paper; a package so tests can
import their pieces."""
