-- Item notifications carry each item's new version, so that a process reading from a lagging
-- read replica (DATABASE_READ_URL) can tell a row older than a change it was told of, and keep it
-- out of its caches (service/resolution/notified_versions.py).
--
-- Payloads (JSON) on channel `catalog_enricher`, as in 0002 but with versions:
--   {"items": {"<catalog id>": {"<item id>": <version>, ...} | null, ...}}    or {"items": "all"}
-- <version> is the item's version after the statement (items.version, one sequence for all
-- items); a deleted item (or one moved to another ID or catalog) is sent as minus the version it
-- had, so a replica still holding that row can tell it is gone. Processes of the previous release
-- read the ID map as the list of its keys, as they read the list before.
-- The limits are the same as 0002's: more than 500 items, or a payload over 7900 bytes, names
-- only the catalogs (null: the whole catalog changed), and very many catalogs say "all".

CREATE OR REPLACE FUNCTION enricher_notify_items() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    -- The statement's rows and their versions, from its transition tables (only those of its
    -- own event exist). Fixed text chosen by TG_OP, never input: safe to put into EXECUTE.
    source text := CASE TG_OP
        WHEN 'INSERT' THEN '(SELECT catalog_id, id, version FROM enricher_new_items)'
        WHEN 'DELETE' THEN '(SELECT catalog_id, id, -version AS version FROM enricher_old_items)'
        ELSE '(SELECT catalog_id, id, version FROM enricher_new_items'
             ' UNION ALL'
             ' SELECT o.catalog_id, o.id, -o.version FROM enricher_old_items AS o'
             ' WHERE NOT EXISTS (SELECT 1 FROM enricher_new_items AS n'
             '                   WHERE n.catalog_id = o.catalog_id AND n.id = o.id))' END;
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
        EXECUTE 'SELECT jsonb_object_agg(catalog_id, versions) FROM'
                ' (SELECT catalog_id, jsonb_object_agg(id, version) AS versions FROM ' || source ||
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
