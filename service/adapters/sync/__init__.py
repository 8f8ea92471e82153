"""Syncing enriched recommendations onto Braze and Iterable user profiles (`catalog-enricher sync`).

The platform side only: it takes (user key, enriched answer) pairs, in the content route's answer
shape, and lands each user's attribute on the platform exactly once per run. Where the pairs come
from is `sync_input.read_users`: enrich-batch's reader and enricher, so both commands read alike.
"""
