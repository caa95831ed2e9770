"""Data sets built into the package (generated, nothing downloaded), below models and demo."""
