-- What `catalog-enricher sync --changed-only` last put on each user's profile: a digest of the
-- attribute's content per (tenant, target, user), written once the platform acknowledged the
-- user, so the next run sends only the users whose content changed. `target` names where the
-- content went (platform, endpoint host, recommender, attribute): another target is another sync.
CREATE TABLE sync_digests (
    tenant_id  bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    target     text NOT NULL,
    user_key   text NOT NULL,
    digest     bytea NOT NULL,
    synced_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, target, user_key)
);
