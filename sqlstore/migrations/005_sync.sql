-- Stored sync filters (spec: POST /_matrix/client/v3/user/{userId}/filter).
CREATE TABLE sync_filters (
    user_id    TEXT   NOT NULL, -- owner of the filter
    filter_id  BIGINT NOT NULL, -- per-user number, the filter_id given to the client
    filter     JSONB  NOT NULL, -- the filter as uploaded (validated)
    created_ts BIGINT NOT NULL, -- ms
    PRIMARY KEY (user_id, filter_id)
);
