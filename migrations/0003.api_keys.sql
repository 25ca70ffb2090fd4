-- API keys: a name, the SHA-256 of the key (never the key), its scopes, and when it was
-- revoked. A revoked key's row stays (who had access, and when it ended).
-- depends: 0002.history

CREATE TABLE taskflow_api_keys (
    name        text        NOT NULL,
    key_hash    text        NOT NULL UNIQUE,
    scopes      text[]      NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
-- One live key per name: `keys revoke NAME` names exactly one.
CREATE UNIQUE INDEX taskflow_api_keys_live ON taskflow_api_keys (name) WHERE revoked_at IS NULL;
