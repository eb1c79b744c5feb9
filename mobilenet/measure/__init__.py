"""What a device runs: the worker, one runner per runtime, the timing loop and a session of rounds.

These modules import nothing beyond numpy, the standard library, mobilenet.logs and their own runtime:
device mode ships this folder as it is."""
