from ..stage2.conftest import one_thread, trained  # noqa: F401  (the trained JMT checkpoint, one thread)
