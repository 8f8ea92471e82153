-- Any change to an item's content takes a new version and updated_at, whoever makes it: the
-- service's own writes already set both, and this trigger covers the rest (SQL run by hand, other
-- tools). ETags, `updated_since` syncs and the per-recommender cache of rendered values (keyed by
-- version) then always see the change. A write that leaves the content as it was fires nothing.
CREATE FUNCTION items_stamp_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.version = OLD.version THEN
        NEW.version := nextval('item_versions');
    END IF;
    IF NEW.updated_at = OLD.updated_at THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER items_stamp_change BEFORE UPDATE ON items FOR EACH ROW
    WHEN ((OLD.id, OLD.title, OLD.genre, OLD.price_amount, OLD.price_currency, OLD.image_url,
           OLD.url, OLD.available, OLD.attributes, OLD.locales)
          IS DISTINCT FROM
          (NEW.id, NEW.title, NEW.genre, NEW.price_amount, NEW.price_currency, NEW.image_url,
           NEW.url, NEW.available, NEW.attributes, NEW.locales))
    EXECUTE FUNCTION items_stamp_change();
