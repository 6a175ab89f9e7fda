"""genkit's bundled plugins: the paper's method, registered through the public hooks only.

Each module here is a plugin of its own, announced in pyproject.toml's ``genkit`` entry-point
group exactly as a third-party plugin would be.
"""
