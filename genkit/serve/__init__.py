"""``genkit serve``: the sampler page, its edit tab, and the bounded server behind it."""
