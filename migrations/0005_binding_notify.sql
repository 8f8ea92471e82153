-- Application-ID bindings (0004) are part of a recommender's definition: a change to them must reach
-- every process's recommender cache at once, like a change to the recommender row itself (0002).
CREATE TRIGGER recommender_applications_notify
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON recommender_applications
    FOR EACH STATEMENT EXECUTE FUNCTION enricher_notify_config('recommenders');
