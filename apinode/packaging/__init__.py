"""Service definitions, bundles and notebooks as service sources (see DESIGN.md, "Bundles").

Standard library only, but for nbformat, imported when a notebook is read.
"""
