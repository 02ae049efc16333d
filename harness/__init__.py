"""ltbench: a benchmark and leaderboard harness for long-tailed visual recognition.

The import name is ``ltbench``; the repository's ``harness/`` folder is installed as this
package, ``methods/`` as :mod:`ltbench.methods` and ``datasets/`` as :mod:`ltbench.datasets`.
"""

__version__ = "0.1.0"

#: The part of the version that enters every run id: a change here re-runs everything.
HARNESS_VERSION = ".".join(__version__.split(".")[:2])
