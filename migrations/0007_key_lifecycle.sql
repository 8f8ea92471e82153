-- Key lifecycle and per-tenant limits (issue 14).
--
-- A key may expire (`expires_at`; checked on the cached key, never a query per request), be
-- revoked (`revoked_at`), or be rotated: a new key with the same scopes and label, the old one
-- pointing at it through `replaced_by` and expiring when the grace ends. `last_used_at` is written
-- in batches, at most once a minute per key and process, never on the request path.
ALTER TABLE api_keys
    ADD COLUMN expires_at   timestamptz,
    ADD COLUMN last_used_at timestamptz,
    ADD COLUMN replaced_by  bigint REFERENCES api_keys (id) ON DELETE SET NULL;

-- Keys are addressed by (tenant, prefix) in `keys revoke`, `keys rotate` and DELETE /v1/keys/{prefix}:
-- a prefix must name one key. (48 random bits: a clash is retried with a new key on insert.)
CREATE UNIQUE INDEX api_keys_tenant_prefix ON api_keys (tenant_id, prefix);

-- A tenant's rate limit: `rate_limit_rps` requests a second on average, `rate_limit_burst` more at
-- once after a quiet spell; NULL: no limit. Changing it updates `tenants`, whose trigger already
-- tells every process (the limit travels with the cached key).
ALTER TABLE tenants
    ADD COLUMN rate_limit_rps   integer CHECK (rate_limit_rps BETWEEN 1 AND 1000000),
    ADD COLUMN rate_limit_burst integer NOT NULL DEFAULT 0
        CHECK (rate_limit_burst BETWEEN 0 AND 1000000);

-- Recording when keys were used must not make every process drop its key cache once a minute: the
-- notification now fires for the columns that change what a key may do, not for `last_used_at`
-- (nor for `replaced_by`, which only `keys list` shows).
DROP TRIGGER api_keys_notify ON api_keys;
CREATE TRIGGER api_keys_notify
    AFTER INSERT OR DELETE OR TRUNCATE
       OR UPDATE OF tenant_id, prefix, key_hash, scopes, label, revoked_at, expires_at
    ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION enricher_notify_config('keys');
