"""Backend modules. Every public module here is imported by the registry and registers its
backends with :func:`fffbench.registry.register_backend`; modules starting with ``_`` are helpers."""
