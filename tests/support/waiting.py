"""Wait on a condition with a deadline instead of sleeping; find a free port.

One implementation, shared with the demo (examples/processes.py), which must not import tests.
"""

from examples.processes import free_port, wait_until

__all__ = ["free_port", "wait_until"]
