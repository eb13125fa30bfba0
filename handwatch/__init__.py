"""handwatch: watch folders of handwriting photos and write their transcriptions as Markdown."""

__version__ = "0.1.0"
