-- Cache invalidation: every write to items, keys, tenants, recommenders and catalogs sends a NOTIFY
-- on channel `catalog_enricher`, which every service process LISTENs to (service/invalidation.py).
-- Triggers are statement-level: a bulk write sends one notification, not one per row. NOTIFY is
-- transactional (delivered at commit, never for a rollback) and its payload is limited to 8000
-- bytes, so a statement touching many items names only their catalogs ("null": the whole catalog),
-- and one touching very many catalogs says "all".
--
-- Payloads (JSON):
--   {"items": {"<catalog id>": ["<item id>", ...] | null, ...}}    or {"items": "all"}
--   {"keys": true}              an API key or a tenant changed
--   {"recommenders": true}      a recommender or a catalog changed

CREATE FUNCTION enricher_notify_items() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    -- The statement's rows, from its transition tables (only those of its own event exist).
    -- Fixed text chosen by TG_OP, never input: safe to put into EXECUTE.
    source text := CASE TG_OP
        WHEN 'INSERT' THEN 'enricher_new_items'
        WHEN 'DELETE' THEN 'enricher_old_items'
        ELSE '(SELECT catalog_id, id FROM enricher_new_items'
             ' UNION SELECT catalog_id, id FROM enricher_old_items)' END;
    touched bigint;
    changed jsonb;
    payload text;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('catalog_enricher', '{"items": "all"}');
        RETURN NULL;
    END IF;
    EXECUTE 'SELECT count(*) FROM ' || source || ' AS changed' INTO touched;
    IF touched = 0 THEN
        RETURN NULL;
    END IF;
    IF touched <= 500 THEN
        EXECUTE 'SELECT jsonb_object_agg(catalog_id, ids) FROM'
                ' (SELECT catalog_id, jsonb_agg(DISTINCT id) AS ids FROM ' || source ||
                ' AS changed GROUP BY catalog_id) AS per_catalog' INTO changed;
        payload := jsonb_build_object('items', changed)::text;
    END IF;
    IF payload IS NULL OR octet_length(payload) > 7900 THEN
        EXECUTE 'SELECT jsonb_object_agg(catalog_id, NULL) FROM'
                ' (SELECT DISTINCT catalog_id FROM ' || source || ' AS changed) AS catalogs'
            INTO changed;
        payload := jsonb_build_object('items', changed)::text;
        IF octet_length(payload) > 7900 THEN
            payload := '{"items": "all"}';
        END IF;
    END IF;
    PERFORM pg_notify('catalog_enricher', payload);
    RETURN NULL;
END
$$;

-- A trigger with transition tables serves one event, hence three.
CREATE TRIGGER items_notify_insert AFTER INSERT ON items
    REFERENCING NEW TABLE AS enricher_new_items
    FOR EACH STATEMENT EXECUTE FUNCTION enricher_notify_items();
CREATE TRIGGER items_notify_update AFTER UPDATE ON items
    REFERENCING OLD TABLE AS enricher_old_items NEW TABLE AS enricher_new_items
    FOR EACH STATEMENT EXECUTE FUNCTION enricher_notify_items();
CREATE TRIGGER items_notify_delete AFTER DELETE ON items
    REFERENCING OLD TABLE AS enricher_old_items
    FOR EACH STATEMENT EXECUTE FUNCTION enricher_notify_items();
CREATE TRIGGER items_notify_truncate AFTER TRUNCATE ON items
    FOR EACH STATEMENT EXECUTE FUNCTION enricher_notify_items();

-- Keys, tenants, recommenders and catalogs change rarely: processes drop the whole cache of that
-- kind, so the payload needs no row details.
CREATE FUNCTION enricher_notify_config() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('catalog_enricher', json_build_object(TG_ARGV[0], true)::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER api_keys_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION enricher_notify_config('keys');
CREATE TRIGGER tenants_notify AFTER UPDATE OR DELETE OR TRUNCATE ON tenants
    FOR EACH STATEMENT EXECUTE FUNCTION enricher_notify_config('keys');
CREATE TRIGGER recommenders_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON recommenders
    FOR EACH STATEMENT EXECUTE FUNCTION enricher_notify_config('recommenders');
CREATE TRIGGER catalogs_notify AFTER UPDATE OR DELETE OR TRUNCATE ON catalogs
    FOR EACH STATEMENT EXECUTE FUNCTION enricher_notify_config('recommenders');
