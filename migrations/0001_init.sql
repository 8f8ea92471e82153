-- Foundation schema: tenants, their API keys, catalogs, items and recommenders.
-- Every row below a tenant carries tenant_id (directly or through its catalog), so a key can
-- never reach another tenant's data: every lookup is keyed by (tenant, name).

CREATE TABLE tenants (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Keys are stored as SHA-256 of the whole key (keys are 256-bit random, so a fast hash is safe);
-- `prefix` is the public start of the key, kept so operators can tell keys apart in logs.
CREATE TABLE api_keys (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    prefix      text NOT NULL,
    key_hash    bytea NOT NULL UNIQUE,
    scopes      text[] NOT NULL CHECK (cardinality(scopes) > 0),
    label       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE catalogs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    description text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

-- Prices are exact: numeric amount plus ISO 4217 currency, both or neither.
CREATE TABLE items (
    catalog_id      bigint NOT NULL REFERENCES catalogs (id) ON DELETE CASCADE,
    id              text NOT NULL CHECK (char_length(id) BETWEEN 1 AND 256),
    title           text NOT NULL,
    genre           text,
    price_amount    numeric CHECK (price_amount >= 0),  -- unconstrained scale: "19.99" stays "19.99"
    price_currency  text CHECK (price_currency ~ '^[A-Z]{3}$'),
    image_url       text,
    url             text,
    available       boolean NOT NULL DEFAULT true,
    attributes      jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(attributes) = 'object'),
    locales         jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(locales) = 'object'),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (catalog_id, id),
    CHECK ((price_amount IS NULL) = (price_currency IS NULL))
);

-- A recommender maps item fields to Pinpoint attributes; its validated definition is kept whole
-- in `spec` (attributes, formats, policy) and read back as one value.
CREATE TABLE recommenders (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    catalog_id  bigint NOT NULL REFERENCES catalogs (id) ON DELETE RESTRICT,
    spec        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);
CREATE INDEX recommenders_catalog ON recommenders (catalog_id);
