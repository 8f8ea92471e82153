"""The generic core: "enrich these items for this recommender". What a recommender is (validated
data: attributes, formats, policies, locales), how one is looked up and cached per process, and how
an item becomes the values a message shows (locale chains, money formats, truncation, templates,
missing-item policies). Knows nothing of HTTP or of any caller's shape. May import resolution,
storage, runtime and the shared vocabulary. A new attribute format or item field lands here (and
in `service/items.py` for the field itself)."""
