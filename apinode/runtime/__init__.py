"""The code that runs inside a pipeline, in an endpoint's own interpreter.

Standard library only: endpoint virtualenvs do not have apinode installed, so the node starts
this directory by path (`python -s <this dir>`). The same modules run in the Jupyter kernel for
`%api_test`, so a query behaves there exactly as it will on the node.
"""
