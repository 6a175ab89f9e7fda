"""genkit-deep-cvae: a worked example of a third-party genkit plugin."""

__version__ = "0.1.0"
