"""lth_tutorial: the library behind the Lottery Ticket Hypothesis tutorial notebooks.

One module per idea: :mod:`data`, :mod:`models`, :mod:`masks`, :mod:`scores`, :mod:`training`, :mod:`imp`,
:mod:`store`, :mod:`plots`, :mod:`widgets`, :mod:`cli`.
"""

__version__ = "0.1.0"
