"""One module per notebook: what a chapter needs and no other chapter does (its experiments, figures and panel).

``chNN_slug.py`` serves ``notebooks/NN_slug.ipynb``. Chapter modules build on the library (:mod:`lth_tutorial`);
the library never imports a chapter, and code a second chapter needs moves down into the library.
"""
