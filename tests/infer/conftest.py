"""The inference tests share stage 2's trained checkpoints (one JMT on the tiny cache, one per task)."""

from ..stage2.conftest import every_task, one_thread, trained  # noqa: F401
