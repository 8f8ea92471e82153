"""From item IDs to items, fast and under faults: the resolver, L1 (per-process, bounded) and L2
(Redis), the batcher that merges concurrent misses into one query, the invalidation listener that
keeps every cache current, deadlines, and the expiring map behind the key and recommender caches.
May import storage, runtime and the shared vocabulary; it calls back what registered with it
(the listener's subscribers) rather than importing the layers above. A new cache tier lands here,
between the resolver and the storage it fronts."""
