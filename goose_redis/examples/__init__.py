"""Load tests shipped with the package, so ``goose-redis demo`` runs from any install.

``drupal_loadtest.py`` is the same file as ``examples/drupal_loadtest.py`` in the repository
(a test keeps them identical): read and copy that one.
"""
