"""Callers' contracts: each module reads one kind of caller's request into the enrichment core's
terms and writes the core's answer back in that caller's shape (the Pinpoint transform and its
fast raw reader, Personalize responses to decorate, the Pinpoint-side setup). A new caller (a send
platform's hook) is a module here over the same core, resolver and caches. May import enrichment,
resolution and below; adapters do not import each other's internals, nor the HTTP layer."""
