-- Bindings of Pinpoint application (project) IDs to recommenders, for POST /v1/transform: one
-- shim serves many projects, and the event's ApplicationId picks the recommender.
-- The primary key holds the rule that one application ID picks at most one recommender in the
-- whole deployment (Pinpoint project IDs are unique across AWS, so a second binding is always a
-- mistake); a recommender's tenant is reached through the recommender, so a key only ever finds
-- its own tenant's bindings. `position` keeps the order the recommender listed them in.
CREATE TABLE recommender_applications (
    application_id  text PRIMARY KEY CHECK (application_id ~ '^[A-Za-z0-9_-]{1,64}$'),
    recommender_id  bigint NOT NULL REFERENCES recommenders (id) ON DELETE CASCADE,
    position        smallint NOT NULL CHECK (position >= 0),
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX recommender_applications_recommender
    ON recommender_applications (recommender_id, position);

-- Recommenders saved before this migration kept their application IDs inside `spec`: move them
-- here (the first recommender to list an ID keeps it) and drop them from `spec`, so the table is
-- the only truth.
INSERT INTO recommender_applications (application_id, recommender_id, position)
SELECT bound.application_id, r.id, bound.ordinality - 1
FROM recommenders r,
     jsonb_array_elements_text(
         CASE WHEN jsonb_typeof(r.spec -> 'application_ids') = 'array'
              THEN r.spec -> 'application_ids' ELSE '[]'::jsonb END
     ) WITH ORDINALITY AS bound (application_id, ordinality)
ORDER BY r.id, bound.ordinality
ON CONFLICT (application_id) DO NOTHING;

UPDATE recommenders SET spec = spec - 'application_ids' WHERE spec ? 'application_ids';
