"""ltbench: a benchmark and leaderboard harness for long-tailed visual recognition.

The import name is ``ltbench``; the repository's ``harness/`` folder is installed as this
package, ``methods/`` as :mod:`ltbench.methods` and ``datasets/`` as :mod:`ltbench.datasets`.
Its sub-packages, bottom layer first (docs/architecture.md §1; ``tests/test_layers.py``): the
foundation modules here, :mod:`~ltbench.metrics`, :mod:`~ltbench.store`, :mod:`~ltbench.api`
(the plugin contract), :mod:`~ltbench.engine`, the plugins, then :mod:`~ltbench.run`,
:mod:`~ltbench.report` and :mod:`~ltbench.bench`, and :mod:`~ltbench.cli` on top.

Citations in docstrings and comments such as ``protocols.md §3.7``, ``datasets.md §2.4`` or
``architecture.md §8 pitfall 7`` name sections of the repository's ``docs/`` files
(``docs/protocols.md``, ``docs/datasets.md``, ``docs/architecture.md``);
``tests/test_docs.py`` checks that every one resolves.
"""

__version__ = "0.1.0"

#: The part of the version that enters every run id: a change here re-runs everything.
HARNESS_VERSION = ".".join(__version__.split(".")[:2])
