-- Catalog API: item versions for ETags, and an index for consumers that sync by `updated_since`.
--
-- `version` comes from one sequence for all items, so it is never reused: an item deleted and
-- created again gets a new version, and a client's stale ETag can never match by accident (a
-- timestamp could: two writes in one microsecond, or a clock step). Every content change takes a
-- new value; a write that changes nothing keeps the old one (and the old updated_at).
CREATE SEQUENCE item_versions AS bigint;

ALTER TABLE items ADD COLUMN version bigint NOT NULL DEFAULT nextval('item_versions');
ALTER SEQUENCE item_versions OWNED BY items.version;

-- `GET /v1/catalogs/{catalog}/items?updated_since=` reads only what changed since a sync.
CREATE INDEX items_catalog_updated_at ON items (catalog_id, updated_at);
