"""``python -m bench.compare``: the method comparison of ``layerwatch bench compare``.

The comparison itself lives in scorer.compare (the application floor's CLI registers it, and
the CLI may not import bench, which sits above it).
"""

from scorer.compare import app

if __name__ == "__main__":
    app()
