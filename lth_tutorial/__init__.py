"""lth_tutorial: the library behind the Lottery Ticket Hypothesis tutorial notebooks.

Two layers. The library, one module per method family or tool: :mod:`data`, :mod:`models`, :mod:`masks`,
:mod:`scores`, :mod:`pruning_at_init`, :mod:`objectives`, :mod:`training`, :mod:`population`, :mod:`imp`,
:mod:`rewinding`, :mod:`criteria`, :mod:`supermasks`, :mod:`stability`, :mod:`perturbations`, :mod:`early_bird`,
:mod:`transfer`, :mod:`language`, :mod:`rl`, :mod:`warm_start`, :mod:`mask_similarity`, :mod:`sweep`, :mod:`cost`,
:mod:`store`, :mod:`tables`, :mod:`plots`, :mod:`claims`, :mod:`widgets`, :mod:`presets`, :mod:`reproduce`,
:mod:`assignments`, :mod:`cli`, :mod:`device`, :mod:`notebook`. And :mod:`lth_tutorial.chapters`, one module per
notebook with what only that chapter needs; the library never imports a chapter.
"""

__version__ = "0.1.0"
