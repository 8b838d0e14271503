"""charfeat's Hydra sweeper (``hydra/sweeper: charfeat``, conf/hydra/sweeper/charfeat.yaml).

Hydra instantiates plugin classes from the ``hydra_plugins`` namespace package only, so this
package sits beside ``charfeat`` rather than inside it. Hydra imports it at every start-up
(plugin discovery): it imports nothing beyond Hydra.
"""

from hydra_plugins.charfeat_sweeper.compose_once import ComposeOnceSweeper

__all__ = ["ComposeOnceSweeper"]
